"""A bf16 stem on AMX tiles as one tap per kernel row (issue 20, session 7).

A network's stem (a convolution of few input channels, ResNet-50's 7x7/2 over 3 channels) has
too few channels per tap for tiles; the implicit GEMM merges its taps and gathers each output
pixel's 147 values into a row first. Here the image is first copied once into bf16 with every
pixel widened to 4 channels (the fourth zero) and the left and right padding written as zero
pixels (:func:`to_padded_bf16`); a kernel row of ``kw`` pixels is then ``4 kw`` contiguous
values, so the convolution is one of ``kh`` taps of ``4 kw`` channels over "pixels" that
overlap (pixel stride 4 values), read by the tiles in place (stride ``4 sw`` values between
output pixels), the top and bottom padding read from the kernel's zero row. The weights are
reordered to match (kernel column, channel), zero for the fourth channel. The same products
as the merged stem, in another order: within f32 rounding of it.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import Epilogue, IGemmCall, PackedWeights
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import BF16, F32, I16, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.errors import EmberError

#: the stem as kernel-row taps under bf16 on AMX (off: the merged-tap gather)
ENABLED = True
PIXEL = 4  # channels of a widened pixel
MAX_KW = 8  # 4 kw values per tap fill at most one tile step (16 bf16 pairs)

PAD_CONTEXT = ContextLayout("stem_pad", ("x", "xp", "h", "w", "c", "ps", "cs", "rs", "xn", "wp", "pl"),
                            pointers=("x", "xp"))


def row_taps_ok(cin: int, kw: int, dilations: tuple[int, int], groups: int) -> bool:
    """Whether a convolution can run as kernel-row taps: at most 4 channels, one group, no
    horizontal dilation, a kernel row of at most :data:`MAX_KW` pixels."""
    return ENABLED and groups == 1 and 0 < cin <= PIXEL and dilations[1] == 1 and 1 < kw <= MAX_KW


def _emit_pad(m: ir.Module, prefix: str) -> None:
    """pad_task(ctx, task): task -> (image, row): the row's pixels widened to 4 bf16 values
    (round to nearest even), ``pl`` zero pixels before them and zeros up to ``wp`` pixels.
    Element (pixel p, channel k) of the row is at ``x + p ps + k cs``: NHWC (``cs = 1``) or
    NCHW planes (``ps = 1``)."""
    fn = Emitter.function(m, f"{prefix}_pad_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, PAD_CONTEXT)
    b = e.b
    task = fn.args[1]
    H, W, C, ps, cs, wp, pl = (e.arg(k) for k in ("h", "w", "c", "ps", "cs", "wp", "pl"))
    img, row = b.sdiv(task, H), b.srem(task, H)
    x = e.gep(F32, e.arg("x", PTR), b.add(b.mul(img, e.arg("xn")), b.mul(row, e.arg("rs"))))
    xp = e.gep(I64, e.arg("xp", PTR), b.mul(task, wp))  # one i64 per widened pixel
    zero = c64(0)
    with e.loop(0, pl, name="zl") as p:
        b.store(zero, e.gep(I64, xp, p), align=8)
    with e.loop(b.add(pl, W), wp, name="zr") as p:
        b.store(zero, e.gep(I64, xp, p), align=8)
    dst = e.gep(I64, xp, pl)
    n = 16
    i32v = ir.IntType(32)
    three = b.icmp_signed("==", C, c64(3))
    dense = b.and_(three, b.and_(b.icmp_signed("==", ps, c64(3)), b.icmp_signed("==", cs, c64(1))))
    planar = b.and_(three, b.icmp_signed("==", ps, c64(1)))
    full = b.select(b.or_(dense, planar), b.mul(b.sdiv(W, c64(n)), c64(n)), c64(0))

    def put(wide: ir.Value, p: ir.Value) -> None:
        h = b.bitcast(b.fptrunc(wide, vec(BF16, 4 * n)), vec(I16, 4 * n))
        b.store(h, e.gep(I64, dst, p), align=8)

    with b.if_else(dense) as (nhwc, nchw):
        with nhwc:  # 16 pixels of 3 channels: one 48-float load, widened with zeros
            spread = [48 if k % 4 == 3 else 3 * (k // 4) + k % 4 for k in range(4 * n)]
            zeros48 = ir.Constant(vec(F32, 48), None)
            with e.loop(0, full, n, name="px") as p:
                v = e.load(vec(F32, 48), e.gep(F32, x, b.mul(p, c64(3))), align=4)
                put(b.shuffle_vector(v, zeros48, ir.Constant(vec(i32v, 4 * n), spread)), p)
        with nchw:  # 16 pixels from each of 3 planes, interleaved with a zero plane
            lo_idx = ir.Constant(vec(i32v, 2 * n), list(range(2 * n)))
            inter = [(k % 4) * n + k // 4 for k in range(4 * n)]
            zeros = ir.Constant(vec(F32, n), None)
            with e.loop(0, full, n, name="pp") as p:
                planes = [e.load(vec(F32, n), e.gep(F32, x, b.add(p, b.mul(c64(k), cs))), align=4) for k in range(3)]
                ab = b.shuffle_vector(planes[0], planes[1], lo_idx)
                cz = b.shuffle_vector(planes[2], zeros, lo_idx)
                put(b.shuffle_vector(ab, cz, ir.Constant(vec(i32v, 4 * n), inter)), p)
    with e.loop(full, W, name="pt") as p:  # one pixel at a time
        base = e.gep(F32, x, b.mul(p, ps))
        v = ir.Constant(vec(F32, PIXEL), None)
        for k in range(PIXEL):
            real = b.icmp_signed("<", c64(k), C)
            ptr = b.select(real, e.gep(F32, base, b.mul(c64(k), cs)), base)  # base: always readable
            v = b.insert_element(v, b.select(real, e.load(F32, ptr), ir.Constant(F32, 0.0)), c32(k))
        h = b.bitcast(b.fptrunc(v, vec(BF16, PIXEL)), I64)
        b.store(h, e.gep(I64, dst, p), align=8)
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_pad(m, prefix)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"stem_rows|{isa.level}", isa, lambda p: _build(p, isa))


def padded_width(w: int, ow: int, kw: int, sw: int, pl: int) -> int:
    """Pixels of a padded row: the image after ``pl`` zero pixels, and every kernel row read."""
    return max(pl + w, sw * (ow - 1) + kw)


def to_padded_bf16(x: np.ndarray, xp: np.ndarray, pl: int, threads: int, isa: Isa, nchw: bool = False) -> BoundKernel:
    """A bound kernel writing f32 ``x`` (NHWC, or with ``nchw`` NCHW; at most 4 channels) into
    ``xp`` ``[N, H, WP, 4]`` uint16 (bf16 bits): each row ``pl`` zero pixels, the pixels
    widened to 4 channels with zeros, then zero pixels up to ``WP``."""
    if nchw:
        n, c, h, w = x.shape
    else:
        n, h, w, c = x.shape
    st = [v // 4 for v in x.strides]
    if nchw:
        ps, cs, rs, xn, ok = 1, st[1], st[2], st[0], x.strides[3] == 4
    else:
        ps, cs, rs, xn, ok = st[2], 1, st[1], st[0], x.strides[3] == 4
    if c > PIXEL or x.dtype != np.float32 or not ok or any(v % 4 for v in x.strides):
        raise EmberError("ember: the stem's input must be f32 of at most 4 channels, unit stride along its last axis")
    if xp.dtype != np.uint16 or xp.shape[:2] != (n, h) or xp.shape[2] < pl + w or xp.shape[3] != PIXEL \
            or not xp.flags.c_contiguous:
        raise EmberError(f"ember: the stem's padded copy must be contiguous uint16 [{n}, {h}, >= {pl + w}, 4]")
    ctx = PAD_CONTEXT.new()
    PAD_CONTEXT.fill(ctx, x=x.ctypes.data, xp=xp.ctypes.data, h=h, w=w, c=c, ps=ps, cs=cs, rs=rs, xn=xn,
                     wp=xp.shape[2], pl=pl)
    return BoundKernel(_library(isa).address("pad_task"), ctx, n * h if x.size else 0, threads, (x, xp),
                       layout=PAD_CONTEXT)


def row_tap_weights(w: np.ndarray) -> np.ndarray:
    """``w[OC, C, KH, KW]`` as ``[OC, 4 KW, KH, 1]``: channel ``4 kx + c`` of tap ``ky`` is
    ``w[:, c, ky, kx]``, zero for ``c >= C``."""
    oc, c, kh, kw = w.shape
    wide = np.zeros((oc, kw, PIXEL, kh), np.float32)
    wide[:, :, :c, :] = np.asarray(w, np.float32).transpose(0, 3, 1, 2)
    return wide.reshape(oc, kw * PIXEL, kh, 1)


def row_tap_call(packed: PackedWeights, n: int, h: int, oh: int, ow: int, wp: int, kh: int,
                 strides: tuple[int, int], dh: int, pt: int, ldy: int, epilogue: Epilogue, threads: int,
                 y_bf16: bool) -> IGemmCall:
    """The implicit GEMM over the padded copy (``wp`` widened pixels a row): ``kh`` taps of one
    kernel row each, pixels 4 values apart, no horizontal padding (it is in the copy)."""
    if not packed.amx or packed.cin != 2 * packed.ktap:
        raise EmberError("ember: internal: the stem's row taps need AMX weights of whole tile steps")
    geo = dict(h=h, w=wp, oh=oh, ow=ow, kh=kh, kw=1, sh=strides[0], sw=strides[1], dh=dh, dw=1, pt=pt, pl=0,
               xn=h * wp * PIXEL)
    return IGemmCall(packed, m=n * oh * ow, x_geometry=geo, ldx=PIXEL, ldy=ldy, epilogue=epilogue,
                     num_threads=threads, x_bf16=True, y_bf16=y_bf16)
