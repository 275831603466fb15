"""Runtime properties: typed enums and one table of specs behind OpenVINO's string keys.

Every property has a string key (``"PERFORMANCE_HINT"``, as OpenVINO spells it), a parser
that turns what a user may pass (an enum member, its name, ``"YES"``, ``4``, ``"4"``) into one
typed value, a default, and a mutability (``RW`` or ``RO``). ``Property`` objects are the
``ember.properties.*`` names: a ``str`` equal to the key that, called with a value, returns
the ``(key, value)`` pair, exactly as in ``openvino.properties``::

    import ember.properties as props
    import ember.properties.hint as hints
    core.set_property("CPU", {hints.performance_mode: hints.PerformanceMode.THROUGHPUT})
    core.set_property("CPU", dict([props.num_streams(4)]))

``CompileConfig`` is the typed result of merging Core and ``compile_model`` properties; the
runtime and the devices read its fields (``as_mapping()`` is the keyed view the model cache hashes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any

from ember.errors import PropertyError
from ember.graph.types import Type, as_type

# -- enums ------------------------------------------------------------------------------------


class PerformanceMode(StrEnum):
    """``PERFORMANCE_HINT``: what the compiled model is tuned for (see ``ember.runtime.streams``)."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


class ExecutionMode(StrEnum):
    """``EXECUTION_MODE_HINT``: ``ACCURACY`` forces the model's own precision (no bf16/f16)."""

    PERFORMANCE = "PERFORMANCE"
    ACCURACY = "ACCURACY"


class Priority(StrEnum):
    """``MODEL_PRIORITY``."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class LogLevel(StrEnum):
    """``LOG_LEVEL``: how much the ``ember`` logger prints (``NO`` silences it)."""

    NO = "LOG_NONE"
    ERR = "LOG_ERROR"
    WARNING = "LOG_WARNING"
    INFO = "LOG_INFO"
    DEBUG = "LOG_DEBUG"
    TRACE = "LOG_TRACE"

    @property
    def logging_level(self) -> int:
        return {"NO": logging.CRITICAL + 10, "ERR": logging.ERROR, "WARNING": logging.WARNING,
                "INFO": logging.INFO, "DEBUG": logging.DEBUG, "TRACE": 5}[self.name]


class CacheMode(StrEnum):
    """``CACHE_MODE`` (accepted for compatibility; ember's cache always stores the whole model)."""

    OPTIMIZE_SIZE = "OPTIMIZE_SIZE"
    OPTIMIZE_SPEED = "OPTIMIZE_SPEED"


class DeviceType(StrEnum):
    """``DEVICE_TYPE``."""

    INTEGRATED = "integrated"
    DISCRETE = "discrete"


class StreamsNum(int):
    """``NUM_STREAMS`` values: a count, or ``AUTO`` (-1: as THROUGHPUT would) / ``NUMA`` (-2)."""

    AUTO: StreamsNum
    NUMA: StreamsNum

    def __repr__(self) -> str:
        return {-1: "<StreamsNum.AUTO>", -2: "<StreamsNum.NUMA>"}.get(int(self), f"<StreamsNum {int(self)}>")


StreamsNum.AUTO = StreamsNum(-1)
StreamsNum.NUMA = StreamsNum(-2)


class Capability:
    """``OPTIMIZATION_CAPABILITIES`` values, as OpenVINO names them."""

    FP32 = "FP32"
    BF16 = "BF16"
    FP16 = "FP16"
    INT8 = "INT8"
    INT16 = "INT16"
    BIN = "BIN"
    WINOGRAD = "WINOGRAD"
    EXPORT_IMPORT = "EXPORT_IMPORT"


# -- parsers: user value -> typed value (raise ValueError with a short reason) ------------------

_TRUE = {"YES", "TRUE", "ON", "1"}
_FALSE = {"NO", "FALSE", "OFF", "0"}


def _parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().upper() in _TRUE | _FALSE:
        return v.strip().upper() in _TRUE
    raise ValueError("expected True/False (or YES/NO)")


def _enum_parser(cls: type[Enum]) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        if isinstance(v, str):
            key = v.strip().upper()
            for m in cls:
                if key in (m.name, str(m.value).upper()):
                    return m
        raise ValueError("expected one of " + ", ".join(m.name for m in cls))
    parse.allowed = tuple(m.name for m in cls)  # type: ignore[attr-defined]
    return parse


#: how many streams or threads per core a compiled model may ask for (each is an OS thread)
THREADS_PER_CORE_LIMIT = 8
#: an upper bound on request counts (PERFORMANCE_HINT_NUM_REQUESTS, AsyncInferQueue jobs)
MAX_REQUESTS = 1 << 16


def thread_limit() -> int:
    """The most streams, or threads per stream, a property may ask for on this machine:
    ``THREADS_PER_CORE_LIMIT`` per available core, at least 16."""
    from ember.runtime.streams import available_cores

    return max(16, THREADS_PER_CORE_LIMIT * available_cores())


def _int_parser(minimum: int, maximum: Callable[[], int] | None = None, what: str = "") -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("expected an integer")
        try:
            n = int(v.strip()) if isinstance(v, str) else int(v)
        except (TypeError, ValueError):
            raise ValueError("expected an integer") from None
        if isinstance(v, float) and v != n:
            raise ValueError("expected an integer")
        if n < minimum:
            raise ValueError(f"expected an integer >= {minimum}")
        if maximum is not None and n > maximum():
            raise ValueError(f"{n} is more than this machine allows ({what or 'limit'}: at most {maximum()})")
        return n
    return parse


def _parse_streams(v: Any) -> int:
    if isinstance(v, str) and v.strip().upper() in ("AUTO", "NUMA"):
        return int(StreamsNum.AUTO if v.strip().upper() == "AUTO" else StreamsNum.NUMA)
    try:
        n = _int_parser(-2)(v)
    except ValueError:
        raise ValueError("expected a count >= 1, AUTO or NUMA") from None
    if n == 0:
        raise ValueError("expected a count >= 1, AUTO or NUMA")
    if n > thread_limit():
        raise ValueError(f"{n} streams is more than this machine allows (each stream is a thread; at most "
                         f"{thread_limit()}: {THREADS_PER_CORE_LIMIT} per available core)")
    return int(StreamsNum(n))


_PRECISIONS = (Type.f32, Type.f16, Type.bf16)


def _parse_precision(v: Any) -> Type:
    try:
        t = as_type(v)
    except Exception:  # noqa: BLE001 - any failure means "not a type name"
        raise ValueError("expected one of f32, f16, bf16") from None
    if t not in _PRECISIONS:
        raise ValueError("expected one of f32, f16, bf16")
    return t


def _parse_str(v: Any) -> str:
    import os

    if isinstance(v, (str, os.PathLike)):
        return os.fspath(v)
    raise ValueError("expected a string")


def _parse_devices(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        items = [d.strip() for d in v.split(",")]
    elif isinstance(v, Iterable):
        items = [str(d).strip() for d in v]
    else:
        raise ValueError("expected a comma-separated device list such as 'CPU,REFERENCE'")
    items = [d.upper() for d in items if d]
    if not items:
        raise ValueError("expected at least one device name")
    return tuple(items)


def _read_only(v: Any) -> Any:
    raise ValueError("read-only")


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PropertySpec:
    """One property: its OpenVINO key, how values are parsed, its default and mutability."""

    key: str
    parse: Callable[[Any], Any]
    default: Any = None
    mutability: str = "RW"  # "RW" or "RO"
    doc: str = ""

    def allowed(self) -> str:
        names = getattr(self.parse, "allowed", None)
        return ", ".join(names) if names else self.doc


_SPECS: dict[str, PropertySpec] = {}
_ALIASES: dict[str, str] = {"ENABLE_PROFILING": "PERF_COUNT"}


def _spec(key: str, parse: Callable[[Any], Any], default: Any = None, mutability: str = "RW",
          doc: str = "") -> PropertySpec:
    s = PropertySpec(key, parse, default, mutability, doc)
    _SPECS[key] = s
    return s


# Properties a user may set on Core or pass to compile_model ("RW").
_spec("PERFORMANCE_HINT", _enum_parser(PerformanceMode), PerformanceMode.LATENCY,
      doc="LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT")
_spec("PERFORMANCE_HINT_NUM_REQUESTS", _int_parser(0, lambda: MAX_REQUESTS, "requests"), 0,
      doc="an upper bound on the requests the application keeps in flight (0: no bound)")
_spec("NUM_STREAMS", _parse_streams, 1, doc="a count >= 1, AUTO or NUMA")
_spec("INFERENCE_NUM_THREADS", _int_parser(0, thread_limit, f"{THREADS_PER_CORE_LIMIT} threads per available core"),
      0, doc="an integer >= 0 (0: all cores)")
_spec("INFERENCE_PRECISION_HINT", _parse_precision, Type.f32, doc="f32, f16 or bf16")
_spec("EXECUTION_MODE_HINT", _enum_parser(ExecutionMode), ExecutionMode.PERFORMANCE,
      doc="PERFORMANCE or ACCURACY")
_spec("MODEL_PRIORITY", _enum_parser(Priority), Priority.MEDIUM, doc="LOW, MEDIUM or HIGH")
_spec("PERF_COUNT", _parse_bool, False, doc="True or False")
_spec("CACHE_DIR", _parse_str, "", doc="a directory path ('' disables the cache)")
_spec("CACHE_MODE", _enum_parser(CacheMode), CacheMode.OPTIMIZE_SPEED, doc="OPTIMIZE_SIZE or OPTIMIZE_SPEED")
_spec("LOG_LEVEL", _enum_parser(LogLevel), LogLevel.NO, doc="NO, ERR, WARNING, INFO, DEBUG or TRACE")
_spec("MULTI_DEVICE_PRIORITIES", _parse_devices, (), doc="a device list such as 'CPU,REFERENCE'")
_spec("INFERENCE_TIMEOUT", _int_parser(0), 0,
      doc="milliseconds an inference may run before it is stopped with InferenceCancelled (0: no limit)")
_spec("ALLOW_FALLBACK", _parse_bool, True,
      doc="True or False (False: AUTO/HETERO raise instead of falling back to another device)")
_spec("ENABLE_CPU_PINNING", _parse_bool, None,
      doc="True or False (the CPU device's; unset, workers are pinned while the machine is quiet)")
# Read-only properties ("RO").
_spec("SUPPORTED_PROPERTIES", _read_only, mutability="RO")
_spec("AVAILABLE_DEVICES", _read_only, mutability="RO")
_spec("FULL_DEVICE_NAME", _read_only, mutability="RO")
_spec("OPTIMIZATION_CAPABILITIES", _read_only, mutability="RO")
_spec("DEVICE_TYPE", _read_only, mutability="RO")
_spec("RANGE_FOR_STREAMS", _read_only, mutability="RO")
_spec("RANGE_FOR_ASYNC_INFER_REQUESTS", _read_only, mutability="RO")
_spec("OPTIMAL_NUMBER_OF_INFER_REQUESTS", _read_only, mutability="RO")
_spec("EXECUTION_DEVICES", _read_only, mutability="RO")
_spec("NETWORK_NAME", _read_only, mutability="RO")
_spec("LOADED_FROM_CACHE", _read_only, mutability="RO")

#: keys that change what a device compiles (part of the model cache key)
COMPILE_RELEVANT = ("INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT")
#: keys that are the Core's own, not a device's
CORE_KEYS = ("CACHE_DIR", "CACHE_MODE", "LOG_LEVEL")
#: keys a device reports as read-write in SUPPORTED_PROPERTIES
DEVICE_RW_KEYS = ("PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                  "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "MODEL_PRIORITY", "PERF_COUNT",
                  "CACHE_DIR", "LOG_LEVEL", "ALLOW_FALLBACK", "INFERENCE_TIMEOUT")
DEVICE_RO_KEYS = ("SUPPORTED_PROPERTIES", "AVAILABLE_DEVICES", "FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES",
                  "DEVICE_TYPE", "RANGE_FOR_STREAMS", "RANGE_FOR_ASYNC_INFER_REQUESTS")
COMPILED_KEYS = ("SUPPORTED_PROPERTIES", "NETWORK_NAME", "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "NUM_STREAMS",
                 "INFERENCE_NUM_THREADS", "PERF_COUNT", "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT",
                 "PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS", "MODEL_PRIORITY", "EXECUTION_DEVICES",
                 "LOG_LEVEL", "CACHE_DIR", "LOADED_FROM_CACHE", "ALLOW_FALLBACK", "INFERENCE_TIMEOUT")


def canonical_key(key: Any) -> str:
    """The table key for ``key`` (a ``Property``, a string, or an alias like ENABLE_PROFILING)."""
    if not isinstance(key, str):
        raise PropertyError(f"ember: a property key must be a string, got {type(key).__name__}")
    k = str(key)
    return _ALIASES.get(k, k)


def spec_of(key: Any, extra: Mapping[str, PropertySpec] | None = None) -> PropertySpec:
    """The spec of ``key``; an unknown key raises ``PropertyError`` listing the known ones."""
    k = canonical_key(key)
    if extra and k in extra:
        return extra[k]
    s = _SPECS.get(k)
    if s is None:
        known = sorted(set(_SPECS) | set(extra or {}))
        raise PropertyError(f"ember: unknown property '{key}'; known properties: {', '.join(known)}")
    return s


def parse_value(key: Any, value: Any, extra: Mapping[str, PropertySpec] | None = None,
                where: str = "") -> tuple[str, Any]:
    """Validate one ``key: value`` pair; returns ``(canonical key, typed value)``."""
    s = spec_of(key, extra)
    if s.mutability == "RO":
        raise PropertyError(f"ember: property '{s.key}' is read-only{where}")
    try:
        return s.key, s.parse(value)
    except ValueError as e:
        raise PropertyError(f"ember: bad value {value!r} for property '{s.key}'{where}: {e}; "
                            f"allowed: {s.allowed()}") from None


def parse_properties(props: Any, extra: Mapping[str, PropertySpec] | None = None,
                     where: str = "") -> dict[str, Any]:
    """Validate a mapping, an iterable of ``(key, value)`` pairs, or one pair."""
    if props is None:
        return {}
    if isinstance(props, tuple) and len(props) == 2 and isinstance(props[0], str):
        props = [props]
    items = props.items() if isinstance(props, Mapping) else props
    out: dict[str, Any] = {}
    for k, v in items:
        ck, cv = parse_value(k, v, extra, where)
        out[ck] = cv
    return out


def default_of(key: str) -> Any:
    return _SPECS[key].default


def all_keys() -> list[str]:
    return sorted(_SPECS)


# -- the ``ember.properties`` names ------------------------------------------------------------


class Property(str):
    """A property name usable as a dict key; calling it with a value gives ``(key, value)``."""

    def __new__(cls, key: str) -> Property:
        return super().__new__(cls, key)

    def __call__(self, *value: Any) -> Any:
        if not value:
            return str(self)
        if len(value) != 1:
            raise PropertyError(f"ember: property '{self}' takes one value")
        if _SPECS.get(str(self)) is not None and _SPECS[str(self)].mutability == "RO":
            raise PropertyError(f"ember: property '{self}' is read-only")
        return parse_value(str(self), value[0])


# -- typed configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class CompileConfig:
    """The validated properties one ``compile_model`` call runs with."""

    performance_mode: PerformanceMode = PerformanceMode.LATENCY
    num_requests: int = 0
    num_streams: int | None = None  # None: from the hint
    inference_num_threads: int = 0
    inference_precision: Type = Type.f32
    execution_mode: ExecutionMode = ExecutionMode.PERFORMANCE
    model_priority: Priority = Priority.MEDIUM
    enable_profiling: bool = False
    cache_dir: str = ""
    log_level: LogLevel = LogLevel.NO
    device_priorities: tuple[str, ...] = ()
    allow_fallback: bool = True
    inference_timeout_ms: int = 0  # 0: inferences are not stopped
    extra: tuple[tuple[str, Any], ...] = ()  # device-specific keys, validated by the device

    _FIELDS = {
        "PERFORMANCE_HINT": "performance_mode", "PERFORMANCE_HINT_NUM_REQUESTS": "num_requests",
        "NUM_STREAMS": "num_streams", "INFERENCE_NUM_THREADS": "inference_num_threads",
        "INFERENCE_PRECISION_HINT": "inference_precision", "EXECUTION_MODE_HINT": "execution_mode",
        "MODEL_PRIORITY": "model_priority", "PERF_COUNT": "enable_profiling", "CACHE_DIR": "cache_dir",
        "LOG_LEVEL": "log_level", "MULTI_DEVICE_PRIORITIES": "device_priorities",
        "ALLOW_FALLBACK": "allow_fallback", "INFERENCE_TIMEOUT": "inference_timeout_ms",
    }

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> CompileConfig:
        """Build from already-validated ``{canonical key: typed value}``."""
        kwargs: dict[str, Any] = {}
        extra = []
        for k, v in props.items():
            name = cls._FIELDS.get(k)
            if name is None:
                extra.append((k, v))
            else:
                kwargs[name] = v
        kwargs["extra"] = tuple(sorted(extra, key=lambda kv: kv[0]))
        return cls(**kwargs)

    @property
    def effective_precision(self) -> Type:
        """The precision devices should compute in (ACCURACY mode always means f32)."""
        return Type.f32 if self.execution_mode is ExecutionMode.ACCURACY else self.inference_precision

    def as_mapping(self) -> Mapping[str, Any]:
        """A read-only ``{key: typed value}`` view, what the model cache key hashes."""
        out: dict[str, Any] = {}
        for key, name in self._FIELDS.items():
            v = getattr(self, name)
            if key == "NUM_STREAMS" and v is None:
                continue
            out[key] = v
        out["INFERENCE_PRECISION_HINT"] = self.effective_precision
        out.update(dict(self.extra))
        return MappingProxyType(out)

    def value_of(self, key: str) -> Any:
        k = canonical_key(key)
        name = self._FIELDS.get(k)
        if name is not None:
            return getattr(self, name)
        return dict(self.extra)[k]


assert {f.name for f in fields(CompileConfig)} >= set(CompileConfig._FIELDS.values())
