"""Native Interpolate (linear, linear_onnx, cubic; opset 4 and 11) on the CPU device against
REFERENCE, from one table of cases: every coordinate_transformation_mode, odd sizes, up- and
downscales, NCHW inputs and NHWC ones (after a convolution), scales and sizes, empty tensors."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model
from ember.ops.misc import Interpolate0, Interpolate4

RNG = np.random.default_rng(77)
COORD_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn", "align_corners")


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _resize(x, version: int, mode: str, coord: str, out_hw: tuple[int, int] | None, scales: tuple[float, float] | None,
            axes4: bool):  # noqa: ANN001, ANN202
    """Interpolate over H, W by sizes (out_hw) or scales, axes given as [2, 3] or (axes4) all four."""
    shape = [int(d) for d in x.output(0).partial_shape.to_shape()] if hasattr(x, "output") else None
    calc = "sizes" if out_hw is not None else "scales"
    if axes4:
        axes = np.array([0, 1, 2, 3], np.int64)
        sizes = np.array([*shape[:2], *out_hw] if out_hw else shape, np.int64)
        sc = np.array([1.0, 1.0, *(scales or (1.0, 1.0))], np.float32)
    else:
        axes = np.array([2, 3], np.int64)
        sizes = np.array(out_hw or (1, 1), np.int64)
        sc = np.array(scales or (1.0, 1.0), np.float32)
    attrs = {"mode": mode, "shape_calculation_mode": calc, "coordinate_transformation_mode": coord,
             "nearest_mode": "round_prefer_floor", "antialias": False, "pads_begin": [0], "pads_end": [0],
             "cube_coeff": -0.75}
    if version == 4:
        return Interpolate4([x, sizes, sc, axes], attrs, "resize")
    return ops.interpolate(x, sizes if calc == "sizes" else sc, mode, calc, coordinate_transformation_mode=coord,
                           axes=axes)


def _case(shape: tuple[int, ...], version: int, mode: str, coord: str, out_hw=None, scales=None,  # noqa: ANN001
          axes4: bool = False, after_conv: bool = False):  # noqa: ANN202
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        y = x
        if after_conv:  # an NHWC tensor in the plan
            c = shape[1]
            y = ops.relu(ops.convolution(x, _f(c, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
        return Model([_resize(y, version, mode, coord, out_hw, scales, axes4)], [x], "resize")
    return build, shape


def _case1d(shape: tuple[int, ...], version: int, mode: str, coord: str, out_len: int):  # noqa: ANN202
    """A 3-D (n, c, w) resize over its last axis."""
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        attrs = {"mode": mode, "shape_calculation_mode": "sizes", "coordinate_transformation_mode": coord,
                 "nearest_mode": "round_prefer_floor", "antialias": False, "pads_begin": [0], "pads_end": [0],
                 "cube_coeff": -0.75}
        sizes, axes = np.array([out_len], np.int64), np.array([2], np.int64)
        if version == 4:
            y = Interpolate4([x, sizes, np.array([out_len / shape[2]], np.float32), axes], attrs, "resize")
        else:
            y = ops.interpolate(x, sizes, mode, "sizes", coordinate_transformation_mode=coord, axes=axes)
        return Model([y], [x], "resize1d")
    return build, shape


CASES = {}
for v, mode, coord in itertools.product((4, 11), ("linear", "linear_onnx"), COORD_MODES):
    CASES[f"v{v}-{mode}-{coord}-up-odd"] = _case((1, 5, 7, 9), v, mode, coord, out_hw=(13, 20))
    CASES[f"v{v}-{mode}-{coord}-down"] = _case((2, 3, 11, 10), v, mode, coord, out_hw=(4, 7))
for mode, coord in itertools.product(("linear", "linear_onnx", "cubic"), COORD_MODES):
    CASES[f"v11-{mode}-{coord}-scales-nhwc"] = _case((1, 19, 6, 5), 11, mode, coord, scales=(2.0, 1.5),
                                                     after_conv=True)
CASES.update({
    "v4-linear-all-axes-scales": _case((1, 3, 5, 5), 4, "linear", "half_pixel", scales=(0.6, 2.5), axes4=True),
    "v11-linear_onnx-all-axes-sizes": _case((2, 17, 4, 3), 11, "linear_onnx", "align_corners", out_hw=(1, 8),
                                            axes4=True),
    "v11-cubic-many-channels-nhwc": _case((1, 35, 8, 8), 11, "cubic", "asymmetric", out_hw=(16, 16), after_conv=True),
    "v11-linear-to-1x1": _case((1, 4, 5, 6), 11, "linear", "pytorch_half_pixel", out_hw=(1, 1)),
    "v11-linear-identity": _case((1, 4, 5, 6), 11, "linear_onnx", "half_pixel", out_hw=(5, 6)),
    "v11-linear-empty-batch": _case((0, 4, 5, 6), 11, "linear_onnx", "half_pixel", out_hw=(9, 3)),
    "v11-linear-empty-channels": _case((1, 0, 5, 6), 11, "linear", "asymmetric", scales=(2.0, 2.0)),
    "v11-linear-plain-many-channels": _case((1, 20, 5, 6), 11, "linear", "half_pixel", out_hw=(9, 13)),
})
def _case_v1(shape: tuple[int, ...], mode: str, align_corners: bool, axes: list[int], target: list[int]):  # noqa: ANN202
    """Interpolate-1 (an axes attribute and target sizes)."""
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        attrs = {"align_corners": align_corners, "antialias": False, "axes": axes, "mode": mode,
                 "pads_begin": [0], "pads_end": [0]}
        return Model([Interpolate0([x, np.array(target, np.int64)], attrs, "resize")], [x], "resize1")
    return build, shape


for mode, corners, axes in itertools.product(("linear", "cubic"), (False, True), ([2, 3], [3])):
    target = [9, 17] if len(axes) == 2 else [17]
    CASES[f"v1-{mode}-corners{int(corners)}-axes{len(axes)}"] = _case_v1((1, 3, 5, 7), mode, corners, axes, target)
for v, mode, coord in itertools.product((4, 11), ("linear", "linear_onnx", "cubic"), COORD_MODES):
    CASES[f"v{v}-{mode}-{coord}-1d"] = _case1d((2, 3, 11), v, mode, coord, 25 if coord != "asymmetric" else 4)


@pytest.mark.parametrize("name", list(CASES))
def test_resize_matches_reference(name: str) -> None:
    build, shape = CASES[name]
    model = build()
    x = _f(*shape)
    want = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    got = cm([x])[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_antialias_downscale_stays_on_reference() -> None:
    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    y = ops.interpolate(x, np.array([0.5, 0.5], np.float32), "linear", "scales", antialias=True,
                        axes=np.array([2, 3], np.int64))
    model = Model([y], [x], "aa")
    cm = ember.Core().compile_model(model, "CPU")
    assert cm._executable.program.stats["fallbacks"] == {"Interpolate": 1}
    a = _f(1, 3, 8, 8)
    np.testing.assert_allclose(cm([a])[0], ember.Core().compile_model(model, "REFERENCE")([a])[0], rtol=1e-6)


# -- Pad ----------------------------------------------------------------------------------------

def _pad_case(shape: tuple[int, ...], begin: list[int], end: list[int], mode: str, value: float | None = None,
              after_conv: bool = False, dtype=np.float32):  # noqa: ANN001, ANN202
    def build() -> Model:
        x = ops.parameter(list(shape), dtype, name="x")
        y = x
        if after_conv:  # an NHWC tensor in the plan
            c = shape[1]
            y = ops.relu(ops.convolution(x, _f(c, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
        pv = None if value is None else np.array(value, dtype)
        return Model([ops.pad(y, begin, end, mode, pv)], [x], "pad")
    return build, shape, dtype


PAD_CASES = {}
for mode in ("constant", "edge", "reflect", "symmetric"):
    PAD_CASES[f"{mode}-hw-odd"] = _pad_case((1, 3, 7, 9), [0, 0, 2, 1], [0, 0, 1, 3], mode)
    PAD_CASES[f"{mode}-channels-nhwc"] = _pad_case((1, 5, 4, 6), [0, 1, 0, 0], [0, 4, 0, 0], mode, after_conv=True)
    PAD_CASES[f"{mode}-all-axes-nhwc"] = _pad_case((2, 3, 4, 5), [1, 2, 3, 1], [1, 0, 2, 4], mode, after_conv=True)
    PAD_CASES[f"{mode}-negative-crop"] = _pad_case((2, 6, 5, 19), [0, -1, 2, -3], [0, 2, -1, 3], mode)
    PAD_CASES[f"{mode}-rank3"] = _pad_case((3, 4, 21), [1, 0, 3], [0, 2, 3], mode)
    PAD_CASES[f"{mode}-rank2-int32"] = _pad_case((5, 6), [2, 1], [1, 2], mode, dtype=np.int32)
PAD_CASES.update({
    "constant-value-nhwc": _pad_case((1, 17, 3, 3), [0, 0, 1, 1], [0, 31, 1, 1], "constant", 2.5, after_conv=True),
    "constant-value-int32": _pad_case((2, 3, 4, 5), [0, 1, 1, 0], [1, 0, 0, 2], "constant", -7, dtype=np.int32),
    "constant-empty-input": _pad_case((1, 0, 3, 3), [0, 2, 1, 0], [0, 1, 0, 1], "constant", 1.5),
    "constant-empty-output": _pad_case((0, 3, 3, 3), [0, 1, 1, 1], [0, 1, 1, 1], "constant"),
    "reflect-widest": _pad_case((1, 2, 3, 4), [0, 1, 2, 3], [0, 1, 2, 3], "reflect"),
    "symmetric-widest": _pad_case((1, 2, 3, 4), [0, 2, 3, 4], [0, 2, 3, 4], "symmetric"),
    "edge-long-rows": _pad_case((1, 2, 3, 70), [0, 0, 0, 5], [0, 0, 0, 40], "edge"),
})


@pytest.mark.parametrize("name", list(PAD_CASES))
def test_pad_matches_reference(name: str) -> None:
    build, shape, dtype = PAD_CASES[name]
    model = build()
    x = (_f(*shape) * 10).astype(dtype)
    want = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    assert any(op.type_name == "Pad" and op.native for op in cm._executable.program.ops) or want.size == 0
    got = cm([x])[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_transpose_of_a_model_input_is_native() -> None:
    """TFLite models start with an NHWC -> NCHW Transpose of the input image."""
    x = ops.parameter([1, 9, 11, 3], np.float32, name="x")
    y = ops.relu(ops.convolution(ops.transpose(x, np.array([0, 3, 1, 2])), _f(4, 3, 3, 3), [1, 1], [1, 1], [1, 1],
                                 [1, 1]))
    model = Model([y], [x], "nhwc-input")
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"]
    a = _f(1, 9, 11, 3)
    for _ in range(2):  # the input is read in place: a second run sees the new array
        np.testing.assert_allclose(cm([a])[0], ember.Core().compile_model(model, "REFERENCE")([a])[0],
                                   rtol=1e-5, atol=1e-5)
        a = _f(1, 9, 11, 3)


# -- DepthToSpace / SpaceToDepth ------------------------------------------------------------------

def _block_case(op: str, shape: tuple[int, ...], mode: str, bs: int, after_conv: bool = False,
                dtype=np.float32):  # noqa: ANN001, ANN202
    def build() -> Model:
        x = ops.parameter(list(shape), dtype, name="x")
        y = x
        if after_conv:
            c = shape[1]
            y = ops.relu(ops.convolution(x, _f(c, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
        return Model([getattr(ops, op)(y, mode, bs)], [x], op)
    return build, shape, dtype


BLOCK_CASES = {}
for mode, bs, nhwc in itertools.product(("blocks_first", "depth_first"), (2, 3), (False, True)):
    tag = f"{mode}-bs{bs}-{'nhwc' if nhwc else 'plain'}"
    BLOCK_CASES[f"d2s-{tag}"] = _block_case("depth_to_space", (2, 5 * bs * bs, 3, 7), mode, bs, nhwc)
    BLOCK_CASES[f"s2d-{tag}"] = _block_case("space_to_depth", (1, 5, 3 * bs, 7 * bs), mode, bs, nhwc)
BLOCK_CASES["d2s-int32"] = _block_case("depth_to_space", (1, 8, 3, 3), "depth_first", 2, dtype=np.int32)
BLOCK_CASES["s2d-one-channel"] = _block_case("space_to_depth", (1, 1, 4, 6), "blocks_first", 2)


@pytest.mark.parametrize("name", list(BLOCK_CASES))
def test_depth_space_matches_reference(name: str) -> None:
    build, shape, dtype = BLOCK_CASES[name]
    model = build()
    x = (_f(*shape) * 10).astype(dtype)
    want = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    got = cm([x])[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    if name.endswith("nhwc"):  # after a convolution: its f32 sums need not be REFERENCE's bit for bit
        # (an ulp or two of sums as large as the largest output, the micro-kernel's order by host)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6 * max(1.0, float(np.abs(want).max())))
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode, coord", [("linear", "half_pixel"), ("linear_onnx", "align_corners"),
                                         ("linear_onnx", "asymmetric"), ("cubic", "pytorch_half_pixel")])
def test_resize_nan_reaches_the_outputs_openvino_gives(mode: str, coord: str) -> None:
    """A NaN reaches the outputs whose taps read it, zero-weight taps included, as in OpenVINO's
    CPU plugin (the REFERENCE device spreads it along whole rows: a dense matrix product)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from oracle import run_openvino

    x = _f(1, 2, 4, 5)
    x[0, 0, 1, 2] = np.nan
    x[0, 1, 3, 0] = np.nan
    sizes, axes = np.array([8, 9], np.int64), np.array([2, 3], np.int64)
    want = run_openvino("interpolate", [x, sizes], mode, "sizes", coordinate_transformation_mode=coord, axes=axes)[0]
    p = ops.parameter([1, 2, 4, 5], np.float32, name="x")
    model = Model([ops.interpolate(p, sizes, mode, "sizes", coordinate_transformation_mode=coord, axes=axes)], [p], "m")
    got = ember.Core().compile_model(model, "CPU")([x])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


# -- Broadcast / Tile ---------------------------------------------------------------------------

def _bcast_case(shape: tuple[int, ...], make, after_conv: bool = False, dtype=np.float32):  # noqa: ANN001, ANN202
    def build() -> Model:
        x = ops.parameter(list(shape), dtype, name="x")
        y = x
        if after_conv:
            c = shape[1]
            y = ops.relu(ops.convolution(x, _f(c, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
        return Model([make(y)], [x], "bcast")
    return build, shape, dtype


BCAST_CASES = {
    "broadcast-numpy-rows": _bcast_case((1, 7), lambda y: ops.broadcast(y, [5, 7])),
    "broadcast-numpy-middle": _bcast_case((3, 1, 5), lambda y: ops.broadcast(y, [2, 3, 4, 5])),
    "broadcast-bidirectional": _bcast_case((3, 1), lambda y: ops.broadcast(y, [1, 4], broadcast_spec="BIDIRECTIONAL")),
    "broadcast-explicit": _bcast_case((3,), lambda y: ops.broadcast(y, [2, 3, 4], [1], "EXPLICIT")),
    "broadcast-scalar-int32": _bcast_case((), lambda y: ops.broadcast(y, [3, 17]), dtype=np.int32),
    "broadcast-nhwc-input": _bcast_case((1, 4, 1, 3), lambda y: ops.broadcast(y, [2, 4, 5, 3]), after_conv=True),
    "tile-2d": _bcast_case((3, 5), lambda y: ops.tile(y, [2, 3])),
    "tile-more-repeats": _bcast_case((4,), lambda y: ops.tile(y, [3, 1, 2])),
    "tile-fewer-repeats-int32": _bcast_case((2, 3, 5), lambda y: ops.tile(y, [4]), dtype=np.int32),
    "tile-4d": _bcast_case((1, 2, 3, 1), lambda y: ops.tile(y, [2, 1, 2, 17])),
}


@pytest.mark.parametrize("name", list(BCAST_CASES))
def test_broadcast_tile_match_reference(name: str) -> None:
    build, shape, dtype = BCAST_CASES[name]
    model = build()
    x = (_f(*shape) * 10).astype(dtype)
    want = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    got = cm([x])[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # a copy; after a convolution, its rounding
