"""Typed configuration of ``ember serve``, read from OVMS's flags or its ``config.json`` layout.

A ``config.json`` is OpenVINO Model Server's::

    {"model_config_list": [
        {"config": {"name": "resnet", "base_path": "/models/resnet",
                    "model_version_policy": {"latest": {"num_versions": 2}},
                    "target_device": "CPU", "nireq": 4,
                    "plugin_config": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2},
                    "dynamic_batching": {"max_batch_size": 8, "max_queue_delay_microseconds": 2000,
                                         "preferred_batch_size": [1, 2, 4, 8]},
                    "max_queue_size": 256}}]}

``dynamic_batching`` and ``max_queue_size`` are ember's additions (OVMS has no dynamic batcher;
the names follow Triton's). Relative ``base_path`` values resolve against the config's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.errors import EmberError


class ConfigError(EmberError):
    """A bad ``config.json`` or flag value; the message names the model and the key."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which version folders are served: the ``latest`` N (default 1), ``all``, or ``specific`` ones."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        found = sorted(available)
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-self.num_versions:] if self.num_versions > 0 else []

    @classmethod
    def from_json(cls, value: Any, model: str = "") -> VersionPolicy:
        """OVMS's ``model_version_policy`` object: ``{"latest": {"num_versions": 2}}``,
        ``{"all": {}}`` or ``{"specific": {"versions": [1, 3]}}``."""
        if value is None:
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"ember serve: model '{model}': model_version_policy is not JSON: {e}") from None
        if not isinstance(value, dict) or len(value) != 1:
            raise ConfigError(f"ember serve: model '{model}': model_version_policy must hold exactly one of "
                              f"'latest', 'all', 'specific', got {value!r}")
        kind, body = next(iter(value.items()))
        body = body or {}
        if kind == "all":
            return cls("all")
        if kind == "latest":
            n = body.get("num_versions", 1)
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"ember serve: model '{model}': latest.num_versions must be a positive integer")
            return cls("latest", n)
        if kind == "specific":
            vs = body.get("versions")
            if not isinstance(vs, list) or not vs or not all(isinstance(v, int) and v > 0 for v in vs):
                raise ConfigError(f"ember serve: model '{model}': specific.versions must be a list of "
                                  "positive integers")
            return cls("specific", versions=tuple(vs))
        raise ConfigError(f"ember serve: model '{model}': unknown version policy '{kind}' "
                          "(expected latest, all or specific)")


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching: concurrent requests are joined along dimension 0 up to
    ``max_batch_size`` rows, waiting at most ``max_queue_delay_us`` for company.
    ``max_batch_size=1`` turns it off."""

    max_batch_size: int = 1
    max_queue_delay_us: int = 1000
    #: a joined batch is padded up to the smallest of these sizes (default: powers of two up to
    #: max_batch_size), so the device sees a few shapes only and each is compiled (and warmed
    #: up at load) once
    preferred_batch_sizes: tuple[int, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1

    def buckets(self) -> tuple[int, ...]:
        if self.preferred_batch_sizes:
            return tuple(sorted({b for b in self.preferred_batch_sizes if b < self.max_batch_size}
                                | {self.max_batch_size}))
        sizes = []
        b = 1
        while b < self.max_batch_size:
            sizes.append(b)
            b *= 2
        return (*sizes, self.max_batch_size)


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its repository folder (``<base_path>/<version>/model.xml|.onnx``) and
    how it runs."""

    name: str
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy()
    target_device: str = "CPU"
    plugin_config: dict[str, Any] = field(default_factory=dict)
    nireq: int = 0  # 0: the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS
    batching: BatchingConfig = BatchingConfig()
    max_queue_size: int = 256

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"ember serve: bad model name {self.name!r}")
        if self.nireq < 0 or self.max_queue_size < 1:
            raise ConfigError(f"ember serve: model '{self.name}': nireq must be >= 0 and max_queue_size >= 1")
        if self.batching.max_batch_size < 1 or self.batching.max_queue_delay_us < 0:
            raise ConfigError(f"ember serve: model '{self.name}': max_batch_size must be >= 1 and the delay >= 0")

    @classmethod
    def from_json(cls, cfg: dict[str, Any], root: Path | None = None) -> ModelConfig:
        name = cfg.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"ember serve: a model config needs a 'name': {cfg!r}")
        if "base_path" not in cfg:
            raise ConfigError(f"ember serve: model '{name}' needs a 'base_path'")
        base = Path(os.path.expanduser(str(cfg["base_path"])))
        if root is not None and not base.is_absolute():
            base = root / base
        plugin = cfg.get("plugin_config") or {}
        if isinstance(plugin, str):
            plugin = json.loads(plugin)
        db = cfg.get("dynamic_batching") or {}
        known = {"name", "base_path", "model_version_policy", "target_device", "plugin_config", "nireq",
                 "dynamic_batching", "max_queue_size", "batch_size", "shape", "layout"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"ember serve: model '{name}': unknown keys {unknown}; known: {sorted(known)}")
        if cfg.get("batch_size") not in (None, "auto") or cfg.get("shape") is not None:
            raise ConfigError(f"ember serve: model '{name}': batch_size/shape reshaping is not supported; "
                              "serve a model with a dynamic batch dimension (and use dynamic_batching)")
        return cls(name=name, base_path=base,
                   version_policy=VersionPolicy.from_json(cfg.get("model_version_policy"), name),
                   target_device=str(cfg.get("target_device", "CPU")), plugin_config=dict(plugin),
                   nireq=int(cfg.get("nireq", 0)),
                   batching=BatchingConfig(int(db.get("max_batch_size", 1)),
                                           int(db.get("max_queue_delay_microseconds", 1000)),
                                           tuple(int(b) for b in db.get("preferred_batch_size", ()))),
                   max_queue_size=int(cfg.get("max_queue_size", 256)))


@dataclass(frozen=True)
class ServerConfig:
    """The whole server: models plus transport settings. ``port=0`` picks a free port;
    ``None`` turns that transport off."""

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    rest_port: int | None = 8000
    grpc_port: int | None = 9000
    poll_wait_seconds: float = 1.0  # OVMS's file_system_poll_wait_seconds; 0 turns hot reload off
    max_request_bytes: int = 64 * 1024 * 1024
    grpc_workers: int = 64
    shutdown_grace_seconds: float = 30.0
    config_path: Path | None = None  # an OVMS config.json to re-read when it changes

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"ember serve: model names appear twice: {dup}")


def load_config_file(path: str | os.PathLike[str]) -> list[ModelConfig]:
    """The models of an OVMS ``config.json``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"ember serve: cannot read config '{p}': {e}") from None
    entries = doc.get("model_config_list") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"ember serve: config '{p}' needs a 'model_config_list' list")
    models = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("config"), dict):
            raise ConfigError(f"ember serve: config '{p}': each entry is {{\"config\": {{...}}}}, got {e!r}")
        models.append(ModelConfig.from_json(e["config"], p.parent))
    return models
