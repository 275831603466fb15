import numpy as np
import pytest

from oracle import Const, compare_with_openvino

R = np.random.default_rng(0)
Q, K, V = (R.standard_normal((2, 3, 5, 8)).astype(np.float32) for _ in range(3))
FLOAT_MASK = R.standard_normal((2, 1, 5, 5)).astype(np.float32)
BOOL_MASK = R.random((5, 5)) > 0.3
BOOL_MASK[:, 0] = True


@pytest.mark.parametrize("inputs,kwargs", [
    ([Q, K, V], {}),
    ([Q, K, V, FLOAT_MASK], {}),
    ([Q, K, V, FLOAT_MASK, Const(np.float32(0.3))], {}),
    ([Q, K, V], {"causal": True}),
    ([Q, K, V, Const(BOOL_MASK)], {}),
    ([Q[0], K[0, :, :4], V[0, :, :4]], {}),
])
def test_sdpa_matches_openvino(inputs: list, kwargs: dict) -> None:
    compare_with_openvino("scaled_dot_product_attention", inputs, rtol=1e-4, atol=1e-5, **kwargs)


@pytest.mark.parametrize("x", [R.standard_normal((2, 7)).astype(np.float32) * 5,
                               np.array([np.inf, -np.inf, 0.0, 2.5, -2.5], np.float32)])
def test_hard_sigmoid_matches_openvino(x: np.ndarray) -> None:
    compare_with_openvino("hard_sigmoid", [x, Const(np.float32(0.2)), Const(np.float32(0.5))])
