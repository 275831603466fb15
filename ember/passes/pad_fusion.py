"""Zero padding folded into the convolution that reads it (level 2).

TensorFlow-style "same" padding exports as an explicit ``Pad`` (constant 0) before a
``Convolution`` with no padding of its own (EfficientNet, MobileNet ports); the convolution's own
``pads_begin``/``pads_end`` do the same without materializing the padded tensor.
"""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.passes.matcher import Match, Pattern, rewrite, rule
from ember.passes.pipeline import note_fired, register_pass

_BUILDERS = {"Convolution": "convolution", "GroupConvolution": "group_convolution"}


def _spatial_zero_pads(pad: Node) -> tuple[list[int], list[int]] | None:
    """The spatial pads of a constant-zero ``Pad`` that leaves batch and channels alone."""
    if pad.attrs.get("pad_mode", "constant") != "constant":
        return None
    ins = pad.input_values()
    consts = [p.node.data if isinstance(p.node, Constant) else None for p in ins[1:]]
    if any(c is None for c in consts):
        return None
    begin, end = (np.asarray(c).reshape(-1).astype(np.int64) for c in consts[:2])
    if len(consts) > 2 and np.any(np.asarray(consts[2]) != 0):
        return None
    if begin.size != end.size or begin.size < 3 or np.any(begin < 0) or np.any(end < 0):
        return None
    if np.any(begin[:2] != 0) or np.any(end[:2] != 0):
        return None
    return begin[2:].tolist(), end[2:].tolist()


def _foldable(conv: Node) -> bool:
    src = conv.input_values()[0].node
    return src.type_name == "Pad" and conv.attrs.get("auto_pad", "explicit") in ("explicit", "notset", "valid") \
        and _spatial_zero_pads(src) is not None


@rule(Pattern(tuple(_BUILDERS), name="conv", pred=_foldable))
def pad_into_conv(m: Match) -> Output | None:
    conv = m["conv"]
    pad = conv.input_values()[0].node
    extra = _spatial_zero_pads(pad)
    assert extra is not None
    a = conv.attrs
    rank = len(extra[0])
    own_begin = [0] * rank if a.get("auto_pad") == "valid" else list(a.get("pads_begin") or [0] * rank)
    own_end = [0] * rank if a.get("auto_pad") == "valid" else list(a.get("pads_end") or [0] * rank)
    if len(own_begin) != rank or len(own_end) != rank:
        return None
    build = getattr(ops, _BUILDERS[conv.type_name])
    new = build(pad.input_values()[0], conv.input_values()[1], list(a["strides"]),
                [x + y for x, y in zip(own_begin, extra[0])], [x + y for x, y in zip(own_end, extra[1])],
                list(a.get("dilations") or [1] * rank), "explicit", name=conv.friendly_name)
    return new.output(0)


@register_pass("fold_pad_into_conv", level=2)
def fold_pad_into_conv(model: Model) -> Model:
    """Fold a constant-zero spatial Pad into the pads of the (group) convolution reading it."""
    note_fired(sum(rewrite(model, [pad_into_conv]).values()))
    return model
