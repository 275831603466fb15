"""fold_shape_chains: Reshapes fed by ShapeOf chains become constant special-zero Reshapes.

Each case is a model with a dynamic dimension: ONNX files exported from torch with
``dynamic_axes`` and converted by ember, or chains built by hand. The pass must keep outputs
equal on REFERENCE at two input sizes, and shrink the graph (or leave it alone when the chain is
not a pattern).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.reference import run_model
from ember.graph import Model
from ember.passes import get_pass, optimize
from ember.passes.shape_chains import OPAQUE, Dim, ShapeValue, reshape_pattern

RNG = np.random.default_rng(0)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
I64 = np.int64


def _i(*v: int) -> object:
    return ops.constant(np.asarray(v, I64))


def _scalar(v: int) -> object:
    return ops.constant(np.asarray(v, I64))


# --- torch exports ------------------------------------------------------------------------

def _torch_case(kind: str) -> Callable[[Path], Model]:
    def build(tmp: Path) -> Model:
        torch = pytest.importorskip("torch")
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                y = self.conv(x)
                if kind == "flatten":
                    return torch.flatten(y, 1)
                if kind == "view":
                    return y.view(y.size(0), -1)
                if kind == "flatten_spatial":
                    return y.flatten(2)
                if kind == "flatten_batch_channels":
                    return y.flatten(0, 1)
                if kind == "input_batch":  # EfficientNet-Lite0's head: the batch read at the input
                    z = torch.nn.functional.pad(x, (0, 1, 0, 1))
                    z = torch.relu(self.conv(z) * 2.0 + 1.0).mean((2, 3), keepdim=True)
                    return z.view(x.size(0), -1)
                if kind == "reshape_sizes":
                    return y.reshape(y.shape[0], y.shape[1], y.shape[2] * y.shape[3])
                raise ValueError(kind)

        torch.manual_seed(0)
        axes = {0: "b"} if kind != "flatten_spatial" else {0: "b", 2: "h", 3: "w"}
        path = tmp / f"{kind}.onnx"
        with torch.no_grad():
            torch.onnx.export(Net().eval(), (torch.randn(2, 3, 8, 8),), str(path), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": axes}, opset_version=17, dynamo=False)
        return ember.convert_model(str(path), opt_level=0)
    return build


# --- hand-built chains --------------------------------------------------------------------

def _gather_unsqueeze_concat(tmp: Path) -> Model:
    """[x.shape[0], x.shape[1], -1] from scalar Gathers + Unsqueeze + Concat (rank 4)."""
    x = ops.parameter([-1, -1, 4, 5], np.float32, name="x")
    s = ops.shape_of(x)
    d0 = ops.unsqueeze(ops.gather(s, _scalar(0), _scalar(0)), _scalar(0))
    d1 = ops.unsqueeze(ops.gather(s, _scalar(-3), _scalar(0)), _scalar(0))
    y = ops.reshape(x, ops.concat([d0, d1, _i(-1)], 0), False)
    return Model([y], [x])


def _strided_slice_prod(tmp: Path) -> Model:
    """[x.shape[:1], prod(x.shape[1:])] with StridedSlice and ReduceProd (keep_dims)."""
    x = ops.parameter([-1, 2, 3, 5, 2], np.float32, name="x")
    s = ops.shape_of(x, "i32")
    head = ops.strided_slice(s, np.array([0], I64), np.array([1], I64), np.array([1], I64), [0], [0])
    tail = ops.strided_slice(s, np.array([1], I64), np.array([0], I64), np.array([1], I64), [0], [1])
    prod = ops.reduce_prod(tail, _i(0), True)
    y = ops.reshape(x, ops.convert(ops.concat([head, prod], 0), "i64"), False)
    return Model([y], [x])


def _dynamic_product(tmp: Path) -> Model:
    """[b, h*w, c] on a [b, c, h, w] input with h, w dynamic: the product becomes -1."""
    x = ops.parameter([-1, 3, -1, -1], np.float32, name="x")
    t = ops.transpose(x, _i(0, 2, 3, 1))
    s = ops.shape_of(t)
    hw = ops.reduce_prod(ops.slice(s, _i(1), _i(3), _i(1)), _i(0), True)
    y = ops.reshape(t, ops.concat([ops.slice(s, _i(0), _i(1), _i(1)), hw, ops.slice(s, _i(-1), _i(4), _i(1))], 0),
                    False)
    return Model([y], [x])


def _multiply_dims(tmp: Path) -> Model:
    """[b * 2, -1] where the batch product is opaque: one -1 is enough."""
    x = ops.parameter([-1, 2, 6], np.float32, name="x")
    s = ops.shape_of(x)
    b2 = ops.multiply(ops.gather(s, _i(0), _scalar(0)), _i(2))
    y = ops.reshape(x, ops.concat([b2, _i(3, 2)], 0), False)
    return Model([y], [x])


def _swapped_dims(tmp: Path) -> Model:
    """[x.shape[1], x.shape[0], 4]: two dims from other positions, not a pattern (left alone)."""
    x = ops.parameter([-1, -1, 4], np.float32, name="x")
    y = ops.reshape(x, ops.gather(ops.shape_of(x), _i(1, 0, 2), _scalar(0)), False)
    return Model([y], [x])


def _batch_through_ops(tmp: Path) -> Model:
    """[x.shape[0], y.shape[1], -1] on y = Transpose(ReduceMean(x + bias)): both dims traced back."""
    x = ops.parameter([-1, -1, 4, 5], np.float32, name="x")
    y = ops.transpose(ops.reduce_mean(ops.add(x, np.ones((1, 1, 1, 5), np.float32)), _i(2), False), _i(1, 0, 2))
    sx, sy = ops.shape_of(x), ops.shape_of(y)
    target = ops.concat([ops.gather(sx, _i(1), _scalar(0)), ops.gather(sy, _i(1), _scalar(0)), _i(-1)], 0)
    return Model([ops.reshape(y, target, False)], [x])


def _other_parameter(tmp: Path) -> Model:
    """[z.shape[0], -1] with z another input: its batch may differ, so not a copy (left alone)."""
    x = ops.parameter([-1, 4], np.float32, name="x")
    z = ops.parameter([-1, 2], np.float32, name="z")
    y = ops.reshape(x, ops.concat([ops.gather(ops.shape_of(z), _i(0), _scalar(0)), _i(-1)], 0), False)
    return Model([ops.add(y, np.float32(0.5))], [x, z])


# name, builder, input shapes at two sizes, whether the pass folds the chain
CASES = [
    ("torch_flatten", _torch_case("flatten"), [(2, 3, 8, 8)], [(5, 3, 8, 8)], True),
    ("torch_view", _torch_case("view"), [(2, 3, 8, 8)], [(1, 3, 8, 8)], True),
    ("torch_flatten_spatial", _torch_case("flatten_spatial"), [(2, 3, 8, 8)], [(3, 3, 9, 7)], True),
    ("torch_flatten_batch_channels", _torch_case("flatten_batch_channels"), [(2, 3, 8, 8)], [(4, 3, 8, 8)], True),
    ("torch_reshape_sizes", _torch_case("reshape_sizes"), [(2, 3, 8, 8)], [(3, 3, 8, 8)], True),
    ("torch_input_batch", _torch_case("input_batch"), [(2, 3, 8, 8)], [(3, 3, 8, 8)], True),
    ("gather_unsqueeze_concat", _gather_unsqueeze_concat, [(2, 3, 4, 5)], [(1, 6, 4, 5)], True),
    ("strided_slice_prod", _strided_slice_prod, [(2, 2, 3, 5, 2)], [(7, 2, 3, 5, 2)], True),
    ("dynamic_product", _dynamic_product, [(2, 3, 4, 5)], [(1, 3, 6, 2)], True),
    ("multiply_dims", _multiply_dims, [(2, 2, 6)], [(3, 2, 6)], True),
    ("batch_through_ops", _batch_through_ops, [(2, 3, 4, 5)], [(3, 2, 4, 5)], True),
    ("swapped_dims", _swapped_dims, [(2, 3, 4)], [(3, 5, 4)], False),
    ("other_parameter", _other_parameter, [(2, 4), (4, 2)], [(6, 4), (3, 2)], False),
]


def _counts(model: Model) -> collections.Counter:
    return collections.Counter(n.type_name for n in model.get_ordered_ops())


@pytest.mark.parametrize(("name", "build", "small", "large", "folds"), CASES, ids=[c[0] for c in CASES])
def test_shape_chain_folds(name: str, build: Callable[[Path], Model], small: list, large: list, folds: bool,
                           tmp_path: Path) -> None:
    raw = build(tmp_path)
    optimized = optimize(raw, 2)
    # the model as the pipeline hands it to the pass: static shapes and constants folded
    model = get_pass("fold_constants").fn(get_pass("fold_shapes").fn(raw.clone()))
    after = get_pass("fold_shape_chains").fn(model.clone())
    before_n, after_n = len(model.get_ordered_ops()), len(after.get_ordered_ops())
    for shapes in (small, large):
        feeds = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
        want = run_model(model, feeds)
        for got, exact in ((run_model(after, feeds), True), (run_model(optimized, feeds), False),
                           (run_model(raw, feeds), True)):
            assert [g.shape for g in got] == [w.shape for w in want]
            for g, w in zip(got, want):
                if exact:
                    np.testing.assert_array_equal(g, w)
                else:  # the other level-2 passes fold scales and biases into weights: rounding moves
                    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    counts = _counts(after)
    if folds:
        assert after_n < before_n
        assert counts.get("ShapeOf", 0) == 0, dict(counts)
        assert len(optimized.get_ordered_ops()) < before_n
        reshape = after.outputs[0].node.input_values()[0].node
        assert reshape.type_name == "Reshape" and reshape.attrs["special_zero"] is True
        assert reshape.output(0).partial_shape.rank_is_static
    else:
        assert after_n == before_n and counts == _counts(model)
    assert [o.names for o in after.outputs] == [o.names for o in model.outputs]


def test_flatten_output_shape_is_static_but_batch(tmp_path: Path) -> None:
    m = optimize(_torch_case("flatten")(tmp_path), 2)
    reshape = m.outputs[0].node.input_values()[0].node
    assert str(reshape.output(0).partial_shape) == "[?,144]"


@pytest.mark.parametrize(("elems", "special_zero", "want"), [
    (("d0", 144), False, [0, 144]),
    (("d1", 144), False, [-1, 144]),            # a dim from another position: inferred
    ((0, "d1"), False, None),                   # literal 0 without special_zero is a real 0
    ((0, "d1"), True, [0, 0]),
    (("d0", -1, "d2"), False, [0, -1, 0]),
    (("q", -1), False, None),                   # two unknowns
    (("d0", -2), False, None),
])
def test_reshape_pattern(elems: tuple, special_zero: bool, want: list[int] | None) -> None:
    x = ops.parameter([-1, -1, 12, 12], np.float32, name="x").output(0)

    def elem(e: object) -> object:
        if isinstance(e, str) and e.startswith("d"):
            return Dim(x, int(e[1:]))
        return OPAQUE if e == "q" else e
    value = ShapeValue(tuple(elem(e) for e in elems))  # type: ignore[misc]
    assert reshape_pattern(x, value, special_zero) == want


# --- real networks: node counts at or below OpenVINO's conversion of the same ONNX file ---------

def _network(name: str) -> object:
    torch = pytest.importorskip("torch")
    from tests.models import torch_models

    torch.manual_seed(0)
    if name == "efficientnet_lite0":  # the architecture with seeded weights (no download)
        efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
        net = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    else:
        net = {"resnet50": torch_models.ResNet50, "mobilenet_v2": torch_models.MobileNetV2}[name]()
    return torch_models._seeded(net, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "mobilenet_v2"])
def test_dynamic_batch_networks_not_larger_than_openvino(name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ov = pytest.importorskip("openvino")
    module = _network(name)
    path = tmp_path / f"{name}.onnx"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamo=False, dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    ours = ember.convert_model(str(path))
    theirs = len(ov.convert_model(str(path)).get_ordered_ops())
    counts = _counts(ours)
    assert counts.get("ShapeOf", 0) == 0 and counts.get("Pad", 0) == 0, dict(counts)
    assert len(ours.get_ordered_ops()) <= theirs
    assert str(ours.outputs[0].partial_shape) == "[?,1000]"
    if name == "efficientnet_lite0":  # the PyTorch frontend's output too
        assert len(ember.convert_model(module, example_input=(x,)).get_ordered_ops()) <= theirs
