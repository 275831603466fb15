"""Interpolate, TopK, FakeQuantize, Bucketize and NonMaxSuppression against real OpenVINO, from one
table.

By default a case runs OpenVINO's CPU plugin (f32). Where the CPU plugin departs from the op
specification (antialiased ``linear``, ``cube_coeff`` in ``bicubic_pillow``, FakeQuantize at
rounding boundaries, NaN and empty ranges), the case runs OpenVINO's reference implementation
instead (``Node.evaluate`` on constant inputs): ``oracle="ref"``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from test_reduce_norm import (  # noqa: E402
    Case,
    Dyn,
    assert_close,
    case,
    check_infer,
    check_ir_round_trip,
    run_ember_case,
    run_oracle_case,
    same,
)

from oracle import Const  # noqa: E402

ov = pytest.importorskip("openvino")
import openvino.opset1 as ov1  # noqa: E402
import openvino.opset3 as ov3  # noqa: E402
import openvino.opset4 as ov4  # noqa: E402
import openvino.opset5 as ov5  # noqa: E402
import openvino.opset10 as ov10  # noqa: E402
import openvino.opset16 as oo  # noqa: E402

import ember.opset as eo  # noqa: E402
from ember.errors import EmberError, ShapeInferenceError  # noqa: E402
from ember.ops import misc as M  # noqa: E402

rng = np.random.default_rng(11)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def interp(**kw: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Interpolate-11 on both sides; a third input is the axes."""
    return (lambda x, s, a=None: eo.interpolate(x, s, axes=a, **kw),
            lambda x, s, a=None: oo.interpolate(x, s, axes=a, **kw))


def _i64(*v: int) -> Const:
    return Const(np.array(v, dtype=np.int64))


def _f(*v: float) -> Const:
    return Const(np.array(v, dtype=np.float32))


CASES: list[Case] = []
TOL = (1e-4, 1e-5)
INT_TOL = (0.0, 1.0)  # integer results may differ by one where OpenVINO rounds in float32

# -- Interpolate-11 ---------------------------------------------------------------------------
X = f32(1, 2, 5, 7)
AX = _i64(2, 3)
COORDS = ("half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn", "align_corners")
for mode in ("nearest", "linear", "linear_onnx", "cubic", "bilinear_pillow", "bicubic_pillow"):
    cube = -0.5 if mode == "bicubic_pillow" else -0.75  # the CPU plugin fixes Pillow's -0.5
    for coord in COORDS:
        for sizes in ([8, 13], [3, 4], [1, 1], [2, 7]):
            CASES.append(case(f"interp-{mode}-{coord}-sizes{sizes}",
                              interp(mode=mode, shape_calculation_mode="sizes", coordinate_transformation_mode=coord,
                                     cube_coeff=cube), [X, Const(np.array(sizes, np.int64)), AX], TOL))
    for scales in ([2.0, 2.0], [0.5, 0.5], [1.5, 0.75], [1.1, 1.0], [1 / 3, 1.7]):
        CASES.append(case(f"interp-{mode}-scales{scales}", interp(mode=mode, shape_calculation_mode="scales",
                                                                 cube_coeff=cube),
                          [X, Const(np.array(scales, np.float32)), AX], TOL))
for nearest in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"):
    for coord in COORDS:
        for scales in ([2.0, 2.0], [0.5, 0.5], [1.5, 0.75], [0.4, 1.7], [1.0, 3.0]):
            CASES.append(case(f"interp-nearest-{nearest}-{coord}-{scales}",
                              interp(mode="nearest", shape_calculation_mode="scales", nearest_mode=nearest,
                                     coordinate_transformation_mode=coord),
                              [X, Const(np.array(scales, np.float32)), AX]))
X5 = f32(1, 2, 3, 4, 5)
XU8 = rng.integers(0, 255, (1, 2, 5, 7)).astype(np.uint8)
XI32 = rng.integers(-100, 100, (1, 2, 5, 7)).astype(np.int32)
for mode in ("nearest", "linear", "linear_onnx", "cubic"):
    CASES += [
        case(f"interp-{mode}-pads", interp(mode=mode, shape_calculation_mode="sizes", pads_begin=[0, 0, 1, 2],
                                           pads_end=[0, 0, 2, 0]), [X, _i64(9, 6), AX], TOL),
        case(f"interp-{mode}-pads-scales", interp(mode=mode, shape_calculation_mode="scales",
                                                  pads_begin=[0, 0, 1, 2], pads_end=[0, 0, 2]),
             [X, _f(1.5, 0.5), AX], TOL),
        case(f"interp-{mode}-no-axes", interp(mode=mode, shape_calculation_mode="scales"),
             [X, _f(1, 1, 2, 0.5)], TOL),
        case(f"interp-{mode}-5d", interp(mode=mode, shape_calculation_mode="sizes"), [X5, _i64(1, 2, 5, 3, 7)], TOL),
        case(f"interp-{mode}-axes-reversed", interp(mode=mode, shape_calculation_mode="sizes"),
             [X, _i64(8, 3), _i64(3, 2)], TOL),
        case(f"interp-{mode}-2d", interp(mode=mode, shape_calculation_mode="sizes"), [X[0, 0], _i64(8, 3), _i64(0, 1)],
             TOL),
        case(f"interp-{mode}-one-axis", interp(mode=mode, shape_calculation_mode="sizes"),
             [X[0], _i64(11), _i64(2)], TOL),
        case(f"interp-{mode}-runtime-sizes", interp(mode=mode, shape_calculation_mode="sizes"),
             [X, np.array([6, 9], np.int64), AX], TOL),
        case(f"interp-{mode}-runtime-scales", interp(mode=mode, shape_calculation_mode="scales"),
             [X, np.array([0.6, 1.4], np.float32), AX], TOL),
    ]
    for arr in (XU8, XI32):
        CASES.append(case(f"interp-{mode}-{arr.dtype}", interp(mode=mode, shape_calculation_mode="sizes"),
                          [arr, _i64(8, 4), AX], INT_TOL))
CASES += [
    case("interp-bilinear_pillow-u8", interp(mode="bilinear_pillow", shape_calculation_mode="sizes"),
         [XU8, _i64(8, 4), AX], INT_TOL),
    case("interp-bicubic_pillow-u8", interp(mode="bicubic_pillow", shape_calculation_mode="sizes", cube_coeff=-0.5),
         [XU8, _i64(3, 11), AX], INT_TOL),
    case("interp-pillow-nhwc", interp(mode="bilinear_pillow", shape_calculation_mode="sizes"),
         [f32(1, 6, 5, 3), _i64(3, 8), _i64(1, 2)], TOL),
    case("interp-nearest-nan-inf", interp(mode="nearest", shape_calculation_mode="scales"),
         [np.array([[1.0, np.nan], [np.inf, -np.inf]], np.float32), _f(2.0, 1.5)]),
    # what the specification says and the CPU plugin does not do: OpenVINO's reference
    case("interp-bicubic_pillow-a075", interp(mode="bicubic_pillow", shape_calculation_mode="sizes", cube_coeff=-0.75),
         [X, _i64(3, 11), AX], TOL, "ref"),
]
for scales in ([0.5, 0.5], [0.75, 1.25], [0.3, 0.6]):
    for coord in ("half_pixel", "align_corners", "asymmetric"):
        CASES.append(case(f"interp-linear-antialias-{scales}-{coord}",
                          interp(mode="linear", shape_calculation_mode="scales", antialias=True,
                                 coordinate_transformation_mode=coord),
                          [f32(1, 2, 9, 11), Const(np.array(scales, np.float32)), AX], TOL, "ref"))

# -- Interpolate-4 and -1 -----------------------------------------------------------------------
for mode in ("nearest", "linear", "linear_onnx", "cubic"):
    for calc, sizes, scales in (("sizes", [9, 4], [1.0, 1.0]), ("scales", [1, 1], [1.6, 0.5])):
        attrs = dict(mode=mode, shape_calculation_mode=calc, coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
        CASES.append(Case(f"interp4-{mode}-{calc}", lambda d, s, c, a, k=attrs: M.Interpolate4([d, s, c, a], k),
                          lambda d, s, c, a, k=attrs: ov10.interpolate(d, s, c, axes=a, **k),
                          [X, Const(np.array(sizes, np.int64)), Const(np.array(scales, np.float32)), AX], TOL))
        CASES.append(Case(f"interp4-{mode}-{calc}-no-axes", lambda d, s, c, k=attrs: M.Interpolate4([d, s, c], k),
                          lambda d, s, c, k=attrs: ov10.interpolate(d, s, c, **k),
                          [X, Const(np.array([1, 2, *sizes], np.int64)),
                           Const(np.array([1, 1, *scales], np.float32))], TOL))
    for align in (True, False):
        for axes, target, data in (([2, 3], [9, 4], X), ([2, 3], [3, 13], X), ([2], [8], X), ([1, 2], [4, 9], X[0]),
                                   ([2, 3, 4], [4, 6, 3], X5)):
            attrs1 = {"axes": axes, "mode": mode, "align_corners": align}
            CASES.append(Case(f"interp1-{mode}-align{align}-{axes}-{target}",
                              lambda d, t, k=attrs1: M.Interpolate0([d, t], k),
                              lambda d, t, k=attrs1: ov1.interpolate(d, t, k),
                              [data, Const(np.array(target, np.int64))], TOL))

# -- TopK -----------------------------------------------------------------------------------------
XT = rng.integers(0, 5, (3, 6, 4)).astype(np.float32)  # many ties: the lower index must come first
for mode in ("max", "min"):
    for sort in ("value", "index", "none"):
        for axis in (1, -1, 0):
            for k in (1, 3):
                it = "i64" if k == 3 else "i32"
                CASES.append(case(f"topk-{mode}-{sort}-{axis}-k{k}",
                                  same("topk", axis=axis, mode=mode, sort=sort, index_element_type=it),
                                  [XT, Const(np.int64(k))]))
                if sort != "none":
                    CASES.append(case(f"topk-{mode}-{sort}-{axis}-k{k}-stable",
                                      same("topk", axis=axis, mode=mode, sort=sort, stable=True),
                                      [XT, Const(np.int32(k))]))
CASES += [
    case("topk-int", same("topk", axis=1, mode="max", sort="value"), [rng.integers(-9, 9, (3, 6)).astype(np.int32),
                                                                       Const(np.int64(4))]),
    case("topk-runtime-k", same("topk", axis=1, mode="max", sort="value"), [XT, np.array(2, np.int64)]),
    case("topk-inf", same("topk", axis=1, mode="min", sort="value"), [np.array([[1, -np.inf, np.inf, 0]], np.float32),
                                                                      Const(np.int64(3))]),
    case("topk-k-equals-dim", same("topk", axis=1, mode="min", sort="value"), [XT, Const(np.int64(6))]),
    case("topk-size1", same("topk", axis=0, mode="max", sort="index"), [f32(1, 5), Const(np.int8(1))]),
    Case("topk-v1", lambda d, k: M.TopK1([d, k], {"axis": 1, "mode": "max", "sort": "value"}),
         lambda d, k: ov1.topk(d, k, 1, "max", "value"), [XT, Const(np.int64(2))]),
    Case("topk-v3", lambda d, k: M.TopK3([d, k], {"axis": 2, "mode": "min", "sort": "index", "index_element_type": "i64"}),
         lambda d, k: ov3.topk(d, k, 2, "min", "index", "i64"), [XT, Const(np.uint32(2))]),
]

# -- FakeQuantize --------------------------------------------------------------------------------
# values exactly on the rounding boundaries ((x - il) / (ih - il) * (levels - 1) lands on n + 0.5,
# exactly representable, so both OpenVINO's formulas agree), at the range ends and outside it
XQ = np.array([-2, -1, -0.75, -0.5, -0.25, 0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1, 1.5, np.inf, -np.inf],
              np.float32)
for il, ih, ol, oh, levels in ((-1, 1, -1, 1, 5), (-1, 1, 0, 4, 5), (0, 1, 0, 1, 3), (1, -1, -1, 1, 5),
                               (-1, 1, 1, -1, 5), (-1, 1, -1, 1, 2), (0, 1, 0, 255, 256), (-1, 1, -1, 1, 9),
                               (-0.5, 0.5, -8, 8, 17)):
    CASES.append(case(f"fq-{il}-{ih}-{ol}-{oh}-L{levels}", same("fake_quantize", levels=levels),
                      [XQ, *(Const(np.float32(v)) for v in (il, ih, ol, oh))]))
XR = f32(2, 3, 4, 4, scale=3)
IL = -np.abs(f32(1, 3, 1, 1)) - 0.1
IH = np.abs(f32(1, 3, 1, 1)) + 0.1
CASES += [
    case("fq-per-channel", same("fake_quantize", levels=256), [XR, Const(IL), Const(IH), Const(IL * 2), Const(IH * 2)],
         TOL),
    case("fq-runtime-ranges", same("fake_quantize", levels=255), [XR, IL, IH, Const(np.float32(0)),
                                                                   Const(np.float32(254))], TOL),
    case("fq-last-axis", same("fake_quantize", levels=16), [XR, Const(np.full((4,), -1, np.float32)),
                                                             Const(np.linspace(0.5, 2, 4).astype(np.float32)),
                                                             Const(np.float32(-1)), Const(np.float32(1))], TOL),
    # OpenVINO's formula (the reference) where the CPU plugin's scale-and-shift form rounds otherwise,
    # and NaN and an empty input range
    case("fq-ref-rounding", same("fake_quantize", levels=17),
         [np.array([0.625, 0.5, 0.3, 0.1, 0.9, 0.35], np.float32), *(Const(np.float32(v)) for v in (0.1, 0.9, -3, 7))],
         oracle="ref"),
    case("fq-ref-random", same("fake_quantize", levels=256), [XR, Const(IL), Const(IH), Const(IL), Const(IH)],
         oracle="ref"),
    case("fq-ref-nan", same("fake_quantize", levels=5), [np.array([np.nan, 0.5], np.float32),
                                                         *(Const(np.float32(v)) for v in (-1, 1, -1, 1))], oracle="ref"),
    case("fq-ref-empty-range", same("fake_quantize", levels=5), [XQ, *(Const(np.float32(v)) for v in (0.5, 0.5, 0, 1))],
         oracle="ref"),
    case("fq-ref-f16", same("fake_quantize", levels=256),
         [XR.astype(np.float16), *(Const(np.float16(v)) for v in (-2, 2, -1, 1))], oracle="ref"),
]

# -- Bucketize -----------------------------------------------------------------------------------
BUCKETS = np.array([-1, 0, 0.5, 2, 10], np.float32)
XB = np.array([-3, -1, -0.5, 0, 0.25, 0.5, 1, 2, 5, 10, 11, np.inf, -np.inf, np.nan], np.float32)
for right in (True, False):
    for ot in ("i32", "i64"):
        CASES += [
            case(f"bucketize-right{right}-{ot}", same("bucketize", output_type=ot, with_right_bound=right),
                 [XB, Const(BUCKETS)]),
            case(f"bucketize-right{right}-{ot}-int", same("bucketize", output_type=ot, with_right_bound=right),
                 [np.arange(-3, 12).astype(np.int32), Const(np.array([0, 3, 3, 7], np.int64))]),
        ]
CASES += [
    case("bucketize-no-buckets", same("bucketize"), [XB, Const(np.zeros(0, np.float32))]),
    case("bucketize-runtime-buckets", same("bucketize", with_right_bound=False), [XB.reshape(2, 7), BUCKETS]),
]


# -- NonMaxSuppression-5/9 ----------------------------------------------------------------------
def _boxes(batches: int, n: int, classes: int, center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    yx = rng.uniform(0, 10, (batches, n, 2))
    hw = rng.uniform(0.5, 4, (batches, n, 2))
    boxes = np.concatenate([yx + hw / 2, hw], -1) if center else np.concatenate([yx + hw, yx], -1)  # corners flipped
    return boxes.astype(np.float32), rng.uniform(0, 1, (batches, classes, n)).astype(np.float32)


for shape in ((1, 6, 1), (2, 20, 3), (1, 50, 2)):
    for enc in ("corner", "center"):
        boxes, scores = _boxes(*shape, center=enc == "center")
        for m, iou, st, sigma in ((3, 0.5, 0.0, 0.0), (10, 0.3, 0.2, 0.0), (100, 0.7, 0.0, 0.0), (5, 0.5, 0.1, 0.5),
                                  (20, 0.4, 0.3, 0.2)):
            for desc in (True, False):
                ins = [boxes, scores, Const(np.int64(m)), Const(np.float32(iou)), Const(np.float32(st)),
                       Const(np.float32(sigma))]
                tag = f"{shape}-{enc}-m{m}-iou{iou}-st{st}-sigma{sigma}-desc{desc}"
                CASES.append(case(f"nms9-{tag}", same("non_max_suppression", box_encoding=enc,
                                                      sort_result_descending=desc, output_type="i32"), ins))
                CASES.append(Case(f"nms5-{tag}",
                                  lambda *n, e=enc, d=desc: M.NonMaxSuppression5(
                                      list(n), {"box_encoding": e, "sort_result_descending": d}),
                                  lambda *n, e=enc, d=desc: ov5.non_max_suppression(
                                      *n, box_encoding=e, sort_result_descending=d), ins))
# an IoU exactly at the threshold suppresses; equal scores keep the lower box index first
EDGE_BOXES = np.array([[[0, 0, 1, 3], [0, 1, 1, 4], [0, 10, 1, 11], [0, 20, 1, 21]]], np.float32)
EDGE_SCORES = np.array([[[0.9, 0.8, 0.5, 0.5]]], np.float32)
CASES.append(case("nms9-iou-at-threshold", same("non_max_suppression"),
                  [EDGE_BOXES, EDGE_SCORES, Const(np.int64(5)), Const(np.float32(0.5)), Const(np.float32(0.0)),
                   Const(np.float32(0.0))]))


# -- SpaceToBatch, BatchToSpace ------------------------------------------------------------------
for shape, block, begin, end in (((2, 3, 4, 5), [1, 1, 2, 5], [0, 0, 0, 2], [0, 0, 2, 3]),
                                 ((1, 2, 6), [1, 2, 3], [0, 0, 0], [0, 0, 0]),
                                 ((3, 4), [1, 4], [0, 1], [0, 3]),
                                 ((1, 2, 3, 4, 2), [1, 1, 3, 2, 2], [0, 0, 1, 0, 1], [0, 0, 2, 0, 1])):
    block_pads = [Const(np.array(v, np.int64)) for v in (block, begin, end)]
    CASES.append(case(f"space_to_batch-{shape}-{block}", same("space_to_batch"), [f32(*shape), *block_pads]))
    spaced = run_ember_case(case("s2b", same("space_to_batch"), [f32(*shape), *block_pads]))[0]
    CASES.append(case(f"batch_to_space-{spaced.shape}-{block}", same("batch_to_space"), [spaced, *block_pads]))
CASES += [
    case("batch_to_space-i32-params", same("batch_to_space"),
         [f32(12, 3, 4, 5), *(Const(np.array(v, np.int32)) for v in ([1, 1, 2, 3], [0, 0, 0, 1], [0, 0, 1, 1]))]),
    case("space_to_batch-runtime-block", same("space_to_batch"),
         [f32(2, 3, 4, 6), np.array([1, 1, 2, 3], np.int64), np.array([0, 0, 0, 0], np.int64),
          np.array([0, 0, 2, 0], np.int64)]),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_matches_openvino(c: Case) -> None:
    assert_close(run_ember_case(c), run_oracle_case(c), c.tol)


STATIC_NMS = [
    ("v1", lambda *n: M.NonMaxSuppression1(list(n)), lambda *n: ov1.non_max_suppression(*n)),
    ("v3", lambda *n: M.NonMaxSuppression3(list(n), {"output_type": "i32"}),
     lambda *n: ov3.non_max_suppression(*n, output_type="i32")),
    ("v4", lambda *n: M.NonMaxSuppression4(list(n), {"sort_result_descending": False}),
     lambda *n: ov4.non_max_suppression(*n, sort_result_descending=False)),
]


@pytest.mark.parametrize("ours,theirs", [(a, b) for _, a, b in STATIC_NMS], ids=[s[0] for s in STATIC_NMS])
def test_static_nms_pads_with_minus_one(ours: Callable[..., Any], theirs: Callable[..., Any]) -> None:
    # the CPU plugin returns only the selected rows; the specification pads to the static size with -1
    # (one batch: NMS-1/3's static size, min(boxes, max_output * classes), does not count batches)
    boxes, scores = _boxes(1, 12, 3)
    c = Case("nms-static", ours, theirs, [boxes, scores, Const(np.int64(4)), Const(np.float32(0.3)),
                                          Const(np.float32(0.2))])
    (mine,), (cpu,) = run_ember_case(c), run_oracle_case(c)
    assert mine.dtype == cpu.dtype
    np.testing.assert_array_equal(mine[: len(cpu)], cpu)
    assert (mine[len(cpu):] == -1).all()


def test_topk_k_beyond_the_axis_is_an_error() -> None:
    c = case("topk-k-too-big", same("topk", axis=1, mode="max", sort="value"), [f32(2, 3), Const(np.int64(5))])
    with pytest.raises(EmberError, match="exceeds"):
        run_ember_case(c)


# -- inference with dynamic, bounded and dynamic-rank shapes -----------------------------------
INFER: list[Case] = [
    case("interp-sizes-bounded", interp(mode="nearest", shape_calculation_mode="sizes"),
         [Dyn("1,3,2..10,?"), _i64(5, 7), AX]),
    case("interp-scales-bounded", interp(mode="linear", shape_calculation_mode="scales"),
         [Dyn("1,3,2..10,?"), _f(2.5, 0.7), AX]),
    case("interp-scales-epsilon", interp(mode="linear", shape_calculation_mode="scales"),
         [Dyn("1,3,3,10"), _f(0.3333333, 0.69999), AX]),
    case("interp-scales-1000", interp(mode="linear", shape_calculation_mode="scales"), [Dyn("1000"), _f(0.0069999)]),
    case("interp-pads-bounded", interp(mode="nearest", shape_calculation_mode="scales", pads_begin=[0, 1, 2, 3],
                                       pads_end=[1, 1]), [Dyn("1,3,2..10,?"), _f(1.5, 1.5), _i64(3, 2)]),
    case("interp-long-pads", interp(mode="nearest", shape_calculation_mode="sizes", pads_begin=[0, 1, 2, 3, 4, 5],
                                    pads_end=[1, 1]), [Dyn("1,3,2..10,?"), _i64(5, 7), _i64(3, 2)]),
    case("interp-dyn-rank", interp(mode="nearest", shape_calculation_mode="scales"), [Dyn("..."), _f(2, 2), AX]),
    case("interp-runtime-scales", interp(mode="nearest", shape_calculation_mode="scales"), [Dyn("1,2,3,4"), Dyn("4")]),
    case("interp-runtime-sizes", interp(mode="nearest", shape_calculation_mode="sizes"),
         [Dyn("1,2,3,4"), Dyn("2", np.int64), AX]),
    case("interp-runtime-axes", interp(mode="nearest", shape_calculation_mode="sizes", pads_begin=[1, 1, 1, 1]),
         [Dyn("1,2,3,4"), _i64(5, 6), Dyn("2", np.int64)]),
    case("interp-u8", interp(mode="nearest", shape_calculation_mode="sizes"), [Dyn("?,3,?,?", np.uint8), _i64(5, 6),
                                                                                AX]),
    Case("interp1-dyn", lambda d, t: M.Interpolate0([d, t], {"axes": [2, 3], "mode": "linear"}),
         lambda d, t: ov1.interpolate(d, t, {"axes": [2, 3], "mode": "linear"}), [Dyn("?,3,?,4..8"), _i64(5, 6)]),
    Case("interp1-runtime-target", lambda d, t: M.Interpolate0([d, t], {"axes": [1], "mode": "nearest"}),
         lambda d, t: ov1.interpolate(d, t, {"axes": [1], "mode": "nearest"}), [Dyn("2,3,4"), Dyn("1", np.int64)]),
    case("topk-const-k", same("topk", axis=1, mode="max", sort="value"), [Dyn("2,?,3..9"), Const(np.int64(4))]),
    case("topk-neg-axis", same("topk", axis=-1, mode="max", sort="value"), [Dyn("2,?,3..9"), Const(np.int64(4))]),
    case("topk-k-above-dim", same("topk", axis=1, mode="max", sort="value"), [Dyn("2,3,4"), Const(np.int64(10))]),
    case("topk-runtime-k", same("topk", axis=2, mode="max", sort="value"), [Dyn("2,?,3..9"), Dyn("", np.int64)]),
    case("topk-runtime-k-i64", same("topk", axis=1, mode="min", sort="none", index_element_type="i64"),
         [Dyn("2,5,3..9"), Dyn("", np.int32)]),
    case("topk-dyn-rank", same("topk", axis=1, mode="max", sort="value"), [Dyn("..."), Const(np.int64(4))]),
    case("fq-dyn", same("fake_quantize", levels=256), [Dyn("?,3,?,?"), Dyn("1,3,1,1"), Dyn("1,3,1,1"), _f(0), _f(1)]),
    case("fq-broadcast-up", same("fake_quantize", levels=256), [Dyn("?,1"), Dyn("1,4"), _f(1), _f(0), _f(1)]),
    case("fq-dyn-rank", same("fake_quantize", levels=256), [Dyn("..."), _f(0), _f(1), _f(0), _f(1)]),
    case("bucketize-dyn", same("bucketize", output_type="i32"), [Dyn("?,2..4"), Dyn("?")]),
    case("nms9-static", same("non_max_suppression"), [Dyn("2,5,4"), Dyn("2,3,5"), Const(np.int64(3)), _f(0.5), _f(0),
                                                      _f(0)]),
    case("nms9-bounded", same("non_max_suppression"), [Dyn("2,1..5,4"), Dyn("2,3,1..5"), Const(np.int64(3)), _f(0.5),
                                                       _f(0), _f(0)]),
    case("nms9-unbounded", same("non_max_suppression"), [Dyn("2,?,4"), Dyn("2,3,?"), Const(np.int64(3)), _f(0.5),
                                                         _f(0), _f(0)]),
    case("nms9-runtime-max", same("non_max_suppression", output_type="i32"),
         [Dyn("2,5,4"), Dyn("2,3,5"), Dyn("", np.int64), _f(0.5), _f(0), _f(0)]),
    case("nms9-defaults", same("non_max_suppression"), [Dyn("1,10,4"), Dyn("1,2,10")]),
    case("nms9-dyn-rank", same("non_max_suppression"), [Dyn("..."), Dyn("..."), Const(np.int64(3))]),
    Case("nms4-static", lambda *n: M.NonMaxSuppression4(list(n)), lambda *n: ov4.non_max_suppression(*n),
         [Dyn("2,5,4"), Dyn("2,3,5"), Const(np.int64(3))]),
    Case("nms4-bounded", lambda *n: M.NonMaxSuppression4(list(n)), lambda *n: ov4.non_max_suppression(*n),
         [Dyn("2,1..5,4"), Dyn("2,3,1..5"), Const(np.int64(3))]),
    Case("nms3-static", lambda *n: M.NonMaxSuppression3(list(n)), lambda *n: ov3.non_max_suppression(*n),
         [Dyn("2,5,4"), Dyn("2,3,5"), Const(np.int64(30))]),
    Case("nms1-static", lambda *n: M.NonMaxSuppression1(list(n)), lambda *n: ov1.non_max_suppression(*n),
         [Dyn("2,5,4"), Dyn("2,3,5"), Const(np.int64(1))]),
    case("space_to_batch-bounded", same("space_to_batch"), [Dyn("?,3,4..8,?"), _i64(1, 1, 2, 5), _i64(0, 0, 0, 2),
                                                              _i64(0, 0, 2, 3)]),
    case("space_to_batch-intervals", same("space_to_batch"), [Dyn("2..4,3,4..9,10..20"), _i64(1, 1, 2, 5),
                                                                _i64(0, 0, 0, 0), _i64(0, 0, 0, 0)]),
    case("space_to_batch-dyn-rank", same("space_to_batch"), [Dyn("..."), _i64(1, 2), _i64(0, 0), _i64(0, 0)]),
    case("space_to_batch-runtime-block", same("space_to_batch"), [Dyn("2,3,4,5"), Dyn("4", np.int64),
                                                                    _i64(0, 0, 0, 0), _i64(0, 0, 0, 0)]),
    case("batch_to_space-bounded", same("batch_to_space"), [Dyn("?,3,4..8,?"), _i64(1, 1, 2, 3), _i64(0, 0, 0, 1),
                                                              _i64(0, 0, 1, 1)]),
    case("batch_to_space-intervals", same("batch_to_space"), [Dyn("6..18,3,4..8,2.."), _i64(1, 1, 2, 3),
                                                                _i64(0, 0, 0, 1), _i64(0, 0, 1, 1)]),
    Case("nms1-runtime-max", lambda *n: M.NonMaxSuppression1(list(n)), lambda *n: ov1.non_max_suppression(*n),
         [Dyn("2,5,4"), Dyn("2,3,5"), Dyn("", np.int64)]),
]


@pytest.mark.parametrize("c", INFER, ids=[c.id for c in INFER])
def test_inference_matches_openvino(c: Case) -> None:
    check_infer(c)


def test_ir_round_trip_with_openvino(tmp_path: Path) -> None:
    check_ir_round_trip(tmp_path, lambda p: [
        eo.interpolate(p, np.array([3, 9], np.int64), "cubic", "sizes", axes=np.array([2, 3], np.int64)),
        eo.interpolate(p, np.array([0.5, 2], np.float32), "bilinear_pillow", "scales", axes=np.array([2, 3])),
        M.Interpolate4([p, np.array([12], np.int64), np.array([2.0], np.float32), np.array([3], np.int64)],
                       {"mode": "linear", "shape_calculation_mode": "scales", "pads_begin": [0, 0, 1, 0]}),
        M.Interpolate0([p, np.array([8, 8], np.int64)], {"axes": [2, 3], "mode": "nearest", "align_corners": False}),
        eo.topk(p, np.int64(3), 1, "max", "value", "i64", True).output(0),
        M.TopK1([p, np.int64(2)], {"axis": -1, "mode": "min", "sort": "index"}).output(1),
        M.TopK3([p, np.int32(2)], {"axis": 2, "mode": "max", "sort": "none", "index_element_type": "i64"}).output(1),
        eo.fake_quantize(p, np.float32(-1), np.float32(1), np.float32(0), np.float32(255), 256),
        eo.bucketize(p, np.array([-1, 0, 1], np.float32), "i32", False),
        eo.space_to_batch(p, np.array([1, 1, 2, 3]), np.zeros(4, np.int64), np.array([0, 0, 0, 3])),
        eo.batch_to_space(p, np.array([1, 1, 2, 1]), np.array([0, 0, 1, 0]), np.array([0, 0, 0, 2])),
        eo.non_max_suppression(eo.reshape(p, np.array([2, 72, 4]), False), eo.reshape(p, np.array([2, 4, 72]), False),
                               np.int64(5), np.float32(0.5), np.float32(0.1), box_encoding="center").output(0),
    ], [2, 4, 6, 12])


def test_interpolate_writes_pads_like_openvino() -> None:
    node = eo.interpolate(eo.parameter([1, 3, 4, 4]), np.array([8, 8], np.int64), "nearest", "sizes",
                          axes=np.array([2, 3], np.int64))
    assert node.attrs["pads_begin"] == [0, 0, 0, 0] and node.attrs["pads_end"] == [0, 0, 0, 0]
    assert node.get_type_info() == ("Interpolate", "opset11")


# -- errors a user can cause -----------------------------------------------------------------

P4 = [1, 3, 4, 4]
ERRORS = [
    ("interp mode", lambda: eo.interpolate(eo.parameter(P4), np.array([2.0], np.float32), "bogus", "scales"), "mode"),
    ("interp negative axis", lambda: eo.interpolate(eo.parameter(P4), np.array([8], np.int64), "nearest", "sizes",
                                                    axes=np.array([-1], np.int64)), "axis -1"),
    ("interp float sizes", lambda: eo.interpolate(eo.parameter(P4), np.array([8.0], np.float32), "nearest", "sizes",
                                                  axes=np.array([2], np.int64)), "sizes"),
    ("interp too few sizes", lambda: eo.interpolate(eo.parameter(P4), np.array([8], np.int64), "nearest", "sizes"),
     "1 values for 4 axes"),
    ("topk k shape", lambda: eo.topk(eo.parameter(P4), np.array([2], np.int64), 1, "max", "value"), "scalar"),
    ("topk negative k", lambda: eo.topk(eo.parameter(P4), np.array(-1, np.int64), 1, "max", "value"), "non-negative"),
    ("topk axis", lambda: eo.topk(eo.parameter(P4), np.array(1, np.int64), 4, "max", "value"), "axis 4"),
    ("topk stable none", lambda: eo.topk(eo.parameter(P4), np.array(1, np.int64), 1, "max", "none", stable=True),
     "stable"),
    ("topk v1 k type", lambda: M.TopK1([eo.parameter(P4), np.array(1, np.uint64)],
                                       {"axis": 1, "mode": "max", "sort": "value"}), "k must be"),
    ("fq levels", lambda: eo.fake_quantize(eo.parameter(P4), 0.0, 1.0, 0.0, 1.0, 1), "levels"),
    ("fq shapes", lambda: eo.fake_quantize(eo.parameter(P4), np.zeros(3, np.float32), 1.0, 0.0, 1.0, 256),
     "broadcast"),
    ("bucketize output type", lambda: eo.bucketize(eo.parameter(P4), np.zeros(3, np.float32), "f32"), "output_type"),
    ("nms boxes", lambda: eo.non_max_suppression(eo.parameter([1, 5, 3]), eo.parameter([1, 2, 5])), "boxes"),
    ("nms boxes vs scores", lambda: eo.non_max_suppression(eo.parameter([1, 5, 4]), eo.parameter([1, 2, 6])),
     "disagree"),
    ("space_to_batch divisible", lambda: eo.space_to_batch(eo.parameter([2, 3, 5, 5]), np.array([1, 1, 2, 5]),
                                                           np.zeros(4, np.int64), np.zeros(4, np.int64)), "multiple"),
    ("batch_to_space divisible", lambda: eo.batch_to_space(eo.parameter([10, 3, 4, 5]), np.array([1, 1, 2, 3]),
                                                           np.zeros(4, np.int64), np.zeros(4, np.int64)), "multiple"),
    ("space_to_batch block length", lambda: eo.space_to_batch(eo.parameter([2, 3, 4]), np.array([1, 2]),
                                                              np.zeros(2, np.int64), np.zeros(2, np.int64)),
     "2 values for a rank-3"),
]


@pytest.mark.parametrize("make,needle", [(m, n) for _, m, n in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_node(make: Callable[[], Any], needle: str) -> None:
    with pytest.raises(ShapeInferenceError, match=needle) as info:
        make()
    assert "'" in str(info.value)  # the message names the node
