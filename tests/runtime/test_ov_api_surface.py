"""Pieces of OpenVINO's Python API that user code calls, checked against real OpenVINO (a test
oracle): Model/Output/Tensor/PartialShape/Type helpers, get_batch/set_batch, ``ov.op``, output
tensors that exist before the first inference."""

from __future__ import annotations

import numpy as np
import pytest

import ember as ov
from ember.errors import EmberError

real = pytest.importorskip("openvino")


def _pair(shape, layout=None):
    """The same relu model in ember and in OpenVINO, built through ``op.Parameter``."""
    models = []
    for lib in (ov, real):
        p = lib.op.Parameter(lib.Type.f32, lib.PartialShape(shape))
        if layout:
            p.set_layout(lib.Layout(layout))
        q = lib.op.Parameter(lib.Type.f32, lib.Shape([5]))
        r = lib.opset13.relu(p)
        models.append(lib.Model([r, lib.opset13.relu(q)], [p, q], "m"))
    return models


def _shapes(model):
    return [str(i.partial_shape) for i in model.inputs]


@pytest.mark.parametrize("batch", [4, -1, 1])
def test_set_batch_and_get_batch_match_openvino(batch):
    mine, theirs = _pair([2, 3, 8, 8], "NCHW")
    assert str(ov.get_batch(mine)) == str(real.get_batch(theirs))
    ov.set_batch(mine, batch)
    real.set_batch(theirs, batch)
    assert _shapes(mine) == _shapes(theirs)
    assert mine.is_dynamic() == theirs.is_dynamic() and mine.dynamic == theirs.dynamic


def test_batch_needs_a_layout_with_n_and_a_sane_size():
    mine, theirs = _pair([2, 3])
    with pytest.raises(EmberError, match="layout"):
        ov.get_batch(mine)
    with pytest.raises(RuntimeError):
        real.get_batch(theirs)
    mine, _ = _pair([2, 3], "NC")
    for bad in (0, -5, 2.5):
        with pytest.raises(EmberError):
            ov.set_batch(mine, bad)


def test_model_output_accessors_match_openvino():
    mine, theirs = _pair([2, -1])
    for i in range(2):
        assert str(mine.get_output_partial_shape(i)) == str(theirs.get_output_partial_shape(i))
        assert mine.get_output_element_type(i).get_type_name() == theirs.get_output_element_type(i).get_type_name()
    assert str(mine.get_output_shape(1)) == str(theirs.get_output_shape(1))
    assert mine.get_sinks() == [] and mine.variables == []
    with pytest.raises(EmberError):
        mine.get_result()  # two outputs
    port = mine.output(0)
    port.get_tensor().set_names({"y"})
    assert port.get_tensor().get_names() == {"y"} == port.names and port.get_tensor().any_name == "y"
    assert port.target_inputs == set(port.get_target_inputs())


def test_output_tensor_exists_before_the_first_inference_and_is_filled():
    x = ov.opset13.parameter([2, 3], np.float32, name="x")
    cm = ov.Core().compile_model(ov.Model([ov.opset13.relu(x)], [x]), "CPU")
    req = cm.create_infer_request()
    out = req.get_output_tensor()
    assert list(out.shape) == [2, 3] and out.element_type == ov.Type.f32
    data = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    req.infer({"x": data})
    np.testing.assert_array_equal(out.data, np.maximum(data, 0))  # the tensor taken before is filled


def test_tensor_copy_from_strides_and_file(tmp_path):
    t = ov.Tensor(ov.Type.f32, [2, 3])
    src = np.arange(6, dtype=np.float64).reshape(2, 3)
    t.copy_from(src)
    np.testing.assert_array_equal(t.data, src) and t.data.dtype == np.float32  # noqa: B015
    t.copy_from(ov.Tensor(np.ones((4,), np.float32)))
    assert list(t.shape) == [4]
    theirs = real.Tensor(np.zeros((2, 3), np.float32))
    mine = ov.Tensor(np.zeros((2, 3), np.float32))
    assert tuple(mine.strides) == tuple(theirs.strides) and mine.is_continuous() == theirs.is_continuous()
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(7)))
    assert ov.tensor_from_file(path).data.tolist() == real.tensor_from_file(str(path)).data.tolist()
    with pytest.raises(EmberError):
        ov.tensor_from_file(tmp_path / "missing.bin")


@pytest.mark.parametrize("a, b", [([1, -1, 3], [1, -1, 3]), ([1, -1], [1, 2]), ([2, 3], [2, 3]), ([1, 2], [1, 2, 3])])
def test_partial_shape_helpers_match_openvino(a, b):
    pa, pb = ov.PartialShape(a), ov.PartialShape(b)
    ra, rb = real.PartialShape(a), real.PartialShape(b)
    assert pa.same_scheme(pb) == ra.same_scheme(rb)
    assert pa.all_non_negative == ra.all_non_negative
    assert str(pa.get_dimension(1)) == str(ra.get_dimension(1))


@pytest.mark.parametrize("name", ["f32", "f16", "i8", "u8", "i32", "i64", "boolean", "f64", "u16"])
def test_type_helpers_match_openvino(name):
    mine, theirs = getattr(ov.Type, name), getattr(real.Type, name)
    assert mine.to_dtype() == theirs.to_dtype()
    assert (mine.real, mine.integral, mine.integral_number, mine.signed) == \
        (theirs.real, theirs.integral, theirs.integral_number, theirs.signed)
    assert mine.type_name == theirs.type_name


def test_bf16_dtype_is_bfloat16():
    assert ov.Type.bf16.to_dtype().name == "bfloat16"  # OpenVINO answers float16 (lossy); ember keeps bf16


def test_op_module_and_port_classes():
    c = ov.op.Constant(np.ones((2, 2), np.float32))
    p = ov.op.Parameter(ov.Type.f32, ov.Shape([1, 3]))
    assert isinstance(c, ov.Node) and isinstance(p.output(0), ov.Output) and ov.ConstOutput is ov.Output
    assert isinstance(ov.op.Result(p.output(0)).input(0), ov.Input)
    assert ov.opset17 is ov.opset13
