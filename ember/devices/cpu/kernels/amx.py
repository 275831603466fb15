"""AMX tile kernels (Intel Sapphire Rapids and later): the int8 implicit GEMM with ``tdpbusd``.

The int8 host functions (:mod:`ember.devices.cpu.kernels.int8_gemm`: ``Int8Gemm``,
``Int8Conv2d``, ``Int8Call``) run this task instead of the VNNI one when the ISA has
``amx_int8`` (see :mod:`ember.devices.cpu.llvm.isa`: the OS permission is asked for once,
``EMBER_CPU_ISA=avx512`` switches AMX off). The task reads the same context
(``INT8_CONTEXT``) and the same packed weights, and ends in the same f32 epilogue
(``finish_tile``: scale, zero-point compensation, shift, fused FakeQuantize, residual, clamp,
u8 requantize), so the two paths give identical results.

A task computes blocks of 32 output rows x 32 columns with the eight tile registers: two A
tiles (16 rows x ``4 kq`` bytes of u8), two B tiles (``kq`` rows of 16 columns x 4 s8, the
VNNI layout the VNNI kernel's 32-column panels already have: the two halves of a panel row
are the two B tiles, read with a 128-byte stride) and four i32 C tiles. ``kq`` (k-groups of 4
bytes per step, at most 16) divides a tap's ``k4`` when it can, so tiles read exactly the
bytes of a row and need no copy; otherwise the weights are packed with ``k4`` padded to
``nck * 16`` and A is copied, zero padded.

A tiles are loaded straight from the activations (``tileloadd`` with the row stride) when a
half tile's 16 row pointers are uniformly strided: GEMM rows, a 1x1 convolution, a 3x3
convolution's 16 pixels inside one output row. Other halves (image borders, a row wrap, the
last partial tile) are copied from the row table into a zero-padded stack buffer first.
After a block's taps, the C tiles go to a 4 KB stack buffer and the epilogue runs row by row.
"""

from __future__ import annotations

import functools

from llvmlite import ir

from ember.devices.cpu.kernels.gemm import Tile, task_block
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter
from ember.devices.cpu.llvm.isa import Isa
from ember.devices.cpu.llvm.vector import aligned_alloca, lane_mask, masked_load
from ember.errors import EmberError

#: 2 x 2 tiles of 16 x 16: a 32 x 32 block; NR = 32 as the AVX-512 VNNI panels
AMX_TILE = Tile(32, 2, 16, 1)
#: bytes of one tile row, rows per tile (palette 1)
TILE_BYTES, TILE_ROWS = 64, 16
_C = (0, 1, 2, 3)  # C tiles: (rows 0-15, cols 0-15), (0-15, 16-31), (16-31, 0-15), (16-31, 16-31)
_A, _B = (4, 5), (6, 7)


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
        colsb = b.trunc(a_bytes, I16) if t in _A else ir.Constant(I16, TILE_BYTES)
        rows = b.trunc(b_rows, I8) if t in _B else _i8(TILE_ROWS)
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


# --------------------------------------------------------------------------- int8
def _emit_int8_epilogue(m: ir.Module, name: str) -> ir.Function:
    """epi(cbuf, mr, ncols, c, ldc, comp, scale, shift, res, ldr, lo, hi, flags, fq, fqs, q, ldq):
    the int8 epilogue of the VNNI micro-kernel for ``mr`` rows of a 32 x 32 i32 block in
    ``cbuf`` (row stride 32), ``ncols`` valid columns, row by row."""
    from ember.devices.cpu.kernels.int8_gemm import FQ_ROWS, finish_tile

    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, PTR, I64, PTR, PTR, PTR, PTR, I64, F32, F32, I32,
                                          PTR, I64, PTR, I64], internal=True, noinline=True)
    cbuf, mr, ncols, cp, ldc, compp, scalep, shiftp, resp, ldr, lo, hi, flags, fqp, fqs, qp, ldq = fn.args
    e = Emitter(m, fn)
    b = e.b
    L, nv = AMX_TILE.lanes, AMX_TILE.nv
    vi, vf = vec(I32, L), vec(F32, L)
    masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) for v in range(nv)]
    comp = [b.bitcast(masked_load(e, vf, e.gep(I32, compp, v * L), masks[v]), vi) for v in range(nv)]
    scale = [masked_load(e, vf, e.gep(F32, scalep, v * L), masks[v]) for v in range(nv)]
    shift = [masked_load(e, vf, e.gep(F32, shiftp, v * L), masks[v]) for v in range(nv)]
    fq = [[masked_load(e, vf, e.gep(F32, fqp, b.add(b.mul(c64(i), fqs), c64(v * L))), masks[v])
           for v in range(nv)] for i in range(FQ_ROWS)]
    out = [[e.var(vf) for _ in range(nv)]]
    with e.loop(0, mr, name="er") as r:
        crow = e.gep(I32, cbuf, b.mul(r, c64(AMX_TILE.nr)))
        for v in range(nv):
            acc = e.load(vi, e.gep(I32, crow, v * L), align=64)
            x = b.sitofp(b.add(acc, comp[v]), vf)
            b.store(b.fadd(b.fmul(x, scale[v]), shift[v]), out[0][v])
        finish_tile(e, out, masks, flags, lo, hi, fq, lambda _: e.gep(F32, resp, b.mul(ldr, r)),
                    lambda _: b.mul(ldc, r), cp, (qp, lambda _: b.mul(ldq, r)))
    b.ret_void()
    return fn


def _emit_int8_task(m: ir.Module, name: str, epi: ir.Function) -> None:
    from ember.devices.cpu.kernels.int8_gemm import FLAG_U8, INT8_CONTEXT, emit_row_table

    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, INT8_CONTEXT)
    b = e.b
    a = e.arg
    MR, NR, H = AMX_TILE.mr, AMX_TILE.nr, TILE_ROWS
    M, N = a("m"), a("cout")
    blk = task_block(e, fn.args[1], a("gm"), a("gn"), a("tm"), a("tn"), M, N, AMX_TILE)
    g, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles
    rows, ntaps = emit_row_table(e, blk, MR, fill_tail=True)
    k4, kq, nck, ktap = a("k4"), a("kq"), a("nck"), a("ktap")
    direct = b.icmp_signed("!=", a("direct"), c64(0))
    kbytes, qbytes = b.mul(k4, c64(4)), b.mul(kq, c64(4))
    kp = b.mul(e.cdiv(b.mul(b.mul(nck, qbytes), c64(1)), 64), c64(64))  # a copied row, zero padded
    abuf = aligned_alloca(e, I8, b.mul(b.mul(ntaps, c64(MR)), kp))
    desc_ptr = b.alloca(PTR, size=b.mul(ntaps, c64(2)))
    desc_ld = b.alloca(I64, size=b.mul(ntaps, c64(2)))
    cbuf = aligned_alloca(e, I32, c64(MR * NR))
    emit_tile_config(e, qbytes, kq)

    ldy, yg, ldr, ldq = a("ldy"), a("yg"), a("ldr"), a("ldq")
    esz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_U8)), c64(0)), c64(1), c64(4))
    ygroup = e.gep(I8, a("y", PTR), b.mul(b.mul(g, yg), esz))
    res_g = e.gep(F32, a("res", PTR), b.mul(g, yg))
    comp_g = e.gep(I32, a("comp", PTR), b.mul(g, yg))
    scale_g = e.gep(F32, a("scale", PTR), b.mul(g, yg))
    shift_g = e.gep(F32, a("shift", PTR), b.mul(g, yg))
    fq_g = e.gep(F32, a("fq", PTR), b.mul(g, yg))
    q_g = e.gep(I8, a("q", PTR), b.mul(g, yg))
    bgroup = e.gep(I8, a("bp", PTR), b.mul(g, a("bg")))
    tap_bytes = b.mul(ktap, c64(4 * NR))
    panel_bytes = b.mul(ntaps, tap_bytes)
    flags = b.trunc(a("flags"), I32)
    lo, hi = a("lo", F32), a("hi", F32)
    b_stride = c64(4 * NR)
    step_bytes = b.mul(kq, c64(4 * NR))

    with e.loop(0, ntiles, name="tile") as it:
        p0 = b.add(m0, b.mul(it, c64(MR)))
        mr = e.min(c64(MR), b.sub(m1, p0))
        # A of this tile: per tap and half, a base and a row stride (straight from the
        # activations when the half's 16 rows are uniformly strided, else a zero-padded copy)
        with e.loop(0, ntaps, name="atap") as tap:
            for h in range(2):
                slot = b.add(b.mul(b.add(b.mul(it, ntaps), tap), c64(MR)), c64(h * H))
                src = [e.load(PTR, e.gep(PTR, rows, b.add(slot, c64(r)))) for r in range(H)]
                addr = [b.ptrtoint(p, I64) for p in src]
                step = b.sub(addr[1], addr[0])
                ok = direct
                for r in range(2, H):
                    ok = b.and_(ok, b.icmp_unsigned("==", addr[r], b.add(addr[0], b.mul(step, c64(r)))))
                d = b.add(b.mul(tap, c64(2)), c64(h))
                with b.if_else(ok) as (uniform, gather):
                    with uniform:
                        b.store(src[0], e.gep(PTR, desc_ptr, d))
                        b.store(step, e.gep(I64, desc_ld, d))
                    with gather:
                        dst = e.gep(I8, abuf, b.mul(b.mul(d, c64(H)), kp))
                        copy_rows(e, src, dst, kp, kbytes, kp)
                        b.store(dst, e.gep(PTR, desc_ptr, d))
                        b.store(kp, e.gep(I64, desc_ld, d))

        def block(two_m: bool, two_n: bool, jp: ir.Value) -> None:
            for t in _C:
                tile_zero(e, t)
            bpan = e.gep(I8, bgroup, b.mul(jp, panel_bytes))
            with e.loop(0, ntaps, name="ctap") as tap:
                d0 = b.mul(tap, c64(2))
                pa = [e.load(PTR, e.gep(PTR, desc_ptr, b.add(d0, c64(h)))) for h in range(2)]
                lda = [e.load(I64, e.gep(I64, desc_ld, b.add(d0, c64(h)))) for h in range(2)]
                bt = e.gep(I8, bpan, b.mul(tap, tap_bytes))
                with e.loop(0, nck, name="kc") as c:
                    aoff = b.mul(c, qbytes)
                    bc = e.gep(I8, bt, b.mul(c, step_bytes))
                    tile_load(e, _A[0], e.gep(I8, pa[0], aoff), lda[0])
                    if two_m:
                        tile_load(e, _A[1], e.gep(I8, pa[1], aoff), lda[1])
                    tile_load(e, _B[0], bc, b_stride)
                    if two_n:
                        tile_load(e, _B[1], e.gep(I8, bc, 64), b_stride)
                    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                        if (i and not two_m) or (j and not two_n):
                            continue
                        e.call("llvm.x86.tdpbusd", VOID, [_i8(_C[2 * i + j]), _i8(_A[i]), _i8(_B[j])])
            ldc = c64(4 * NR)
            for i in range(2):
                for j in range(2):
                    tile_store(e, _C[2 * i + j], e.gep(I8, cbuf, (i * H * NR + j * 16) * 4), ldc)

        with e.loop(j0, j1, name="jp") as jp:
            col = b.mul(jp, c64(NR))
            ncols = e.min(c64(NR), b.sub(N, col))
            two_m = b.icmp_signed(">", mr, c64(H))
            two_n = b.icmp_signed(">", ncols, c64(16))
            with b.if_else(two_m) as (tm_, om_):
                with tm_:
                    with b.if_else(two_n) as (tn_, on_):
                        with tn_:
                            block(True, True, jp)
                        with on_:
                            block(True, False, jp)
                with om_:
                    with b.if_else(two_n) as (tn_, on_):
                        with tn_:
                            block(False, True, jp)
                        with on_:
                            block(False, False, jp)
            b.call(epi, [cbuf, mr, ncols, e.gep(I8, ygroup, b.mul(b.add(b.mul(p0, ldy), col), esz)), ldy,
                         e.gep(I32, comp_g, col), e.gep(F32, scale_g, col), e.gep(F32, shift_g, col),
                         e.gep(F32, res_g, b.add(b.mul(p0, ldr), col)), ldr, lo, hi, flags, e.gep(F32, fq_g, col),
                         a("fqs"), e.gep(I8, q_g, b.add(b.mul(p0, ldq), col)), ldq])
    e.call("llvm.x86.tilerelease", VOID, [])
    b.ret_void()


def _build_int8(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    epi = _emit_int8_epilogue(m, f"{prefix}_epi")
    _emit_int8_task(m, f"{prefix}_int8_task", epi)
    return m


class AmxInt8Kernels:
    """The compiled AMX int8 module (``int8_task`` over ``INT8_CONTEXT``)."""

    def __init__(self, isa: Isa):
        if not isa.amx_int8:
            raise EmberError(f"ember: the AMX int8 kernels need AMX tiles, which ISA {isa.level!r} here lacks")
        self.isa = isa
        self.lib = jit.load("amx-int8|mr32|nr32", isa, lambda p: _build_int8(p, isa))
        self.task_address = self.lib.address("int8_task")


@functools.cache
def amx_int8_kernels(isa: Isa) -> AmxInt8Kernels:
    """The AMX int8 kernels for ``isa`` (which must have ``amx_int8``)."""
    return AmxInt8Kernels(isa)


__all__ = ["AMX_TILE", "AmxInt8Kernels", "amx_int8_kernels", "amx_split", "emit_tile_config"]
