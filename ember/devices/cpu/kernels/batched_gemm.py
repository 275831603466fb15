"""Batched GEMM of two runtime tensors (MatMul): ``C[..., M, N] = op(A) @ op(B)``.

Neither operand is a weight: B is packed on the fly, inside the kernel, one ``K chunk x NR``
panel at a time into a small stack buffer (a 64-byte aligned copy, or a transpose done in
vector registers when B is contiguous along K, as ``K^T`` in attention), and each panel
then serves all the M tiles of its task. A is read in place through row pointers with
a runtime K stride, so a transposed A or any strided view costs no copy.

Batch dimensions broadcast as in numpy's ``matmul``. Each operand's per-batch offset comes
from a table built when the call is bound, so operands may be arbitrary strided views
(e.g. the heads of a ``[seq, 3 * hidden]`` QKV projection, read without a transpose),
as long as B, C and the residual are contiguous along their innermost matrix dimension.

A bf16 variant converts A's rows and B's panels to bf16 pairs in the same places.
One native call (a ``parallel_for``) runs the whole batch: tasks are
``batch x M blocks x N blocks``. The fused epilogue is ``clamp(alpha * acc + bias[N] +
R[..., M, N], lo, hi)``; the residual broadcasts over batch and rows (an attention mask).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import (
    FLAG_BIAS,
    FLAG_RES,
    MODE_ACC,
    MODE_BIAS,
    MODE_FINAL,
    MODE_RES,
    MODE_SCALE,
    NO_EPILOGUE,
    TILES,
    Epilogue,
    Precision,
    Tile,
    UkrKind,
    as_precision,
    call_microkernel,
    check_bf16,
    check_bias,
    emit_microkernel,
    emit_to_bf16,
    plan_blocks,
    task_block,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import BF16, F32, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import aligned_alloca, lane_mask, masked_load
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

BGEMM_CONTEXT = ContextLayout(
    "batched_gemm",
    ("a", "b", "c", "off", "m", "n", "k", "a_ms", "a_ks", "b_ks", "b_ns", "ldc", "bias", "res", "ldr", "flags",
     "lo", "hi", "alpha", "cb", "tm", "tn", "gm", "gn", "b_trans"),
    pointers=("a", "b", "c", "off", "bias", "res"))
FLAG_SCALE = 4
MAX_CHUNK = 512  # K values per packed B panel (a 64 KB stack buffer at most)


# --------------------------------------------------------------------------- code generation
def transpose_block(e: Emitter, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose an L x L block held as L vectors (log2(L) rounds of interleaving)."""
    n = len(rows)
    half = n // 2
    lo = ir.Constant(vec(I32, n), [j for i in range(half) for j in (i, i + n)])
    hi = ir.Constant(vec(I32, n), [j for i in range(half, n) for j in (i, i + n)])
    for _ in range(n.bit_length() - 1):
        nxt = []
        for i in range(half):
            nxt.append(e.b.shuffle_vector(rows[i], rows[i + half], lo))
            nxt.append(e.b.shuffle_vector(rows[i], rows[i + half], hi))
        rows = nxt
    return rows


def _emit_pack_b(e: Emitter, tile: Tile, dst: ir.Value, src: ir.Value, b_ks: ir.Value, b_ns: ir.Value,
                 trans: ir.Value, kc: ir.Value, ncols: ir.Value) -> None:
    """Pack B[k, n] (element at src + k * b_ks + n * b_ns) for k < kc, n < ncols into
    dst[k][NR], columns past ncols zero. Contiguous along n (b_ns == 1): vector copies;
    along k (b_ks == 1, trans): L x L blocks transposed in registers."""
    b = e.b
    L, NR, nv = tile.lanes, tile.nr, tile.nv
    vt = vec(F32, L)
    with b.if_else(b.icmp_unsigned("!=", trans, c64(0))) as (by_k, by_n):
        with by_n:
            masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) for v in range(nv)]
            with e.loop(0, kc, name="pbk") as k:
                row = e.gep(F32, src, b.mul(k, b_ks))
                for v in range(nv):
                    x = masked_load(e, vt, e.gep(F32, row, v * L), masks[v])
                    b.store(x, e.gep(F32, dst, b.add(b.mul(k, c64(NR)), c64(v * L))), align=64)
        with by_k:
            none = ir.Constant(vec(ir.IntType(1), L), None)
            for v in range(nv):
                nvalid = b.sub(ncols, c64(v * L))
                with b.if_then(b.icmp_signed(">", nvalid, c64(0))):
                    with e.loop(0, kc, L, name=f"pbt{v}") as kb:
                        kmask = lane_mask(e, b.sub(kc, kb), L)
                        vals = []
                        for i in range(L):
                            n_i = c64(v * L + i)
                            mask = b.select(b.icmp_signed("<", n_i, ncols), kmask, none)
                            vals.append(masked_load(e, vt, e.gep(F32, src, b.add(b.mul(n_i, b_ns), kb)), mask))
                        for j, x in enumerate(transpose_block(e, vals)):
                            b.store(x, e.gep(F32, dst, b.add(b.mul(b.add(kb, c64(j)), c64(NR)), c64(v * L))),
                                    align=64)


def _emit_pairs_bf16(e: Emitter, tile: Tile, dst: ir.Value, src: ir.Value, kc: ir.Value) -> None:
    """Convert a packed f32 panel src[k][NR] (k < kc) into bf16 pairs dst[k / 2][NR][2]; an odd
    last k is paired with zero."""
    b = e.b
    L, NR = tile.lanes, tile.nr
    vt = vec(F32, L)
    zip_ = ir.Constant(vec(I32, 2 * L), [j for i in range(L) for j in (i, i + L)])
    with e.loop(0, e.cdiv(kc, 2), name="pair") as p:
        k0 = b.mul(p, c64(2))
        has_k1 = b.icmp_signed("<", b.add(k0, c64(1)), kc)
        for v in range(tile.nv):
            r0 = e.load(vt, e.gep(F32, src, b.add(b.mul(k0, c64(NR)), c64(v * L))), align=64)
            r1 = e.load(vt, e.gep(F32, src, b.add(b.mul(b.add(k0, c64(1)), c64(NR)), c64(v * L))), align=64)
            r1 = b.select(has_k1, r1, ir.Constant(vt, None))
            pairs = b.fptrunc(b.shuffle_vector(r0, r1, zip_), vec(BF16, 2 * L))
            b.store(pairs, e.gep(I32, dst, b.add(b.mul(p, c64(NR)), c64(v * L))), align=64)


def _emit_a_bf16(e: Emitter, dst: ir.Value, src: ir.Value, ks: ir.Value, kc: ir.Value, lanes: int,
                 a_cols: bool) -> None:
    """One row of A (k < kc, element k at src + k * ks) as bf16 at dst, zero padded to pairs."""
    b = e.b
    if not a_cols:
        emit_to_bf16(e, src, dst, kc, lanes)
        return
    with e.loop(0, kc, name="acv") as k:  # A stored transposed: one strided element at a time
        x = e.load(F32, e.gep(F32, src, b.mul(k, ks)), align=4)
        b.store(b.fptrunc(x, BF16), e.gep(BF16, dst, k), align=2)
    with b.if_then(b.icmp_signed("!=", b.srem(kc, c64(2)), c64(0))):
        b.store(ir.Constant(I16, 0), e.gep(I16, dst, kc), align=2)


def _emit_task(m: ir.Module, name: str, tile: Tile, ukrs: dict[tuple[int, int], ir.Function],
               a_cols: bool, bf16: bool = False) -> None:
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    MR, NR, L = tile.mr, tile.nr, tile.lanes

    def f(key: str, typ: ir.Type = I64) -> ir.Value:
        return e.field(ctx, BGEMM_CONTEXT[key], typ)

    M, N, K, cb = f("m"), f("n"), f("k"), f("cb")
    blk = task_block(e, task, f("gm"), f("gn"), f("tm"), f("tn"), M, N, tile)
    batch, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles

    offs = e.gep(I64, f("off", PTR), b.mul(batch, c64(4)))
    base = [e.load(I64, e.gep(I64, offs, i)) for i in range(4)]
    a = e.gep(F32, f("a", PTR), base[0])
    bsrc = e.gep(F32, f("b", PTR), base[1])
    c = e.gep(F32, f("c", PTR), base[2])
    res = e.gep(F32, f("res", PTR), base[3])
    a_ms, a_ks, b_ks, b_ns, trans = f("a_ms"), f("a_ks"), f("b_ks"), f("b_ns"), f("b_trans")
    ldc, ldr, bias = f("ldc"), f("ldr"), f("bias", PTR)
    flags = b.trunc(f("flags"), I32)
    lo, hi, alpha = f("lo", F32), f("hi", F32), f("alpha", F32)

    def bit(flag: int, mode_bit: int) -> ir.Value:
        return b.select(b.icmp_unsigned("!=", b.and_(flags, c32(flag)), c32(0)), c32(mode_bit), c32(0))

    epi_bits = b.or_(b.or_(bit(FLAG_BIAS, MODE_BIAS), bit(FLAG_RES, MODE_RES)), bit(FLAG_SCALE, MODE_SCALE))
    rows = b.alloca(PTR, size=c64(MR))
    bpack = aligned_alloca(e, F32, b.mul(b.mul(e.cdiv(cb, L), c64(L)), c64(NR)))
    if bf16:  # A as bf16 rows [tile][MR][rs] per chunk; B panels as bf16 pairs
        rs = b.mul(e.cdiv(e.cdiv(cb, 2), L), c64(L))
        apack = aligned_alloca(e, I32, b.mul(b.mul(ntiles, c64(MR)), rs))
        bpack16 = aligned_alloca(e, I32, b.mul(e.cdiv(cb, 2), c64(NR)))
    kend = e.max(K, c64(1))  # K == 0 still runs one (empty) chunk to write the epilogue
    with e.loop(0, kend, cb, name="c0") as c0:
        kc = e.max(e.min(cb, b.sub(K, c0)), c64(0))
        first = b.icmp_signed("==", c0, c64(0))
        last = b.icmp_signed(">=", b.add(c0, cb), K)
        mode = b.or_(b.select(first, c32(0), c32(MODE_ACC)), b.select(last, b.or_(epi_bits, c32(MODE_FINAL)), c32(0)))
        if bf16:
            with e.loop(0, b.sub(m1, m0), name="arow") as q:
                row = e.gep(F32, a, b.add(b.mul(b.add(m0, q), a_ms), b.mul(c0, a_ks)))
                _emit_a_bf16(e, e.gep(I32, apack, b.mul(q, rs)), row, a_ks, kc, L, a_cols)
        with e.loop(j0, j1, name="jp") as jp:
            col = b.mul(jp, c64(NR))
            ncols = e.min(c64(NR), b.sub(N, col))
            _emit_pack_b(e, tile, bpack, e.gep(F32, bsrc, b.add(b.mul(c0, b_ks), b.mul(col, b_ns))), b_ks, b_ns,
                         trans, kc, ncols)
            if bf16:
                _emit_pairs_bf16(e, tile, bpack16, bpack, kc)
            nvec = e.cdiv(ncols, L)
            with e.loop(0, ntiles, name="tile") as it:
                p0 = b.add(m0, b.mul(it, c64(MR)))
                mr = e.min(c64(MR), b.sub(m1, p0))
                if bf16:
                    args = [e.gep(I32, apack, b.mul(b.mul(it, c64(MR)), rs)), c64(1), rs, e.cdiv(kc, 2), bpack16,
                            e.gep(F32, c, b.add(b.mul(p0, ldc), col)), ldc, ncols, mode, e.gep(F32, bias, col),
                            e.gep(F32, res, b.add(b.mul(p0, ldr), col)), ldr, lo, hi, c64(1), alpha]
                else:
                    if a_cols:
                        b.store(e.gep(F32, a, p0), rows)
                    else:
                        last_row = b.sub(M, c64(1))
                        for r in range(MR):  # rows past M repeat the last row (never stored)
                            row = e.min(b.add(p0, c64(r)), last_row)
                            b.store(e.gep(F32, a, b.mul(row, a_ms)), e.gep(PTR, rows, r))
                    args = [rows, c64(1), c0, kc, bpack, e.gep(F32, c, b.add(b.mul(p0, ldc), col)), ldc, ncols,
                            mode, e.gep(F32, bias, col), e.gep(F32, res, b.add(b.mul(p0, ldr), col)), ldr, lo, hi,
                            a_ks, alpha]
                call_microkernel(e, ukrs, MR, mr, nvec, args)
    b.ret_void()


def _build_module(prefix: str, isa: Isa, tile: Tile, a_cols: bool, bf16: bool) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    always_mask = isa.level == "avx512"
    kind = UkrKind("bf16" if bf16 else "cols" if a_cols else "rows")
    ukrs = {(r, v): emit_microkernel(m, f"{prefix}_ukr_{r}x{v}", tile, r, v, always_mask, kind)
            for v in range(1, tile.nv + 1) for r in range(1, tile.mr + 1)}
    _emit_task(m, f"{prefix}_bgemm_task", tile, ukrs, a_cols, bf16)
    return m


@functools.cache
def _task_address(isa: Isa, a_cols: bool = False, bf16: bool = False) -> int:
    """The task for A contiguous along K (``a_cols`` False) or along M (a transposed A)."""
    t = TILES[isa.level]
    sig = (f"bgemm{'-bf16' if bf16 else ''}|{isa.level}|{'cols' if a_cols else 'rows'}|mr{t.mr}|"
           f"nv{t.nv}|l{t.lanes}|u{t.unroll}")
    return jit.load(sig, isa, lambda p: _build_module(p, isa, t, a_cols, bf16)).address("bgemm_task")


# --------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class MatmulShapes:
    """Shapes of ``op(A) @ op(B)`` after numpy's MatMul rules (1-D operands, transposes,
    batch broadcasting)."""

    m: int
    k: int
    n: int
    batch: tuple[int, ...]
    output: tuple[int, ...]


def matmul_shapes(shape_a: tuple[int, ...], shape_b: tuple[int, ...], transpose_a: bool = False,
                  transpose_b: bool = False) -> MatmulShapes:
    """M, K, N, the broadcast batch shape and the output shape of a MatMul.

    A 1-D A is ``[1, K]`` and a 1-D B ``[K, 1]`` (transposes ignored), and that dimension is
    dropped from the output, as in numpy and OpenVINO."""
    sa, sb = tuple(int(d) for d in shape_a), tuple(int(d) for d in shape_b)
    if not sa or not sb:
        raise EmberError("ember: MatMul operands must have at least one dimension")
    a2 = (1, sa[0]) if len(sa) == 1 else (sa[-1], sa[-2]) if transpose_a else sa[-2:]
    b2 = (sb[0], 1) if len(sb) == 1 else (sb[-1], sb[-2]) if transpose_b else sb[-2:]
    if a2[1] != b2[0]:
        raise EmberError(f"ember: MatMul of {list(sa)}{'^T' * transpose_a} and {list(sb)}{'^T' * transpose_b}: "
                         f"inner dimensions {a2[1]} and {b2[0]} differ")
    try:
        batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    except ValueError:
        raise EmberError(f"ember: MatMul batch dimensions {list(sa[:-2])} and {list(sb[:-2])} "
                         "do not broadcast") from None
    out = batch + ((a2[0],) if len(sa) > 1 else ()) + ((b2[1],) if len(sb) > 1 else ())
    return MatmulShapes(a2[0], a2[1], b2[1], batch, out)


def _batch_offsets(shape: tuple[int, ...], strides: Sequence[int], batch: tuple[int, ...]) -> np.ndarray:
    """Element offset of each batch entry (row-major over ``batch``) of an operand whose
    leading dims broadcast to ``batch``."""
    off = np.zeros((1,) * len(batch), np.int64)
    lead = len(batch) - len(shape)
    for d, (size, stride) in enumerate(zip(shape, strides)):
        if size != 1:
            view = [1] * len(batch)
            view[lead + d] = size
            off = off + (np.arange(size, dtype=np.int64) * stride).reshape(view)
    return np.broadcast_to(off, batch).reshape(-1)


def _elements(name: str, arr: np.ndarray) -> tuple[int, ...]:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
        raise EmberError(f"ember: MatMul {name} must be a float32 array")
    if any(s % 4 for s in arr.strides):
        raise EmberError(f"ember: MatMul {name} has strides that are not whole elements")
    return tuple(s // 4 for s in arr.strides)


# --------------------------------------------------------------------------- the operation
class BatchedGemm:
    """``C[..., M, N] = clamp(alpha * op(A) @ op(B) + bias[N] + R[..., M, N], lo, hi)`` for two
    runtime float32 tensors (ONNX/OpenVINO MatMul with ``transpose_a``/``transpose_b``).

    Shapes are fixed at construction (``shape_a``, ``shape_b`` as given, before the
    transposes); batch dimensions broadcast as in numpy, 1-D operands follow MatMul's rules.
    :meth:`bind` fixes buffers, which may be strided views: A any strides; B, C and the
    residual contiguous along their last dimension (B may instead be contiguous along its
    second-last, as a transposed ``K^T`` view is). Nothing is copied on the Python side: B
    is packed into a small per-thread buffer inside the kernel, panel by panel. The residual
    may be any shape that broadcasts to the output except along N.
    Threads split ``batch x M blocks x N blocks``; one ``parallel_for`` per call.

    ``precision="bf16"`` (AVX512_BF16 only, else :class:`~ember.errors.EmberError`; see
    :func:`~ember.devices.cpu.kernels.gemm.bf16_supported`) rounds both operands to bf16 as they are
    packed and accumulates in f32; the epilogue is f32.
    """

    def __init__(self, shape_a: tuple[int, ...], shape_b: tuple[int, ...], transpose_a: bool = False,
                 transpose_b: bool = False, num_threads: int | None = None, epilogue: Epilogue = NO_EPILOGUE,
                 alpha: float = 1.0, isa: Isa | None = None, precision: Precision | str = Precision.F32):
        self.shape_a, self.shape_b = tuple(shape_a), tuple(shape_b)
        self.transpose_a, self.transpose_b = bool(transpose_a), bool(transpose_b)
        self.shapes = matmul_shapes(self.shape_a, self.shape_b, self.transpose_a, self.transpose_b)
        self.epilogue, self.alpha = epilogue, float(alpha)
        self.isa = isa or host_isa()
        self.precision = as_precision(precision)
        self._bf16 = self.precision is Precision.BF16
        if self._bf16:
            check_bf16(self.isa)
        self.tile = TILES[self.isa.level]
        self.num_threads = num_threads or default_pool().num_threads
        s = self.shapes
        self.nb = math.prod(s.batch)
        self.chunk = max(1, s.k if s.k <= MAX_CHUNK else MAX_CHUNK // 2)
        ntm = max(1, -(-s.m // self.tile.mr))
        if self._bf16:  # the task's A block, converted to bf16, stays within ~128 KB of stack
            rs = -(-(self.chunk + 1) // 2 // self.tile.lanes) * self.tile.lanes
            ntm = max(1, min(ntm, 32768 // (self.tile.mr * rs)))
        self.blocks = plan_blocks(s.m, s.n, s.k, 1, max(self.nb, 1), self.tile, self.num_threads, max_tm=ntm)
        tm, tn, gm, gn = self.blocks
        self.n_tasks = self.nb * gm * gn if s.m > 0 and s.n > 0 else 0

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes.output

    @property
    def flops(self) -> int:
        s = self.shapes
        return 2 * self.nb * s.m * s.n * s.k

    def _operand(self, name: str, arr: np.ndarray, shape: tuple[int, ...],
                 transpose: bool) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
        """(batch shape, batch strides, stride along rows, stride along columns) of op(arr)."""
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            got = getattr(arr, "shape", type(arr).__name__)
            raise EmberError(f"ember: MatMul {name} has shape {got}, expected {shape}")
        st = _elements(name, arr)
        if arr.ndim == 1:  # A: one row of K; B: one column of K
            return (), (), *((0, st[0]) if name == "A" else (st[0], 1))
        rows, cols = (st[-1], st[-2]) if transpose else (st[-2], st[-1])
        return arr.shape[:-2], st[:-2], rows, cols

    def _output_like(self, name: str, arr: np.ndarray, a_ndim: int, b_ndim: int) -> tuple[np.ndarray, int, int]:
        """Batch offsets, row stride and column stride of an array broadcast to the output."""
        s = self.shapes
        _elements(name, arr)
        try:
            view = np.broadcast_to(arr, s.output)
        except ValueError:
            raise EmberError(f"ember: MatMul {name} of shape {arr.shape} does not broadcast to {s.output}") from None
        st = [x // 4 for x in view.strides]
        nbt = len(s.batch)
        core = st[nbt:]
        row = core.pop(0) if a_ndim > 1 else 0
        col = core.pop(0) if b_ndim > 1 else 1
        if s.n > 1 and col != 1 and self.n_tasks:
            raise EmberError(f"ember: MatMul {name} must be contiguous along N (not broadcast there)")
        return _batch_offsets(s.batch, st[:nbt], s.batch), (row if s.m > 1 else 0), col

    def bind(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> BoundKernel:
        """Fix the buffers (arrays or views of a plan's arena); checks shapes and strides once.

        Each bound call has its own context; streams can run the same op on their buffers."""
        s = self.shapes
        a_batch, a_bst, a_ms, a_ks = self._operand("A", a, self.shape_a, self.transpose_a)
        b_batch, b_bst, b_ks, b_ns = self._operand("B", b, self.shape_b, self.transpose_b)
        if s.k == 0 or self.n_tasks == 0:  # A and B are never read
            a_ks = a_ms = b_ks = b_ns = 1
        if s.k == 1 or (s.m > 1 and a_ks != 1 and a_ms == 1):
            a_ks, a_cols = (a_ks if s.k > 1 else 0), True  # A stored transposed: m contiguous
        elif a_ks == 1 or s.m == 1:
            a_ks, a_cols = 1, False
        else:
            raise EmberError("ember: MatMul A must be contiguous along M or K (copy it first)")
        if s.n == 1:
            b_ns = 1
        if b_ns == 1:
            b_trans = 0
        elif b_ks == 1 or s.k == 1:
            b_ks, b_trans = 1, 1
        else:
            raise EmberError("ember: MatMul B must be contiguous along K or N (copy it first)")
        if not isinstance(c, np.ndarray) or c.shape != s.output:
            raise EmberError(f"ember: MatMul output has shape {getattr(c, 'shape', None)}, expected {s.output}")
        offs = np.zeros((max(self.nb, 1), 4), np.int64)
        offs[:self.nb, 2], ldc, _ = self._output_like("output", c, a.ndim, b.ndim)
        if s.m > 1 and ldc == 0 and self.n_tasks:
            raise EmberError("ember: MatMul output rows overlap")
        offs[:self.nb, 0] = _batch_offsets(a_batch, a_bst, s.batch)
        offs[:self.nb, 1] = _batch_offsets(b_batch, b_bst, s.batch)
        check_bias(bias, s.n)
        ldr = 0
        if residual is not None:
            offs[:self.nb, 3], ldr, _ = self._output_like("residual", residual, a.ndim, b.ndim)
        tm, tn, gm, gn = self.blocks
        flags = ((FLAG_BIAS if bias is not None else 0) | (FLAG_RES if residual is not None else 0)
                 | (FLAG_SCALE if self.alpha != 1.0 else 0))
        vals = dict(a=a.ctypes.data, b=b.ctypes.data, c=c.ctypes.data, off=offs.ctypes.data, m=s.m, n=s.n, k=s.k,
                    a_ms=a_ms, a_ks=a_ks, b_ks=b_ks, b_ns=b_ns, ldc=ldc, ldr=ldr, flags=flags,
                    bias=0 if bias is None else bias.ctypes.data,
                    res=0 if residual is None else residual.ctypes.data,
                    cb=self.chunk, tm=tm, tn=tn, gm=gm, gn=gn, b_trans=b_trans)
        ctx = BGEMM_CONTEXT.new()
        for key, val in vals.items():
            ctx[BGEMM_CONTEXT[key]] = val
        bits = np.array([self.epilogue.lo, self.epilogue.hi, self.alpha], np.float32).view(np.uint32)
        ctx[BGEMM_CONTEXT["lo"]], ctx[BGEMM_CONTEXT["hi"]], ctx[BGEMM_CONTEXT["alpha"]] = (int(x) for x in bits)
        task = _task_address(self.isa, a_cols, self._bf16)
        return BoundKernel(task, ctx, self.n_tasks, self.num_threads, (offs, bias), layout=BGEMM_CONTEXT)

    def __call__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``c`` (allocated, 64-byte aligned, when None) and return it."""
        if c is None:
            c = aligned_empty(self.output_shape)
        self.bind(a, b, c, bias, residual).run(pool)
        return c


def batched_matmul(a: np.ndarray, b: np.ndarray, transpose_a: bool = False, transpose_b: bool = False,
                   bias: np.ndarray | None = None, residual: np.ndarray | None = None, alpha: float = 1.0,
                   epilogue: Epilogue = NO_EPILOGUE, out: np.ndarray | None = None, num_threads: int | None = None,
                   isa: Isa | None = None) -> np.ndarray:
    """One-shot ``epilogue(alpha * op(a) @ op(b) + bias + residual)`` (numpy matmul semantics)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    op = BatchedGemm(a.shape, b.shape, transpose_a, transpose_b, num_threads, epilogue, alpha, isa)
    return op(a, b, out, bias, residual)


__all__ = ["BatchedGemm", "MatmulShapes", "batched_matmul", "matmul_shapes"]
