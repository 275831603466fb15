"""Memory behaviour: weights read once from an ONNX file, replaced weights freed after
converting, and the results unchanged (against onnx's ReferenceEvaluator or ONNX Runtime)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.errors import ConversionError
from ember.frontends.onnx import loader
from ember.frontends.onnx.skeleton import MIN_EXTERNAL_BYTES

RNG = np.random.default_rng(7)


def _matmul_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """x[1, 600] @ W f32 (1.4 MB, external in the skeleton) + b f16 (inline) -> Cast; plus a
    bf16 initializer large enough to be made external (read by the general path) and an
    int64 shape constant."""
    w = RNG.standard_normal((600, 600)).astype(np.float32)
    b = RNG.standard_normal(600).astype(np.float16)
    g = RNG.standard_normal((40, 600)).astype(np.float32)
    g_bf16 = helper.make_tensor("g", TensorProto.BFLOAT16, g.shape,
                                (g.view(np.uint32) >> 16).astype(np.uint16).tobytes(), raw=True)
    shape = np.array([1, 600], np.int64)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"]),
             helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["y0", "bf"], ["y1"]),
             helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["gf"], ["gs"], keepdims=1, axes=None),
             helper.make_node("Add", ["y1", "gs"], ["y2"]),
             helper.make_node("Reshape", ["y2", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 600])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 600])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), g_bf16,
                               numpy_helper.from_array(shape, "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, {"w": w, "b": b}


def test_skeleton_leaves_large_initializers_in_the_file(tmp_path: Path) -> None:
    path, _ = _matmul_model(tmp_path / "mm.onnx")
    assert path.stat().st_size > loader.SKELETON_MIN_BYTES
    proto, _ = loader.load_model(path)
    assert proto.ByteSize() < 20_000  # the 1.4 MB and 48 KB tensors are references, not bytes
    by_name = {t.name: t for t in proto.graph.initializer}
    assert by_name["w"].data_location == TensorProto.EXTERNAL
    assert by_name["g"].data_location == TensorProto.EXTERNAL
    assert by_name["shape"].data_location == TensorProto.DEFAULT  # small: inline
    full = onnx.load(str(path))
    for t in full.graph.initializer:  # every value reads back as onnx reads it
        arr, _ = loader.tensor_value(by_name[t.name], path.parent)
        want = numpy_helper.to_array(t)
        if t.data_type == TensorProto.BFLOAT16:
            want = want.astype(np.float32)
            arr = arr.astype(np.float32)
        np.testing.assert_array_equal(arr, want)


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_model_read_by_skeleton_matches_reference_evaluator(tmp_path: Path, device: str) -> None:
    path, _ = _matmul_model(tmp_path / "mm.onnx")
    x = RNG.standard_normal((1, 600)).astype(np.float32)
    want = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x})[0]
    compiled = ember.Core().compile_model(ember.convert_model(str(path)), device)
    got = compiled({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_symlinked_model_reads_its_weights(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    path, tensors = _matmul_model(real_dir / "mm.onnx")
    link = tmp_path / "link.onnx"
    link.symlink_to(path)
    proto, base_dir = loader.load_model(link)
    w = next(t for t in proto.graph.initializer if t.name == "w")
    np.testing.assert_array_equal(loader.tensor_value(w, base_dir)[0], tensors["w"])


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_large_file_is_a_conversion_error(tmp_path: Path, damage: str) -> None:
    path, _ = _matmul_model(tmp_path / "mm.onnx")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(RNG.integers(0, 256, len(data), np.uint8)))
    with pytest.raises(ConversionError):
        ember.convert_model(str(path))


def test_skeleton_is_not_used_for_small_tensors(tmp_path: Path) -> None:
    path, _ = _matmul_model(tmp_path / "mm.onnx")
    proto, _ = loader.load_model(path)
    b = next(t for t in proto.graph.initializer if t.name == "b")
    assert len(b.raw_data) < MIN_EXTERNAL_BYTES and b.data_location == TensorProto.DEFAULT


def _conv_bn_model(path: Path) -> tuple[Path, int]:
    c = 256
    w = RNG.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.05  # 2.4 MB
    inits = [numpy_helper.from_array(w, "w")] + [
        numpy_helper.from_array(v.astype(np.float32), n) for n, v in
        (("scale", RNG.uniform(0.5, 1.5, c)), ("bias", RNG.standard_normal(c)),
         ("mean", RNG.standard_normal(c)), ("var", RNG.uniform(0.5, 1.5, c)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])]
    graph = helper.make_graph(nodes, "cbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w.nbytes


def test_convert_holds_the_weights_once(tmp_path: Path) -> None:
    """After convert_model (BatchNorm folded into the weights) one copy of the weights is
    alive: not the file's bytes, nor the weights the fold replaced (kept by graph cycles)."""
    path, nbytes = _conv_bn_model(tmp_path / "cbn.onnx")
    gc.collect()
    tracemalloc.start()
    try:
        gc.disable()  # a collection by chance must not hide weights kept in graph cycles
        try:
            model = ember.convert_model(str(path))
        finally:
            gc.enable()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 1.5 * nbytes, (current, nbytes)
    x = RNG.standard_normal((1, 256, 8, 8)).astype(np.float32)
    import onnxruntime as ort  # onnx's ReferenceEvaluator gets this BatchNorm wrong
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ember.Core().compile_model(model, "REFERENCE")({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_released_llvm_pages_fault_back_and_kernels_still_run() -> None:
    """release_library_pages drops only clean read-only pages of LLVM's library: compiling
    and running a kernel afterwards works and gives the right answer."""
    import ctypes
    import sys

    from llvmlite import ir

    from ember.devices.cpu.llvm import jit
    from ember.devices.cpu.llvm.isa import host_isa

    released = jit.release_library_pages()
    assert released >= 0
    if sys.platform.startswith("linux"):
        assert jit._RELEASED["calls"] >= 1

    def build(prefix: str) -> ir.Module:
        mod = ir.Module(prefix)
        i64 = ir.IntType(64)
        fn = ir.Function(mod, ir.FunctionType(i64, [i64]), f"{prefix}_triple")
        b = ir.IRBuilder(fn.append_basic_block())
        b.ret(b.mul(fn.args[0], ir.Constant(i64, 3)))
        return mod

    lib = jit.Jit(cache_dir=None).load(f"test_memory_triple|{RNG.integers(1 << 30)}", host_isa(), build)
    jit.release_library_pages()
    assert lib.cfunc("triple", ctypes.c_int64, ctypes.c_int64)(14) == 42


def test_compile_releases_and_runtime_model_and_export_still_work(tmp_path: Path) -> None:
    """CPUDevice.compile ends with release_after_compile: the compiled model still runs right
    (against ONNX Runtime), its runtime model still reads, and a CACHE_DIR round
    trip gives the same outputs."""
    import onnxruntime as ort

    from ember.devices.cpu.runtime import release

    path, _ = _conv_bn_model(tmp_path / "cbn.onnx")
    x = RNG.standard_normal((1, 256, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    release.release_after_compile()  # idempotent, callable any time
    compiled = ember.Core().compile_model(ember.convert_model(str(path)), "CPU")
    np.testing.assert_allclose(compiled({"x": x})[0], want, rtol=1e-3, atol=1e-3)
    assert len(compiled.get_runtime_model().get_ordered_ops()) >= 3
    core = ember.Core()
    core.set_property({"CACHE_DIR": str(tmp_path / "cache")})
    for _ in range(2):  # write the entry, then read it back
        again = core.compile_model(str(path), "CPU")
        np.testing.assert_allclose(again({"x": x})[0], want, rtol=1e-3, atol=1e-3)
