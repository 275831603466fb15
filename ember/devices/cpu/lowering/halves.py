"""f16/bf16 tensors through the ops whose CPU kernels are f32 only (SoftMax, MVN, MatMul,
convolutions, pooling, Interpolate, TopK, Pad...): a device pass computes such an op in f32,
with a Convert on each f16/bf16 input and one back on each f16/bf16 output, as OpenVINO's CPU
plugin computes f16 models in f32 by default. The Converts are native elementwise programs
(fused with their neighbours where they can be), constant ones fold, and the op takes its native
f32 kernel instead of its numpy reference kernel. Elementwise ops, reductions and copies run
f16/bf16 natively and are left alone.
"""

from __future__ import annotations

import logging

from ember.graph.model import Model
from ember.graph.types import Type

log = logging.getLogger("ember.cpu")

#: op types computed in f32 when they meet f16/bf16 tensors (their kernels are f32)
F32_ONLY = frozenset({
    "SoftMax", "LogSoftmax", "MVN", "NormalizeL2", "MatMul", "Convolution", "GroupConvolution",
    "ConvolutionBackpropData", "GroupConvolutionBackpropData", "AvgPool", "MaxPool", "Interpolate", "TopK",
    "CumSum", "LRN", "ScaledDotProductAttention", "GatherElements",
    "LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell"})
_HALVES = (Type.f16, Type.bf16)


def compute_halves_in_f32(model: Model) -> int:
    """Run the :data:`F32_ONLY` ops that read or write f16/bf16 tensors in f32 (Converts around
    them); returns how many were rewritten. Bodies of control flow are left as they are."""
    import ember.opset as ops

    done = 0
    for node in list(model.get_ordered_ops()):
        if node.type_name not in F32_ONLY:
            continue
        ins = [p for p in node.input_values() if p.element_type in _HALVES]
        outs = [o for o in node.outputs() if o.element_type in _HALVES]
        if not ins and not outs:
            continue
        targets = [list(o.targets) for o in node.outputs()]
        types = [o.element_type for o in node.outputs()]
        for i, port in enumerate(node.input_values()):
            if port.element_type in _HALVES:
                node.set_argument(i, ops.convert(port, "f32", name=f"{node.friendly_name}/in{i}_f32").output(0))
        try:
            node.validate_and_infer_types()
        except Exception:  # noqa: BLE001 - an op that does not take f32 here: undo
            for i, port in enumerate(node.input_values()):
                if port.node.type_name == "Convert" and port.node.friendly_name == f"{node.friendly_name}/in{i}_f32":
                    node.set_argument(i, port.node.input_values()[0])
            node.validate_and_infer_types()
            continue
        for j, (old, users) in enumerate(zip(types, targets)):
            if old not in _HALVES or node.output(j).element_type == old:
                continue
            back = ops.convert(node.output(j), old.name, name=f"{node.friendly_name}/out{j}")
            names = set(node.output(j).get_names())  # the tensor's names go with its value
            node.output(j).set_names(set())
            back.output(0).set_names(names)
            for inp in users:
                inp.replace_source_output(back.output(0))
        done += 1
        log.debug("CPU: %s '%s' computed in f32 (f16/bf16 tensors)", node.type_name, node.friendly_name)
    return done
