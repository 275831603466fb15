"""AMX tiles (Intel Sapphire Rapids and later): what the int8 and bf16 tile kernels share.

The tile tasks live with their families: ``amx_int8_task`` (``tdpbusd``, u8 x s8 -> i32) in
:mod:`~ember.devices.cpu.kernels.int8_gemm`, ``amx_bf16_task`` (``tdpbf16ps``) in
:mod:`~ember.devices.cpu.kernels.gemm`. Their host functions (``Int8Gemm``, ``Int8Conv2d``,
``Gemm``, ``Conv2d`` ...) keep their signatures and pick the tile task when the weights were
packed for an ISA with ``amx_int8``/``amx_bf16`` (:mod:`ember.devices.cpu.llvm.isa` asks the OS
for the tile state once; ``EMBER_CPU_ISA=avx512`` keeps VNNI/AVX512_BF16). Each reads its
family's context and ends in its family's epilogue, so AMX and the vector kernels agree (int8:
bit for bit).

A task computes blocks of 32 output rows x 32 columns with the eight tile registers: two A
tiles (16 rows x ``4 kq`` bytes), two B tiles (``kq`` rows of 16 columns x 4 bytes: 4 s8 or 2
bf16, the layout the AVX-512 kernels' 32-column panels already have, so the two halves of a
panel row are the two B tiles, read with a 128-byte stride) and four 32-bit C tiles. ``kq``
(4-byte groups of K per step, at most 16) divides a tap's groups when it can (:func:`amx_split`),
so tiles read exactly the bytes of a row; otherwise the weights are zero padded to whole steps.

int8 A tiles are loaded straight from the activations (``tileloadd`` with the row stride) when
a half tile's 16 row pointers are uniformly strided (GEMM rows, a 1x1 convolution, a 3x3
convolution's 16 pixels inside one output row, a stem's gathered rows); other halves (image
borders, a row wrap, the last partial tile, padded taps) are copied into a zero-padded stack
buffer first (:func:`tap_descriptors` finds them from the geometry). bf16 A rows are read
in place the same way when X is bf16 in memory, else converted from f32 per tile. After a
block's taps the C tiles go to a 4 KB stack buffer and the epilogue runs row by row.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from ember.devices.cpu.llvm.codegen import I8, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter
from ember.devices.cpu.llvm.vector import aligned_alloca
from ember.errors import EmberError

#: rows and columns of the output block a task step computes with 2 x 2 tiles of 16 x 16
#: (NR = 32, as the AVX-512 panels, so the weights pack the same way)
BLOCK = 32
#: bytes of one tile row, rows per tile (palette 1)
TILE_BYTES, TILE_ROWS = 64, 16
C_TILES = (0, 1, 2, 3)  # C tiles: (rows 0-15, cols 0-15), (0-15, 16-31), (16-31, 0-15), (16-31, 16-31)
A_TILES, B_TILES = (4, 5), (6, 7)


def amx_split(k4: int) -> tuple[int, int, int]:
    """How a tap's ``k4`` groups of 4 bytes run on tiles: ``(kq, nck, ktap)``, ``nck`` steps
    of ``kq <= 16`` groups over ``ktap >= k4`` packed groups (``ktap > k4``: zero padded,
    A must be copied). ``kq`` divides ``k4`` when a divisor of at least 8 exists."""
    if k4 <= 0:
        raise EmberError("ember: an AMX GEMM needs at least one input channel")
    if k4 <= 16:
        return k4, 1, k4
    least = -(-k4 // 16)
    for n in range(least, k4 // 8 + 1):
        if k4 % n == 0:
            return k4 // n, n, k4
    return 16, least, 16 * least


def amx_split_tight(k4: int) -> tuple[int, int, int]:
    """As :func:`amx_split`, for rows that are copied anyway (a stem's gathered rows): the fewest
    steps of ``kq <= 16`` groups and the fewest zero groups, ``kq`` need not divide ``k4`` (a
    7x7x3 stem's 37 groups: 3 steps of 13, 39 groups, where :func:`amx_split` pads to 48)."""
    if k4 <= 0:
        raise EmberError("ember: an AMX GEMM needs at least one input channel")
    nck = -(-k4 // 16)
    kq = -(-k4 // nck)
    return kq, nck, kq * nck


#: the most stack a tile task may take for its A rows (copied or converted: taps x 32 rows x
#: the row's bytes); larger K runs on the AVX-512 kernels (threads have 8 MB stacks by default)
STACK_LIMIT = 2 << 20


def fits_stack(taps: int, row_bytes: int) -> bool:
    """Whether a tile task's A buffer (``taps`` x 32 rows of ``row_bytes``, 64-byte rounded) fits
    :data:`STACK_LIMIT`."""
    return taps * BLOCK * -(-row_bytes // 64) * 64 <= STACK_LIMIT


def _i8(v: int) -> ir.Constant:
    return ir.Constant(I8, v)


def emit_tile_config(e: Emitter, a_bytes: ir.Value, b_rows: ir.Value) -> None:
    """ldtilecfg: palette 1, C tiles 16 x 64 bytes, A tiles 16 x ``a_bytes``, B tiles
    ``b_rows`` x 64 bytes (runtime i64 values)."""
    b = e.b
    cfg = aligned_alloca(e, I8, c64(64))
    b.store(ir.Constant(vec(I8, 64), None), cfg, align=64)
    b.store(_i8(1), cfg)
    for t in range(8):
        colsb = b.trunc(a_bytes, I16) if t in A_TILES else ir.Constant(I16, TILE_BYTES)
        rows = b.trunc(b_rows, I8) if t in B_TILES else _i8(TILE_ROWS)
        b.store(colsb, e.gep(I8, cfg, 16 + 2 * t), align=2)
        b.store(rows, e.gep(I8, cfg, 48 + t))
    e.call("llvm.x86.ldtilecfg", VOID, [cfg])


def tile_zero(e: Emitter, t: int) -> None:
    e.call("llvm.x86.tilezero", VOID, [_i8(t)])


def tile_load(e: Emitter, t: int, ptr: ir.Value, stride: ir.Value) -> None:
    e.call("llvm.x86.tileloadd64", VOID, [_i8(t), ptr, stride])


def tile_store(e: Emitter, t: int, ptr: ir.Value, stride: ir.Value) -> None:
    e.call("llvm.x86.tilestored64", VOID, [_i8(t), ptr, stride])


def byte_mask(e: Emitter, count: ir.Value) -> ir.Value:
    """<64 x i1>: the first ``count`` bytes (count may be <= 0 or > 64)."""
    b = e.b
    n = b.trunc(e.min(e.max(count, c64(0)), c64(64)), I8)
    idx = ir.Constant(vec(I8, 64), list(range(64)))
    return b.icmp_unsigned("<", idx, e.splat(n, 64))


def store_pixel_channels(e: Emitter, row: ir.Value, dst: ir.Value, mask: ir.Value, channels: ir.Value) -> None:
    """Store the 16 four-byte pixels of ``row`` (<64 x i8>) at ``dst`` as ``channels``-byte
    pixels (1, 2 or 3 at run time: each pixel's first bytes, side by side), under ``mask``."""
    b = e.b
    v64 = vec(I8, 64)

    def store(c: int) -> None:
        pick = [4 * (j // c) + j % c if j < 16 * c else 0 for j in range(64)]
        packed = b.shuffle_vector(row, ir.Constant(v64, None), ir.Constant(vec(I32, 64), pick))
        e.call("llvm.masked.store.v64i8.p0", VOID, [packed, dst, c32(1), mask])

    with b.if_else(b.icmp_signed("==", channels, c64(3))) as (c3, fewer):
        with c3:
            store(3)
        with fewer:
            with b.if_else(b.icmp_signed("==", channels, c64(2))) as (c2, c1):
                with c2:
                    store(2)
                with c1:
                    store(1)


def copy_bytes(e: Emitter, src: ir.Value, dst: ir.Value, nbytes: ir.Value) -> None:
    """Copy ``nbytes`` from src to dst with masked 64-byte vectors (no byte past either end)."""
    b = e.b
    v64 = vec(I8, 64)
    with e.loop(0, nbytes, 64, name="cpy") as j:
        mask = byte_mask(e, b.sub(nbytes, j))
        v = e.call("llvm.masked.load.v64i8.p0", v64, [e.gep(I8, src, j), c32(1), mask, ir.Constant(v64, None)])
        e.call("llvm.masked.store.v64i8.p0", VOID, [v, e.gep(I8, dst, j), c32(1), mask])


def copy_rows(e: Emitter, src_rows: list[ir.Value], dst: ir.Value, ld: ir.Value, nbytes: ir.Value,
              width: ir.Value) -> None:
    """Copy ``nbytes`` of each source row into rows of ``dst`` (stride ``ld``), zero filled to
    ``width`` bytes (a multiple of 64); masked loads never touch bytes past ``nbytes``."""
    b = e.b
    v64 = vec(I8, 64)
    with e.loop(0, width, 64, name="cpb") as j:
        mask = byte_mask(e, b.sub(nbytes, j))
        for r, src in enumerate(src_rows):
            v = e.call("llvm.masked.load.v64i8.p0", v64, [e.gep(I8, src, j), c32(1), mask, ir.Constant(v64, None)])
            b.store(v, e.gep(I8, dst, b.add(b.mul(c64(r), ld), j)), align=64)


def two_by_two(e: Emitter, two_m: ir.Value, two_n: ir.Value, body: Callable[[bool, bool], None]) -> None:
    """``body(two_m, two_n)`` specialised for the runtime flags (a block of 1 or 2 tiles each way)."""
    b = e.b
    with b.if_else(two_m) as (tm_, om_):
        for branch, m_ in ((tm_, True), (om_, False)):
            with branch:
                with b.if_else(two_n) as (tn_, on_):
                    with tn_:
                        body(m_, True)
                    with on_:
                        body(m_, False)

def tile_dot(e: Emitter, op: str, c: int, a: int, b: int) -> None:
    """``c += a . b`` on tiles: ``op`` is ``"tdpbusd"`` (u8 x s8 -> i32) or ``"tdpbf16ps"``."""
    e.call(f"llvm.x86.{op}", VOID, [_i8(c), _i8(a), _i8(b)])


def tile_release(e: Emitter) -> None:
    e.call("llvm.x86.tilerelease", VOID, [])


def emit_tile_block(e: Emitter, op: str, two_m: bool, two_n: bool, ntaps: ir.Value, nck: ir.Value,
                    a_of_tap: Callable[[ir.Value], tuple[list[ir.Value], list[ir.Value]]],
                    b_of_tap: Callable[[ir.Value], ir.Value], qbytes: ir.Value, step_bytes: ir.Value,
                    prefetch: Callable[[ir.Value], None] | None = None) -> None:
    """One output block of 1-2 x 1-2 tiles (``two_m``/``two_n``): the C tiles zeroed, then over
    the taps and their ``nck`` steps of K, A and B tiles loaded and multiplied with ``op``.
    ``a_of_tap(tap)`` gives the two A halves' base pointers and row strides, ``b_of_tap(tap)`` the
    tap's B panel (steps of ``step_bytes``, the second 16 columns 64 bytes on); ``qbytes``: the
    bytes of K one step takes from an A row; ``prefetch(b_step)``, if given, runs before each step's
    loads (weight streaming). The C tiles stay in registers (:func:`store_c_tiles`)."""
    b = e.b
    for t in C_TILES:
        tile_zero(e, t)
    b_stride = c64(4 * BLOCK)
    with e.loop(0, ntaps, name="ctap") as tap:
        pa, lda = a_of_tap(tap)
        bt = b_of_tap(tap)
        with e.loop(0, nck, name="kc") as c:
            aoff = b.mul(c, qbytes)
            bc = e.gep(I8, bt, b.mul(c, step_bytes))
            if prefetch is not None:
                prefetch(bc)
            tile_load(e, A_TILES[0], e.gep(I8, pa[0], aoff), lda[0])
            if two_m:
                tile_load(e, A_TILES[1], e.gep(I8, pa[1], aoff), lda[1])
            tile_load(e, B_TILES[0], bc, b_stride)
            if two_n:
                tile_load(e, B_TILES[1], e.gep(I8, bc, 64), b_stride)
            for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                if (i and not two_m) or (j and not two_n):
                    continue
                tile_dot(e, op, C_TILES[2 * i + j], A_TILES[i], B_TILES[j])


def store_c_tiles(e: Emitter, cbuf: ir.Value) -> None:
    """The four C tiles to a 32 x 32 block of 4-byte values at ``cbuf`` (row stride 128 bytes)."""
    ldc = c64(4 * BLOCK)
    for i in range(2):
        for j in range(2):
            tile_store(e, C_TILES[2 * i + j], e.gep(I8, cbuf, (i * TILE_ROWS * BLOCK + j * 16) * 4), ldc)


def tap_descriptors(e: ContextEmitter, xgroup: ir.Value, ps: ir.Value, lt: ir.Value, h: int, ntaps: ir.Value,
                    direct: ir.Value, contiguous: ir.Value, desc_ptr: ir.Value, desc_ld: ir.Value, abuf: ir.Value, kp: ir.Value,
                    kbytes: ir.Value, elem: int = 1) -> None:
    """The A descriptors (base, row stride) of every tap of half ``h`` of tile ``lt`` (16 pixels from ``ps``),
    found from the geometry without a row table: the half's rows are uniformly strided when its
    pixels lie in one output row and the tap reads inside the image for all of them (stride
    ``sw * ldx``), when the tap's input row lies wholly in the padding (the zero-point row, stride
    0), or for any pixels of a 1x1 stride-1 convolution over contiguous images (``contiguous``:
    stride ``ldx``); otherwise (a row wrap, a border, past the last pixel, zero-padded K) its 16
    rows are copied into ``abuf`` with the zero-point row for padding. ``elem``: bytes of an
    element of X (the context's ``ldx`` and ``xn`` count elements; int8 1, bf16 2)."""
    b = e.b
    a = e.arg
    H = TILE_ROWS
    H_, W_, OH, OW = a("h"), a("w"), a("oh"), a("ow")
    ldx, xn = b.mul(a("ldx"), c64(elem)), b.mul(a("xn"), c64(elem))
    sh, sw, dh, dw, pt, pl = a("sh"), a("sw"), a("dh"), a("dw"), a("pt"), a("pl")
    kw = a("kw")
    zero_row = a("zero", PTR)
    ohw = b.mul(OH, OW)
    img = b.udiv(ps, ohw)
    q = b.urem(ps, ohw)
    oy, ox = b.udiv(q, OW), b.urem(q, OW)
    inside = b.and_(direct, b.icmp_signed("<=", b.add(ps, c64(H)), a("m")))
    one_row = b.and_(inside, b.icmp_signed("<", b.add(ox, c64(H - 1)), OW))
    whole = b.and_(inside, contiguous)
    ximg = e.gep(I8, xgroup, b.mul(img, xn))
    with e.loop(0, ntaps, name="atap") as tap:
        ky, kx = b.sdiv(tap, kw), b.srem(tap, kw)
        iy = b.add(b.sub(b.mul(oy, sh), pt), b.mul(ky, dh))
        ix0 = b.add(b.sub(b.mul(ox, sw), pl), b.mul(kx, dw))
        ixl = b.add(ix0, b.mul(c64(H - 1), sw))
        yok = b.icmp_unsigned("<", iy, H_)
        xok = b.and_(b.icmp_signed(">=", ix0, c64(0)), b.icmp_signed("<", ixl, W_))
        strided = b.and_(one_row, b.and_(yok, xok))
        padded = b.and_(one_row, b.not_(yok))
        d = b.add(b.mul(b.add(b.mul(lt, ntaps), tap), c64(2)), c64(h))
        with b.if_else(b.or_(b.or_(strided, padded), whole)) as (uniform, gather):
            with uniform:
                base = b.select(strided, e.gep(I8, ximg, b.mul(b.add(b.mul(iy, W_), ix0), ldx)),
                                b.select(padded, zero_row, e.gep(I8, xgroup, b.mul(ps, ldx))))
                step = b.select(strided, b.mul(sw, ldx), b.select(padded, c64(0), ldx))
                b.store(base, e.gep(PTR, desc_ptr, d))
                b.store(step, e.gep(I64, desc_ld, d))
            with gather:
                src = []
                pimg, py, px = img, oy, ox
                for r in range(H):
                    if r:  # the next pixel
                        nx = b.add(px, c64(1))
                        wrap_x = b.icmp_signed(">=", nx, OW)
                        px = b.select(wrap_x, c64(0), nx)
                        ny = b.select(wrap_x, b.add(py, c64(1)), py)
                        wrap_y = b.icmp_signed(">=", ny, OH)
                        py = b.select(wrap_y, c64(0), ny)
                        pimg = b.select(wrap_y, b.add(pimg, c64(1)), pimg)
                    ry = b.add(b.sub(b.mul(py, sh), pt), b.mul(ky, dh))
                    rx = b.add(b.sub(b.mul(px, sw), pl), b.mul(kx, dw))
                    ok = b.and_(b.icmp_unsigned("<", ry, H_), b.icmp_unsigned("<", rx, W_))
                    ok = b.and_(ok, b.icmp_signed("<", b.add(ps, c64(r)), a("m")))
                    addr = e.gep(I8, xgroup, b.add(b.mul(pimg, xn), b.mul(b.add(b.mul(ry, W_), rx), ldx)))
                    src.append(b.select(ok, addr, zero_row))
                dst = e.gep(I8, abuf, b.mul(b.mul(d, c64(H)), kp))
                copy_rows(e, src, dst, kp, kbytes, kp)
                b.store(dst, e.gep(PTR, desc_ptr, d))
                b.store(kp, e.gep(I64, desc_ld, d))


__all__ = ["A_TILES", "BLOCK", "B_TILES", "C_TILES", "STACK_LIMIT", "fits_stack", "TILE_BYTES", "TILE_ROWS", "amx_split", "amx_split_tight", "byte_mask", "copy_bytes", "copy_rows", "emit_tile_block", "store_c_tiles", "tap_descriptors",
           "emit_tile_config", "tile_dot", "tile_load", "tile_release", "tile_store", "tile_zero", "two_by_two"]
