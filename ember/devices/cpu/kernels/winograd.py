"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) on NHWC activations
(and 1-D three-tap convolutions by F(2, 3), the same with one row).

Each 2x2 block of outputs (a *tile*) comes from a 4x4 block of inputs. With the transforms

    B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
    A^T = [1 1 1 0; 0 1 -1 -1]

a tile is ``A^T [(G g G^T) . (B^T d B)] A`` per channel pair, summed over input channels: 16
products per tile and channel pair instead of 36. Summed over channels, the 16 element-wise
products are 16 independent GEMMs ``M[k] = V[k] @ U[k]`` (``V[k]``: tiles x input channels,
``U[k]``: input x output channels), so a convolution runs as three native steps:

1. the input transform writes ``V[tile][k][cin]`` (``B^T d B`` for 16 channels at once, padding
   and the borders read as zeros);
2. one grouped GEMM (:class:`~ember.devices.cpu.kernels.gemm.IGemmCall` with 16 groups, the
   transformed weights ``U = G g G^T`` packed once) writes ``M[tile][k][cout]``;
3. the output transform ``A^T m A`` adds the bias and residual, clamps, and writes the tile's
   (up to) four output pixels.

The GEMMs do 16 / 36 of the direct convolution's multiply-adds; the transforms stream V and M
(16 floats per tile and channel) through the cache. It pays when both channel counts are
large enough for the GEMMs (:func:`winograd_ok`). The results differ from the direct
convolution's by rounding only (the transforms' coefficients are 1 and 1/2).

Larger maps run F(4x4, 3x3) (:func:`winograd_tile`): 6x6 input blocks, 4x4 output tiles, 36
GEMMs doing 36 / 144 of the direct multiply-adds, V and M 36 floats per 16 outputs. Its
transforms (Lavin and Gray's factoring of B^T and A^T, interpolation points 0, +-1, +-2 and
infinity) have coefficients up to 8 and G's down to 1/24: the rounding error is about ten
times F(2x2)'s, ~1e-6 of the output's scale. Measured on ResNet-50's shapes (two threads,
alone): 56x56x64 322 -> 171 us, 28x28x128 255 -> 146 us; 14x14x256 237 -> 178 us alone but
no gain in the model (16 tiles: its 4x larger transformed weights stream from memory at 16
rows each), so F(4x4) needs :data:`F4_MIN_TILES` tiles. A non-finite input reaches every
output of its tile in F(4x4) (the transforms mix it into all 36 terms, and inf - inf is NaN),
not only those whose window holds it.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import NO_EPILOGUE, Epilogue, IGemmCall, check_bias, pack_weights, zero_row
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

WINO_IN = ContextLayout("wino_in", ("x", "v", "zero", "h", "w", "c", "th", "tw", "pt", "pl", "ldx", "xn", "xb"),
                        pointers=("x", "v", "zero"))
WINO_OUT = ContextLayout("wino_out", ("m", "y", "bias", "res", "oh", "ow", "c", "th", "tw", "ldy", "yn", "ldr", "rn",
                                      "flags", "lo", "hi", "xb"),
                         pointers=("m", "y", "bias", "res"))
FLAG_BIAS, FLAG_RES = 1, 2
TILES_PER_TASK = 8  # tiles along a row per task of the transforms
MIN_CHANNELS = 64  # input and output channels from which the GEMMs' savings beat the transforms' traffic
MIN_TILES = 32  # fewer output tiles (7x7 maps) leave the 16 GEMMs too few rows to gain (measured: 512 channels at 7x7 even)
MIN_CHANNELS_1D = 256  # F(2, 3) saves a third of the multiplies only: 1.1x at 256 -> 128, 0.9x at 128 -> 64

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
#: G of F(4x4, 3x3) (interpolation points 0, +-1, +-2, infinity)
_G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
#: F(4x4, 3x3) is used where its GEMMs' multiply-adds (36 per 4x4 tile) are at most this share of
#: F(2x2, 3x3)'s (16 per 2x2 tile), counting the partial tiles at the edges
F4_MAX_SHARE = 0.7
#: and where it has at least this many tiles (fewer leave its 36 GEMMs too few rows)
F4_MIN_TILES = 32


def winograd_ok(kh: int, kw: int, strides: tuple[int, int], dilations: tuple[int, int], groups: int, cin: int,
                cout: int, tiles: int | None = None, h: int = 0) -> bool:
    """Whether a convolution runs as F(2x2, 3x3) (3x3) or F(2, 3) (1-D: ``kh == 1 == h``, three
    taps): stride 1, no dilation, one group, at least :data:`MIN_CHANNELS` input and output
    channels (1-D: :data:`MIN_CHANNELS_1D` input channels) and (when given) :data:`MIN_TILES`
    output tiles."""
    one_d = (kh, kw) == (1, 3) and h == 1
    shape_ok = (kh, kw) == (3, 3) or (one_d and cin >= MIN_CHANNELS_1D)
    return shape_ok and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1) and groups == 1 \
        and cin >= MIN_CHANNELS and cout >= MIN_CHANNELS and (tiles is None or tiles >= MIN_TILES)


def winograd_tile(batch: int, oh: int, ow: int) -> int:
    """Outputs per tile side for a 3x3 Winograd convolution of ``batch`` images of ``oh`` x ``ow``
    outputs: 4 (F(4x4, 3x3)) where its GEMMs do at most :data:`F4_MAX_SHARE` of F(2x2, 3x3)'s
    multiply-adds over at least :data:`F4_MIN_TILES` tiles, else 2. F(4x4) also streams 36
    floats per 16 outputs through the transforms instead of 16 per 4; its rounding error is
    about ten times F(2x2)'s (~1e-6 of the output's scale, against ~1e-7)."""
    tiles4 = batch * -(-oh // 4) * -(-ow // 4)
    tiles2 = batch * -(-oh // 2) * -(-ow // 2)
    return 4 if tiles4 >= F4_MIN_TILES and 36 * tiles4 <= F4_MAX_SHARE * 16 * tiles2 else 2


def transform_weights(w: np.ndarray, tile: int = 2) -> np.ndarray:
    """``U[k, 0, cin, cout]`` (k = (tile + 2) * row + column of ``G g G^T``) of
    ``w[cout, cin, 3, 3]`` (``tile`` 2: F(2x2, 3x3), 16 terms; 4: F(4x4, 3x3), 36 terms);
    of 1-D ``w[cout, cin, 1, 3]``, ``G g`` (k = 0..3)."""
    w = np.asarray(w, np.float64)
    if w.shape[2] == 1:
        u = np.einsum("ib,ocb->ico", _G, w[:, :, 0])  # [4, cin, cout]
        return u.reshape(4, 1, w.shape[1], w.shape[0]).astype(np.float32)
    g = _G4 if tile == 4 else _G
    u = np.einsum("ia,ocab,jb->ijco", g, w, g)  # [R, R, cin, cout]
    return u.reshape(len(g) ** 2, 1, w.shape[1], w.shape[0]).astype(np.float32)


def _splat(e: Emitter, x: float, like: ir.Value) -> ir.Value:
    """The constant ``x`` in every lane of a vector of ``like``'s type."""
    return e.splat(ir.Constant(F32, x), like.type.count)


def _bt4(e: Emitter, d: list[ir.Value]) -> list[ir.Value]:
    """``B^T d`` of F(4, 3) for six vectors (Lavin and Gray's factoring: 12 operations)."""
    b = e.b

    def k(x: float) -> ir.Value:
        return _splat(e, x, d[0])

    a = fmuladd(e, d[2], k(-4.0), d[4])
    c_ = fmuladd(e, d[1], k(-4.0), d[3])
    s = b.fsub(d[4], d[2])
    t = b.fmul(b.fsub(d[3], d[1]), k(2.0))
    return [fmuladd(e, d[0], k(4.0), fmuladd(e, d[2], k(-5.0), d[4])), b.fadd(a, c_), b.fsub(a, c_),
            b.fadd(s, t), b.fsub(s, t), fmuladd(e, d[1], k(4.0), fmuladd(e, d[3], k(-5.0), d[5]))]


def _at4(e: Emitter, m: list[ir.Value]) -> list[ir.Value]:
    """``A^T m`` of F(4, 3) for six vectors: four outputs."""
    b = e.b

    def k(x: float) -> ir.Value:
        return _splat(e, x, m[0])

    s, t = b.fadd(m[1], m[2]), b.fsub(m[1], m[2])
    u, v = b.fadd(m[3], m[4]), b.fsub(m[3], m[4])
    return [b.fadd(b.fadd(m[0], s), u), fmuladd(e, v, k(2.0), t), fmuladd(e, u, k(4.0), s),
            b.fadd(fmuladd(e, v, k(8.0), t), m[5])]


def _emit_input(m: ir.Module, name: str, lanes: int, two_d: bool = True, tile: int = 2) -> None:
    """task -> (image, tile row, block of tiles): V[t][k][c] = (B^T d B)[k] for each channel,
    ``tile`` x ``tile`` outputs a tile (2: F(2x2, 3x3), 16 terms; 4: F(4x4, 3x3), 36 terms)
    (1-D, ``two_d=False``: ``(B^T d)[k]``, four terms per tile)."""
    E = tile + 2  # input columns a tile reads (and rows, in 2-D)
    R, K = (E, E * E) if two_d else (1, 4)
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, WINO_IN)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    TH, TW, XB = e.arg("th"), e.arg("tw"), e.arg("xb")
    nxb = e.cdiv(TW, XB)
    row, xblk = b.sdiv(task, nxb), b.srem(task, nxb)
    img, ty = b.sdiv(row, TH), b.srem(row, TH)
    H, W, C, ldx = e.arg("h"), e.arg("w"), e.arg("c"), e.arg("ldx")
    x = e.gep(F32, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    zero = e.arg("zero", PTR)
    v0 = e.arg("v", PTR)
    iy0 = b.sub(b.mul(ty, c64(tile)), e.arg("pt"))
    rows = []
    for i in range(R):
        iy = b.add(iy0, c64(i))
        rows.append((b.icmp_unsigned("<", iy, H), e.gep(F32, x, b.mul(b.mul(iy, W), ldx))))
    tx0 = b.mul(xblk, XB)
    tx1 = e.min(TW, b.add(tx0, XB))
    with e.loop(tx0, tx1, name="tx") as tx:
        ix0 = b.sub(b.mul(tx, c64(tile)), e.arg("pl"))
        ptrs = []
        for i in range(R):
            yok, xrow = rows[i]
            line = []
            for j in range(E):
                ix = b.add(ix0, c64(j))
                ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                line.append(b.select(ok, e.gep(F32, xrow, b.mul(ix, ldx)), zero))
            ptrs.append(line)
        t = b.add(b.mul(row, TW), tx)
        vt_base = e.gep(F32, v0, b.mul(t, b.mul(C, c64(K))))

        def channels(ch: ir.Value, mask: ir.Value | None) -> None:
            d = [[masked_load(e, vt, e.gep(F32, ptrs[i][j], ch), mask) for j in range(E)] for i in range(R)]
            if tile == 4:
                cols = [_bt4(e, [d[i][j] for i in range(R)]) for j in range(R)]  # cols[j][i] = (B^T d)[i][j]
                for i in range(R):
                    for j, val in enumerate(_bt4(e, [cols[jj][i] for jj in range(R)])):
                        masked_store(e, val, e.gep(F32, vt_base, b.add(b.mul(c64(R * i + j), C), ch)), mask)
                return
            if not two_d:
                row = d[0]
                vals = [b.fsub(row[0], row[2]), b.fadd(row[1], row[2]), b.fsub(row[2], row[1]),
                        b.fsub(row[1], row[3])]
                for j, val in enumerate(vals):
                    masked_store(e, val, e.gep(F32, vt_base, b.add(b.mul(c64(j), C), ch)), mask)
                return
            t_ = [[b.fsub(d[0][j], d[2][j]), b.fadd(d[1][j], d[2][j]), b.fsub(d[2][j], d[1][j]),
                   b.fsub(d[1][j], d[3][j])] for j in range(4)]  # t_[j][i] = (B^T d)[i][j]
            for i in range(4):
                col = [t_[j][i] for j in range(4)]
                vals = [b.fsub(col[0], col[2]), b.fadd(col[1], col[2]), b.fsub(col[2], col[1]),
                        b.fsub(col[1], col[3])]
                for j, val in enumerate(vals):
                    masked_store(e, val, e.gep(F32, vt_base, b.add(b.mul(c64(4 * i + j), C), ch)), mask)

        nfull = b.mul(b.sdiv(C, c64(lanes)), c64(lanes))
        with e.loop(0, nfull, lanes, name="c") as ch:
            channels(ch, None)
        with b.if_then(b.icmp_signed("<", nfull, C)):
            channels(nfull, lane_mask(e, b.sub(C, nfull), lanes))
    b.ret_void()


def _emit_output(m: ir.Module, name: str, lanes: int, two_d: bool = True, tile: int = 2) -> None:
    """task -> (image, tile row, block of tiles): y = clamp(A^T m A + bias + residual), ``tile``
    x ``tile`` outputs a tile (1-D: ``A^T m``, two outputs per tile). Each residual pixel is
    read right before the same pixel of y is written (y may be the residual's buffer)."""
    K = (tile + 2) ** 2 if two_d else 4
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, WINO_OUT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    TH, TW, XB = e.arg("th"), e.arg("tw"), e.arg("xb")
    nxb = e.cdiv(TW, XB)
    row, xblk = b.sdiv(task, nxb), b.srem(task, nxb)
    img, ty = b.sdiv(row, TH), b.srem(row, TH)
    OH, OW, C, ldy, ldr = e.arg("oh"), e.arg("ow"), e.arg("c"), e.arg("ldy"), e.arg("ldr")
    y = e.gep(F32, e.arg("y", PTR), b.mul(img, e.arg("yn")))
    res = e.gep(F32, e.arg("res", PTR), b.mul(img, e.arg("rn")))
    m0 = e.arg("m", PTR)
    flags = b.trunc(e.arg("flags"), I32)
    has_bias = b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_BIAS)), c32(0))
    has_res = b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_RES)), c32(0))
    vlo, vhi = e.splat(e.arg("lo", F32), lanes), e.splat(e.arg("hi", F32), lanes)
    zero = ir.Constant(vt, None)
    oy0 = b.mul(ty, c64(tile))
    tx0 = b.mul(xblk, XB)
    tx1 = e.min(TW, b.add(tx0, XB))
    with e.loop(tx0, tx1, name="tx") as tx:
        ox0 = b.mul(tx, c64(tile))
        t = b.add(b.mul(row, TW), tx)
        mt = e.gep(F32, m0, b.mul(t, b.mul(C, c64(K))))
        spots = []
        for i in range(tile if two_d else 1):
            for j in range(tile):
                oy, ox = b.add(oy0, c64(i)), b.add(ox0, c64(j))
                ok = b.and_(b.icmp_signed("<", oy, OH), b.icmp_signed("<", ox, OW))
                pix = b.add(b.mul(oy, OW), ox)
                spots.append((ok, e.gep(F32, y, b.mul(pix, ldy)), e.gep(F32, res, b.mul(pix, ldr))))

        def channels(ch: ir.Value, mask: ir.Value | None) -> None:
            mv = [masked_load(e, vt, e.gep(F32, mt, b.add(b.mul(c64(k), C), ch)), mask) for k in range(K)]
            if tile == 4:  # (A^T m)[p][j] over the rows of the 6x6 block, then the columns
                cols = [_at4(e, [mv[6 * i + j] for i in range(6)]) for j in range(6)]  # cols[j][p]
                out = [v for p in range(4) for v in _at4(e, [cols[j][p] for j in range(6)])]
            elif two_d:  # r[i][j] = (A^T m)[i][j]: over the rows of the 4x4 block
                r = [[b.fadd(b.fadd(mv[j], mv[4 + j]), mv[8 + j]) for j in range(4)],
                     [b.fsub(b.fsub(mv[4 + j], mv[8 + j]), mv[12 + j]) for j in range(4)]]
            else:
                r = [mv]
            if tile != 4:
                out = []
                for ri in r:  # (0,0), (0,1), then (1,0), (1,1)
                    out += [b.fadd(b.fadd(ri[0], ri[1]), ri[2]), b.fsub(b.fsub(ri[1], ri[2]), ri[3])]
            bias = b.select(has_bias, masked_load(e, vt, e.gep(F32, e.arg("bias", PTR), ch), mask), zero)
            for (ok, yp, rp), val in zip(spots, out):
                with b.if_then(ok):
                    val = b.fadd(val, bias)
                    acc = e.var(vt, val)
                    with b.if_then(has_res):
                        b.store(b.fadd(val, masked_load(e, vt, e.gep(F32, rp, ch), mask)), acc)
                    val = e.load(vt, acc)
                    val = b.select(b.fcmp_ordered("<", val, vlo), vlo, val)
                    val = b.select(b.fcmp_ordered(">", val, vhi), vhi, val)
                    masked_store(e, val, e.gep(F32, yp, ch), mask)

        nfull = b.mul(b.sdiv(C, c64(lanes)), c64(lanes))
        with e.loop(0, nfull, lanes, name="c") as ch:
            channels(ch, None)
        with b.if_then(b.icmp_signed("<", nfull, C)):
            channels(nfull, lane_mask(e, b.sub(C, nfull), lanes))
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_input(m, f"{prefix}_wino_in", isa.f32_lanes)
    _emit_output(m, f"{prefix}_wino_out", isa.f32_lanes)
    _emit_input(m, f"{prefix}_wino1_in", isa.f32_lanes, two_d=False)
    _emit_output(m, f"{prefix}_wino1_out", isa.f32_lanes, two_d=False)
    _emit_input(m, f"{prefix}_wino4_in", isa.f32_lanes, tile=4)
    _emit_output(m, f"{prefix}_wino4_out", isa.f32_lanes, tile=4)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"winograd|{isa.level}|1d|f4", isa, lambda p: _build(p, isa))


def _nhwc(name: str, a: np.ndarray, shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """(pixel stride, image stride) in floats of an NHWC float32 array (a channel slice is fine)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape:
        raise EmberError(f"ember: {name} must be a float32 NHWC array of shape {shape}")
    s = [v // 4 for v in a.strides]
    if a.strides[3] != 4 or any(v % 4 for v in a.strides) or (shape[1] > 1 and s[1] != shape[2] * s[2]):
        raise EmberError(f"ember: {name} must be NHWC with contiguous channels and uniformly strided pixels")
    return s[2], s[0]


class WinogradConv3x3:
    """A 3x3 stride-1 convolution as F(2x2, 3x3) or F(4x4, 3x3) (``tile`` 2 or 4; None: by
    :func:`winograd_tile`; see the module docstring), weights ``[cout, cin, 3, 3]`` transformed
    and packed once; ``pads`` are (top, left, bottom, right). Weights ``[cout, cin, 1, 3]`` with
    ``h == 1`` (a 1-D convolution) run as F(2, 3): four terms per tile of two outputs, four GEMMs.

    :meth:`bind` takes NHWC ``x`` and ``y`` (channel slices allowed) and two scratch arrays
    of :attr:`scratch_sizes` floats (the transformed input and the GEMMs' output); calling the
    object allocates them."""

    def __init__(self, batch: int, h: int, w: int, cin: int, cout: int, pads: tuple[int, int, int, int],
                 weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                 isa: Isa | None = None, tile: int | None = None):
        pt, pl, pb, pr = pads
        if min(pads) < 0:
            raise EmberError("ember: negative convolution padding")
        self.batch, self.h, self.w, self.cin, self.cout, self.pads = batch, h, w, cin, cout, pads
        wt = np.asarray(weights, np.float32)
        self.one_d = wt.shape == (cout, cin, 1, 3) and h == 1 and pt == pb == 0
        if wt.shape != (cout, cin, 3, 3) and not self.one_d:
            raise EmberError(f"ember: Winograd convolution weights have shape {wt.shape}, expected {(cout, cin, 3, 3)} "
                             "(or [cout, cin, 1, 3] over one row)")
        self.oh, self.ow = (1 if self.one_d else h + pt + pb - 2), w + pl + pr - 2
        if self.oh < 1 or self.ow < 1:
            raise EmberError(f"ember: convolution output would be empty ({self.oh}x{self.ow})")
        if tile is None:
            tile = 2 if self.one_d else winograd_tile(batch, self.oh, self.ow)
        if tile not in (2, 4) or (self.one_d and tile != 2):
            raise EmberError(f"ember: Winograd tiles of {tile} outputs are not built (2, or 4 in 2-D)")
        #: outputs per tile side: 2 (F(2x2, 3x3), or F(2, 3) in 1-D) or 4 (F(4x4, 3x3))
        self.tile = tile
        self.terms = 4 if self.one_d else (tile + 2) ** 2
        self.epilogue = epilogue
        self.isa = isa or host_isa()
        self.num_threads = num_threads or default_pool().num_threads
        self.th, self.tw = (1 if self.one_d else -(-self.oh // tile)), -(-self.ow // tile)
        self.tiles = batch * self.th * self.tw
        self.packed = pack_weights(transform_weights(wt, tile), self.isa)
        self.gemm = IGemmCall(self.packed, m=self.tiles, x_geometry={}, ldx=self.terms * cin,
                              ldy=self.terms * cout, num_threads=self.num_threads)
        self._zero = zero_row(cin + 16)
        self._lib = _library(self.isa)

    @property
    def input_sizes(self) -> tuple[int, int, int]:
        """(batch, height, width) of the input it is planned for."""
        return self.batch, self.h, self.w

    def with_input(self, batch: int, h: int, w: int) -> WinogradConv3x3:
        """This convolution on ``batch`` images of ``h`` x ``w`` (a plan bound at another input
        shape): the transformed weights shared, the tiles and the GEMM call made again for them."""
        pt, pl, pb, pr = self.pads
        if self.one_d and h != 1:
            raise EmberError("ember: internal: a 1-D Winograd convolution over more than one row")
        k = copy.copy(self)
        k.batch, k.h, k.w = batch, h, w
        k.oh, k.ow = (1 if self.one_d else h + pt + pb - 2), w + pl + pr - 2
        if k.oh < 1 or k.ow < 1:
            raise EmberError(f"ember: convolution output would be empty ({k.oh}x{k.ow})")
        k.th, k.tw = (1 if self.one_d else -(-k.oh // k.tile)), -(-k.ow // k.tile)
        k.tiles = batch * k.th * k.tw
        k.gemm = self.gemm.with_rows(k.tiles)
        return k

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.oh, self.ow, self.cout)

    @property
    def scratch_sizes(self) -> tuple[int, int]:
        """Floats of the transformed input V and of the GEMMs' output M."""
        return self.tiles * self.terms * self.cin, self.tiles * self.terms * self.cout

    def bind(self, x: np.ndarray, y: np.ndarray, v: np.ndarray, m: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> list[BoundKernel]:
        """The three calls of one run over these buffers."""
        ldx, xn = _nhwc("x", x, (self.batch, self.h, self.w, self.cin))
        ldy, yn = _nhwc("y", y, self.output_shape)
        ldr, rn = (ldy, yn) if residual is None else _nhwc("residual", residual, self.output_shape)
        check_bias(bias, self.cout)
        nv, nm = self.scratch_sizes
        for name, a, n in (("v", v, nv), ("m", m, nm)):
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.size < n or not a.flags.c_contiguous:
                raise EmberError(f"ember: Winograd scratch {name} must be a contiguous float32 array of {n}")
        if not self.tiles or not self.cout:
            return []
        tasks = self.batch * self.th * -(-self.tw // TILES_PER_TASK)
        pt, pl = self.pads[:2]
        cin_ctx = WINO_IN.new(x=x.ctypes.data, v=v.ctypes.data, zero=self._zero.ctypes.data, h=self.h, w=self.w,
                              c=self.cin, th=self.th, tw=self.tw, pt=pt, pl=pl, ldx=ldx, xn=xn, xb=TILES_PER_TASK)
        flags = (FLAG_BIAS if bias is not None else 0) | (FLAG_RES if residual is not None else 0)
        out_ctx = WINO_OUT.new(m=m.ctypes.data, y=y.ctypes.data, bias=0 if bias is None else bias.ctypes.data,
                               res=0 if residual is None else residual.ctypes.data, oh=self.oh, ow=self.ow,
                               c=self.cout, th=self.th, tw=self.tw, ldy=ldy, yn=yn, ldr=ldr, rn=rn, flags=flags,
                               lo=f32_bits(self.epilogue.lo), hi=f32_bits(self.epilogue.hi), xb=TILES_PER_TASK)
        kind = "wino1" if self.one_d else ("wino4" if self.tile == 4 else "wino")
        return [BoundKernel(self._lib.address(f"{kind}_in"), cin_ctx, tasks, self.num_threads, (x, v, self._zero),
                            layout=WINO_IN),
                self.gemm.bind(v.ctypes.data, m.ctypes.data, keep=(v, m)),
                BoundKernel(self._lib.address(f"{kind}_out"), out_ctx, tasks, self.num_threads, (m, y, bias, residual),
                            layout=WINO_OUT)]

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``y`` (allocated when None) and return it."""
        if y is None:
            y = aligned_empty(self.output_shape)
        nv, nm = self.scratch_sizes
        v, m = aligned_empty(max(nv, 1)), aligned_empty(max(nm, 1))
        for k in self.bind(x, y, v, m, bias, residual):
            k.run(pool)
        return y


__all__ = ["WinogradConv3x3", "transform_weights", "winograd_ok", "winograd_tile"]
