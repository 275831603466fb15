"""BitwiseLeft/RightShift, Eye, Unique, Col2Im, GridSample, ROIAlign, DeformableConvolution and
the Fourier transforms against OpenVINO, from one table of cases."""

from __future__ import annotations

import numpy as np
import pytest

from oracle import Const, compare_with_openvino, run_ember

R = np.random.default_rng(5)


def _f(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def _i(c: list, dt: type = np.int64) -> Const:
    return Const(np.array(c, dt))


CASES = [
    ("bitwise_left_shift", [np.array([1, -3, 7, 255], np.int32), np.array([1, 2, 0, 3], np.int32)], (), {}),
    ("bitwise_right_shift", [np.array([[16, -16, 7]], np.int64), np.array([2, 1, 0], np.int64)], (), {}),
    ("bitwise_right_shift", [np.array([200, 3], np.uint8), np.array([3, 1], np.uint8)], (), {}),
    ("eye", [_i(3), _i(4), _i(1)], ("f32",), {}),
    ("unique", [np.array([3, 1, 3, 2, 1, 7], np.float32)], (), {}),
    ("unique", [np.array([3, 1, 3, 2, 1, 7], np.float32)], (), {"sorted": False}),
    ("unique", [np.array([[1, 2], [3, 4], [1, 2]], np.float32), _i([0])], (), {}),
    ("col2im", [_f(2, 12, 9), _i([4, 4]), _i([2, 2])], (), {}),
    ("col2im", [_f(1, 8, 9), _i([5, 6]), _i([2, 2])], ([2, 2], [1, 1], [1, 1], [0, 0]), {}),
    ("grid_sample", [_f(2, 3, 5, 6), np.clip(_f(2, 4, 3, 2), -1.3, 1.3)],
     ({"align_corners": False, "mode": "bilinear", "padding_mode": "zeros"},), {}),
    ("grid_sample", [_f(1, 2, 4, 4), np.clip(_f(1, 3, 3, 2), -1.5, 1.5)],
     ({"align_corners": True, "mode": "bicubic", "padding_mode": "border"},), {}),
    ("grid_sample", [_f(1, 2, 4, 5), np.clip(_f(1, 3, 3, 2), -1.8, 1.8)],
     ({"align_corners": False, "mode": "nearest", "padding_mode": "reflection"},), {}),
    ("grid_sample", [_f(1, 1, 3, 4), np.clip(_f(1, 2, 5, 2), -1.8, 1.8)],
     ({"align_corners": False, "mode": "bilinear", "padding_mode": "reflection"},), {}),
    ("roi_align", [_f(2, 3, 8, 8), Const(np.float32([[0, 0, 7, 7], [1.5, 2, 6, 5.5], [2, 2, 3, 3]])),
                   _i([0, 1, 1], np.int32)], (2, 3, 2, 1.0, "avg", "asymmetric"), {}),
    ("roi_align", [_f(1, 2, 6, 6), Const(np.float32([[0, 0, 10, 10], [1, 1, 4, 9]])), _i([0, 0], np.int32)],
     (3, 2, 0, 0.5, "avg", "half_pixel"), {}),
    ("roi_align", [_f(1, 2, 6, 6), Const(np.float32([[0, 0, 5, 5], [1, 1, 4, 3]])), _i([0, 0], np.int32)],
     (2, 2, 2, 1.0, "max", "asymmetric"), {}),
    ("deformable_convolution", [_f(1, 4, 6, 6), _f(1, 2 * 9, 6, 6) * 0.7, Const(_f(4, 4, 3, 3))],
     ([1, 1], [1, 1], [1, 1], [1, 1]), {}),
    ("deformable_convolution", [_f(2, 4, 7, 7), _f(2, 2 * 2 * 9, 3, 3), Const(_f(6, 2, 3, 3))],
     ([2, 2], [0, 0], [0, 0], [1, 1]), {"group": 2, "deformable_group": 2, "bilinear_interpolation_pad": True,
                                        "mask": np.abs(_f(2, 2 * 9, 3, 3))}),
    ("dft", [_f(2, 5, 6, 2), _i([1, 2])], (), {}),
    ("dft", [_f(3, 8, 2), _i([-1]), _i([5])], (), {}),
    ("idft", [_f(2, 4, 6, 2), _i([1])], (), {}),
    ("rdft", [_f(2, 6, 7), _i([1, 2])], (), {}),
    ("irdft", [_f(2, 5, 4, 2), _i([1, 2])], (), {}),
    ("irdft", [_f(3, 5, 2), _i([1]), _i([7])], (), {}),
    ("stft", [_f(2, 48), Const(np.hanning(12).astype(np.float32)), _i(16), _i(5)], (False,), {}),
    ("stft", [_f(40), Const(np.ones(8, np.float32)), _i(8), _i(4)], (True,), {}),
]


@pytest.mark.parametrize("builder, inputs, args, kwargs", CASES)
def test_against_openvino(builder: str, inputs: list, args: tuple, kwargs: dict) -> None:
    compare_with_openvino(builder, inputs, *args, rtol=1e-4, atol=1e-5, **kwargs)


def test_eye_with_batch_shape() -> None:
    import ember.opset as ops
    from ember.devices.reference import run_model
    from ember.graph import Model

    node = ops.eye(np.int64(4), np.int64(3), np.int64(-1), "i32", np.array([2], np.int64))
    got = run_model(Model([node], []), [])[0]
    assert got.shape == (2, 4, 3) and (got == np.eye(4, 3, k=-1, dtype=np.int32)).all()


def test_shifts_outside_the_width_are_defined() -> None:
    a = np.array([5, -5, 5, -5], np.int8)
    b = np.array([8, 8, -1, 9], np.int8)
    assert run_ember("bitwise_left_shift", [a, b])[0].tolist() == [0, 0, 0, 0]
    assert run_ember("bitwise_right_shift", [a, b])[0].tolist() == [0, -1, 0, -1]
