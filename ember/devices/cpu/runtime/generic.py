"""Shape-generic plans: a plan lowered once, reused at new input shapes.

A dynamic model's first plans are lowered per input shape (``device._Programs``). Each such plan
is also a *sample* for a :class:`PlanTemplate`: when two plans of different shapes have the same
structure (the same ops, kernels and tensors, in the same order), every tensor dimension is fitted
as a formula of the model's *symbolic dimensions* (the input dimensions that changed between
samples: a constant, ``a * v + b``, ``a * v * w``, or, when none of those fits, ``s * ((v + b) // d)``:
a strided window over a dimension of any size); a constant whose shape changes with them (a
position-embedding slice folded for the length) must be a prefix of the largest sample's, and a
small integer constant whose values change (a ShapeOf folded per shape) gets a formula per element;
a slice's view (an offset and strides into its base) gets formulas for its numbers. At a new
shape inside the range the samples verified, the template makes the plan without lowering: the
first plan's ops with tensors of the new sizes, reshape and slice views re-made for them, memory
planned again. The ops' binders read their sizes from the arrays they are given (GEMM M, rows of
MVN/SoftMax, attention's lengths, elementwise and reduction sizes, a convolution's image size:
``Conv2d.with_input``), so binding the template's plan gives the contexts a plan lowered for that
shape gives. (Kernels still built for one size, such as the AMX stem's row taps, fail the checks:
such a model is lowered per shape.)

Nothing is taken on trust: each sample lowered per shape is also made from the template and both
are bound and compared word by word (every kernel's task, task count and context, pointers
compared by the tensor and offset they point at; every constant's data; every view's shape and
strides; a context that holds another kernel's context, compared word by word in turn; a
kernel's own tables, by content). A shape whose sample did not match bounds the range the
template is used in (a value of a symbolic dimension between two verified ones, with no failed
one between them); a plan with a Python step other than an input copy is never made generic. ``GENERIC_PLANS`` (device.py)
turns the mechanism off.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any

import numpy as np

from ember.devices.cpu.runtime.plan import Op, Program, Tensor

#: checks that all fail (no sample but the base matched) before the template is given up for the model
GIVE_UP_AFTER = 8
#: plans lowered per shape kept as samples (the base, the largest constants, the newest, and others
#: while they tell the variables apart)
MAX_SAMPLES = 8
#: reasons of failed checks kept
MAX_BLOCKERS = 32
#: a shape just outside the verified range lowers a shape farther out instead (:meth:`PlanTemplate.reach`)
REACH = True
#: Python steps a template may reuse (they read and write whatever arrays they are given)
GENERIC_PYTHON_OPS = frozenset({"InputCopy"})

Formula = tuple  # ("c", value) | ("a", var, slope, offset) | ("p", var, var2, coefficient)
#                  | ("d", var, offset, divisor, scale) | ("q", var, var2, offset, offset2, divisor, scale)
#: divisors tried for a size that is a floor division of a variable (strided convolutions and pools
#: of an input of any size: ceil(W / 2) = (W + 1) // 2, two of them (W + 3) // 4, ...)
DIVISORS = (2, 3, 4, 8, 16, 32, 64)
#: the largest multiple of such a size tried (channels flattened with it)
MAX_SCALE = 4096


def _fit(values: list[int], points: list[tuple[int, ...]], nvars: int) -> list[Formula]:
    """Every formula (constant, affine in one variable, a multiple of a product of two) that gives
    ``values`` at the variables ``points``, each fitted from two points and checked on all."""
    out: list[Formula] = []
    if all(v == values[0] for v in values):
        out.append(("c", values[0]))
    for i in range(nvars):
        xs = [p[i] for p in points]
        pairs = [(x, y) for x, y in zip(xs, values)]
        distinct = {x for x, _ in pairs}
        if len(distinct) < 2:
            continue
        (x0, y0), (x1, y1) = pairs[0], next(p for p in pairs if p[0] != pairs[0][0])
        if (y1 - y0) % (x1 - x0):
            continue
        slope = (y1 - y0) // (x1 - x0)
        off = y0 - slope * x0
        if slope and all(slope * x + off == y for x, y in pairs):
            out.append(("a", i, slope, off))
    for i, j in itertools.combinations(range(nvars), 2):
        prods = [p[i] * p[j] for p in points]
        if len(set(prods)) < 2 or prods[0] == 0 or values[0] % prods[0]:
            continue
        coef = values[0] // prods[0]
        if coef and all(coef * q == y for q, y in zip(prods, values)):
            out.append(("p", i, j, coef))
    if not out:  # only then (a size that fits a simpler formula must not turn ambiguous)
        out = _fit_division(values, points, nvars) or _fit_division_products(values, points, nvars)
    return out


#: elements of a constant whose values may follow the input shape (a shape vector)
MAX_VALUED_ELEMENTS = 16


def _fit_values(datas: list[np.ndarray], points: list[tuple[int, ...]], nvars: int) -> list[list[Formula]] | None:
    """Per element of a small integer constant that differs between samples (a ShapeOf folded for
    each shape), its candidate formulas; None when it is not such a constant or an element fits none."""
    first = datas[0]
    if first.dtype.kind not in "iu" or first.size > MAX_VALUED_ELEMENTS or first.size == 0:
        return None
    flat = [d.reshape(-1) for d in datas]
    fits = []
    for k in range(first.size):
        f = _fit([int(d[k]) for d in flat], points, nvars)
        if not f:
            return None
        fits.append(f)
    return fits


def _divisors(n: int, most: int) -> list[int]:
    """The divisors of ``n`` up to ``most``, ascending."""
    small, large = [], []
    k = 1
    while k * k <= n:
        if n % k == 0:
            small.append(k)
            if k != n // k:
                large.append(n // k)
        k += 1
    return [d for d in small + large[::-1] if d <= most]


def _fit_division(values: list[int], points: list[tuple[int, ...]], nvars: int) -> list[Formula]:
    """Formulas ``scale * ((v + offset) // divisor)`` that give ``values``: a strided window over a
    dimension of any size (times the channels, when flattened). The samples bound the offset to an
    interval; both ends are candidates, so a new value on which they disagree is not guessed (the
    template then lowers that shape, and the new sample narrows the interval)."""
    g = math.gcd(*values)
    if g <= 0:
        return []
    out: list[Formula] = []
    # the scale (channels of a flattened size) divides every value: each divisor of their gcd
    for scale in _divisors(g, MAX_SCALE):
        ys = [v // scale for v in values]
        for i in range(nvars):
            xs = [p[i] for p in points]
            if len(set(xs)) < 2:
                continue
            for d in DIVISORS:
                lo = max(d * y - x for x, y in zip(xs, ys))
                hi = min(d * y + d - 1 - x for x, y in zip(xs, ys))
                if lo <= hi:
                    out += [("d", i, lo, d, scale)] + ([("d", i, hi, d, scale)] if hi != lo else [])
    return out


def _groups(keys: list[tuple]) -> list[list[tuple[int, int]]]:
    """The variables of input shapes ``keys``: the (input, axis) positions whose size changes, those
    equal in every key grouped as one (MiniLM's ids, mask and types: one length)."""
    flat = [(i, j) for i, shp in enumerate(keys[0]) for j in range(len(shp))]
    varying = [p for p in flat if len({k[p[0]][p[1]] for k in keys}) > 1]
    groups: list[list[tuple[int, int]]] = []
    for p in varying:
        for g in groups:
            q = g[0]
            if all(k[p[0]][p[1]] == k[q[0]][q[1]] for k in keys):
                g.append(p)
                break
        else:
            groups.append([p])
    return groups


def _fit_division_products(values: list[int], points: list[tuple[int, ...]], nvars: int) -> list[Formula]:
    """Formulas ``scale * ((v + bv) // d) * ((w + bw) // d)``: a flattened map of a strided
    window over two dimensions (H / 4 x W / 4 pixels as GEMM rows), the offsets the floor or the
    ceiling of the division; both kept when the samples do not tell."""
    out: list[Formula] = []
    for i, j in itertools.combinations(range(nvars), 2):
        for d in DIVISORS:
            for bi in (0, d - 1):
                for bj in (0, d - 1):
                    prods = [((p[i] + bi) // d) * ((p[j] + bj) // d) for p in points]
                    if len(set(prods)) < 2 or prods[0] <= 0 or values[0] % prods[0]:
                        continue
                    scale = values[0] // prods[0]
                    if scale and all(scale * q == v for q, v in zip(prods, values)):
                        out.append(("q", i, j, bi, bj, d, scale))
    return out


def _one_value(fits: list[Formula], x: tuple[int, ...]) -> int | None:
    """The value every candidate formula gives at ``x``; None when they disagree."""
    if len(fits) == 1:
        return _eval(fits[0], x)
    vals = {_eval(f, x) for f in fits}
    return vals.pop() if len(vals) == 1 else None


def _eval(f: Formula, x: tuple[int, ...]) -> int:
    if f[0] == "c":
        return int(f[1])
    if f[0] == "a":
        return int(f[2] * x[f[1]] + f[3])
    if f[0] == "d":
        return int(f[4] * ((x[f[1]] + f[2]) // f[3]))
    if f[0] == "q":
        return int(f[6] * ((x[f[1]] + f[3]) // f[5]) * ((x[f[2]] + f[4]) // f[5]))
    return int(f[3] * x[f[1]] * x[f[2]])


def _signature(p: Program) -> list[Any]:
    """What two plans must share to be one template's samples (the structure, not the sizes)."""
    sig: list[Any] = [len(p.tensors), len(p.ops), [t.id for t in p.inputs], [t.id for t in p.outputs]]
    for t in p.tensors:
        sig.append((t.kind, t.dtype, t.layout, t.arena, t.external, t.index, len(t.shape or ()),
                    t.base.id if t.base is not None else -1))
    for op in p.ops:
        sig.append((op.name, op.type_name, op.native, op.physical, [t.id for t in op.inputs], [t.id for t in op.outputs]))
    return sig


def _is_reshape(t: Tensor) -> bool:
    """Whether view ``t``'s maker reshapes its base (tried on a probe of the base's shape)."""
    assert t.base is not None and t.make_view is not None
    shape = t.base.shape
    probe = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    try:
        v = t.make_view(probe)
    except Exception:  # noqa: BLE001 - not a reshape, then
        return False
    return v.shape == t.shape and v.size == probe.size and np.shares_memory(v, probe) \
        and np.array_equal(v, probe.reshape(t.shape))


def _reshaper(shape: tuple[int, ...]) -> Any:
    return lambda a: np.reshape(a, shape, copy=False)


class PlanTemplate:
    """Plans of one dynamic model made at new input shapes from a plan lowered for another
    (see the module's docstring). :meth:`observe` takes each plan lowered per shape;
    :meth:`program` makes one for a new shape, or returns None (then lower it per shape)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.base: Program | None = None
        self.base_key: tuple | None = None
        self._sig: list[Any] | None = None
        #: (input shapes, every tensor's shape, the constants steps read, the strided views' numbers)
        self.samples: list[tuple[tuple, list[tuple[int, ...]], dict[int, np.ndarray], dict[int, tuple[int, ...]]]] = []
        #: per strided view whose numbers change with the input shape: candidate formulas of its
        #: offset and strides (elements)
        self.strided: dict[int, list[list[Formula]]] = {}
        self.positions: list[list[tuple[int, int]]] = []  # per variable: the input (index, axis) it sits at
        self.dims: list[list[list[Formula]]] = []  # per tensor, per dim: the candidate formulas
        self._varying: list[tuple[int, list[list[Formula]]]] = []  # the tensors whose dims are not all constant
        self.largest: dict[int, np.ndarray] = {}  # per shape-changing constant: the largest sample's data
        #: per small integer constant whose values change with the input shape (a folded ShapeOf):
        #: its shape, dtype and each element's candidate formulas
        self.valued: dict[int, tuple[tuple[int, ...], np.dtype, list[list[Formula]]]] = {}
        self.reshapes: set[int] = set()  # views re-made as reshapes at a new shape
        self._probed: set[int] = set()
        self.verified: list[tuple] = []  # input shapes at which the template's plan matched the lowered one
        self.failed: list[tuple] = []  # ... and at which it did not (another structure, other contexts)
        self.off: str | None = None  # why the template is not used (None: it is)
        self.blockers: list[str] = []  # ops that did not match at a verified sample
        self.made = 0
        self.checks = 0

    def block(self, why: str) -> None:
        """Note why a check failed (the first ``MAX_BLOCKERS``: ``dynamic_stats``' generic_blockers)."""
        if len(self.blockers) < MAX_BLOCKERS:
            self.blockers.append(why)

    # -- samples ----------------------------------------------------------------------------
    def observe(self, key: tuple, prog: Program) -> None:
        """Take ``prog``, lowered per shape for input shapes ``key``: the first one is the base;
        each later one refits the formulas and is checked against the template's plan."""
        if self.off is not None or not key:
            return
        if self.base is None:
            bad = [op for op in prog.ops if not op.native and op.type_name not in GENERIC_PYTHON_OPS]
            if bad:
                self.off = f"python step {bad[0].type_name} '{bad[0].name}'"
                return
            if any(t.shape is None for t in prog.tensors):
                self.off = "a tensor of dynamic shape"
                return
            self.base, self.base_key, self._sig = prog, key, _signature(prog)
            self._add_sample(key, prog)
            self.verified.append(key)  # the template at the base's shapes is the base plan
            return
        if len(key) != len(self.base_key or ()) or any(len(a) != len(b) for a, b in zip(key, self.base_key or ())):
            self.off = "inputs of another rank"
            return
        if _signature(prog) != self._sig:
            self.failed.append(key)
            self.block(f"another plan structure at input shapes {[list(k) for k in key]}")
            return
        self._add_sample(key, prog)
        if not self._refit():
            return
        made = self._make(key)
        ok = made is not None and self._same(made, prog)
        self.checks += 1
        (self.verified if ok else self.failed).append(key)
        if not ok and self.checks >= GIVE_UP_AFTER and len(self.verified) == 1:  # only the base: stop paying for checks
            self.off = f"no sample matched the template in {self.checks} checks (see generic_blockers)"

    def _add_sample(self, key: tuple, prog: Program) -> None:
        read = {t.id for op in prog.ops for t in op.inputs} | {t.id for t in prog.outputs}
        read |= {t.base.id for t in prog.tensors if t.base is not None}
        # (a constant no step reads, such as a folded ShapeOf's value left in the tensor list, does not matter)
        consts = {t.id: t.data for t in prog.tensors if t.kind == "const" and t.data is not None and t.id in read}
        strided: dict[int, tuple[int, ...]] = {}
        for t in prog.tensors:
            maker: Any = t.make_view
            if t.kind == "view" and hasattr(maker, "with_numbers"):  # a slice view: its offset and strides
                strided[t.id] = (int(maker.off), *(int(v) for v in maker.strides))
        self.samples.append((key, [tuple(t.shape) for t in prog.tensors], consts, strided))
        if len(self.samples) > MAX_SAMPLES:  # drop an old one that tells nothing the others do not
            groups = _groups([smp[0] for smp in self.samples])
            big = max(range(len(self.samples)), key=lambda i: sum(d.size for d in self.samples[i][2].values()))
            for i in range(1, len(self.samples) - 1):
                rest = [smp[0] for j, smp in enumerate(self.samples) if j != i]
                if i != big and _groups(rest) == groups:
                    del self.samples[i]
                    break

    def _refit(self) -> bool:
        """Variables from the samples' keys, formulas for every tensor dim; False (and the template
        off) when a dim or a constant fits no formula."""
        keys = [s[0] for s in self.samples]
        groups = _groups(keys)
        if not groups:
            return False
        self.positions = groups
        points = []
        for k in keys:
            x = self._vars(k)
            if x is None:  # (cannot be: the variables come from these keys)
                return False
            points.append(x)
        ntensors = len(self.samples[0][1])
        dims: list[list[list[Formula]]] = []
        for tid in range(ntensors):
            shapes = [s[1][tid] for s in self.samples]
            per = []
            for axis in range(len(shapes[0])):
                fits = _fit([sh[axis] for sh in shapes], points, len(groups))
                if not fits:
                    self.off = f"tensor {tid} dim {axis}: sizes {[sh[axis] for sh in shapes]} fit no formula"
                    return False
                per.append(fits)
            dims.append(per)
        self.dims = dims
        self._varying = [(tid, per) for tid, per in enumerate(dims) if any(f[0] != "c" for fits in per for f in fits)]
        assert self.base is not None
        for tid, _ in self._varying:  # (probed once, and only for the views whose sizes change)
            t = self.base.tensors[tid]
            if t.kind == "view" and tid not in self._probed:
                self._probed.add(tid)
                if _is_reshape(t):
                    self.reshapes.add(tid)
        largest: dict[int, np.ndarray] = {}
        valued: dict[int, tuple[tuple[int, ...], np.dtype, list[list[Formula]]]] = {}
        for tid in self.samples[0][2]:
            datas = [s[2][tid] for s in self.samples]
            if all(d.shape == datas[0].shape for d in datas):
                if not all(d is datas[0] or np.array_equal(d, datas[0]) for d in datas):
                    elements = _fit_values(datas, points, len(groups))
                    if elements is None:
                        self.off = f"constant {tid} changes with the input shape"
                        return False
                    valued[tid] = (tuple(datas[0].shape), datas[0].dtype, elements)
                continue
            big = max(datas, key=lambda d: d.size)
            if any(d.ndim != big.ndim or any(a > b for a, b in zip(d.shape, big.shape))
                   or not np.array_equal(d, big[tuple(slice(0, n) for n in d.shape)]) for d in datas):
                self.off = f"constant {tid} of changing shape is not a prefix of the largest"
                return False
            largest[tid] = big
        self.largest = largest
        self.valued = valued
        strided: dict[int, list[list[Formula]]] = {}
        for tid, first in self.samples[0][3].items():
            numbers: list[tuple[int, ...]] = []
            for smp in self.samples:
                got = smp[3].get(tid)
                if got is None or len(got) != len(first):
                    self.off = f"view {tid} is made differently between samples"
                    return False
                numbers.append(got)
            if all(n == first for n in numbers):
                continue
            per_number = [_fit([n[k] for n in numbers], points, len(groups)) for k in range(len(first))]
            if not all(per_number):
                self.off = f"view {tid}: offset or strides {numbers} fit no formula"
                return False
            strided[tid] = per_number
        self.strided = strided
        return True

    def _vars(self, key: tuple) -> tuple[int, ...] | None:
        """The symbolic dimensions' values for input shapes ``key`` (None: the other dims differ
        from the samples', or positions of one variable differ)."""
        base = self.samples[0][0]
        group_of = {p: g for g, ps in enumerate(self.positions) for p in ps}
        vals: list[int | None] = [None] * len(self.positions)
        for i, shp in enumerate(key):
            if len(shp) != len(base[i]):
                return None
            for j, d in enumerate(shp):
                g = group_of.get((i, j))
                if g is None:
                    if d != base[i][j]:
                        return None
                elif vals[g] is None:
                    vals[g] = d
                elif vals[g] != d:
                    return None
        return tuple(int(v) for v in vals)  # type: ignore[arg-type]

    def _covered(self, x: tuple[int, ...]) -> bool:
        """Every variable between two verified values (or at one) with no failed value between
        (failed shapes whose other dims differ from the samples' are not near these); with several
        variables, the verified points span them (not all on one line: two samples at (640, 128) and
        (352, 704) fit a flattened H x W size as -36 H + 28160 and as 18 W + 2816 alike, and both give
        a wrong size at (448, 512), a point on their line)."""
        good = [p for p in (self._vars(k) for k in self.verified) if p is not None]
        bad_points = [p for p in (self._vars(k) for k in self.failed) if p is not None]
        if len(x) > 1 and (len(good) <= len(x)
                           or np.linalg.matrix_rank(np.array(good[1:], np.float64) - np.array(good[0], np.float64)) < len(x)):
            return False
        for g, v in enumerate(x):
            ok = {p[g] for p in good}
            bad = {p[g] for p in bad_points}
            lo = [u for u in ok if u <= v]
            hi = [u for u in ok if u >= v]
            if not lo or not hi:
                return False
            a, b = max(lo), min(hi)
            if any(a <= u <= b for u in bad):
                return False
        return True

    # -- new shapes -------------------------------------------------------------------------
    def program(self, key: tuple) -> Program | None:
        """The plan for input shapes ``key`` made from the template (memory not planned yet),
        or None when the template does not cover them."""
        if self.off is not None or self.base is None or not self.positions or self.checks == 0:
            return None
        x = self._vars(key)
        if x is None or not self._covered(x):
            return None
        prog = self._make(key, x)
        if prog is not None:
            self.made += 1
        return prog

    def reach(self, key: tuple) -> tuple | None:
        """Input shapes to lower and check instead of ``key`` when ``key`` is just outside the
        verified range ``[a, b]`` of a one-variable template (sentence lengths), so that a passing
        check covers ``key`` and the values between: below the range, as far below ``key`` as
        ``b`` is above it but at most half way down (``max(2 v - b, v // 2)``, at least 1); above
        it, ``2 v - a`` but at most a quarter beyond ``v`` (the check's memory stays bounded).
        None when the template is not in use, has more variables, covers ``key`` already, or
        any check has failed: plans change structure at some sizes (MiniLM's between lengths 170
        and 180, PP-OCR rec's below width ~80), and a reach into such sizes costs a lowering that
        covers nothing."""
        if not REACH or self.off is not None or self.base is None or self.checks == 0 or len(self.positions) != 1 \
                or self.failed:
            return None
        x = self._vars(key)
        if x is None:
            return None
        v = x[0]
        good = sorted({p[0] for p in (self._vars(k) for k in self.verified) if p is not None})
        if not good or good[0] <= v <= good[-1]:
            return None
        far = min(2 * v - good[0], v + max(1, v // 4)) if v > good[-1] else max(1, 2 * v - good[-1], v // 2)
        if far == v:
            return None
        out = [list(s) for s in key]
        for i, j in self.positions[0]:
            out[i][j] = far
        return tuple(tuple(s) for s in out)

    def _make(self, key: tuple, x: tuple[int, ...] | None = None) -> Program | None:
        base = self.base
        assert base is not None
        if x is None:
            x = self._vars(key)
            if x is None:
                return None
        shapes: dict[int, tuple[int, ...]] = {}
        for tid, per in self._varying:  # (the other tensors keep the base's shape)
            sizes: list[int] = []
            for fits in per:
                v = _one_value(fits, x)
                if v is None or v < 0:  # (None: the samples do not tell which formula: lower this shape)
                    return None
                sizes.append(v)
            shapes[tid] = tuple(sizes)
        q = Program(threads=base.threads, stats=dict(base.stats))
        tensors: list[Tensor] = []
        made_bytes = 0
        for t in base.tensors:
            u = t.copy()
            u.producer = None
            shp = shapes.get(t.id)
            if shp is not None and shp != t.shape and (t.kind != "const" or t.id in self.samples[0][2]):
                # (a constant no step reads keeps the base's shape and data)
                u.shape = shp
                if t.kind == "const":
                    big = self.largest.get(t.id)
                    if big is None or big.ndim != len(shp) or any(a > b for a, b in zip(shp, big.shape)):
                        return None
                    part = big[tuple(slice(0, n) for n in shp)]  # a view when it is contiguous (a prefix of rows)
                    if part.flags.c_contiguous:  # with the strides an array of its own has (size-1 axes too)
                        part = np.lib.stride_tricks.as_strided(part, shp, _c_strides(shp, part.itemsize), writeable=False)
                    else:
                        part = part.copy()
                        made_bytes += part.nbytes
                    u.data = part
                elif t.kind == "view" and t.id in self.reshapes:
                    u.make_view = _reshaper(shp)
            view_maker: Any = t.make_view
            if t.kind == "view" and hasattr(view_maker, "with_numbers") and (t.id in self.strided
                                                                           or u.shape != t.shape):
                # a slice of a base whose sizes changed: its offset, strides and shape at these sizes
                numbers: list[int | None] = [int(view_maker.off), *(int(v) for v in view_maker.strides)]
                for k, cands in enumerate(self.strided.get(t.id, [])):
                    numbers[k] = _one_value(cands, x)
                if None in numbers:
                    return None
                u.make_view = view_maker.with_numbers(numbers[0], tuple(numbers[1:]), u.shape)
            if t.id in self.valued:  # a shape vector folded for the base's sizes: its values at these
                shape, dtype, element_fits = self.valued[t.id]
                elems = [_one_value(cands, x) for cands in element_fits]
                if None in elems:
                    return None
                data = np.array(elems, dtype=dtype).reshape(shape)
                data.flags.writeable = False
                u.data = data
                made_bytes += data.nbytes
            tensors.append(u)
        q.stats["generic_made_bytes"] = made_bytes  # constants copied for this plan (its ops are the base's)
        for u in tensors:
            if u.base is not None:
                u.base = tensors[u.base.id]
        q.tensors = tensors
        for op in base.ops:
            o = Op.__new__(Op)  # every field of the base's op (its binder shared), new tensors
            o.__dict__.update(op.__dict__)
            o.inputs, o.outputs = [tensors[t.id] for t in op.inputs], [tensors[t.id] for t in op.outputs]
            for t in o.outputs:
                if t.kind == "value":
                    t.producer = o
            q.ops.append(o)
        q.inputs = [tensors[t.id] for t in base.inputs]
        q.outputs = [tensors[t.id] for t in base.outputs]
        return q

    # -- checking ---------------------------------------------------------------------------
    def _same(self, made: Program, real: Program) -> bool:
        """Whether ``made`` binds to what ``real`` binds to (kernels, task counts, contexts with
        pointers as tensor and offset, constants, views); the ops that differ go to ``blockers``."""
        from ember.devices.cpu.runtime.instance import instantiate

        try:
            a = instantiate(made, self.pool)
        except Exception as e:  # noqa: BLE001 - a binder that captured its sizes, say
            self.block(f"binding failed: {type(e).__name__}: {e}")
            return False
        b = instantiate(real, self.pool)
        read = self.samples[0][2]
        for ta, tb in zip(made.tensors, real.tensors):
            if ta.kind == "const" and ta.id not in read:  # no step reads it
                continue
            x, y = a.arrays.get(ta.id), b.arrays.get(tb.id)
            if (x is None) != (y is None):
                return False
            if x is not None and y is not None:
                if x.shape != y.shape or _strides(x) != _strides(y):
                    self.block(f"tensor {ta.id} ({ta.name}): {x.shape} {x.strides} vs {y.shape} {y.strides}")
                    return False
                if ta.kind == "const" and not _same_memory(x, y) and not np.array_equal(x, y):
                    self.block(f"constant {ta.id} ({ta.name})")
                    return False
        where_a, where_b = _Locator(a, read), _Locator(b, read)
        ok = True
        for (op, sa), (_, sb) in zip(a.op_spans, b.op_spans):
            if isinstance(sa, tuple) != isinstance(sb, tuple):
                return False
            if not isinstance(sa, tuple):
                continue
            ka, kb = a._keep[sa[0]:sa[0] + sa[1]], b._keep[sb[0]:sb[0] + sb[1]]
            if not _kernels_match(ka, kb, where_a, where_b):
                self.block(f"{op.type_name} '{op.name}'")
                ok = False
        return ok


def _same_memory(x: np.ndarray, y: np.ndarray) -> bool:
    """Both arrays read the same bytes (one constant shared by both plans: equal without reading
    it; shapes and strides were compared)."""
    return x.dtype == y.dtype and x.__array_interface__["data"][0] == y.__array_interface__["data"][0]


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(out[::-1])


def _strides(a: np.ndarray) -> tuple[int, ...]:
    """Strides of the axes longer than 1 (the others address nothing)."""
    return tuple(s for s, n in zip(a.strides, a.shape) if n > 1)


class _Locator:
    """Where an address points: (tensor id, byte offset) inside an instance's arrays, else itself."""

    def __init__(self, inst: Any, read: Any) -> None:
        spans = []
        for t in inst.program.tensors:
            arr = inst.arrays.get(t.id)
            if arr is None or t.kind == "view" or (t.kind == "const" and t.id not in read):
                continue  # (a constant no step reads may share memory with one that is read)
            start = arr.__array_interface__["data"][0]
            spans.append((start, start + max(arr.nbytes, 1), t.id))
        spans.sort()
        self.starts = [s[0] for s in spans]
        self.spans = spans

    def __call__(self, addr: int) -> tuple[str, int, int]:
        # the nearest tensor starting at or before addr that holds it (arena tensors of other
        # lifetimes overlap: a smaller one may start between a tensor's start and addr)
        i = bisect.bisect_right(self.starts, addr) - 1
        while i >= 0:
            start, end, tid = self.spans[i]
            if addr < end:
                return ("t", tid, addr - start)
            i -= 1
        return ("a", 0, addr)


def _kept_arrays(keep: Any, out: list[np.ndarray], depth: int = 0) -> list[np.ndarray]:
    """The numpy arrays a bound kernel keeps alive (nested tuples walked), in order."""
    if isinstance(keep, np.ndarray):
        out.append(keep)
    elif isinstance(keep, (tuple, list)) and depth < 4:
        for k in keep:
            _kept_arrays(k, out, depth + 1)
    return out


def _same_kept(addr_x: int, addr_y: int, keep_x: Any, keep_y: Any) -> bool:
    """Both addresses at the same place of the same-index kept arrays, whose data are equal (a
    table of the kernel's own, such as a pooling's reciprocal counts)."""
    kx, ky = _kept_arrays(keep_x, []), _kept_arrays(keep_y, [])
    for u, v in zip(kx, ky):
        su, sv = u.ctypes.data, v.ctypes.data
        if su <= addr_x < su + max(u.nbytes, 1):
            return (addr_x - su == addr_y - sv and sv <= addr_y < sv + max(v.nbytes, 1) and u.shape == v.shape
                    and u.dtype == v.dtype and np.array_equal(u, v))
    return False


def _kernels_match(ka: list[Any], kb: list[Any], where_a: _Locator, where_b: _Locator) -> bool:
    if len(ka) != len(kb):
        return False
    for x, y in zip(ka, kb):
        if x.task != y.task or x.n_tasks != y.n_tasks or x.num_threads != y.num_threads or len(x.ctx) != len(y.ctx):
            return False
        if not _contexts_match(x.ctx, y.ctx, x.layout, x.keep, y.keep, where_a, where_b):
            return False
    return True


def _contexts_match(cx: np.ndarray, cy: np.ndarray, layout: Any, keep_x: Any, keep_y: Any,
                    where_a: _Locator, where_b: _Locator, depth: int = 0) -> bool:
    """Word by word: equal, or pointers to the same tensor and offset, or (a nested context the
    layout declares, one of the kernel's kept arrays) contexts that match in turn."""
    if len(cx) != len(cy):
        return False
    diff = np.nonzero(cx != cy)[0]
    if not len(diff):
        return True
    pointers = set(layout.pointer_words)
    nested = getattr(layout, "nested_words", {})
    for word in diff:
        w = int(word)
        if w in pointers:
            pa, pb = where_a(int(cx[w])), where_b(int(cy[w]))
            if pa != pb and not (pa[0] == pb[0] == "a" and _same_kept(pa[2], pb[2], keep_x, keep_y)):
                return False
            continue
        inner = nested.get(w)
        if inner is None or depth >= 3:
            return False
        ax = next((a for a in _kept_arrays(keep_x, []) if a.ctypes.data == int(cx[w]) and a.dtype == np.int64), None)
        ay = next((a for a in _kept_arrays(keep_y, []) if a.ctypes.data == int(cy[w]) and a.dtype == np.int64), None)
        if ax is None or ay is None or not _contexts_match(ax, ay, inner, keep_x, keep_y, where_a, where_b, depth + 1):
            return False
    return True
