"""Which epilogue activation a node computes: shared by the f32/bf16 lowering passes and the
int8 low-precision lowering (a module of its own so that neither imports the other)."""

from __future__ import annotations

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.node import Node


def epilogue_activation(node: Node) -> str | None:
    """The GEMM/convolution epilogue activation (a name in
    :data:`~ember.devices.cpu.kernels.gemm.EPILOGUE_ACTIVATIONS`) that ``node`` computes from its
    first input, or None: HSwish, HSigmoid, Sigmoid, Swish with beta 1, Gelu (erf or tanh)."""
    t, ins = node.type_name, node.input_values()
    if node.get_output_size() != 1 or not ins or ins[0].element_type.dtype != np.float32:
        return None
    if t in ("HSwish", "HSigmoid", "Sigmoid") and len(ins) == 1:
        return t.lower()
    if t == "Gelu":
        return "gelu_tanh" if str(node.attrs.get("approximation_mode", "ERF")).upper() == "TANH" else "gelu_erf"
    if t == "Swish":
        if len(ins) == 1:
            return "swish"
        beta = ins[1].node.data if isinstance(ins[1].node, Constant) else None
        return "swish" if beta is not None and beta.size == 1 and float(beta.reshape(-1)[0]) == 1.0 else None
    return None
