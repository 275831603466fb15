import numpy as np
from oracle import compare_with_openvino


def test_add_broadcast_matches_openvino() -> None:
    rng = np.random.default_rng(0)
    compare_with_openvino("add", [rng.standard_normal((2, 3, 4), dtype=np.float32),
                                  rng.standard_normal((3, 1), dtype=np.float32)])
