"""Lowering rules for the convolution family, 1-D to 3-D: Convolution, GroupConvolution,
ConvolutionBackpropData, GroupConvolutionBackpropData, MaxPool and AvgPool."""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    copy_op,
    epilogue_chain,
    lowers,
    reshaper,
    static_shape,
)
from ember.devices.cpu.lowering.movement import concat_slot
from ember.devices.cpu.lowering.passes import take_epilogue_activation
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node, Output
from ember.passes.fusions import same_fused_group

# -- channel-last tensors ---------------------------------------------------------------------
# Kernels read and write channel-last data: a 4-D tensor is NHWC (the plan's layout), a 1-D
# one an NHWC tensor of height 1 (a view of its plain [N, C, W] form is made after), a 3-D
# one a plain [N, D, H, W, C] array, transposed from and to NCDHW around the op.
#
# 1-D and 3-D chains (convolution -> pooling -> convolution, and for 1-D channel Concats
# between them, as in a 1-D U-Net) pass the channel-last tensor along: each lowering remembers
# which plain tensor is a copy or view of which channel-last one, and the plain forms nobody
# reads are pruned.
_CHANNELS_LAST: weakref.WeakKeyDictionary[Lowering, dict[int, Tensor]] = weakref.WeakKeyDictionary()


#: per lowering, the channel-last buffer of each 1-D channel Concat (by node id) whose inputs are
#: written in place
_CONCAT_BUFFERS: weakref.WeakKeyDictionary[Lowering, dict[int, Tensor]] = weakref.WeakKeyDictionary()


def _known_channels_last(lowering: Lowering) -> dict[int, Tensor]:
    return _CHANNELS_LAST.setdefault(lowering, {})


def _channels_last_input(lowering: Lowering, port: Output) -> Tensor:
    """``port``'s value as kernels read it (see above); converted once per tensor."""
    rank = len(port.partial_shape)
    src = lowering.tensor(port)
    if rank == 4:
        return lowering.native_input(src, NHWC, contiguous=False)
    known = _known_channels_last(lowering)
    if src.id not in known:
        known[src.id] = _to_channels_last(lowering, port, src)
    return known[src.id]


def _to_channels_last(lowering: Lowering, port: Output, src: Tensor) -> Tensor:
    if len(src.shape) == 3:
        joined = _channels_last_concat(lowering, port)
        if joined is not None:
            return joined
        n, c, w = src.shape
        plain = lowering.native_input(src, PLAIN)
        plain = lowering.program.view(plain, (n, c, 1, w), reshaper((n, c, 1, w)), contiguous=plain.contiguous)
        return lowering.native_input(plain, NHWC, contiguous=False)
    plain = lowering.native_input(src, PLAIN, contiguous=False)
    n, c, d, h, w = plain.shape
    out = lowering.value((n, d, h, w, c), PLAIN, name=plain.name + "/ndhwc")
    lowering.program.add(copy_op(plain.name + "/to_ndhwc", plain, out, (0, 2, 3, 4, 1), lowering.threads))
    return out


def _channels_last_concat(lowering: Lowering, port: Output) -> Tensor | None:
    """A channel Concat of 1-D tensors some of which are channel-last already, redone on the
    channel-last forms (the plain Concat is pruned when nothing else reads it): inputs that our
    rules wrote into its buffer in place are not copied."""
    node = port.node
    if node.type_name != "Concat" or int(node.attrs["axis"]) % 3 != 1 or port.element_type.dtype != F32:
        return None
    known = _known_channels_last(lowering)
    ins = node.input_values()
    if not any(lowering.tensor(p).id in known for p in ins) or not all(
            p.element_type.dtype == F32 and len(p.partial_shape) == 3 and lowering.tensor(p).kind != "const"
            for p in ins):
        return None
    n, c, w = static_shape(port)
    y = _CONCAT_BUFFERS.setdefault(lowering, {}).get(id(node))
    if y is None:
        y = lowering.value((n, 1, w, c), NHWC, name=node.friendly_name + "/nwc")
    start = 0
    for p in ins:
        size = static_shape(p)[1]
        src = _channels_last_input(lowering, p)
        if src.base is not y or src.shape != (n, 1, w, size):  # not written in place: copy it
            part = lowering.program.view(y, (n, 1, w, size), _channel_slice(start, size), NHWC, contiguous=False)
            lowering.program.add(Op(node.friendly_name + "/nwc", "Concat", [src], [part], native=True,
                                    bind=_copy_binder(node.friendly_name, lowering.threads, lowering.isa)))
        start += size
    return y


def _copy_binder(name: str, threads: int, isa: Any) -> Callable[[list[np.ndarray], list[np.ndarray]], list[Any]]:
    from ember.devices.cpu.kernels.movement import strided_copy

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        if not arrs[0].size:
            return []
        k = strided_copy(arrs[0], outs[0], threads, isa)
        if k is None:
            raise EmberError(f"ember: internal: Concat '{name}' input does not fit the copy kernel")
        return [k]

    return bind


def _channels_last_value(lowering: Lowering, logical: tuple[int, ...], name: str, last: Node | None = None,
                         bf16: bool = False) -> Tensor:
    """A tensor for an output of ``logical`` shape, channel-last; a 1-D output (of node
    ``last``) that a channel Concat reads is written straight into its part of the Concat.
    ``bf16``: a 4-D output kept as bf16 bits (uint16) for bf16 readers (:func:`_bf16_readers_only`)."""
    if bf16:
        n, c, h, w = logical
        return lowering.value((n, h, w, c), NHWC, dtype=np.uint16, name=name)
    n, c, *sp = logical
    if len(sp) == 1 and last is not None:
        slot = _concat_slot(lowering, last)
        if slot is not None:
            return slot
    if len(sp) == 3:
        return lowering.value((n, *sp, c), PLAIN, name=name + "/ndhwc")
    if len(sp) == 2 and last is not None:
        slot = concat_slot(lowering, last.output(0), F32)
        if slot is not None:
            return slot
    h, w = ([1] + sp) if len(sp) == 1 else sp
    return lowering.value((n, h, w, c), NHWC, name=name)


def _concat_slot(lowering: Lowering, last: Node) -> Tensor | None:
    """The channel slice of a 1-D channel Concat's channel-last buffer that ``last``'s output
    fills (the buffer made by the first of its inputs lowered), or None."""
    port = last.output(0)
    cats = [t.node for t in port.targets if t.node.type_name == "Concat"]
    if len(cats) != 1 or lowering.is_result(port) or port.element_type.dtype != F32:
        return None
    cat = cats[0]
    ins = cat.input_values()
    if int(cat.attrs["axis"]) % 3 != 1 or cat.output(0).element_type.dtype != F32 \
            or not cat.output(0).partial_shape.is_static or any(len(p.partial_shape) != 3 for p in ins) \
            or [p.node is last and p.index == 0 for p in ins].count(True) != 1:
        return None
    buffers = _CONCAT_BUFFERS.setdefault(lowering, {})
    n, c, w = static_shape(cat.output(0))
    if id(cat) not in buffers:
        buffers[id(cat)] = lowering.value((n, 1, w, c), NHWC, name=cat.friendly_name + "/nwc")
    at = next(i for i, p in enumerate(ins) if p.node is last)
    start = sum(static_shape(p)[1] for p in ins[:at])
    size = static_shape(ins[at])[1]
    return lowering.program.view(buffers[id(cat)], (n, 1, w, size), _channel_slice(start, size), NHWC,
                                 contiguous=False, name=last.friendly_name)


def _channel_slice(start: int, size: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a[..., start:start + size]


def _from_channels_last(lowering: Lowering, y: Tensor, logical: tuple[int, ...], name: str) -> Tensor:
    if len(logical) == 4:
        return y
    if len(logical) == 3:
        view = lowering.program.view(lowering.plain(y), logical, reshaper(logical), name=name)
        _known_channels_last(lowering)[view.id] = y
        return view
    out = lowering.value(logical, PLAIN, name=name)
    lowering.program.add(copy_op(name + "/to_ncdhw", y, out, (0, 4, 1, 2, 3), lowering.threads))
    _known_channels_last(lowering)[out.id] = y
    return out


def _epilogue(lowering: Lowering, node: Node, channels: int) -> tuple[np.ndarray | None, Tensor | None,
                                                                      tuple[float, float], Node, list[Node]]:
    """The marked epilogue group after ``node`` (bias, residual, clamp), as ``epilogue_chain``
    gives it; for 1-D and 3-D outputs the residual Add is taken here too, its other operand
    made channel-last like the output."""
    rank = len(node.output(0).partial_shape)
    bias, residual, (lo, hi), last, fused = epilogue_chain(lowering, node, 1, channels, NHWC,
                                                           allow_residual=rank == 4)
    if rank == 4 or (lo, hi) != (-math.inf, math.inf):
        return bias, residual, (lo, hi), last, fused
    nxt = lowering.sole_consumer(last)
    if nxt is None or nxt.type_name != "Add" or not same_fused_group(last, nxt) \
            or nxt.output(0).partial_shape != node.output(0).partial_shape:
        return bias, residual, (lo, hi), last, fused
    a, b = nxt.input_values()
    other = b if a.node is last else a
    if other.node is last or const_of(other) is not None or not lowering.has(other) \
            or other.element_type.dtype != F32 or other.partial_shape != node.output(0).partial_shape:
        return bias, residual, (lo, hi), last, fused
    residual, last = _channels_last_input(lowering, other), nxt
    fused = [*fused, nxt]
    after = lowering.sole_consumer(last)
    if after is not None and same_fused_group(last, after) and after.type_name in ("ReLU", "Clamp") \
            and after.output(0).partial_shape == node.output(0).partial_shape:
        lo, hi = (0.0, math.inf) if after.type_name == "ReLU" else (float(after.attrs["min"]), float(after.attrs["max"]))
        last, fused = after, [*fused, after]
    return bias, residual, (lo, hi), last, fused


def _pair(v: Sequence[int]) -> tuple[int, int]:
    return int(v[0]), int(v[1])


def _kernel_view(a: np.ndarray, rank: int) -> np.ndarray:
    """A channel-last physical array as a kernel takes it: ``[N, W, C]`` for 1-D (the NHWC
    buffer has height 1), else as it is."""
    return a[:, 0] if rank == 3 else a


# -- convolution ------------------------------------------------------------------------------

@lowers("Convolution", "GroupConvolution")
def lower_conv(lowering: Lowering, node: Node) -> bool:
    """Convolutions on channel-last tensors: 2-D ones on NHWC, 1-D ones as 2-D with a height
    of 1, 3-D ones as 2-D convolutions over depth slices summed in place."""
    from ember.devices.cpu.kernels.conv import ConvGeometry
    from ember.devices.cpu.lowering.conv_im2col import im2col_conv

    w = const_of(node.input_values()[1])
    xport = node.input_values()[0]
    rank = len(xport.partial_shape)
    if w is None or w.dtype != F32 or xport.element_type.dtype != F32 or rank not in (3, 4, 5):
        return im2col_conv(lowering, node)  # runtime weights: columns and a batched GEMM
    xs = static_shape(xport)
    groups = 1
    if node.type_name == "GroupConvolution":
        groups = w.shape[0]
        w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
    pb, pe = node.resolved_pads(xs, w.shape[2:])
    if min(*pb, *pe) < 0:
        return im2col_conv(lowering, node)  # negative pads crop: columns and a batched GEMM
    dil = [int(d) for d in (node.attrs["dilations"] or [1] * (rank - 2))]
    strides = [int(s) for s in node.attrs["strides"]]
    if rank == 5:
        return _lower_conv3d(lowering, node, w, groups, strides, dil, pb, pe)
    n, c, h, wd = (xs[0], xs[1], 1, xs[2]) if rank == 3 else xs
    if rank == 3:
        w = w[:, :, None]
        pb, pe, dil, strides = [0, *pb], [0, *pe], [1, *dil], [1, *strides]
    geo = ConvGeometry(n, h, wd, c, w.shape[0], w.shape[2], w.shape[3], _pair(strides), _pair(dil), _pair(pb),
                       _pair(pe), groups)
    return _emit_conv2d(lowering, node, geo, w)


def _conv_tail(lowering: Lowering, node: Node, geo: Any) -> tuple[Any, ...]:
    """The epilogue group after convolution ``node`` its kernel takes: ``(bias, residual, (lo, hi),
    depthwise activation, depthwise affine, GEMM activation, GEMM affine, last node, fused nodes)``."""
    from ember.devices.cpu.kernels.conv import depthwise_activation_ok

    out_logical = static_shape(node.output(0))
    bias, residual, (lo, hi), last, fused = _epilogue(lowering, node, geo.cout)
    activation = ""
    after = lowering.sole_consumer(last)
    if after is not None and after.type_name == "HSwish" and same_fused_group(last, after) \
            and len(out_logical) == 4 and depthwise_activation_ok(geo, "hswish") \
            and after.output(0).partial_shape == node.output(0).partial_shape \
            and after.output(0).element_type.dtype == F32:
        activation, last, fused = "hswish", after, [*fused, after]
    affine = None
    if len(out_logical) == 4 and depthwise_activation_ok(geo, "affine"):
        affine, last, fused = _post_affine(lowering, node, last, fused)
    act, gemm_affine = "", None
    if not geo.depthwise:  # the implicit GEMM's epilogue: HSwish, GELU, Swish, ..., then a scalar affine
        act, last, fused = take_epilogue_activation(lowering, node, last, fused, (lo, hi))
        gemm_affine, last, fused = _post_affine(lowering, node, last, fused)
    return bias, residual, (lo, hi), activation, affine, act, gemm_affine, last, fused


def _emit_conv2d(lowering: Lowering, node: Node, geo: Any, w: np.ndarray) -> bool:
    """``node`` (data input 0, rank 3 or 4) as one Conv2d of ``geo`` with weights ``w``
    ``[OC, IC / groups, KH, KW]``, its epilogue group fused."""
    from ember.devices.cpu.kernels.conv import Conv2d
    from ember.devices.cpu.kernels.gemm import Epilogue, Precision, as_precision
    from ember.devices.cpu.kernels.winograd import winograd_ok

    xport = node.input_values()[0]
    out_logical = static_shape(node.output(0))
    bias, residual, (lo, hi), activation, affine, act, gemm_affine, last, fused = _conv_tail(lowering, node, geo)
    if len(out_logical) in (3, 4) and not (activation or act) and affine is None and gemm_affine is None \
            and as_precision(lowering.precision) is Precision.F32 \
            and winograd_ok(geo.kh, geo.kw, geo.strides, geo.dilations, geo.groups, geo.cin, geo.cout,
                            geo.batch * -(-geo.oh // (2 if geo.kh == 3 else 1)) * -(-geo.ow // 2), geo.h):
        return _emit_winograd(lowering, node, geo, w, bias, residual, Epilogue(lo, hi), last, fused)
    if geo.depthwise and residual is None and len(out_logical) == 4 \
            and _emit_dw_pointwise(lowering, node, geo, w, bias, Epilogue(lo, hi), activation, affine, last, fused):
        return True
    if not geo.depthwise and residual is None and len(out_logical) == 4 \
            and _emit_expand_dw_pointwise(lowering, node, geo, w, bias, Epilogue(lo, hi, act, gemm_affine), last,
                                          fused):
        return True
    if not activation and affine is None and len(out_logical) == 4 \
            and _emit_stem_rows(lowering, node, geo, w, bias, residual, Epilogue(lo, hi, act, gemm_affine), last,
                                fused):
        return True
    epilogue = Epilogue(lo, hi, act, gemm_affine)
    kernel = _shared(lowering, node, geo, ("conv2d", epilogue, activation, affine),
                     lambda: Conv2d(geo, w, epilogue, num_threads=lowering.threads, isa=lowering.isa,
                                    precision=lowering.precision, activation=activation, affine=affine))
    lowering.bf16_ops += kernel.precision.value == "bf16"
    x = _channels_last_input(lowering, xport)
    if x.dtype == np.uint16 and not kernel.x_bf16_ok():  # _bf16_readers_only promised otherwise
        raise EmberError(f"ember: internal: {node.friendly_name} got a bf16 input it cannot read")
    y16 = len(out_logical) == 4 and kernel.y_bf16_ok() and _bf16_readers_only(lowering, last)
    y = _channels_last_value(lowering, out_logical, last.friendly_name, last, bf16=y16)
    ins = [x] + ([residual] if residual is not None else [])

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return [_at_input(kernel, a[0]).bind(a[0], o[0], bias, a[1] if residual is not None else None)]

    inplace = 1 if residual is not None and kernel.residual_in_place_ok() else None
    lowering.program.add(Op(node.friendly_name, node.type_name, ins, [y], native=True, bind=bind, inplace=inplace))
    lowering.finish(last, _from_channels_last(lowering, y, out_logical, last.friendly_name), fused)
    return True


def _shared(lowering: Lowering, node: Node, geo: Any, tag: Hashable, make: Callable[[], Any]) -> Any:
    """The kernel object (a Conv2d, DwPointwise or WinogradConv3x3, its weights packed) for ``node``'s constant
    weights and configuration ``tag``, made once per compiled model: every input shape's plan
    shares it, planned for its own image sizes (``with_input``)."""
    src = const_of(node.input_values()[1])
    if src is None:
        return make()
    # (the node's type too: a transposed convolution lowered as a convolution packs its weights flipped)
    key = (tag, node.type_name, geo.cin, geo.cout, geo.kh, geo.kw, geo.strides, geo.dilations, geo.pads_begin,
           geo.pads_end, geo.groups, lowering.threads)
    return _at_size(lowering.packed(src, key, make), geo.batch, geo.h, geo.w)


def _at_size(kernel: Any, n: int, h: int, w: int) -> Any:
    return kernel if (n, h, w) == kernel.input_sizes else kernel.with_input(n, h, w)


def _at_input(kernel: Any, x: np.ndarray) -> Any:
    """``kernel`` for the NHWC input ``x`` it is bound to: itself, or when a shape-generic plan
    binds it at other image sizes, the same kernel planned for those."""
    return _at_size(kernel, *x.shape[:3])


def _emit_stem_rows(lowering: Lowering, node: Node, geo: Any, w: np.ndarray, bias: np.ndarray | None,
                    residual: Tensor | None, epilogue: Any, last: Node, fused: list[Node]) -> bool:
    """A bf16 stem (few channels, taps that would be merged) on AMX as one tap per kernel row over
    a padded bf16 copy of its f32 input (``kernels/stem_rows.py``; knob ``stem_rows.ENABLED``)."""
    from ember.devices.cpu.kernels import stem_rows
    from ember.devices.cpu.kernels.conv import merge_taps_for, pack_conv_weights
    from ember.devices.cpu.kernels.gemm import Precision, as_precision

    if as_precision(lowering.precision) is not Precision.BF16 or residual is not None \
            or not stem_rows.row_taps_ok(geo.cin, geo.kw, geo.dilations, geo.groups) \
            or not merge_taps_for(geo.cin, geo.kh * geo.kw):
        return False
    xport = node.input_values()[0]
    if len(xport.partial_shape) != 4 or xport.element_type.dtype != F32:
        return False
    packed = pack_conv_weights(stem_rows.row_tap_weights(w), 1, lowering.isa, "bf16", merge_taps=False)
    if not packed.amx or packed.cin != 2 * packed.ktap:
        return False
    src = lowering.tensor(xport)
    if src.dtype != F32:
        return False
    nchw = src.layout != NHWC  # the image's planes read as they are (no NHWC copy of it)
    x = lowering.native_input(src, PLAIN) if nchw else _channels_last_input(lowering, xport)
    out_logical = static_shape(node.output(0))
    y16 = _bf16_readers_only(lowering, last)
    y = _channels_last_value(lowering, out_logical, last.friendly_name, last, bf16=y16)
    sw, (pt, pl) = geo.strides[1], geo.pads_begin
    wp = stem_rows.padded_width(geo.w, geo.ow, geo.kw, sw, pl)
    xp = lowering.value((geo.batch, geo.h, wp, stem_rows.PIXEL), PLAIN, dtype=np.uint16,
                        name=node.friendly_name + "/rows")
    lowering.bf16_ops += 1
    threads, isa = lowering.threads, lowering.isa
    calls: dict[int, Any] = {}

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        ya, xpa = o
        ldy = ya.strides[2] // ya.itemsize
        call = calls.get(ldy)
        if call is None:
            call = calls[ldy] = stem_rows.row_tap_call(packed, geo.batch, geo.h, geo.oh, geo.ow, wp, geo.kh,
                                                       geo.strides, geo.dilations[0], pt, ldy, epilogue, threads,
                                                       ya.dtype == np.uint16)
        pad = stem_rows.to_padded_bf16(a[0], xpa, pl, threads, isa, nchw)
        keep = (bias,) if bias is not None else ()
        return [pad, call.bind(xpa.ctypes.data, ya.ctypes.data, 0 if bias is None else bias.ctypes.data,
                               keep=keep)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [x], [y, xp], native=True, bind=bind))
    lowering.finish(last, _from_channels_last(lowering, y, out_logical, last.friendly_name), fused)
    return True


def _emit_expand_dw_pointwise(lowering: Lowering, node: Node, geo: Any, w: np.ndarray, bias: np.ndarray | None,
                              epilogue: Any, last: Node, fused: list[Node]) -> bool:
    """1x1 convolution ``node`` (an inverted residual block's expansion, its epilogue group up to
    ``last``) fused with the depthwise layer that alone reads it and the 1x1 after that
    (``dw_pointwise.EXPAND``; under bf16 ``EXPAND_BF16``): the expanded tensor is never stored either."""
    from ember.devices.cpu.kernels import dw_pointwise
    from ember.devices.cpu.kernels.conv import ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue, Precision, as_precision

    bf16 = as_precision(lowering.precision) is Precision.BF16
    if not (dw_pointwise.ENABLED and dw_pointwise.EXPAND) or (bf16 and not dw_pointwise.EXPAND_BF16) \
            or (geo.kh, geo.kw, geo.strides, geo.groups) != (1, 1, (1, 1), 1) or any(geo.pads_begin) \
            or any(geo.pads_end):
        return False
    dwn = lowering.sole_consumer(last)
    if dwn is None or dwn.type_name != "GroupConvolution" or dwn.input_values()[0].node is not last \
            or len(dwn.output(0).partial_shape) != 4 or dwn.output(0).element_type.dtype != F32:
        return False
    wd = const_of(dwn.input_values()[1])
    if wd is None or wd.dtype != F32 or wd.ndim != 5 or wd.shape[1:3] != (1, 1) or wd.shape[0] != geo.cout:
        return False
    pb, pe = dwn.resolved_pads(static_shape(dwn.input_values()[0]), wd.shape[3:])
    if min(*pb, *pe) < 0:
        return False
    dil = [int(d) for d in (dwn.attrs["dilations"] or [1, 1])]
    dgeo = ConvGeometry(geo.batch, geo.oh, geo.ow, geo.cout, geo.cout, wd.shape[3], wd.shape[4],
                        _pair(dwn.attrs["strides"]), _pair(dil), _pair(pb), _pair(pe), geo.cout)
    if not dw_pointwise.worth_fusing_expand(dgeo):
        return False
    dw_w = wd.reshape(geo.cout, 1, *wd.shape[3:])
    dbias, dres, (dlo, dhi), activation, affine, _, _, dlast, dfused = _conv_tail(lowering, dwn, dgeo)
    if dres is not None:
        return False
    return _emit_dw_pointwise(lowering, dwn, dgeo, dw_w, dbias, Epilogue(dlo, dhi), activation, affine, dlast,
                              dfused, expand=(node, w, bias, epilogue, fused))


def _emit_dw_pointwise(lowering: Lowering, node: Node, geo: Any, w: np.ndarray, bias: np.ndarray | None,
                       epilogue: Any, activation: str, affine: tuple[float, float] | None, last: Node,
                       fused: list[Node], expand: tuple[Node, np.ndarray, np.ndarray | None, Any, list[Node]] | None = None
                       ) -> bool:
    """Depthwise ``node`` (its epilogue group up to ``last``) and the 1x1 convolution that alone
    reads it, with that one's epilogue group, as one fused kernel
    (:class:`~ember.devices.cpu.kernels.dw_pointwise.DwPointwise`, when ``worth_fusing``): the
    depthwise output is never stored. False (nothing emitted) when the pair does not qualify."""
    from ember.devices.cpu.kernels import dw_pointwise
    from ember.devices.cpu.kernels.conv import ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue

    if not dw_pointwise.ENABLED:
        return False
    pw = lowering.sole_consumer(last)
    if pw is None or pw.type_name != "Convolution" or pw.input_values()[0].node is not last \
            or len(pw.output(0).partial_shape) != 4 or pw.output(0).element_type.dtype != F32:
        return False
    wp = const_of(pw.input_values()[1])
    if wp is None or wp.dtype != F32 or wp.shape != (wp.shape[0], geo.cout, 1, 1):
        return False
    dil = [int(d) for d in (pw.attrs["dilations"] or [1, 1])]
    pb, pe = pw.resolved_pads(static_shape(pw.input_values()[0]), (1, 1))
    if [int(s) for s in pw.attrs["strides"]] != [1, 1] or dil != [1, 1] or any(pb) or any(pe):
        return False
    pgeo = ConvGeometry(geo.batch, geo.oh, geo.ow, geo.cout, wp.shape[0], 1, 1)
    if not dw_pointwise.worth_fusing(geo, pgeo):
        return False
    if expand is not None and not dw_pointwise.expand_band_rows(
            geo, expand[1].shape[1], pgeo.cout, -(-geo.cin // lowering.isa.f32_lanes) * lowering.isa.f32_lanes,
            lowering.threads):
        return False
    pbias, residual, (lo, hi), plast, pfused = _epilogue(lowering, pw, pgeo.cout)
    act, plast, pfused = take_epilogue_activation(lowering, pw, plast, pfused, (lo, hi))
    paffine, plast, pfused = _post_affine(lowering, pw, plast, pfused)
    pw_epilogue = Epilogue(lo, hi, act, paffine)
    tag = ("dw_pointwise", epilogue, pw_epilogue, activation, affine, id(wp), wp.shape,
           None if expand is None else (id(const_of(expand[0].input_values()[1])), expand[1].shape, expand[3]))
    kernel = _shared(lowering, node, geo, tag, lambda: dw_pointwise.DwPointwise(
        geo, w, wp, epilogue, pw_epilogue, num_threads=lowering.threads, isa=lowering.isa, activation=activation,
        affine=affine, precision=lowering.precision, expand=None if expand is None else (expand[1], expand[3])))
    lowering.bf16_ops += kernel.bf16
    first = node if expand is None else expand[0]
    x = _channels_last_input(lowering, first.input_values()[0])
    if x.dtype == np.uint16 and not kernel.bf16:
        raise EmberError(f"ember: internal: {node.friendly_name} got a bf16 input under f32")
    out_logical = static_shape(pw.output(0))
    y16 = kernel.bf16 and kernel.y_bf16_ok() and _bf16_readers_only(lowering, plast)
    y = _channels_last_value(lowering, out_logical, plast.friendly_name, plast, bf16=y16)
    ins = [x] + ([residual] if residual is not None else [])

    ebias = None if expand is None else expand[2]

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return [_at_input(kernel, a[0]).bind(a[0], o[0], bias, pbias, a[1] if residual is not None else None, ebias)]

    name = f"{node.friendly_name}+{pw.friendly_name}"
    before: list[Node] = []
    if expand is not None:
        name, before = f"{expand[0].friendly_name}+{name}", [*expand[4], node]
    lowering.program.add(Op(name, node.type_name, ins, [y], native=True, bind=bind))
    lowering.finish(plast, _from_channels_last(lowering, y, out_logical, plast.friendly_name),
                    [*before, *fused, pw, *pfused])
    return True


def _emit_winograd(lowering: Lowering, node: Node, geo: Any, w: np.ndarray, bias: np.ndarray | None,
                   residual: Tensor | None, epilogue: Any, last: Node, fused: list[Node]) -> bool:
    """A 3x3 stride-1 2-D convolution as Winograd F(2x2, 3x3) or, on larger maps, F(4x4, 3x3)
    (:class:`~ember.devices.cpu.kernels.winograd.WinogradConv3x3`): input transform, 16 or 36
    GEMMs, output transform with the bias, residual and clamp; its two scratch buffers live in
    the arena."""
    from ember.devices.cpu.kernels.winograd import WinogradConv3x3

    out_logical = static_shape(node.output(0))
    kernel = _shared(lowering, node, geo, ("winograd", epilogue),
                     lambda: WinogradConv3x3(geo.batch, geo.h, geo.w, geo.cin, geo.cout,
                                             (*geo.pads_begin, *geo.pads_end), w, epilogue,
                                             num_threads=lowering.threads, isa=lowering.isa))
    x = _channels_last_input(lowering, node.input_values()[0])
    y = _channels_last_value(lowering, out_logical, last.friendly_name, last)
    nv, nm = kernel.scratch_sizes
    v = lowering.value((max(nv, 1),), PLAIN, name=node.friendly_name + "/winograd_v")
    m = lowering.value((max(nm, 1),), PLAIN, name=node.friendly_name + "/winograd_m")
    ins = [x] + ([residual] if residual is not None else [])

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return _at_input(kernel, a[0]).bind(a[0], o[0], o[1], o[2], bias, a[1] if residual is not None else None)

    # the output transform reads each residual pixel right before it writes that pixel
    lowering.program.add(Op(node.friendly_name, node.type_name, ins, [y, v, m], native=True, bind=bind,
                            inplace=1 if residual is not None else None))
    lowering.finish(last, _from_channels_last(lowering, y, out_logical, last.friendly_name), fused)
    return True


#: depthwise kernels up to this many taps read a bf16 input (the kernel can, any size). Off:
#: unlike a GEMM, which rounds its A to bf16 anyway, a depthwise kernel computes on f32 inputs,
#: so a bf16 input is a new rounding, and PP-OCRv4 det then moves by 0.21 against REFERENCE
#: (compare.py's bf16 tolerance is 0.1; OpenVINO's own bf16: 0.19). What it would buy, one
#: thread: MobileNetV2 (3x3) 0.95x; from 5x5 on the widened loads cost more than the halved
#: bytes save (EfficientNet-Lite0 1.03x, PP-OCRv4 rec 1.09x).
DW_BF16_MAX_TAPS = 0


def _bf16_readers_only(lowering: Lowering, last: Node) -> bool:
    """Whether ``last``'s output (bf16 precision) may be stored as bf16: it is no model output and
    every reader is a 2-D convolution reading it as its data input that the bf16 implicit GEMM
    runs with unmerged taps (it reads bf16 straight into its packed rows), or a depthwise one of
    at most ``DW_BF16_MAX_TAPS`` taps (the specialized kernel widens bf16 at every tap's load), or a
    residual Add that such a convolution's epilogue takes (:func:`_bf16_residual_reader`). Any
    other reader (pooling, elementwise ops) keeps f32."""
    from ember.devices.cpu.kernels.conv import merge_taps_for

    port = last.output(0)
    if lowering.precision != "bf16" or lowering.is_result(port) or not port.targets \
            or port.element_type.dtype != F32:
        return False
    xs = static_shape(port)
    for t in port.targets:
        reader = t.node
        if reader.type_name == "Add" and _bf16_residual_reader(reader, port):
            continue
        if reader.type_name == "MaxPool" and _bf16_max_pool(lowering, reader):
            continue
        if reader.type_name not in ("Convolution", "GroupConvolution") or t.index != 0 \
                or len(reader.input_values()) != 2 or len(reader.output(0).partial_shape) != 4:
            return False
        w = const_of(reader.input_values()[1])
        if w is None or w.dtype != F32 or w.ndim != (4 if reader.type_name == "Convolution" else 5):
            return False
        pb, pe = reader.resolved_pads(xs, w.shape[-2:])
        taps = w.shape[-2] * w.shape[-1]
        if min(*pb, *pe) < 0:
            return False
        if reader.type_name == "GroupConvolution":  # depthwise only: [C, 1, 1, KH, KW] over C channels
            if w.shape[1] != 1 or w.shape[2] != 1 or w.shape[0] != xs[1] or taps > DW_BF16_MAX_TAPS:
                return False
        elif merge_taps_for(w.shape[1], taps):
            return False
    return True


#: a 2-D max pooling whose readers all read bf16 reads and stores bf16 itself (ResNet-50's
#: pool after the stem): the maximum of rounded values is the rounded maximum, so its readers
#: get the same bits as from an f32 pooling. Off: the pool stays f32, and so does its producer.
BF16_MAX_POOL = True


def _bf16_max_pool(lowering: Lowering, pool: Node) -> bool:
    """Whether the max pooling ``pool`` (bf16 precision) pools bf16 into bf16: 2-D, its indices
    unused, no negative padding, and its own output bf16 (:func:`_bf16_readers_only`)."""
    if not BF16_MAX_POOL or len(pool.input_values()[0].partial_shape) != 4:
        return False
    if any(o.targets or lowering.is_result(o) for o in pool.outputs()[1:]):
        return False
    pb, pe, _ = pool.plan(pool.input_values()[0].partial_shape)
    return min(*pb, *pe) >= 0 and _bf16_readers_only(lowering, pool)


def _bf16_residual_reader(add: Node, port: Output) -> bool:
    """Whether ``add`` is the residual Add of an epilogue group (``mark_epilogue_groups``) led by
    a plain 2-D convolution, with ``port`` its residual of the same shape: that convolution's
    bf16 epilogue reads the residual as bf16."""
    from ember.passes.fusions import FUSED_GROUP

    group = add.rt_info.get(FUSED_GROUP)
    ins = add.input_values()
    if not isinstance(group, dict) or len(ins) != 2 or add.output(0).partial_shape != port.partial_shape:
        return False
    mine = [p.node is port.node and p.index == port.index for p in ins]
    if all(mine) or not any(mine):
        return False

    def member(n: Node) -> dict | None:
        g = n.rt_info.get(FUSED_GROUP)
        return g if isinstance(g, dict) and g.get("value") == group.get("value") else None

    node = ins[1].node if mine[0] else ins[0].node
    for _ in range(4):  # back through the bias Add to the group's producer
        g = member(node)
        if g is None:
            return False
        if str(g.get("position")) == "0":
            break
        links = [p.node for p in node.input_values() if member(p.node) is not None]
        if len(links) != 1:
            return False
        node = links[0]
    else:
        return False
    w = const_of(node.input_values()[1]) if node.type_name == "Convolution" else None
    return w is not None and w.dtype == F32 and w.ndim == 4 and node.output(0).partial_shape == port.partial_shape


def _post_affine(lowering: Lowering, node: Node, last: Node,
                 fused: list[Node]) -> tuple[tuple[float, float] | None, Node, list[Node]]:
    """A marked scalar Multiply (and scalar Add) after the activation: ``(scale, shift)``."""
    scale_shift, took = [1.0, 0.0], 0
    for i, kind in enumerate(("Multiply", "Add")):
        after = lowering.sole_consumer(last)
        if after is None or after.type_name != kind or not same_fused_group(last, after) \
                or after.output(0).partial_shape != node.output(0).partial_shape \
                or after.output(0).element_type.dtype != F32:
            break
        a, b = after.input_values()
        c = const_of(b if a.node is last else a)
        if c is None or c.size != 1 or (a.node is last) == (b.node is last):
            break
        scale_shift[i] = float(np.asarray(c, np.float32).reshape(()))
        last, fused, took = after, [*fused, after], took + 1
    if not took:
        return None, last, fused
    return (scale_shift[0], scale_shift[1]), last, fused


def _lower_conv3d(lowering: Lowering, node: Node, w: np.ndarray, groups: int, strides: list[int],
                  dil: list[int], pb: list[int], pe: list[int]) -> bool:
    """A 3-D convolution as 2-D convolutions of depth slices: for each depth tap, one Conv2d
    whose images are the output depths it reaches (the input read every ``stride`` slices);
    the taps of an output depth add up in place (the first writes, the others add it as a
    residual, the last clamps)."""
    from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue

    xport = node.input_values()[0]
    n, c, d, h, wd = static_shape(xport)
    out_logical = static_shape(node.output(0))
    od = out_logical[2]
    kd = w.shape[2]
    reach = []  # for each depth tap, the output depths [a, b) whose input slice exists
    for t in range(kd):
        off = t * dil[0] - pb[0]
        a = max(0, -(off // strides[0]))
        b = min(od, (d - 1 - off) // strides[0] + 1) if d - 1 - off >= 0 else 0
        reach.append((a, max(a, b)))
    cuts = sorted({0, od, *(x for r in reach for x in r if 0 <= x <= od)})
    segments = []
    for a, b in zip(cuts, cuts[1:]):
        taps = [t for t in range(kd) if reach[t][0] <= a and b <= reach[t][1]]
        if not taps:
            return False  # a depth with no tap: bias only (not worth a kernel)
        segments.append((a, b, taps))
    bias, residual, (lo, hi), last, fused = _epilogue(lowering, node, w.shape[0])
    geo2 = {}
    plans = []  # (first output depth, end, depth tap, first tap of those depths, Conv2d)
    for a, b, taps in segments:
        for i, t in enumerate(taps):
            first, final = i == 0, i == len(taps) - 1
            key = (b - a, t, final)
            if key not in geo2:
                g = ConvGeometry(b - a, h, wd, c, w.shape[0], w.shape[3], w.shape[4], _pair(strides[1:]),
                                 _pair(dil[1:]), _pair(pb[1:]), _pair(pe[1:]), groups)
                epi = Epilogue(lo, hi) if final else Epilogue()
                geo2[key] = Conv2d(g, np.ascontiguousarray(w[:, :, t]), epi, num_threads=lowering.threads,
                                   isa=lowering.isa, precision=lowering.precision)
            plans.append((a, b, t, first, geo2[key]))
    lowering.bf16_ops += lowering.precision == "bf16"
    x = _channels_last_input(lowering, xport)
    y = _channels_last_value(lowering, out_logical, last.friendly_name, last)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        xa, ya = ins[0], outs[0]
        calls = []
        for img in range(n):
            for a, b, t, first, conv in plans:
                start = a * strides[0] + t * dil[0] - pb[0]
                xv = xa[img, start:start + (b - a - 1) * strides[0] + 1:strides[0]]
                yv = ya[img, a:b]
                if first:  # the first tap of these depths writes, with the bias and the residual
                    res = ins[1][img, a:b] if residual is not None else None
                    calls.append(conv.bind(xv, yv, bias, res))
                else:
                    calls.append(conv.bind(xv, yv, None, yv))
        return calls

    ins = [x] + ([residual] if residual is not None else [])
    lowering.program.add(Op(node.friendly_name, node.type_name, ins, [y], native=True, bind=bind))
    lowering.finish(last, _from_channels_last(lowering, y, out_logical, last.friendly_name), fused)
    return True


@lowers("ConvolutionBackpropData", "GroupConvolutionBackpropData")
def lower_conv_transpose(lowering: Lowering, node: Node) -> bool:
    """Transposed convolutions, 1-D to 3-D, any strides, dilations, pads, output padding,
    output shape and groups. Stride 1 without much padding: an ordinary convolution with the
    kernel flipped. 1-D with strides: one convolution per output phase, each writing every
    ``stride``-th output pixel (:class:`~ember.devices.cpu.kernels.deconv.PhaseConvTranspose1d`).
    Otherwise a GEMM into per-pixel columns and a gather that sums them
    (:mod:`~ember.devices.cpu.kernels.deconv`); depthwise ones gather from the input itself."""
    from ember.devices.cpu.kernels.deconv import ConvTranspose, DeconvGeometry, PhaseConvTranspose1d, phase_plans
    from ember.devices.cpu.kernels.gemm import Epilogue

    w = const_of(node.input_values()[1])
    xport = node.input_values()[0]
    rank = len(xport.partial_shape)
    if w is None or w.dtype != F32 or xport.element_type.dtype != F32 or rank not in (3, 4, 5):
        return False
    xs, ys = static_shape(xport), static_shape(node.output(0))
    n_sp = rank - 2
    wg = w[None] if node.type_name == "ConvolutionBackpropData" else w  # [G, C/G, O/G, *K]
    groups = int(wg.shape[0])
    attrs = node.attrs
    pb = tuple(int(p) for p in (attrs["pads_begin"] or [0] * n_sp))  # inference resolved auto_pad
    if str(attrs["auto_pad"]).lower() == "valid":
        pb = (0,) * n_sp
    geo = DeconvGeometry(xs[0], tuple(xs[2:]), tuple(ys[2:]), xs[1], ys[1], tuple(int(k) for k in wg.shape[3:]),
                         tuple(int(s) for s in attrs["strides"]),
                         tuple(int(d) for d in (attrs["dilations"] or [1] * n_sp)), pb, groups)
    if rank != 5 and _as_convolution(lowering, node, geo, wg):
        return True
    # 1-D with strides: one ordinary convolution per output phase (no columns, no gather)
    phases = rank == 3 and not geo.depthwise and geo.strides[0] > 1 and phase_plans(
        geo.spatial[0], geo.out_spatial[0], geo.kernel[0], geo.strides[0], geo.dilations[0],
        geo.pads_begin[0]) is not None
    bias, residual, (lo, hi), last, fused = _epilogue(lowering, node, geo.cout)
    kernel: ConvTranspose | PhaseConvTranspose1d
    if phases:
        kernel = PhaseConvTranspose1d(geo, wg, Epilogue(lo, hi), num_threads=lowering.threads, isa=lowering.isa,
                                      precision=lowering.precision)
    else:  # one object per weights and configuration for every input shape's plan (see _shared)
        key = ("deconv", geo.cin, geo.cout, geo.kernel, geo.strides, geo.dilations, geo.pads_begin, geo.groups,
               Epilogue(lo, hi), lowering.threads)
        kernel = lowering.packed(w, key, lambda: ConvTranspose(geo, wg, Epilogue(lo, hi), num_threads=lowering.threads,
                                                               isa=lowering.isa, precision=lowering.precision))
    lowering.bf16_ops += kernel.precision.value == "bf16"
    x = _channels_last_input(lowering, xport)
    y = _channels_last_value(lowering, ys, last.friendly_name, last)
    ins = [x] + ([residual] if residual is not None else [])
    outs = [y]
    if not geo.depthwise and not phases:
        outs.append(lowering.value(geo.cols_shape, PLAIN, name=node.friendly_name + "/cols"))

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        res = _kernel_view(a[1], rank) if residual is not None else None
        xv, yv = _kernel_view(a[0], rank), _kernel_view(o[0], rank)
        if isinstance(kernel, PhaseConvTranspose1d):
            return kernel.bind(xv, yv, bias, res)
        k = kernel
        if xv.shape != k.geometry.input_shape or yv.shape != k.geometry.output_shape:  # another input shape's plan
            k = kernel.with_input(xv.shape[0], xv.shape[1:-1], yv.shape[1:-1])
        return k.bind(xv, yv, o[1] if len(o) > 1 else None, bias, res)

    lowering.program.add(Op(node.friendly_name, node.type_name, ins, outs, native=True, bind=bind))
    lowering.finish(last, _from_channels_last(lowering, y, ys, last.friendly_name), fused)
    return True


def _as_convolution(lowering: Lowering, node: Node, geo: Any, wg: np.ndarray) -> bool:
    """A stride-1 transposed convolution is a convolution with the kernel flipped and the pads
    ``dilation * (k - 1) - pad``: lower it so when those pads are not negative and few (the
    implicit GEMM multiplies padding too)."""
    from ember.devices.cpu.kernels.conv import ConvGeometry

    if any(s != 1 for s in geo.strides):
        return False
    begin = [d * (k - 1) - p for d, k, p in zip(geo.dilations, geo.kernel, geo.pads_begin)]
    end = [o - i + d * (k - 1) - b for o, i, d, k, b in
           zip(geo.out_spatial, geo.spatial, geo.dilations, geo.kernel, begin)]
    if min(*begin, *end) < 0 or math.prod(geo.out_spatial) > 1.3 * math.prod(geo.spatial):
        return False
    flip = (slice(None),) * 3 + (slice(None, None, -1),) * len(geo.kernel)
    w = np.ascontiguousarray(wg[flip].transpose(0, 2, 1, *range(3, wg.ndim)).reshape(
        geo.cout, geo.cin // geo.groups, *geo.kernel))
    dil = list(geo.dilations)
    h, wd = ((1,) * (2 - len(geo.spatial)) + geo.spatial)
    if len(geo.kernel) == 1:
        w, begin, end, dil = w[:, :, None], [0, *begin], [0, *end], [1, *dil]
    conv_geo = ConvGeometry(geo.batch, h, wd, geo.cin, geo.cout, w.shape[2], w.shape[3], (1, 1), tuple(dil),
                            tuple(begin), tuple(end), geo.groups)
    return _emit_conv2d(lowering, node, conv_geo, w)


# -- pooling and reductions -------------------------------------------------------------------

@lowers("MaxPool", "AvgPool")
def lower_pool(lowering: Lowering, node: Node) -> bool:
    """Max and average pooling on channel-last tensors: 2-D on NHWC, 1-D as 2-D with a height
    of 1, 3-D as a 2-D pooling of each depth slice then one over depth (both poolings are
    separable: the max of maxima, and a divisor that is a product of per-axis counts)."""
    from ember.devices.cpu.kernels.pool import pool2d

    xport = node.input_values()[0]
    rank = len(xport.partial_shape)
    if xport.element_type.dtype == np.float64:  # f64: its own kernel
        from ember.devices.cpu.lowering.f64 import lower_avgpool_f64

        return lower_avgpool_f64(lowering, node)
    if xport.element_type.dtype != F32 or rank not in (3, 4, 5):
        return False
    want_indices = any(o.targets for o in node.outputs()[1:]) or any(lowering.is_result(o) for o in node.outputs()[1:])
    if want_indices and rank == 5:  # the separable 3-D pooling does not track indices
        from ember.devices.cpu.lowering.pool3d import maxpool3d_with_indices

        return maxpool3d_with_indices(lowering, node)
    pb, pe, _ = node.plan(xport.partial_shape)
    kernel = [int(k) for k in node.attrs["kernel"]]
    if min(*pb, *pe) < 0:
        return False
    strides = [int(s) for s in node.attrs["strides"]]
    dil = [int(d) for d in node._dilations(rank - 2)]
    out_logical = static_shape(node.output(0))
    mode = "max" if node.type_name == "MaxPool" else "avg"
    exclude = bool(node.attrs.get("exclude-pad", False))
    padded = any(pb) or any(pe)
    threads, isa = lowering.threads, lowering.isa
    x = _channels_last_input(lowering, xport)
    if x.dtype == np.uint16 and (mode != "max" or rank != 4 or want_indices):  # _bf16_max_pool promised otherwise
        raise EmberError(f"ember: internal: {node.friendly_name} got a bf16 input it cannot pool")
    y = _channels_last_value(lowering, out_logical, node.friendly_name, node, bf16=x.dtype == np.uint16)
    if rank == 3:
        kernel, strides, dil, pb, pe = [1, *kernel], [1, *strides], [1, *dil], [0, *pb], [0, *pe]
    ins, outs = [x], [y]
    axis = int(node.attrs.get("axis", 0))
    if want_indices:
        index_port = node.output(1)
        outs.append(lowering.value(static_shape(index_port), PLAIN, index_port.element_type.dtype,
                                   name=node.friendly_name + "/indices"))
    if rank == 5:
        n, c = out_logical[:2]
        d, od = x.shape[1], out_logical[2]
        oh, ow = out_logical[3:]
        mid = lowering.value((n, d, oh, ow, c), PLAIN, name=node.friendly_name + "/hw")
        outs.append(mid)

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        if rank != 5:
            index = o[1].reshape(o[0].shape[0], o[0].shape[3], *o[0].shape[1:3]) if want_indices else None
            return [pool2d(a[0], o[0], _pair(kernel), _pair(strides), _pair(dil), _pair(pb), _pair(pe), mode,
                           exclude, threads, isa, padded=padded, indices=index, axis=axis)]
        xa, ya, ma = a[0], o[0], o[1]
        hw = pool2d(xa.reshape(n * d, *xa.shape[2:]), ma.reshape(n * d, oh, ow, c), _pair(kernel[1:]),
                    _pair(strides[1:]), _pair(dil[1:]), _pair(pb[1:]), _pair(pe[1:]), mode, exclude, threads, isa,
                    padded=padded)
        depth = pool2d(ma.reshape(n, d, oh * ow, c), ya.reshape(n, od, oh * ow, c), (kernel[0], 1),
                       (strides[0], 1), (dil[0], 1), (pb[0], 0), (pe[0], 0), mode, exclude, threads, isa,
                       padded=padded)
        return [hw, depth]

    lowering.program.add(Op(node.friendly_name, node.type_name, ins, outs, native=True, bind=bind))
    for o in node.outputs()[1:]:  # indices: computed when used
        lowering.bind_port(o, outs[1] if want_indices else lowering.value(static_shape(o), PLAIN, o.element_type.dtype))
    lowering.finish(node, _from_channels_last(lowering, y, out_logical, node.friendly_name), [])
    return True
