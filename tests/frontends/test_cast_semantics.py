"""ONNX Cast into sub-byte integers: the semantics ember chose where the spec leaves a choice.

The ONNX spec makes float -> integer "undefined if out of range" and integer -> integer "discard
higher bits". ember saturates the first (as its Convert does for every integer type, and as ONNX
Runtime does for int4) and wraps the second.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from ember.devices.reference import run_model
from ember.frontends.onnx import convert


def _cast_model(src: int, dst: int, n: int) -> object:
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=dst)], "cast",
                              [helper.make_tensor_value_info("x", src, [n])],
                              [helper.make_tensor_value_info("y", dst, [n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


CASES = [
    # (source, destination, lo, hi)
    (TensorProto.FLOAT, TensorProto.INT4, -8, 7),
    (TensorProto.FLOAT, TensorProto.UINT4, 0, 15),
    (TensorProto.FLOAT16, TensorProto.UINT2, 0, 3),
    (TensorProto.FLOAT, TensorProto.UINT2, 0, 3),
]


@pytest.mark.parametrize("src,dst,lo,hi", CASES)
def test_float_to_sub_byte_saturates(src: int, dst: int, lo: int, hi: int) -> None:
    x = np.array([-1e9, -9.7, -3.5, -0.5, 0.0, 0.9, 2.5, 3.99, 7.5, 15.2, 16.0, 1e9, np.inf, -np.inf, np.nan],
                 dtype=np.float32)
    if src == TensorProto.FLOAT16:
        x = x.astype(np.float16)
    (got,) = run_model(convert(_cast_model(src, dst, x.size)), {"x": x})
    xf = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=hi, neginf=lo)
    want = np.clip(np.trunc(xf), lo, hi)
    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), want.astype(np.int64))


def test_integer_to_sub_byte_wraps() -> None:
    x = np.arange(-20, 21, dtype=np.int32)
    (got,) = run_model(convert(_cast_model(TensorProto.INT32, TensorProto.INT4, x.size)), {"x": x})
    want = ((x + 8) % 16) - 8  # two's complement, higher bits discarded
    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), want)
    (got,) = run_model(convert(_cast_model(TensorProto.INT32, TensorProto.UINT4, x.size)), {"x": x})
    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), x % 16)
