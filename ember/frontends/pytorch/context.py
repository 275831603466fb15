"""What a converter sees of one ATen call: its arguments by schema name, and graph helpers.

Values flowing between ops are ember ``Output`` ports for tensors; sizes that are only known at
run time (``SymInt`` in torch.export graphs, ``int`` values in TorchScript graphs) are 0-d i64
ports, and everything known at conversion time stays a Python value (ints, floats, lists).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import ember.opset as ops
from ember.errors import ConversionError
from ember.graph.core_ops import Constant
from ember.graph.node import Output, constant_value
from ember.graph.types import Type

_TORCH_TYPES = {"float32": Type.f32, "float": Type.f32, "float64": Type.f64, "double": Type.f64,
                "float16": Type.f16, "half": Type.f16, "bfloat16": Type.bf16, "int64": Type.i64,
                "long": Type.i64, "int32": Type.i32, "int": Type.i32, "int16": Type.i16, "short": Type.i16,
                "int8": Type.i8, "uint8": Type.u8, "bool": Type.boolean}
# c10::ScalarType numbering, as TorchScript graphs carry dtypes.
_SCALAR_TYPES = {0: Type.u8, 1: Type.i8, 2: Type.i16, 3: Type.i32, 4: Type.i64, 5: Type.f16, 6: Type.f32,
                 7: Type.f64, 11: Type.boolean, 15: Type.bf16}


def element_type(dtype: Any) -> Type:
    """ember's element type for a ``torch.dtype`` (or a TorchScript ScalarType number)."""
    if isinstance(dtype, Type):
        return dtype
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        et = _SCALAR_TYPES.get(dtype)
    else:
        et = _TORCH_TYPES.get(str(dtype).removeprefix("torch."))
    if et is None:
        raise ConversionError(f"ember: torch element type {dtype} is not supported")
    return et


def const(value: Any, et: Type) -> Output:
    """A constant of element type ``et``."""
    return Constant.from_array(np.array(value, dtype=et.dtype, order="C"), et).output(0)


def i64(values: Any) -> Output:
    return const(np.asarray(values, dtype=np.int64), Type.i64)


def convert(x: Output, et: Type) -> Output:
    return x if x.element_type is et else ops.convert(x, et).output(0)


def rank_of(x: Output) -> int:
    ps = x.partial_shape
    if not ps.rank_is_static:
        raise ConversionError("ember: a tensor's rank must be known at conversion time")
    return len(ps)


def static_dims(x: Output) -> list[int] | None:
    ps = x.partial_shape
    return [d.get_length() for d in ps] if ps.is_static else None


def dim_of(x: Output, axis: int) -> Any:
    """``x.shape[axis]``: an int when static, else a 0-d i64 port."""
    r = rank_of(x)
    axis %= r
    d = x.partial_shape[axis]
    if d.is_static:
        return d.get_length()
    return ops.gather(ops.shape_of(x, "i64"), i64(axis), i64(0)).output(0)


def shape_tensor(values: Sequence[Any]) -> Output:
    """A 1-D i64 port from a list of ints and 0-d/1-element ports (symbolic sizes)."""
    if all(not isinstance(v, Output) for v in values):
        return i64([int(v) for v in values])
    parts: list[Output] = []
    run: list[int] = []
    for v in values:
        if isinstance(v, Output):
            if run:
                parts.append(i64(run))
                run = []
            v = convert(v, Type.i64)
            parts.append(ops.reshape(v, i64([1]), False).output(0))
        else:
            run.append(int(v))
    if run:
        parts.append(i64(run))
    return parts[0] if len(parts) == 1 else ops.concat(parts, 0).output(0)


def folded(x: Any) -> Any:
    """A port's constant value as a Python number/list when it is constant, else the port."""
    if isinstance(x, Output):
        v = constant_value(x)
        if v is not None and v.ndim <= 1 and v.size <= 64:
            return v.tolist()
    return x


def promote(a: Any, b: Any) -> Type:
    """torch's result type of a binary op on ``a`` and ``b`` (ports or Python scalars)."""
    import torch

    def category(t: Type) -> int:
        return 0 if t is Type.boolean else (2 if t.is_real else 1)

    ta = a.element_type if isinstance(a, Output) else None
    tb = b.element_type if isinstance(b, Output) else None
    if ta is None and tb is None:
        return Type.f32 if isinstance(a, float) or isinstance(b, float) else Type.i64
    if ta is None or tb is None:
        t, s = (ta, b) if ta is not None else (tb, a)
        scat = 0 if isinstance(s, bool) else (2 if isinstance(s, float) else 1)
        if scat > category(t):
            return Type.f32 if scat == 2 else Type.i64
        return t
    # a 0-d tensor does not decide the type against a tensor of a same-or-higher category
    ra = a.partial_shape.rank_is_static and len(a.partial_shape) == 0
    rb = b.partial_shape.rank_is_static and len(b.partial_shape) == 0
    if ra != rb:
        t, z = (tb, ta) if ra else (ta, tb)
        return t if category(z) <= category(t) else z
    inv = {v: k for k, v in _TORCH_TYPES.items()}
    pa, pb = getattr(torch, inv[ta]), getattr(torch, inv[tb])
    return element_type(torch.promote_types(pa, pb))


class Call:
    """One ATen call being converted.

    ``call["dim"]`` is an argument by its schema name (Python value or port), ``call.tensor(name)``
    the argument as a port, ``call.ints(name)`` a list of ints known at conversion time,
    ``call.out_type`` the result's element type when the graph records it.
    """

    def __init__(self, op: str, overload: str, args: Mapping[str, Any], where: str = "",
                 out_types: Sequence[Type | None] = (), name: str = "") -> None:
        self.op = op
        self.overload = overload
        self.args = dict(args)
        self.where = where
        self.out_types = list(out_types)
        self.name = name

    @property
    def out_type(self) -> Type | None:
        return self.out_types[0] if self.out_types else None

    def __getitem__(self, name: str) -> Any:
        if name not in self.args:
            raise self.fail(f"has no argument '{name}'")
        return self.args[name]

    def get(self, name: str, default: Any = None) -> Any:
        v = self.args.get(name, default)
        return default if v is None else v

    def has(self, name: str) -> bool:
        return self.args.get(name) is not None

    def tensor(self, name: str, like: Output | Type | None = None) -> Output:
        """Argument ``name`` as a port; a Python scalar becomes a constant of ``like``'s type."""
        v = self[name]
        if isinstance(v, Output):
            return v
        if v is None:
            raise self.fail(f"argument '{name}' is None")
        if isinstance(like, Output):
            like = like.element_type
        et = like or (Type.boolean if isinstance(v, bool) else Type.f32 if isinstance(v, float) else Type.i64)
        return const(v, et)

    def int(self, name: str, default: int | None = None) -> int:
        v = folded(self.args.get(name))
        if v is None:
            if default is None:
                raise self.fail(f"argument '{name}' is missing")
            return default
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if isinstance(v, Output):
            raise self.fail(f"argument '{name}' must be known at conversion time")
        return int(v)

    def ints(self, name: str, default: Sequence[int] | None = None) -> list[int]:
        v = folded(self.args.get(name))
        if v is None:
            if default is None:
                raise self.fail(f"argument '{name}' is missing")
            return list(default)
        if isinstance(v, (int, np.integer)):
            return [int(v)]
        out = []
        for item in v:
            item = folded(item)
            if isinstance(item, Output):
                raise self.fail(f"argument '{name}' must be known at conversion time")
            out.append(int(item[0] if isinstance(item, list) else item))
        return out

    def sizes(self, name: str) -> Output | list[int]:
        """A size list argument: ints when all are known, else a 1-D i64 port."""
        v = self[name]
        if isinstance(v, Output):
            v = folded(v)
            if isinstance(v, Output):
                return convert(v, Type.i64) if rank_of(v) == 1 else ops.reshape(v, i64([-1]), False).output(0)
        if isinstance(v, (int, np.integer)):
            return [int(v)]
        items = [folded(x) for x in v]
        if all(not isinstance(x, Output) for x in items):
            return [int(x) for x in items]
        return shape_tensor(items)

    def dtype(self, name: str = "dtype") -> Type | None:
        v = self.args.get(name)
        return None if v is None else element_type(v)

    def fail(self, reason: str) -> ConversionError:
        where = f" at {self.where}" if self.where else ""
        return ConversionError(f"ember: {self.op}.{self.overload or 'default'}{where}: {reason}")
