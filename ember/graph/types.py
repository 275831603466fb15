"""Element types with OpenVINO's names (``Type.f32``, ``Type.u4``, ``Type.string`` ...).

In memory every type has a numpy dtype that holds one element per array item: sub-byte
integers (u1..u6, i4) are unpacked into uint8/int8, nf4 into its uint8 codes, and the small
floats (bf16, f8*, f4e2m1) use ``ml_dtypes`` (already a dependency of onnx). Packing into the
bytes of an IR ``.bin`` happens only in ``ember.io``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ember.errors import UnsupportedOpError


@dataclass(frozen=True, eq=False)
class _TypeInfo:
    name: str
    bitwidth: int
    dtype: Any  # numpy dtype used in memory, or None for dynamic
    precision: str  # the IR's `precision` attribute on ports
    kind: str  # "float", "int", "uint", "bool", "string", "dynamic", "nf4"


class Type:
    """An element type. Instances are unique: compare with ``is`` or ``==``."""

    _by_name: dict[str, Type] = {}
    __slots__ = ("_info",)

    # Declared for type checkers; assigned below.
    dynamic: Type
    boolean: Type
    bf16: Type
    f16: Type
    f32: Type
    f64: Type
    i4: Type
    i8: Type
    i16: Type
    i32: Type
    i64: Type
    u1: Type
    u2: Type
    u3: Type
    u4: Type
    u6: Type
    u8: Type
    u16: Type
    u32: Type
    u64: Type
    nf4: Type
    f8e4m3: Type
    f8e5m2: Type
    f8e8m0: Type
    f4e2m1: Type
    f8e4m3fnuz: Type
    f8e5m2fnuz: Type
    i2: Type
    string: Type
    sequence: Type
    undefined: Type

    def __init__(self, info: _TypeInfo) -> None:
        self._info = info

    # -- OpenVINO-style accessors -------------------------------------------------------
    @property
    def name(self) -> str:
        return self._info.name

    def get_type_name(self) -> str:
        return self._info.name

    def to_string(self) -> str:
        return self._info.name

    @property
    def bitwidth(self) -> int:
        return self._info.bitwidth

    def get_bitwidth(self) -> int:
        return self._info.bitwidth

    @property
    def size(self) -> int:
        """Bytes per element, rounded up (OpenVINO's ``Type.size``)."""
        return (self._info.bitwidth + 7) // 8

    def get_size(self) -> int:
        return self.size

    @property
    def precision(self) -> str:
        return self._info.precision

    @property
    def dtype(self) -> np.dtype:
        if self._info.dtype is None:
            raise UnsupportedOpError(f"ember: element type '{self.name}' has no numpy dtype")
        return np.dtype(self._info.dtype)

    @property
    def is_real(self) -> bool:
        return self._info.kind == "float"

    @property
    def is_integral(self) -> bool:
        return self._info.kind in ("int", "uint", "bool")

    @property
    def is_integral_number(self) -> bool:
        return self._info.kind in ("int", "uint")

    @property
    def is_signed(self) -> bool:
        return self._info.kind in ("int", "float", "bool")  # OpenVINO counts boolean as signed

    @property
    def is_dynamic(self) -> bool:
        return self._info.kind == "dynamic"

    @property
    def is_static(self) -> bool:
        return not self.is_dynamic

    # OpenVINO's property spellings of the is_* checks, and to_dtype()
    @property
    def real(self) -> bool:
        """Whether this is a floating-point type (``is_real``)."""
        return self.is_real

    @property
    def integral(self) -> bool:
        """Whether this is an integral type, boolean included (``is_integral``)."""
        return self.is_integral

    @property
    def integral_number(self) -> bool:
        """Whether this is an integral number type, boolean excluded (``is_integral_number``)."""
        return self.is_integral_number

    @property
    def signed(self) -> bool:
        """Whether values can be negative (``is_signed``)."""
        return self.is_signed

    @property
    def type_name(self) -> str:
        """The short name (``get_type_name()``)."""
        return self.name

    def to_dtype(self) -> np.dtype:
        """The numpy dtype that holds this type's elements (OpenVINO's ``Type.to_dtype()``)."""
        if self.is_dynamic:
            from ember.errors import EmberError

            raise EmberError(f"ember: element type {self.name} has no numpy dtype")
        return np.dtype(object) if self.name == "string" else self.dtype

    @property
    def is_sub_byte(self) -> bool:
        return self._info.bitwidth < 8

    def compatible(self, other: Type) -> bool:
        return self.is_dynamic or other.is_dynamic or self is other

    def __repr__(self) -> str:
        return f"<Type: '{self._info.name}'>"

    def __str__(self) -> str:
        return self._info.name

    def __reduce__(self) -> tuple:
        return (Type.from_name, (self._info.name,))

    # -- lookups ------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> Type:
        """The type named ``name`` (``"f32"``; also IR precisions like ``"FP32"``)."""
        t = cls._by_name.get(name) or cls._by_name.get(name.lower())
        if t is None:
            t = _BY_PRECISION.get(name.upper())
        if t is None:
            known = ", ".join(sorted(n for n in cls._by_name if n == cls._by_name[n].name))
            raise UnsupportedOpError(f"ember: unknown element type '{name}'; known: {known}")
        return t

    @classmethod
    def from_dtype(cls, dtype: Any) -> Type:
        """The element type of a numpy dtype (or Python scalar type)."""
        if isinstance(dtype, Type):
            return dtype
        if dtype is str or dtype is bytes:
            return cls.string
        if dtype is float:
            return cls.f32
        if dtype is int:
            return cls.i64
        if dtype is bool:
            return cls.boolean
        dt = np.dtype(dtype)
        if dt.kind in "USO":
            return cls.string
        t = _BY_DTYPE.get(dt)
        if t is None:
            raise UnsupportedOpError(f"ember: numpy dtype '{dt}' has no ember element type")
        return t

    @property
    def _kind(self) -> str:
        return self._info.kind


_TYPES = [
    _TypeInfo("dynamic", 0, None, "UNSPECIFIED", "dynamic"),
    _TypeInfo("boolean", 8, np.bool_, "BOOL", "bool"),
    _TypeInfo("bf16", 16, ml_dtypes.bfloat16, "BF16", "float"),
    _TypeInfo("f16", 16, np.float16, "FP16", "float"),
    _TypeInfo("f32", 32, np.float32, "FP32", "float"),
    _TypeInfo("f64", 64, np.float64, "FP64", "float"),
    _TypeInfo("i4", 4, np.int8, "I4", "int"),
    _TypeInfo("i8", 8, np.int8, "I8", "int"),
    _TypeInfo("i16", 16, np.int16, "I16", "int"),
    _TypeInfo("i32", 32, np.int32, "I32", "int"),
    _TypeInfo("i64", 64, np.int64, "I64", "int"),
    _TypeInfo("u1", 1, np.uint8, "U1", "uint"),
    _TypeInfo("u2", 2, np.uint8, "U2", "uint"),
    _TypeInfo("u3", 3, np.uint8, "U3", "uint"),
    _TypeInfo("u4", 4, np.uint8, "U4", "uint"),
    _TypeInfo("u6", 6, np.uint8, "U6", "uint"),
    _TypeInfo("u8", 8, np.uint8, "U8", "uint"),
    _TypeInfo("u16", 16, np.uint16, "U16", "uint"),
    _TypeInfo("u32", 32, np.uint32, "U32", "uint"),
    _TypeInfo("u64", 64, np.uint64, "U64", "uint"),
    _TypeInfo("nf4", 4, np.uint8, "NF4", "nf4"),
    _TypeInfo("f8e4m3", 8, ml_dtypes.float8_e4m3fn, "F8E4M3", "float"),
    _TypeInfo("f8e5m2", 8, ml_dtypes.float8_e5m2, "F8E5M2", "float"),
    _TypeInfo("f8e8m0", 8, ml_dtypes.float8_e8m0fnu, "F8E8M0", "float"),
    _TypeInfo("f4e2m1", 4, ml_dtypes.float4_e2m1fn, "F4E2M1", "float"),
    # ember's own (ONNX has them, OpenVINO does not): float8 without -0 and inf, 2-bit integers
    _TypeInfo("f8e4m3fnuz", 8, ml_dtypes.float8_e4m3fnuz, "F8E4M3FNUZ", "float"),
    _TypeInfo("f8e5m2fnuz", 8, ml_dtypes.float8_e5m2fnuz, "F8E5M2FNUZ", "float"),
    _TypeInfo("i2", 2, np.int8, "I2", "int"),
    _TypeInfo("string", 8 * 32, object, "STRING", "string"),
    # ember's own: an ONNX sequence or optional at run time, a 1-D object array of arrays
    _TypeInfo("sequence", 64, object, "SEQUENCE", "sequence"),
]

for _info in _TYPES:
    _t = Type(_info)
    Type._by_name[_info.name] = _t
    setattr(Type, _info.name, _t)
Type._by_name["undefined"] = Type.dynamic
Type._by_name["bool"] = Type.boolean
Type.undefined = Type.dynamic

_BY_PRECISION = {t.precision: t for t in Type._by_name.values()}
_BY_PRECISION.update({"FP8E4M3": Type.f8e4m3, "FP8E5M2": Type.f8e5m2, "UNDEFINED": Type.dynamic})
# Only the types that own their dtype map back from numpy (u8, not u4).
_BY_DTYPE: dict[np.dtype, Type] = {}
for _name in ("boolean", "bf16", "f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16",
              "u32", "u64", "f8e4m3", "f8e5m2", "f8e8m0", "f4e2m1", "f8e4m3fnuz", "f8e5m2fnuz"):
    _BY_DTYPE[Type._by_name[_name].dtype] = Type._by_name[_name]

# NF4 code book (the 16 quantiles of a normal distribution, as QLoRA and OpenVINO define it).
NF4_VALUES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def as_type(value: Any) -> Type:
    """Accept a Type, a type name, or anything numpy understands as a dtype."""
    if isinstance(value, Type):
        return value
    if isinstance(value, str):
        return Type.from_name(value)
    return Type.from_dtype(value)


def cast_array(data: np.ndarray, src: Type, dst: Type) -> np.ndarray:
    """Convert ``data`` held as ``src`` into ``dst`` with OpenVINO's Convert semantics.

    Float to integer truncates toward zero and saturates at the destination's range, so NaN
    and inf never produce undefined values (NaN becomes 0, +-inf the range's ends).
    """
    if src is Type.nf4:
        data = NF4_VALUES[np.asarray(data, dtype=np.uint8) & 15]
        src = Type.f32
    if dst is Type.string or src is Type.string:
        if src is dst:
            return data
        raise UnsupportedOpError(f"ember: cannot convert {src} to {dst}")
    if dst is Type.nf4:
        flat = np.asarray(data, dtype=np.float32)
        return np.abs(flat[..., None] - NF4_VALUES).argmin(-1).astype(np.uint8)
    if dst is Type.boolean:
        return np.asarray(data) != 0
    if dst.is_integral_number:
        arr = np.asarray(data)
        if arr.dtype.kind not in "biu":
            arr = np.asarray(arr, dtype=np.float64)
            lo, hi = integer_range(dst)
            arr = np.nan_to_num(arr, nan=0.0, posinf=hi, neginf=lo)
            arr = np.clip(np.trunc(arr), lo, hi)
            with np.errstate(invalid="ignore"):
                out = np.asarray(arr.astype(dst.dtype))  # 0-d inputs give numpy scalars
            if dst.bitwidth == 64:  # float64 rounds the 64-bit maximum up past the range
                out[arr >= float(hi)] = hi
            return out
        if dst.is_sub_byte:
            lo, hi = integer_range(dst)
            return np.clip(arr, lo, hi).astype(dst.dtype)
        return arr.astype(dst.dtype)
    return np.asarray(data).astype(dst.dtype)


def integer_range(t: Type) -> tuple[int, int]:
    """Smallest and largest value of an integer type."""
    if t._kind == "uint":
        return 0, (1 << t.bitwidth) - 1
    if t._kind == "int":
        return -(1 << (t.bitwidth - 1)), (1 << (t.bitwidth - 1)) - 1
    if t is Type.boolean:
        return 0, 1
    raise UnsupportedOpError(f"ember: {t} is not an integer type")
