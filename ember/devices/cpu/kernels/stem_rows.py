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
from ember.devices.cpu.llvm.codegen import BF16, F32, I16, I64, PTR, VOID, Emitter, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa
from ember.devices.cpu.llvm.vector import lane_mask, masked_load
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.errors import EmberError

#: the stem as kernel-row taps under bf16 on AMX (off: the merged-tap gather)
ENABLED = True
PIXEL = 4  # channels of a widened pixel
MAX_KW = 8  # 4 kw values per tap fill at most one tile step (16 bf16 pairs)

PAD_CONTEXT = ContextLayout("stem_pad", ("x", "xp", "h", "w", "c", "ldx", "xn", "wp", "pl"), pointers=("x", "xp"))


def row_taps_ok(cin: int, kw: int, dilations: tuple[int, int], groups: int) -> bool:
    """Whether a convolution can run as kernel-row taps: at most 4 channels, one group, no
    horizontal dilation, a kernel row of at most :data:`MAX_KW` pixels."""
    return ENABLED and groups == 1 and 0 < cin <= PIXEL and dilations[1] == 1 and 1 < kw <= MAX_KW


def _emit_pad(m: ir.Module, prefix: str) -> None:
    """pad_task(ctx, task): task -> (image, row): the row's pixels widened to 4 bf16 values
    (round to nearest even), ``pl`` zero pixels before them and zeros up to ``wp`` pixels."""
    fn = Emitter.function(m, f"{prefix}_pad_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, PAD_CONTEXT)
    b = e.b
    task = fn.args[1]
    H, W, C, ldx, wp, pl = e.arg("h"), e.arg("w"), e.arg("c"), e.arg("ldx"), e.arg("wp"), e.arg("pl")
    img, row = b.sdiv(task, H), b.srem(task, H)
    x = e.gep(F32, e.arg("x", PTR), b.add(b.mul(img, e.arg("xn")), b.mul(b.mul(row, W), ldx)))
    xp = e.gep(I64, e.arg("xp", PTR), b.mul(task, wp))  # one i64 per widened pixel
    zero = c64(0)
    with e.loop(0, pl, name="zl") as p:
        b.store(zero, e.gep(I64, xp, p), align=8)
    with e.loop(b.add(pl, W), wp, name="zr") as p:
        b.store(zero, e.gep(I64, xp, p), align=8)
    dst = e.gep(I64, xp, pl)
    n = 16
    dense = b.and_(b.icmp_signed("==", C, c64(3)), b.icmp_signed("==", ldx, c64(3)))
    full = b.select(dense, b.mul(b.sdiv(W, c64(n)), c64(n)), c64(0))
    # 16 pixels of 3 channels: one 48-float load, widened to 64 values with zeros, rounded
    spread = [48 if k % 4 == 3 else 3 * (k // 4) + k % 4 for k in range(4 * n)]
    zeros48 = ir.Constant(vec(F32, 48), None)
    with e.loop(0, full, n, name="px") as p:
        v = e.load(vec(F32, 48), e.gep(F32, x, b.mul(p, c64(3))), align=4)
        wide = b.shuffle_vector(v, zeros48, ir.Constant(vec(ir.IntType(32), 4 * n), spread))
        h = b.bitcast(b.fptrunc(wide, vec(BF16, 4 * n)), vec(I16, 4 * n))
        b.store(h, e.gep(I64, dst, p), align=8)
    mask = lane_mask(e, C, PIXEL)
    with e.loop(full, W, name="pt") as p:  # one pixel at a time
        v = masked_load(e, vec(F32, PIXEL), e.gep(F32, x, b.mul(p, ldx)), mask)
        v = b.select(mask, v, ir.Constant(vec(F32, PIXEL), None))
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


def to_padded_bf16(x: np.ndarray, xp: np.ndarray, pl: int, threads: int, isa: Isa) -> BoundKernel:
    """A bound kernel writing f32 NHWC ``x`` (at most 4 channels, contiguous channels) into
    ``xp`` ``[N, H, WP, 4]`` uint16 (bf16 bits): each row ``pl`` zero pixels, the pixels
    widened to 4 channels with zeros, then zero pixels up to ``WP``."""
    n, h, w, c = x.shape
    if c > PIXEL or x.dtype != np.float32 or x.strides[3] != 4 or x.strides[1] != w * x.strides[2]:
        raise EmberError("ember: the stem's input must be f32 NHWC of at most 4 contiguous channels")
    if xp.dtype != np.uint16 or xp.shape[:2] != (n, h) or xp.shape[2] < pl + w or xp.shape[3] != PIXEL \
            or not xp.flags.c_contiguous:
        raise EmberError(f"ember: the stem's padded copy must be contiguous uint16 [{n}, {h}, >= {pl + w}, 4]")
    ctx = PAD_CONTEXT.new()
    PAD_CONTEXT.fill(ctx, x=x.ctypes.data, xp=xp.ctypes.data, h=h, w=w, c=c, ldx=x.strides[2] // 4,
                     xn=x.strides[0] // 4, wp=xp.shape[2], pl=pl)
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
