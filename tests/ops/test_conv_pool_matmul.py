"""Convolutions, pooling and MatMul against real OpenVINO: values from one table of cases,
shape inference (static, dynamic, bounded) against OpenVINO's own, attributes as its IR writes
them, errors, and a speed budget for ResNet-50's convolutions."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ember.opset as eo  # noqa: E402
from ember.devices.reference import run_model  # noqa: E402
from ember.errors import ShapeInferenceError  # noqa: E402
from ember.graph import Model  # noqa: E402
from ember.graph.shape import Dimension, PartialShape  # noqa: E402
from ember.ops import conv, pool  # noqa: E402
from oracle import Const, compare_with_openvino, run_ember  # noqa: E402

ov = pytest.importorskip("openvino")
oo = pytest.importorskip("openvino.opset16")


@dataclass
class Case:
    """One oracle comparison: ``builder(*inputs, *args, **kwargs)`` in ember and OpenVINO.

    ``shapes`` are random inputs (``("c", shape)`` makes a constant); ``dtype`` their type."""

    id: str
    builder: str
    shapes: list[Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    dtype: Any = np.float32
    tol: float = 1e-4
    output_index: int | None = None

    def inputs(self) -> list[Any]:
        rng = np.random.default_rng(abs(hash(self.id)) % (1 << 32))
        out = []
        for s in self.shapes:
            const = isinstance(s, tuple) and len(s) == 2 and s[0] == "c"
            shape = s[1] if const else s
            if np.dtype(self.dtype).kind in "iu":
                arr = rng.integers(-4, 5, size=shape).astype(self.dtype)
            else:
                arr = rng.standard_normal(shape).astype(self.dtype)
            out.append(Const(arr) if const else arr)
        return out


def C(shape: tuple) -> tuple:
    return ("c", shape)


def _conv(id: str, x: tuple, w: tuple, s: list, pb: list, pe: list, d: list, pad: str = "explicit",
          **kw: Any) -> Case:
    return Case(id, "convolution", [x, C(w)], (s, pb, pe, d, pad), **kw)


def _gconv(id: str, x: tuple, w: tuple, s: list, pb: list, pe: list, d: list, pad: str = "explicit",
           **kw: Any) -> Case:
    return Case(id, "group_convolution", [x, C(w)], (s, pb, pe, d, pad), **kw)


def _deconv(id: str, x: tuple, w: tuple, grouped: bool = False, **kwargs: Any) -> Case:
    dtype = kwargs.pop("dtype", np.float32)
    tol = kwargs.pop("tol", 1e-4)
    b = "group_convolution_backprop_data" if grouped else "convolution_backprop_data"
    if "output_shape" in kwargs:
        kwargs["output_shape"] = np.array(kwargs["output_shape"], np.int64)
    return Case(id, b, [x, C(w)], (), kwargs, dtype=dtype, tol=tol)


def _mp(id: str, x: tuple, s: list, d: list, pb: list, pe: list, k: list, out: int | None = None, **kw: Any) -> Case:
    dtype, tol = kw.pop("dtype", np.float32), kw.pop("tol", 1e-4)
    return Case(id, "max_pool", [x], (s, d, pb, pe, k), kw, dtype=dtype, tol=tol, output_index=out)


def _ap(id: str, x: tuple, s: list, pb: list, pe: list, k: list, exclude: bool, **kw: Any) -> Case:
    dtype, tol = kw.pop("dtype", np.float32), kw.pop("tol", 1e-4)
    kw.setdefault("dilations", [1] * len(k))  # OpenVINO 2026.4's CPU plugin crashes on empty dilations
    return Case(id, "avg_pool", [x], (s, pb, pe, k, exclude), kw, dtype=dtype, tol=tol)


F16 = dict(dtype=np.float16, tol=2e-2)

CASES: list[Case] = [
    # -- Convolution ---------------------------------------------------------------------
    _conv("conv2d-basic", (1, 3, 8, 8), (4, 3, 3, 3), [1, 1], [0, 0], [0, 0], [1, 1]),
    _conv("conv2d-odd-asym", (2, 3, 9, 10), (5, 3, 3, 2), [2, 1], [1, 0], [0, 2], [1, 2]),
    _conv("conv2d-stride3-dil2", (1, 4, 13, 11), (3, 4, 3, 3), [3, 2], [2, 1], [1, 2], [2, 2]),
    _conv("conv2d-1x1", (3, 8, 5, 7), (6, 8, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]),
    _conv("conv2d-1x1-stride2", (1, 8, 7, 7), (6, 8, 1, 1), [2, 2], [0, 0], [0, 0], [1, 1]),
    _conv("conv2d-7x7-s2", (1, 3, 23, 23), (8, 3, 7, 7), [2, 2], [3, 3], [3, 3], [1, 1]),
    _conv("conv2d-same-upper", (1, 3, 9, 10), (4, 3, 3, 2), [2, 3], [0, 0], [0, 0], [1, 1], "same_upper"),
    _conv("conv2d-same-lower", (1, 3, 9, 10), (4, 3, 3, 2), [2, 3], [0, 0], [0, 0], [2, 1], "same_lower"),
    _conv("conv2d-same-upper-even", (1, 2, 8, 8), (2, 2, 4, 4), [1, 1], [0, 0], [0, 0], [1, 1], "same_upper"),
    _conv("conv2d-same-lower-even", (1, 2, 8, 8), (2, 2, 4, 4), [1, 1], [0, 0], [0, 0], [1, 1], "same_lower"),
    _conv("conv2d-valid-ignores-pads", (1, 3, 9, 10), (4, 3, 3, 2), [2, 3], [5, 5], [5, 5], [2, 1], "valid"),
    _conv("conv2d-kernel-equals-input", (2, 3, 4, 5), (2, 3, 4, 5), [1, 1], [0, 0], [0, 0], [1, 1]),
    _conv("conv1d", (2, 3, 11), (4, 3, 3), [2], [1], [1], [1]),
    _conv("conv1d-dilated-same", (1, 2, 10), (3, 2, 3), [1], [0], [0], [3], "same_upper"),
    _conv("conv3d", (1, 3, 5, 6, 7), (4, 3, 3, 2, 3), [1, 2, 1], [1, 0, 2], [0, 1, 1], [1, 1, 2]),
    _conv("conv3d-batch", (2, 2, 4, 4, 4), (3, 2, 2, 2, 2), [2, 2, 2], [0, 0, 0], [1, 1, 1], [1, 1, 1]),
    _conv("conv2d-f16", (1, 3, 9, 8), (4, 3, 3, 3), [1, 2], [1, 1], [1, 0], [1, 1], **F16),
    _conv("conv3d-f16-same", (1, 2, 4, 5, 6), (3, 2, 2, 3, 2), [2, 1, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1],
          "same_upper", **F16),
    # -- GroupConvolution ----------------------------------------------------------------
    _gconv("gconv2d", (2, 6, 9, 10), (3, 4, 2, 3, 3), [1, 2], [1, 1], [1, 0], [1, 1]),
    _gconv("gconv2d-depthwise", (2, 6, 9, 10), (6, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]),
    _gconv("gconv2d-depthwise-mult2-same", (1, 6, 9, 10), (6, 2, 1, 3, 3), [2, 2], [0, 0], [0, 0], [1, 1],
           "same_upper"),
    _gconv("gconv2d-depthwise-dilated", (1, 4, 11, 11), (4, 1, 1, 3, 3), [1, 1], [2, 2], [2, 2], [2, 2]),
    _gconv("gconv2d-one-group", (1, 3, 7, 7), (1, 4, 3, 3, 3), [1, 1], [0, 0], [0, 0], [1, 1]),
    _gconv("gconv1d", (2, 4, 9), (2, 3, 2, 3), [2], [1], [0], [1]),
    _gconv("gconv3d-same-lower", (1, 4, 5, 5, 6), (2, 2, 2, 3, 2, 3), [1, 2, 2], [0, 0, 0], [0, 0, 0],
           [1, 1, 1], "same_lower"),
    _gconv("gconv2d-f16", (1, 4, 8, 8), (4, 1, 1, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1], **F16),
    # -- ConvolutionBackpropData ----------------------------------------------------------
    _deconv("deconv2d-s2", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2]),
    _deconv("deconv2d-pads-dil-outpad", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 3], pads_begin=[1, 0],
            pads_end=[0, 2], dilations=[1, 2], output_padding=[1, 1]),
    _deconv("deconv2d-output-shape", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2], output_shape=[11, 13]),
    _deconv("deconv2d-output-shape-pads", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2], output_shape=[11, 13],
            pads_begin=[1, 2], pads_end=[0, 1]),
    _deconv("deconv2d-output-shape-same-upper", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2],
            output_shape=[10, 12], auto_pad="same_upper"),
    _deconv("deconv2d-output-shape-same-lower", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2],
            output_shape=[10, 12], auto_pad="same_lower"),
    _deconv("deconv2d-output-shape-same-outpad", (1, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2],
            output_shape=[9, 11], auto_pad="same_upper", output_padding=[1, 0]),
    _deconv("deconv2d-same-no-output-shape", (2, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2], auto_pad="same_upper"),
    _deconv("deconv2d-valid", (1, 4, 5, 6), (4, 3, 3, 3), strides=[2, 2], pads_begin=[3, 3], pads_end=[1, 1],
            auto_pad="valid"),
    _deconv("deconv1d-dilated", (1, 2, 5), (2, 3, 3), strides=[3], dilations=[2]),
    _deconv("deconv3d", (1, 2, 3, 4, 5), (2, 3, 2, 3, 2), strides=[2, 1, 2], pads_begin=[1, 0, 0],
            pads_end=[0, 1, 1]),
    _deconv("deconv2d-k1-s1", (2, 3, 4, 4), (3, 5, 1, 1), strides=[1, 1]),
    _deconv("deconv2d-f16", (1, 3, 4, 5), (3, 2, 3, 3), strides=[2, 2], pads_begin=[1, 1], pads_end=[1, 1],
            **F16),
    # -- GroupConvolutionBackpropData ------------------------------------------------------
    _deconv("gdeconv2d", (2, 6, 5, 6), (3, 2, 4, 3, 3), grouped=True, strides=[2, 1], pads_begin=[1, 0],
            pads_end=[0, 1], output_padding=[1, 0]),
    _deconv("gdeconv2d-output-shape-same-lower", (2, 6, 5, 6), (3, 2, 4, 3, 3), grouped=True, strides=[2, 1],
            output_shape=[12, 7], auto_pad="same_lower"),
    _deconv("gdeconv2d-depthwise", (1, 4, 5, 5), (4, 1, 1, 4, 4), grouped=True, strides=[2, 2],
            pads_begin=[1, 1], pads_end=[1, 1]),
    _deconv("gdeconv1d", (1, 4, 6), (2, 2, 3, 3), grouped=True, strides=[2], dilations=[2]),
    _deconv("gdeconv3d", (1, 4, 3, 3, 3), (2, 2, 1, 2, 2, 2), grouped=True, strides=[2, 2, 2]),
    # -- MatMul ----------------------------------------------------------------------------
    Case("mm-2d", "matmul", [(3, 4), (4, 5)], (False, False)),
    Case("mm-ta", "matmul", [(4, 3), (4, 5)], (True, False)),
    Case("mm-tb", "matmul", [(3, 4), (5, 4)], (False, True)),
    Case("mm-ta-tb", "matmul", [(4, 3), (5, 4)], (True, True)),
    Case("mm-1d-x-2d", "matmul", [(4,), (4, 5)], (False, False)),
    Case("mm-1d-x-2d-transposes-ignored-for-1d", "matmul", [(4,), (5, 4)], (True, True)),
    Case("mm-2d-x-1d", "matmul", [(3, 4), (4,)], (False, False)),
    Case("mm-2d-x-1d-ta", "matmul", [(4, 3), (4,)], (True, True)),
    Case("mm-1d-x-1d", "matmul", [(4,), (4,)], (False, False)),
    Case("mm-1d-x-3d", "matmul", [(3,), (2, 3, 4)], (False, False)),
    Case("mm-3d-x-1d", "matmul", [(2, 3, 4), (4,)], (False, False)),
    Case("mm-batch-broadcast", "matmul", [(2, 1, 3, 4), (5, 4, 6)], (False, False)),
    Case("mm-batch-broadcast-both", "matmul", [(5, 1, 3, 4), (1, 6, 2, 4)], (False, True)),
    Case("mm-3d-x-2d-weights", "matmul", [(2, 3, 4), C((4, 6))], (False, False)),
    Case("mm-fc-tb-const", "matmul", [(2, 16), C((10, 16))], (False, True)),
    Case("mm-empty-m", "matmul", [(2, 0, 4), (4, 3)], (False, False)),
    Case("mm-empty-k", "matmul", [(2, 3, 0), (0, 4)], (False, False)),
    Case("mm-f16", "matmul", [(3, 16), (16, 5)], (False, False), **F16),
    Case("mm-i32", "matmul", [(2, 3, 4), (2, 5, 4)], (False, True), dtype=np.int32, tol=0),
    Case("mm-i64-1d", "matmul", [(4,), (4, 3)], (False, False), dtype=np.int64, tol=0),
    # -- MaxPool (v14 through the builder) --------------------------------------------------
    _mp("mp2d", (2, 3, 8, 8), [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]),
    _mp("mp2d-indices", (2, 3, 8, 8), [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], out=1),
    _mp("mp2d-3x3-s2-pad", (1, 4, 9, 10), [2, 2], [1, 1], [1, 1], [1, 1], [3, 3]),
    _mp("mp2d-asym-dil", (2, 3, 9, 10), [2, 1], [2, 1], [1, 0], [0, 2], [2, 3]),
    _mp("mp2d-asym-dil-indices", (2, 3, 9, 10), [2, 1], [2, 1], [1, 0], [0, 2], [2, 3], out=1),
    _mp("mp2d-ceil", (1, 2, 7, 8), [2, 3], [1, 1], [0, 0], [1, 1], [2, 2], rounding_type="ceil"),
    _mp("mp2d-ceil-torch", (1, 2, 7, 8), [2, 3], [1, 1], [1, 1], [1, 1], [2, 2], rounding_type="ceil_torch"),
    _mp("mp2d-ceil-torch-indices", (1, 2, 7, 8), [2, 3], [1, 1], [1, 1], [1, 1], [2, 2], out=1,
        rounding_type="ceil_torch"),
    _mp("mp2d-same-upper", (1, 3, 7, 8), [2, 2], [1, 1], [0, 0], [0, 0], [3, 2], auto_pad="same_upper"),
    _mp("mp2d-same-lower-indices", (1, 3, 7, 8), [2, 2], [1, 1], [0, 0], [0, 0], [3, 2], out=1,
        auto_pad="same_lower"),
    _mp("mp2d-valid-ceil", (1, 3, 7, 8), [2, 3], [1, 1], [4, 4], [4, 4], [2, 2], auto_pad="valid",
        rounding_type="ceil"),
    _mp("mp2d-axis1-indices", (2, 3, 5, 6), [2, 1], [1, 2], [1, 0], [0, 2], [2, 3], out=1, axis=1),
    _mp("mp2d-axis2-indices-i32", (2, 3, 5, 6), [2, 1], [1, 2], [1, 0], [0, 2], [2, 3], out=1, axis=2,
        index_element_type="i32"),
    _mp("mp2d-axis-neg1-indices", (2, 3, 5, 6), [1, 1], [1, 1], [0, 0], [0, 0], [2, 2], out=1, axis=-1),
    _mp("mp1d", (2, 3, 11), [2], [1], [1], [1], [3]),
    _mp("mp1d-indices-dil", (2, 3, 11), [1], [3], [0], [0], [3], out=1),
    _mp("mp3d", (1, 2, 5, 6, 7), [1, 2, 2], [1, 1, 2], [1, 0, 1], [0, 1, 1], [2, 2, 3]),
    _mp("mp3d-indices", (1, 2, 5, 6, 7), [1, 2, 2], [1, 1, 2], [1, 0, 1], [0, 1, 1], [2, 2, 3], out=1),
    _mp("mp2d-i32", (1, 2, 6, 6), [2, 2], [1, 1], [1, 1], [0, 0], [3, 3], dtype=np.int32),
    _mp("mp2d-f16", (1, 2, 6, 7), [2, 2], [1, 1], [1, 0], [0, 1], [3, 2], dtype=np.float16),
    # -- AvgPool (v16 through the builder) ---------------------------------------------------
    _ap("ap2d", (2, 3, 8, 8), [2, 2], [0, 0], [0, 0], [2, 2], False),
    _ap("ap2d-pad-exclude", (1, 3, 7, 9), [2, 2], [1, 1], [1, 1], [3, 3], True),
    _ap("ap2d-pad-include", (1, 3, 7, 9), [2, 2], [1, 1], [1, 1], [3, 3], False),
    _ap("ap2d-asym-exclude", (2, 3, 9, 10), [2, 1], [1, 0], [0, 2], [2, 3], True),
    _ap("ap2d-asym-include", (2, 3, 9, 10), [2, 1], [1, 0], [0, 2], [2, 3], False),
    _ap("ap2d-ceil-include-full-kernel", (1, 2, 3, 4), [2, 1], [0, 0], [0, 1], [2, 2], False,
        rounding_type="ceil"),
    _ap("ap2d-ceil-no-pads", (1, 2, 3, 4), [2, 1], [0, 0], [0, 0], [2, 2], False, rounding_type="ceil"),
    _ap("ap2d-ceil-exclude", (1, 2, 7, 8), [2, 2], [1, 1], [1, 1], [3, 3], True, rounding_type="ceil"),
    _ap("ap2d-ceil-torch-include", (1, 2, 7, 8), [2, 3], [1, 1], [1, 1], [2, 2], False,
        rounding_type="ceil_torch"),
    _ap("ap2d-ceil-torch-exclude", (1, 2, 7, 8), [2, 3], [1, 1], [1, 1], [2, 2], True,
        rounding_type="ceil_torch"),
    _ap("ap2d-same-upper-include", (1, 2, 6, 7), [2, 2], [0, 0], [0, 0], [3, 3], False, auto_pad="same_upper"),
    _ap("ap2d-same-lower-exclude", (1, 2, 6, 7), [2, 2], [0, 0], [0, 0], [3, 3], True, auto_pad="same_lower"),
    _ap("ap2d-valid", (1, 2, 6, 7), [2, 2], [2, 2], [2, 2], [3, 3], False, auto_pad="valid"),
    _ap("ap2d-dilated-include", (1, 3, 9, 10), [2, 1], [1, 1], [1, 0], [3, 2], False, dilations=[2, 1]),
    _ap("ap2d-dilated-exclude-ceil", (1, 3, 9, 10), [2, 2], [1, 1], [1, 0], [3, 2], True, dilations=[2, 1],
        rounding_type="ceil"),
    _ap("ap1d", (2, 3, 11), [2], [1], [1], [3], True),
    _ap("ap1d-include-ceil-pad-begin", (1, 1, 7), [3], [1], [0], [3], False, rounding_type="ceil"),
    _ap("ap3d", (1, 2, 5, 6, 7), [1, 2, 2], [1, 0, 1], [0, 1, 1], [2, 2, 3], True),
    _ap("ap3d-include", (1, 2, 5, 6, 7), [1, 2, 2], [1, 0, 1], [0, 1, 1], [2, 2, 3], False),
    _ap("ap2d-global", (2, 4, 7, 7), [1, 1], [0, 0], [0, 0], [7, 7], False),
    _ap("ap2d-f16", (1, 2, 6, 7), [2, 2], [1, 0], [0, 1], [3, 2], True, **F16),
    # -- adaptive pooling --------------------------------------------------------------------
    Case("aap1d", "adaptive_avg_pool", [(2, 3, 7)], (np.array([3], np.int64),)),
    Case("aap2d", "adaptive_avg_pool", [(2, 3, 7, 9)], (np.array([3, 4], np.int64),)),
    Case("aap2d-upsample", "adaptive_avg_pool", [(1, 2, 5, 3)], (np.array([7, 5], np.int32),)),
    Case("aap2d-global", "adaptive_avg_pool", [(1, 2, 4, 6)], (np.array([1, 1], np.int64),)),
    Case("aap3d", "adaptive_avg_pool", [(1, 2, 5, 6, 7)], (np.array([2, 3, 4], np.int64),)),
    Case("aap2d-f16", "adaptive_avg_pool", [(1, 2, 6, 7)], (np.array([4, 3], np.int64),), **F16),
    # the CPU plugin computes AdaptiveMaxPool only with i32 indices
    Case("amp1d", "adaptive_max_pool", [(2, 3, 7)], (np.array([3], np.int64), "i32")),
    Case("amp2d", "adaptive_max_pool", [(2, 3, 7, 9)], (np.array([3, 4], np.int64), "i32")),
    Case("amp2d-upsample", "adaptive_max_pool", [(1, 2, 5, 3)], (np.array([7, 5], np.int32), "i32")),
    Case("amp3d", "adaptive_max_pool", [(1, 2, 5, 6, 7)], (np.array([2, 3, 4], np.int64), "i32")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_openvino(case: Case) -> None:
    compare_with_openvino(case.builder, case.inputs(), *case.args, rtol=case.tol, atol=case.tol,
                          output_index=case.output_index, **case.kwargs)


# -- versions that the opset16 builders do not build -------------------------------------------

def _run_pair(make_ov: Any, make_ember: Any, arrays: list[np.ndarray]) -> tuple[list, list]:
    params = [oo.parameter(list(a.shape), a.dtype) for a in arrays]
    node = make_ov(*params)
    model = ov.Model([oo.result(o) for o in node.outputs()], params)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(arrays)
    theirs = [np.asarray(res[o]) for o in compiled.outputs]
    eparams = [eo.parameter(list(a.shape), a.dtype) for a in arrays]
    enode = make_ember(*eparams)
    ours = run_model(Model([eo.result(o) for o in enode.outputs()], eparams), arrays)
    return ours, theirs


OLD_POOLS = [
    ("maxpool1", "opset1", "max_pool", pool.MaxPool1,
     dict(strides=[2, 1], pads_begin=[1, 0], pads_end=[0, 1], kernel_shape=[3, 2], rounding_type="ceil")),
    ("maxpool1-same-lower", "opset1", "max_pool", pool.MaxPool1,
     dict(strides=[2, 2], pads_begin=[0, 0], pads_end=[0, 0], kernel_shape=[3, 3], auto_pad="same_lower")),
    ("maxpool8-dil-axis2", "opset8", "max_pool", pool.MaxPool8,
     dict(strides=[1, 2], dilations=[2, 1], pads_begin=[1, 1], pads_end=[0, 1], kernel_shape=[2, 3], axis=2)),
    ("maxpool8-ceil-i32", "opset8", "max_pool", pool.MaxPool8,
     dict(strides=[2, 2], dilations=[1, 1], pads_begin=[0, 0], pads_end=[1, 1], kernel_shape=[2, 2],
          rounding_type="ceil", index_element_type="i32")),
    ("avgpool1-exclude", "opset1", "avg_pool", pool.AvgPool1,
     dict(strides=[2, 1], pads_begin=[1, 0], pads_end=[0, 1], kernel_shape=[3, 2], exclude_pad=True)),
    ("avgpool1-include-ceil", "opset1", "avg_pool", pool.AvgPool1,
     dict(strides=[2, 2], pads_begin=[1, 1], pads_end=[1, 1], kernel_shape=[3, 3], exclude_pad=False,
          rounding_type="ceil")),
    ("avgpool14-ceil-torch", "opset14", "avg_pool", pool.AvgPool14,
     dict(strides=[2, 3], pads_begin=[1, 1], pads_end=[1, 1], kernel_shape=[2, 2], exclude_pad=False,
          rounding_type="ceil_torch")),
]

_IR_NAMES = {"kernel_shape": "kernel", "exclude_pad": "exclude-pad"}


@pytest.mark.parametrize("row", OLD_POOLS, ids=[r[0] for r in OLD_POOLS])
def test_older_pool_versions_match_openvino(row: tuple) -> None:
    _id, opset, name, cls, kw = row
    module = pytest.importorskip(f"openvino.{opset}")
    attrs = {_IR_NAMES.get(k, k): (v.lower() if isinstance(v, str) else v) for k, v in kw.items()}
    x = np.random.default_rng(7).standard_normal((2, 3, 7, 8)).astype(np.float32)
    ours, theirs = _run_pair(lambda p: getattr(module, name)(p, **kw), lambda p: cls([p], attrs), [x])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ceil_torch_needs_version_14() -> None:
    p = eo.parameter([1, 1, 5, 5], np.float32)
    attrs = dict(strides=[2, 2], pads_begin=[1, 1], pads_end=[1, 1], kernel=[2, 2], rounding_type="ceil_torch")
    with pytest.raises(ShapeInferenceError, match="rounding_type"):
        pool.MaxPool8([p], attrs)
    with pytest.raises(ShapeInferenceError, match="rounding_type"):
        pool.AvgPool1([p], {**attrs, "exclude-pad": True})
    assert pool.MaxPool14([p], attrs).output(0).partial_shape == PartialShape([1, 1, 3, 3])


# -- edge values -----------------------------------------------------------------------------------

def test_max_pool_skips_nan_and_padding_like_openvino() -> None:
    x = np.array([np.nan, 1, -np.inf, np.nan, 2, np.nan, -np.inf, -np.inf, -np.inf, -np.inf, np.nan, np.nan],
                 np.float32).reshape(1, 2, 3, 2)
    for out in (0, 1):
        compare_with_openvino("max_pool", [x], [1, 1], [1, 1], [0, 0], [2, 0], [2, 1], output_index=out)


def test_avg_pool_propagates_nan_and_inf() -> None:
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 5)).astype(np.float32)
    x[0, 0, 1, 1], x[0, 1, 3, 3], x[0, 1, 0, 0] = np.nan, np.inf, -np.inf
    compare_with_openvino("avg_pool", [x], [2, 2], [1, 1], [1, 1], [3, 3], True, dilations=[1, 1])


def test_conv_with_nan_and_inf() -> None:
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1], x[0, 1, 4, 4] = np.nan, np.inf
    w = np.random.default_rng(5).standard_normal((3, 2, 3, 3)).astype(np.float32)
    compare_with_openvino("convolution", [x, Const(w)], [1, 1], [1, 1], [1, 1], [1, 1], rtol=1e-4, atol=1e-4)


def test_convolution_with_non_constant_filters() -> None:
    rng = np.random.default_rng(6)
    compare_with_openvino("convolution", [rng.standard_normal((1, 3, 6, 6)).astype(np.float32),
                                          rng.standard_normal((2, 3, 3, 3)).astype(np.float32)],
                          [1, 1], [0, 0], [0, 0], [1, 1], rtol=1e-4, atol=1e-4)


# -- shape inference against OpenVINO's own --------------------------------------------------------

def _ov_shape(s: Any) -> Any:
    if s is None:
        return ov.PartialShape.dynamic()
    return ov.PartialShape([ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d) for d in s])


def _em_shape(s: Any) -> PartialShape:
    if s is None:
        return PartialShape.dynamic()
    return PartialShape([Dimension(*d) if isinstance(d, tuple) else Dimension(d) for d in s])


_C2 = dict(strides=[2, 1], pads_begin=[1, 0], pads_end=[0, 2], dilations=[1, 2])
_D2 = dict(_C2, output_padding=[1, 0])
_DATA = [[1, 3, -1, 10], [-1, -1, (5, 20), (1, 8)], None, [2, 3, (0, 4), 10], [1, 3, 9, 10]]
_POOL = dict(strides=[2, 1], pads_begin=[1, 0], pads_end=[0, 1], kernel_shape=[3, 2])

DYNAMIC: list[tuple[str, list, dict]] = []
for _pad in ("explicit", "same_upper", "same_lower", "valid"):
    for _x in _DATA:
        DYNAMIC.append(("convolution", [_x, [4, 3, 3, 2]], dict(_C2, auto_pad=_pad)))
        DYNAMIC.append(("convolution_backprop_data", [_x, [3, 4, 3, 2]], dict(_D2, auto_pad=_pad)))
        DYNAMIC.append(("convolution_backprop_data", [_x, [3, 4, 3, 2]],
                        dict(_D2, auto_pad=_pad, output_shape=np.array([20, 21]))))
        for _rt in ("floor", "ceil", "ceil_torch"):
            DYNAMIC.append(("max_pool", [_x], dict(_POOL, dilations=[1, 2], rounding_type=_rt, auto_pad=_pad)))
            DYNAMIC.append(("avg_pool", [_x], dict(_POOL, exclude_pad=False, rounding_type=_rt, auto_pad=_pad)))
    DYNAMIC += [
        ("convolution", [[1, 3, 9, 10], None], dict(_C2, auto_pad=_pad)),
        ("convolution", [None, None], dict(_C2, auto_pad=_pad)),
        ("convolution", [[1, 3, 9, 10], [4, 3, -1, (2, 4)]], dict(_C2, auto_pad=_pad)),
        ("convolution", [[2, 3, (6, 9), 10], [4, -1, 3, 2]], dict(_C2, auto_pad=_pad)),
        ("group_convolution", [[1, 6, -1, 10], [3, 4, 2, 3, 2]], dict(_C2, auto_pad=_pad)),
        ("group_convolution", [None, [3, 4, 2, 3, 2]], dict(_C2, auto_pad=_pad)),
        ("group_convolution", [[1, (4, 8), 9, 10], [-1, 4, 2, 3, 2]], dict(_C2, auto_pad=_pad)),
        ("group_convolution", [[1, (4, 8), 9, 10], [-1, 4, -1, 3, 2]], dict(_C2, auto_pad=_pad)),
        ("convolution_backprop_data", [[1, 3, 9, 10], None], dict(_D2, auto_pad=_pad)),
        ("convolution_backprop_data", [None, None], dict(_D2, auto_pad=_pad)),
        ("group_convolution_backprop_data", [[1, 6, -1, 10], [3, 2, 4, 3, 2]], dict(_D2, auto_pad=_pad)),
        ("group_convolution_backprop_data", [[1, (4, 8), 9, 10], [-1, 2, 4, 3, 2]], dict(_D2, auto_pad=_pad)),
        ("group_convolution_backprop_data", [[1, 6, -1, 10], [3, 2, 4, 3, 2]],
         dict(_D2, auto_pad=_pad, output_shape=np.array([20, 21]))),
    ]
DYNAMIC += [
    ("matmul", [[-1, 3], [-1, 5]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[(1, 4), 2, 3], [(2, 6), 3, 5]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[(0, 4), 2, 3], [(2, 6), 3, 5]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[(1, 4), 2, 3], [(1, 6), 3, 5]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[5, 2, 3], [-1, 3, 5]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[3], [-1]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[-1], [2, 3, 4]], dict(transpose_a=True, transpose_b=False)),
    ("matmul", [[2, 3, 4], [-1]], dict(transpose_a=False, transpose_b=True)),
    ("matmul", [[(2, 5), 3], [(4, 8)]], dict(transpose_a=True, transpose_b=False)),
    ("matmul", [None, [3, 4]], dict(transpose_a=False, transpose_b=False)),
    ("matmul", [[2, -1, 3, 4], [-1, 1, 4, (1, 9)]], dict(transpose_a=False, transpose_b=True)),
    ("matmul", [[2, 1, 3, 4], [-1, (2, 5), 4, 2]], dict(transpose_a=False, transpose_b=False)),
    ("adaptive_avg_pool", [[-1, 3, (2, 9), -1]], dict(output_shape=np.array([4, 5]))),
    ("adaptive_avg_pool", [None], dict(output_shape=np.array([4, 5]))),
    ("adaptive_max_pool", [[2, -1, 7]], dict(output_shape=np.array([3]))),
]


@pytest.mark.parametrize("row", DYNAMIC, ids=[f"{r[0]}-{i}" for i, r in enumerate(DYNAMIC)])
def test_shape_inference_matches_openvino(row: tuple) -> None:
    name, shapes, kw = row
    ovn = getattr(oo, name)(*[oo.parameter(_ov_shape(s), np.float32) for s in shapes], **kw)
    emn = getattr(eo, name)(*[eo.parameter(_em_shape(s), np.float32) for s in shapes], **kw)
    assert emn.get_output_size() == ovn.get_output_size()
    for i in range(ovn.get_output_size()):
        assert str(emn.output(i).partial_shape) == str(ovn.get_output_partial_shape(i))
        assert emn.output(i).element_type.name == ovn.get_output_element_type(i).get_type_name()
    theirs = ovn.get_attributes()
    for key in ("pads_begin", "pads_end"):
        if key in theirs and name != "group_convolution_backprop_data":
            assert list(emn.attrs[key]) == list(theirs[key]), key


@pytest.mark.parametrize("pad", ["same_upper", "same_lower", "explicit", "valid"])
def test_dynamic_input_resolves_pads_at_run_time(pad: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    p = eo.parameter(PartialShape([-1, 3, -1, -1]), np.float32)
    node = eo.convolution(p, w, [2, 3], [1, 0], [0, 1], [1, 2], pad)
    mp = eo.max_pool(node, [2, 1], [1, 1], [1, 0], [0, 1], [2, 2], auto_pad=pad)
    model = Model([eo.result(mp.output(0))], [p])
    ours = run_model(model, [x])[0]

    op = oo.parameter(list(x.shape), np.float32)
    onode = oo.convolution(op, w, [2, 3], [1, 0], [0, 1], [1, 2], pad)
    omp = oo.max_pool(onode, [2, 1], [1, 1], [1, 0], [0, 1], [2, 2], auto_pad=pad)
    compiled = ov.Core().compile_model(ov.Model([oo.result(omp.output(0))], [op]), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    theirs = compiled([x])[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


# -- attributes as OpenVINO's IR writes them -----------------------------------------------------

def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [int(x) for x in v]
    if hasattr(v, "get_type_name"):
        return v.get_type_name()
    if hasattr(v, "name") and not isinstance(v, str):
        return v.name
    return v


@pytest.mark.parametrize("case", [c for c in CASES if c.dtype == np.float32],
                         ids=[c.id for c in CASES if c.dtype == np.float32])
def test_attributes_match_openvino(case: Case) -> None:
    inputs = case.inputs()
    ins_ov = [oo.constant(x.value) if isinstance(x, Const) else oo.parameter(list(x.shape), x.dtype) for x in inputs]
    ins_em = [eo.constant(x.value) if isinstance(x, Const) else eo.parameter(list(x.shape), x.dtype) for x in inputs]
    ovn = getattr(oo, case.builder)(*ins_ov, *case.args, **case.kwargs)
    emn = getattr(eo, case.builder)(*ins_em, *case.args, **case.kwargs)
    assert emn.type_name == ovn.get_type_name()
    assert emn.version == ovn.get_type_info().version_id
    theirs = {k: _norm(v) for k, v in ovn.get_attributes().items()}
    ours = {k: _norm(v) for k, v in emn.attrs.items()}
    assert ours == theirs
    assert [a.name for a in emn.attributes] == list(ovn.get_attributes())


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, match", [
    (lambda: eo.convolution(eo.parameter([1, 3, 8, 8]), np.ones((4, 2, 3, 3), np.float32), [1, 1], [0, 0], [0, 0],
                            [1, 1]), "channels"),
    (lambda: eo.convolution(eo.parameter([1, 3, 8, 8]), np.ones((4, 3, 3, 3), np.float16), [1, 1], [0, 0], [0, 0],
                            [1, 1]), "element types"),
    (lambda: eo.convolution(eo.parameter([1, 3, 8, 8]), np.ones((4, 3, 3, 3), np.float32), [1], [0, 0], [0, 0],
                            [1, 1]), "strides"),
    (lambda: eo.convolution(eo.parameter([1, 3, 8, 8]), np.ones((4, 3, 3, 3), np.float32), [1, 0], [0, 0], [0, 0],
                            [1, 1]), "positive"),
    (lambda: eo.convolution(eo.parameter([1, 3, 2, 8]), np.ones((4, 3, 3, 3), np.float32), [1, 1], [0, 0], [0, 0],
                            [1, 1]), "larger than"),
    (lambda: eo.convolution(eo.parameter([1, 3, 8, 8]), np.ones((4, 3, 3, 3), np.float32), [1, 1], [0, 0], [0, 0],
                            [1, 1], "same_middle"), "auto_pad"),
    (lambda: eo.convolution(eo.parameter([1, 3, 8]), np.ones((4, 3, 3, 3), np.float32), [1], [0], [0], [1]),
     "ranks"),
    (lambda: eo.group_convolution(eo.parameter([1, 6, 8, 8]), np.ones((4, 2, 2, 3, 3), np.float32), [1, 1], [0, 0],
                                  [0, 0], [1, 1]), "groups"),
    (lambda: eo.convolution_backprop_data(eo.parameter([1, 3, 8, 8]), np.ones((4, 2, 3, 3), np.float32), [1, 1]),
     "channels"),
    (lambda: eo.convolution_backprop_data(eo.parameter([1, 3, 8, 8]), np.ones((3, 2, 3, 3), np.float32), [1, 1],
                                          np.array([5, 5, 5])), "output_shape"),
    (lambda: eo.matmul(eo.parameter([2, 3]), eo.parameter([4, 5]), False, False), "inner dimensions"),
    (lambda: eo.matmul(eo.parameter([2, 3, 4]), eo.parameter([3, 4, 5]), False, False), "batch"),
    (lambda: eo.matmul(eo.parameter([]), eo.parameter([3, 4]), False, False), "scalar"),
    (lambda: eo.matmul(eo.parameter([2, 3]), eo.parameter([3, 4], np.int32), False, False), "element types"),
    (lambda: eo.max_pool(eo.parameter([1, 3, 8, 8]), [1, 1], [1, 1], [0, 0], [0, 0], [3]), "kernel"),
    (lambda: eo.max_pool(eo.parameter([1, 3, 2, 8]), [1, 1], [1, 1], [0, 0], [0, 0], [3, 3]), "larger than"),
    (lambda: eo.max_pool(eo.parameter([1, 3, 8, 8]), [1, 1], [1, 1], [0, 0], [0, 0], [3, 3],
                         index_element_type="f32"), "index_element_type"),
    (lambda: eo.max_pool(eo.parameter([1, 3, 8, 8]), [1, 1], [1, 1], [0, 0], [0, 0], [3, 3], axis=4), "axis"),
    (lambda: eo.avg_pool(eo.parameter([1, 3, 8, 8]), [1, 1], [3, 0], [0, 0], [3, 3], True), "padding"),
    (lambda: eo.avg_pool(eo.parameter([1, 3, 8, 8]), [1, 1], [0, 0], [0, 0], [3, 3], True,
                         rounding_type="round"), "rounding_type"),
    (lambda: eo.adaptive_avg_pool(eo.parameter([1, 3, 8, 8]), np.array([2, 2, 2])), "output_shape"),
])
def test_errors_name_the_node(build: Any, match: str) -> None:
    with pytest.raises(ShapeInferenceError, match=match) as info:
        build()
    assert "'" in str(info.value)  # the message names the node


# -- speed ------------------------------------------------------------------------------------------

def _resnet50_convs() -> list[tuple[int, int, int, int, int, int]]:
    """(in channels, out channels, kernel, stride, input size, pad) of ResNet-50's convolutions."""
    layers = [(3, 64, 7, 2, 224, 3)]
    for cin, mid, cout, size, blocks, stride in [(64, 64, 256, 56, 3, 1), (256, 128, 512, 56, 4, 2),
                                                 (512, 256, 1024, 28, 6, 2), (1024, 512, 2048, 14, 3, 2)]:
        for b in range(blocks):
            s = stride if b == 0 else 1
            layers += [(cin if b == 0 else cout, mid, 1, 1, size, 0), (mid, mid, 3, s, size, 1),
                       (mid, cout, 1, 1, size // s, 0)]
            if b == 0:
                layers.append((cin, cout, 1, s, size, 0))
                size //= s
    return layers


def test_run_ember_checks_inferred_shapes() -> None:
    # the oracle also checks that our inferred shape and type agree with what the kernel computed
    out = run_ember("convolution", [np.ones((1, 1, 5, 5), np.float32), Const(np.ones((1, 1, 3, 3), np.float32))],
                    [2, 2], [0, 0], [0, 0], [1, 1], "same_lower")
    assert out[0].shape == (1, 1, 3, 3)
    assert conv.AUTO_PADS == ("explicit", "same_upper", "same_lower", "valid")
