"""``ember.utils.types`` against ``openvino.utils.types`` (real OpenVINO is a test oracle)."""

from __future__ import annotations

import numpy as np
import pytest

import ember as ov
from ember.errors import EmberError
from ember.utils import types as et

ovt = pytest.importorskip("openvino.utils.types")
real_ov = pytest.importorskip("openvino")

DTYPES = [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_, bool, int, float]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: getattr(d, "__name__", str(d)))
def test_element_type_and_dtype_match_openvino(dtype):
    assert et.get_element_type_str(dtype) == ovt.get_element_type_str(dtype)
    name = et.get_element_type(dtype).get_type_name()
    assert name == ovt.get_element_type(dtype).get_type_name()
    assert et.get_dtype(getattr(ov.Type, name)) == ovt.get_dtype(getattr(real_ov.Type, name))


def test_bad_types_get_ember_errors():
    with pytest.raises(EmberError):
        et.get_element_type(object())
    with pytest.raises(EmberError):
        et.get_dtype(ov.Type.dynamic)


def test_version_and_shapes():
    assert ov.get_version() == ov.__version__
    assert et.get_shape(ov.Tensor(np.zeros((2, 5), np.float32))) == [2, 5]
    assert et.get_ndarray([1, 2]).tolist() == [1, 2]
