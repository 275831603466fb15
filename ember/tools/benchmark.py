"""``ember benchmark MODEL``: measure latency and throughput like OpenVINO's ``benchmark_app``.

The library part is ``Benchmark``: one method per step (read, reshape, compile, make inputs,
run, summarize, per-op counters, report, histogram), each usable and testable alone. The
command line (``add_parser`` for ``ember``, or ``main(argv)``) only parses flags into a
``BenchmarkConfig`` and prints.

As in benchmark_app: the default hint is THROUGHPUT with ``-api async`` and LATENCY with
``-api sync``; the first inference is timed apart and left out of the statistics; with
``-api sync`` throughput is ``batch * 1000 / median latency``, with ``-api async`` it is
``batch * iterations / duration``; async latency runs from ``start_async`` to the callback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ember.errors import EmberError
from ember.graph.model import Model
from ember.graph.shape import PartialShape

DEFAULT_SECONDS = 60.0
# benchmark_app's precision names for -ip/-op/-iop, to ember's element type names
_PRECISIONS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "u8": "u8", "i8": "i8", "i32": "i32", "i64": "i64",
               "u16": "u16", "i16": "i16", "boolean": "boolean", "bool": "boolean", "f32": "f32", "f16": "f16",
               "f64": "f64", "fp64": "f64", "u32": "u32", "u64": "u64"}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure. ``duration_s``/``niter``: stop after that time or that many
    inferences (``niter`` wins; neither: 60 s as benchmark_app)."""

    model: str
    device: str = "AUTO"
    hint: str | None = None  # LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT, NONE; None: from api
    num_streams: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    niter: int | None = None
    shape: str | None = None  # "[1,3,224,224]" or "data[1,3,224,224],mask[1,?]": reshapes the model
    data_shape: str | None = None  # same syntax: the model stays dynamic, inputs get these shapes
    batch: int | None = None  # -b: the batch dimension (N of the layout, else the first) of every input
    input_files: tuple[str, ...] = ()  # -i: .npy/.npz arrays or image files, per input or for all
    report_type: str | None = None  # no_counters, average_counters, detailed_counters (CSV, as benchmark_app)
    api: str = "async"
    perf_counts: bool = False
    inference_precision: str | None = None
    cache_dir: str | None = None
    report_folder: str | None = None
    histogram: str | None = None  # PNG path
    progress: bool = True
    seed: int = 0
    num_threads: int | None = None  # -nthreads: INFERENCE_NUM_THREADS
    latency_percentile: int = 50  # -latency_percentile: the percentile reported as "latency"
    input_precision: str | None = None  # -ip: element type of every input tensor (u8, f32, ...)
    output_precision: str | None = None  # -op: element type of every output tensor
    io_precision: str | None = None  # -iop: "data:u8,out:f32", per input/output name
    layout: str | None = None  # -layout: "[NCHW]" or "data[NCHW],mask[NC]"
    exec_graph_path: str | None = None  # -exec_graph_path: the runtime (executed) graph as IR
    load_config: str | None = None  # -load_config: JSON {"DEVICE": {"PROPERTY": value}}
    dump_config: str | None = None  # -dump_config: the compiled model's properties as that JSON

    def __post_init__(self) -> None:
        if self.api not in ("sync", "async"):
            raise EmberError(f"ember: -api must be sync or async, got {self.api!r}")
        if self.hint is not None and self.hint.upper() not in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT",
                                                                "NONE"):
            raise EmberError(f"ember: -hint must be latency, throughput, cumulative_throughput or none, "
                             f"got {self.hint!r}")
        for name in ("num_streams", "num_requests", "niter"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise EmberError(f"ember: {name} must be >= 1, got {v}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise EmberError(f"ember: -t must be > 0 seconds, got {self.duration_s}")
        if self.batch is not None and not 1 <= self.batch <= 1 << 16:
            raise EmberError(f"ember: -b must be between 1 and 65536, got {self.batch}")
        if self.num_threads is not None and not 1 <= self.num_threads <= 4096:
            raise EmberError(f"ember: -nthreads must be between 1 and 4096, got {self.num_threads}")
        if not 1 <= self.latency_percentile <= 100:
            raise EmberError(f"ember: -latency_percentile must be between 1 and 100, got {self.latency_percentile}")
        if self.report_type not in (None, "no_counters", "average_counters", "detailed_counters"):
            raise EmberError(f"ember: -report_type must be no_counters, average_counters or detailed_counters, "
                             f"got {self.report_type!r}")

    @property
    def effective_hint(self) -> str | None:
        if self.hint is None:
            return "THROUGHPUT" if self.api == "async" else "LATENCY"
        return None if self.hint.upper() == "NONE" else self.hint.upper()


@dataclass
class LatencyStats:
    median: float
    average: float
    min: float
    max: float
    p90: float
    percentile: int = 50  # -latency_percentile
    at_percentile: float = 0.0  # the latency at that percentile

    @classmethod
    def of(cls, latencies_ms: Sequence[float], percentile: int = 50) -> LatencyStats:
        if not latencies_ms:
            raise EmberError("ember: no inference was measured; raise -t or -niter")
        a = np.asarray(latencies_ms, dtype=np.float64)
        return cls(float(np.median(a)), float(a.mean()), float(a.min()), float(a.max()), float(np.percentile(a, 90)),
                   percentile, float(np.percentile(a, percentile)))


@dataclass
class OpCounter:
    node_name: str
    node_type: str
    exec_type: str
    real_time_ms: float


@dataclass
class BenchmarkResult:
    model: str
    device: str
    execution_devices: list[str]
    api: str
    hint: str | None
    streams: int
    requests: int
    batch: int
    iterations: int
    duration_ms: float
    read_ms: float
    compile_ms: float
    first_inference_ms: float
    latency_ms: LatencyStats
    throughput_fps: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    per_op: list[OpCounter] = field(default_factory=list)

    def to_dict(self, with_latencies: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_latencies:
            d.pop("latencies_ms")
        return d


class Progress:
    """A one-line progress bar on a terminal (silent elsewhere)."""

    def __init__(self, total: float, unit: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, done: float, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * 40)
        self.stream.write(f"\r[{bar:<40}] {frac * 100:5.1f}% {done:.0f}/{self.total:.0f} {self.unit}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


_SHAPE_ITEM = re.compile(r"([^\[\],]*)\[([^\]]*)\]")


def parse_shapes(text: str) -> dict[str, PartialShape] | PartialShape:
    """``"[1,3,224,224]"`` (one-input models) or ``"data[1,3,224,224],mask[1,?]"``; dims may be
    ``?``, ``-1`` or ``1..8``."""
    items = [(m.group(1).strip(), m.group(2)) for m in _SHAPE_ITEM.finditer(text)]
    rest = _SHAPE_ITEM.sub("", text).replace(",", "").strip()
    if not items or rest:
        raise EmberError(f"ember: cannot parse -shape {text!r}; expected [1,3,224,224] or name[1,3,224,224],...")
    if len(items) > 1 and any(not name for name, _ in items):
        raise EmberError(f"ember: -shape {text!r}: name every input when giving several shapes")
    try:
        if len(items) == 1 and not items[0][0]:
            return PartialShape(items[0][1])
        return {name: PartialShape(dims) for name, dims in items}
    except Exception as e:  # noqa: BLE001 - a bad dimension
        raise EmberError(f"ember: cannot parse -shape {text!r}: {str(e).removeprefix('ember: ')}") from None


def _port_name(port: Any, i: int) -> str:
    return port.get_any_name() if port.names else f"input {i}"


def dynamic_inputs(model_inputs: Sequence[Any]) -> list[str]:
    """``name[shape]`` of each input whose shape is not static."""
    return [f"{_port_name(p, i)}{p.partial_shape}" for i, p in enumerate(model_inputs) if not p.partial_shape.is_static]


def shapes_for_inputs(model_inputs: Sequence[Any], text: str, flag: str = "-data_shape") -> dict[int, list[int]]:
    """``-data_shape`` text as a static shape per input index (checked against the model's shapes)."""
    parsed = parse_shapes(text)
    if isinstance(parsed, PartialShape):
        if len(model_inputs) != 1:
            raise EmberError(f"ember: {flag} {text!r}: the model has {len(model_inputs)} inputs; name each one")
        parsed = {_port_name(model_inputs[0], 0): parsed}
    out: dict[int, list[int]] = {}
    for name, shape in parsed.items():
        idx = [i for i, p in enumerate(model_inputs) if name in p.names or name == p.node.friendly_name]
        if not idx:
            raise EmberError(f"ember: {flag}: the model has no input '{name}'; its inputs are "
                             f"{', '.join(_port_name(p, i) for i, p in enumerate(model_inputs))}")
        port = model_inputs[idx[0]]
        if not shape.is_static:
            raise EmberError(f"ember: {flag} for '{name}' must be static, got {shape}")
        if not port.partial_shape.compatible(shape):
            raise EmberError(f"ember: {flag} for '{name}': {shape} does not fit the model's {port.partial_shape}")
        out[idx[0]] = [int(d) for d in shape.to_shape()]
    return out


def random_inputs(model_inputs: Sequence[Any], count: int, seed: int = 0,
                  shapes: dict[int, list[int]] | None = None) -> list[dict[int, np.ndarray]]:
    """``count`` sets of random inputs; ``shapes`` gives the shape of inputs whose model shape is
    dynamic (a bounded interval takes its lower bound; an unbounded dimension without a shape is
    an error naming it and the flags that fix it)."""
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    sets = []
    for _ in range(max(1, count)):
        feeds = {}
        for i, port in enumerate(model_inputs):
            ps = port.partial_shape
            if port.element_type.name == "sequence":
                raise EmberError(f"ember: input '{_port_name(port, i)}' is a sequence of tensors; ember benchmark "
                                 f"makes random tensors only (run such models with InferRequest or ember run)")
            if i in shapes:
                dims = shapes[i]
            elif ps.rank_is_static and all(d.is_static or d.max_length != -1 for d in ps):
                # static, or bounded intervals (``2..5``): the lower bound is a valid shape
                dims = [d.get_length() if d.is_static else max(1, d.min_length) for d in ps]
            else:
                raise EmberError(f"ember: the model has dynamic dimensions ({', '.join(dynamic_inputs(model_inputs))}); "
                                 f"give shapes with -shape (reshapes the model, e.g. -shape "
                                 f"{_port_name(port, i).replace(' ', '_')}[1,...]) or -data_shape (keeps it "
                                 f"dynamic, feeds that shape)")
            et = port.element_type
            if et.is_real:
                feeds[i] = rng.random(dims).astype(et.dtype)
            elif et.name == "boolean":
                feeds[i] = rng.integers(0, 2, dims).astype(bool)
            else:
                feeds[i] = rng.integers(0, 10, dims).astype(et.dtype)
        sets.append(feeds)
    return sets


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _read_image(path: Path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 in BGR order (as benchmark_app reads it with OpenCV)."""
    try:
        from PIL import Image
    except ImportError:
        raise EmberError("ember: reading image files needs Pillow: pip install pillow (or give .npy arrays)") from None
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise EmberError(f"ember: cannot read image '{path}': {e}") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _image_for(port: Any, image: np.ndarray, shape: list[int] | None, name: str) -> np.ndarray:
    """``image`` resized (nearest) and laid out for an NCHW or NHWC image input."""
    dims = shape or [d.get_length() if d.is_static else -1 for d in port.partial_shape]
    if len(dims) != 4 or not (dims[1] == 3 or dims[3] == 3):
        raise EmberError(f"ember: -i: input '{name}' {port.partial_shape} is not an image input "
                         f"([N,3,H,W] or [N,H,W,3]); give a .npy array")
    nchw = dims[1] == 3
    h, w = (dims[2], dims[3]) if nchw else (dims[1], dims[2])
    h, w = (image.shape[0] if h < 0 else h), (image.shape[1] if w < 0 else w)
    rows = np.arange(h) * image.shape[0] // h
    cols = np.arange(w) * image.shape[1] // w
    img = image[rows][:, cols]
    img = img.transpose(2, 0, 1) if nchw else img
    batch = dims[0] if dims[0] > 0 else 1
    return np.repeat(img[None], batch, axis=0).astype(port.element_type.dtype)


def load_input_files(model_inputs: Sequence[Any], specs: Sequence[str],
                     shapes: dict[int, list[int]] | None = None) -> dict[int, np.ndarray]:
    """``-i`` values (``path``, ``name=path`` or a folder) as arrays per input index: ``.npy``,
    ``.npz`` (arrays by input name) or image files (resized to the input, BGR)."""
    from ember.tools.cli import load_array_file

    names = {n: i for i, p in enumerate(model_inputs) for n in (*p.names, p.node.friendly_name)}
    paths: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        p = Path(path)
        if p.is_dir():
            paths += [("", f) for f in sorted(p.iterdir()) if f.suffix.lower() in (*_IMAGE_SUFFIXES, ".npy")]
        elif not p.exists():
            raise EmberError(f"ember: -i: '{p}' does not exist")
        else:
            paths.append((name, p))
    out: dict[int, np.ndarray] = {}
    free = [i for i in range(len(model_inputs))]
    for name, path in paths:
        if path.suffix == ".npz":
            for k, arr in load_array_file(path).items():
                if k not in names:
                    raise EmberError(f"ember: -i {path}: the model has no input '{k}'")
                out[names[k]] = arr
            continue
        if name:
            if name not in names:
                raise EmberError(f"ember: -i: the model has no input '{name}'")
            idx = names[name]
        else:
            left = [i for i in free if i not in out]
            if not left:
                break  # more files than inputs: the first ones are used
            idx = left[0]
        port = model_inputs[idx]
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            out[idx] = _image_for(port, _read_image(path), (shapes or {}).get(idx), name or str(idx))
        else:
            out[idx] = np.asarray(load_array_file(path)[""]).astype(port.element_type.dtype, copy=False)
    return out


class Benchmark:
    """Measures one model on one device; ``run_all()`` does every step in order."""

    def __init__(self, config: BenchmarkConfig, core: Any = None, log: Callable[[str], None] | None = None) -> None:
        from ember.runtime import Core

        self.config = config
        self.core = core or Core()
        self.log = log or (lambda line: print(f"[ INFO ] {line}"))

    # -- steps ---------------------------------------------------------------------------
    def read_model(self) -> tuple[Model, float]:
        t0 = time.perf_counter()
        model = self.core.read_model(self.config.model)
        return model, (time.perf_counter() - t0) * 1e3

    def reshape(self, model: Model) -> Model:
        """Apply ``-shape`` and ``-b`` (the batch: the N axis of the input's layout, else axis 0)."""
        if self.config.shape:
            shapes = parse_shapes(self.config.shape)
            model.reshape(shapes)
        if self.config.batch:
            new = {}
            for i, port in enumerate(model.inputs):
                ps = port.partial_shape
                if not ps.rank_is_static or len(ps) == 0:
                    continue
                layout = port.node.get_layout() if hasattr(port.node, "get_layout") else None
                axis = layout.get_index_by_name("N") if layout is not None and not layout.empty and \
                    layout.has_name("N") else 0
                dims = list(ps)
                dims[axis] = self.config.batch
                new[i] = PartialShape(dims)
            model.reshape(new)
        return model

    def make_inputs(self, compiled: Any, count: int) -> list[dict[int, np.ndarray]]:
        """Inputs for ``count`` requests: ``-i`` files where given, random data elsewhere
        (``-data_shape`` sets the shape of dynamic inputs)."""
        c = self.config
        shapes = shapes_for_inputs(compiled.inputs, c.data_shape) if c.data_shape else {}
        files = load_input_files(compiled.inputs, c.input_files, shapes) if c.input_files else {}
        for i, arr in files.items():
            shapes.setdefault(i, list(arr.shape))
        sets = random_inputs(compiled.inputs, count, c.seed, shapes)
        for feeds in sets:
            feeds.update(files)
        return sets

    def properties(self) -> dict[str, Any]:
        c = self.config
        props: dict[str, Any] = {}
        if c.effective_hint:
            props["PERFORMANCE_HINT"] = c.effective_hint
        if c.num_streams:
            props["NUM_STREAMS"] = c.num_streams
        if c.num_requests and c.effective_hint:
            props["PERFORMANCE_HINT_NUM_REQUESTS"] = c.num_requests
        if c.perf_counts:
            props["PERF_COUNT"] = True
        if c.inference_precision:
            props["INFERENCE_PRECISION_HINT"] = c.inference_precision
        if c.cache_dir:
            props["CACHE_DIR"] = c.cache_dir
        if c.num_threads:
            props["INFERENCE_NUM_THREADS"] = c.num_threads
        if c.load_config:
            props = {**self.loaded_config(), **props}  # flags given on the command line win
        return props

    def loaded_config(self) -> dict[str, Any]:
        """``-load_config``: benchmark_app's JSON, ``{"CPU": {"NUM_STREAMS": "2", ...}}``; the
        entry of this device (``-d``; for ``AUTO:CPU`` or ``HETERO:...`` the whole name, else
        its first part)."""
        path = Path(str(self.config.load_config))
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EmberError(f"ember: cannot read -load_config {path}: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise EmberError(f'ember: -load_config {path} must hold {{"DEVICE": {{"PROPERTY": value}}}}')
        device = self.config.device
        entry = data.get(device, data.get(device.split(":")[0].split(".")[0], {}))
        return {str(k): v for k, v in entry.items()}

    def dump_config_file(self, compiled: Any, path: str | Path) -> Path:
        """``-dump_config``: the compiled model's properties in ``-load_config``'s format."""
        values: dict[str, Any] = {}
        for name in compiled.get_property("SUPPORTED_PROPERTIES"):
            if name in ("SUPPORTED_PROPERTIES", "EXECUTION_DEVICES", "NETWORK_NAME", "LOADED_FROM_CACHE",
                        "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):
                continue
            v = compiled.get_property(name)
            values[name] = getattr(v, "value", v) if not isinstance(v, (bool, int, float)) else v
            if not isinstance(values[name], (bool, int, float, str)):
                values[name] = str(v)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({self.config.device: values}, indent=2))
        return out

    def preprocess(self, model: Model) -> Model:
        """``-ip``/``-op``/``-iop``: the element types the caller's tensors have, put into the
        model as conversions (OpenVINO's PrePostProcessor, as benchmark_app does)."""
        c = self.config
        if not (c.input_precision or c.output_precision or c.io_precision):
            return model
        from ember.graph.types import as_type
        from ember.preprocess import PrePostProcessor

        def kind(text: str, flag: str) -> Any:
            try:
                return as_type(_PRECISIONS.get(text.strip().lower(), text.strip()))
            except (EmberError, KeyError, ValueError):
                raise EmberError(f"ember: {flag}: unknown element type {text!r}") from None

        ins = {i: kind(c.input_precision, "-ip") for i in range(len(model.inputs))} if c.input_precision else {}
        outs = {i: kind(c.output_precision, "-op") for i in range(len(model.outputs))} if c.output_precision else {}
        for item in filter(None, (c.io_precision or "").split(",")):
            name, sep, prec = item.rpartition(":")
            if not sep or not name:
                raise EmberError(f"ember: -iop takes name:precision pairs, got {item!r}")
            matched = False
            for group, ports in ((ins, model.inputs), (outs, model.outputs)):
                for i, port in enumerate(ports):
                    if name in port.names:
                        group[i] = kind(prec, "-iop")
                        matched = True
            if not matched:
                raise EmberError(f"ember: -iop: the model has no input or output named {name!r}")
        ppp = PrePostProcessor(model)
        for i, t in ins.items():
            ppp.input(i).tensor().set_element_type(t)
        for i, t in outs.items():
            ppp.output(i).tensor().set_element_type(t)
        return ppp.build()

    def apply_layout(self, model: Model) -> Model:
        """``-layout``: "[NCHW]" for every input or "data[NCHW],mask[NC]" per input (used by
        ``-b`` to find the batch axis and by ``-i`` images)."""
        from ember.graph.layout import Layout

        text = self.config.layout
        if not text:
            return model
        items = re.findall(r"([^,\[\]]*)\[([^\]]*)\]", text)
        if not items:
            raise EmberError(f"ember: -layout takes [NCHW] or name[NCHW],..., got {text!r}")
        for name, layout in items:
            name = name.strip()
            targets = [p for p in model.inputs if not name or name in p.names]
            if not targets:
                raise EmberError(f"ember: -layout: the model has no input named {name!r}")
            for port in targets:
                try:
                    port.node.set_layout(Layout(layout))
                except EmberError as e:
                    raise EmberError(f"ember: -layout {layout!r} for {port.any_name if port.names else name}: {e}") from None
        return model

    def compile(self, model: Model) -> tuple[Any, float]:
        t0 = time.perf_counter()
        compiled = self.core.compile_model(model, self.config.device, self.properties())
        return compiled, (time.perf_counter() - t0) * 1e3

    def num_requests(self, compiled: Any) -> int:
        if self.config.api == "sync":
            return 1
        return self.config.num_requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @staticmethod
    def batch_size(compiled: Any) -> int:
        for port in compiled.inputs:
            layout = port.node.get_layout() if hasattr(port.node, "get_layout") else None
            if layout is not None and not layout.empty and layout.has_name("N"):
                d = port.partial_shape[layout.get_index_by_name("N")]
                return d.get_length() if d.is_static else 1
        return 1

    def run(self, compiled: Any, inputs: list[dict[int, np.ndarray]]) -> tuple[list[float], float, float]:
        """Run until ``niter`` inferences or ``duration_s`` seconds. Returns (latencies in ms
        without the first inference, total duration in ms, first inference in ms)."""
        c = self.config
        first_req = compiled.create_infer_request()
        t0 = time.perf_counter()
        first_req.infer(inputs[0], share_inputs=True)
        first_ms = (time.perf_counter() - t0) * 1e3
        limit_s = None if c.niter else (c.duration_s or DEFAULT_SECONDS)
        progress = Progress(c.niter or limit_s or 0, "iterations" if c.niter else "s", enabled=c.progress)
        run = self._run_sync if c.api == "sync" else self._run_async
        try:
            latencies, total_ms = run(compiled, inputs, c.niter, limit_s, progress)
        finally:
            progress.close()
        return latencies, total_ms, first_ms

    def _run_sync(self, compiled: Any, inputs: list[dict[int, np.ndarray]], niter: int | None,
                  limit_s: float | None, progress: Progress) -> tuple[list[float], float]:
        req = compiled.create_infer_request()
        latencies: list[float] = []
        start = time.perf_counter()
        i = 0
        while True:
            elapsed = time.perf_counter() - start
            if (niter is not None and i >= niter) or (limit_s is not None and elapsed >= limit_s):
                break
            t0 = time.perf_counter()
            req.infer(inputs[i % len(inputs)], share_inputs=True)
            latencies.append((time.perf_counter() - t0) * 1e3)
            i += 1
            progress.update(i if niter else elapsed)
        return latencies, (time.perf_counter() - start) * 1e3

    def _run_async(self, compiled: Any, inputs: list[dict[int, np.ndarray]], niter: int | None,
                   limit_s: float | None, progress: Progress) -> tuple[list[float], float]:
        from ember.runtime import AsyncInferQueue

        queue = AsyncInferQueue(compiled, self.num_requests(compiled))
        latencies: list[float] = []
        lock = threading.Lock()

        def done(request: Any, started: float) -> None:
            ms = (time.perf_counter() - started) * 1e3
            with lock:
                latencies.append(ms)

        queue.set_callback(done)
        start = time.perf_counter()
        i = 0
        while True:
            elapsed = time.perf_counter() - start
            if (niter is not None and i >= niter) or (limit_s is not None and elapsed >= limit_s):
                break
            queue.start_async(inputs[i % len(inputs)], time.perf_counter(), share_inputs=True)
            i += 1
            progress.update(i if niter else elapsed)
        queue.wait_all()
        return latencies, (time.perf_counter() - start) * 1e3

    @staticmethod
    def per_op_counters(requests: Sequence[Any]) -> list[OpCounter]:
        """Per-op times of each request's last inference, averaged over the requests, slowest first."""
        acc: dict[str, list[Any]] = {}
        for r in requests:
            for p in r.get_profiling_info():
                entry = acc.setdefault(p.node_name, [p.node_type, p.exec_type, 0.0, 0])
                entry[2] += p.real_time.total_seconds() * 1e3
                entry[3] += 1
        out = [OpCounter(n, t, e, total / count) for n, (t, e, total, count) in acc.items()]
        return sorted(out, key=lambda o: -o.real_time_ms)

    def summarize(self, compiled: Any, latencies: list[float], total_ms: float, first_ms: float, read_ms: float,
                  compile_ms: float, per_op: list[OpCounter]) -> BenchmarkResult:
        c = self.config
        stats = LatencyStats.of(latencies, c.latency_percentile)
        batch = self.batch_size(compiled)
        fps = batch * 1000.0 / stats.median if c.api == "sync" else batch * len(latencies) * 1000.0 / total_ms
        return BenchmarkResult(
            model=str(c.model), device=c.device, execution_devices=list(compiled.get_property("EXECUTION_DEVICES")),
            api=c.api, hint=c.effective_hint, streams=int(compiled.get_property("NUM_STREAMS")),
            requests=self.num_requests(compiled), batch=batch, iterations=len(latencies), duration_ms=total_ms,
            read_ms=read_ms, compile_ms=compile_ms, first_inference_ms=first_ms, latency_ms=stats,
            throughput_fps=fps, latencies_ms=latencies, per_op=per_op)

    def format(self, result: BenchmarkResult, top_ops: int = 20) -> list[str]:
        s = result.latency_ms
        running = ", ".join(result.execution_devices)
        device = result.device if running in ("", result.device) else f"{result.device} ({running})"
        lines = [f"Device: {device}, api {result.api}, "
                 f"hint {result.hint or 'none'}, {result.streams} stream(s), {result.requests} request(s)",
                 f"Read model took {result.read_ms:.2f} ms",
                 f"Compile model took {result.compile_ms:.2f} ms",
                 f"First inference took {result.first_inference_ms:.2f} ms",
                 f"Count:            {result.iterations} iterations",
                 f"Duration:         {result.duration_ms:.2f} ms",
                 "Latency:",
                 f"   Median:        {s.median:.2f} ms",
                 f"   Average:       {s.average:.2f} ms",
                 f"   Min:           {s.min:.2f} ms",
                 f"   Max:           {s.max:.2f} ms",
                 f"   90 percentile: {s.p90:.2f} ms",
                 *([f"   {s.percentile} percentile: {s.at_percentile:.2f} ms"] if s.percentile not in (50, 90) else []),
                 f"Throughput:   {result.throughput_fps:.2f} FPS"]
        if result.per_op:
            total = sum(o.real_time_ms for o in result.per_op) or 1.0
            lines.append(f"Per-op counters (average of a few inferences after the measurement; top {top_ops}):")
            lines.append(f"   {'node':<40}{'type':<22}{'exec':<12}{'ms':>10}{'%':>7}")
            for o in result.per_op[:top_ops]:
                lines.append(f"   {o.node_name[:39]:<40}{o.node_type[:21]:<22}{o.exec_type[:11]:<12}"
                             f"{o.real_time_ms:>10.3f}{o.real_time_ms * 100 / total:>7.1f}")
            lines.append(f"   total {total:.3f} ms in {len(result.per_op)} ops")
            ref = [o for o in result.per_op if o.exec_type.startswith("ref_")]  # "ref_any": the CPU device
            if ref:  # every op on a reference (numpy) kernel, not only the top ones
                ref_ms = sum(o.real_time_ms for o in ref)
                lines.append(f"Reference kernels: {len(ref)} op(s), {ref_ms:.3f} ms, {ref_ms * 100 / total:.1f}% of the total")
                for o in ref:
                    lines.append(f"   {o.node_name[:39]:<40}{o.node_type[:21]:<22}{o.exec_type[:11]:<12}"
                                 f"{o.real_time_ms:>10.3f}{o.real_time_ms * 100 / total:>7.1f}")
        return lines

    def write_report(self, result: BenchmarkResult, folder: str | Path) -> Path:
        """``benchmark_report.json`` in ``folder``: the config, the statistics and every latency;
        with ``report_type`` also benchmark_app's CSV files (``benchmark_report.csv`` and, for
        counters, ``benchmark_average_counters_report.csv`` / ``benchmark_detailed_counters_report.csv``)."""
        import csv

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        out = path / "benchmark_report.json"
        data = {"config": asdict(self.config), "result": result.to_dict(with_latencies=True)}
        out.write_text(json.dumps(data, indent=2))
        if self.config.report_type:
            s = result.latency_ms
            with open(path / "benchmark_report.csv", "w", newline="") as f:
                w = csv.writer(f, delimiter=";")
                w.writerow(["Command line parameters"])
                for k, v in asdict(self.config).items():
                    w.writerow([k, v])
                w.writerow([])
                w.writerow(["Execution results"])
                for k, v in [("read model time (ms)", result.read_ms), ("compile model time (ms)", result.compile_ms),
                             ("first inference time (ms)", result.first_inference_ms),
                             ("total execution time (ms)", result.duration_ms),
                             ("total number of iterations", result.iterations), ("latency (ms)", s.median),
                             ("avg latency", s.average), ("min latency", s.min), ("max latency", s.max),
                             ("throughput", result.throughput_fps)]:
                    w.writerow([k, f"{v:.2f}" if isinstance(v, float) else v])
            if self.config.report_type != "no_counters" and result.per_op:
                kind = "average" if self.config.report_type == "average_counters" else "detailed"
                with open(path / f"benchmark_{kind}_counters_report.csv", "w", newline="") as f:
                    w = csv.writer(f, delimiter=";")
                    w.writerow(["layerName", "execStatus", "layerType", "execType", "realTime (ms)", "cpuTime (ms)"])
                    for o in result.per_op:
                        w.writerow([o.node_name, "EXECUTED", o.node_type, o.exec_type, f"{o.real_time_ms:.3f}",
                                    f"{o.real_time_ms:.3f}"])
                    w.writerow(["Total", "", "", "", f"{sum(o.real_time_ms for o in result.per_op):.3f}", ""])
        return out

    @staticmethod
    def check_histogram_support() -> None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise EmberError("ember: the latency histogram needs matplotlib: pip install matplotlib") from None

    @staticmethod
    def write_histogram(result: BenchmarkResult, path: str | Path) -> Path:
        """A PNG histogram of the latencies, with the median and p90 marked."""
        Benchmark.check_histogram_support()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(result.latencies_ms, bins=min(50, max(5, len(result.latencies_ms) // 5)), color="#d95f02")
        s = result.latency_ms
        ax.axvline(s.median, color="k", linestyle="--", label=f"median {s.median:.2f} ms")
        ax.axvline(s.p90, color="gray", linestyle=":", label=f"p90 {s.p90:.2f} ms")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("inferences")
        ax.set_title(f"{Path(result.model).name} on {result.device} ({result.api}, {result.iterations} inferences)")
        ax.legend()
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    # -- everything ----------------------------------------------------------------------
    def run_all(self) -> BenchmarkResult:
        c = self.config
        if c.histogram:
            self.check_histogram_support()  # fail before a long run, not after
        model, read_ms = self.read_model()
        model = self.preprocess(self.reshape(self.apply_layout(model)))
        compiled, compile_ms = self.compile(model)
        if c.exec_graph_path:
            from ember.io import write_ir

            write_ir(compiled.get_runtime_model(), c.exec_graph_path, compress_to_fp16=False)
            self.log(f"Executed graph: {c.exec_graph_path}")
        if c.dump_config:
            self.log(f"Config: {self.dump_config_file(compiled, c.dump_config)}")
        try:
            nreq = self.num_requests(compiled)
            inputs = self.make_inputs(compiled, nreq)
            limit = f"{c.niter} iterations" if c.niter else f"{c.duration_s or DEFAULT_SECONDS:g} s"
            self.log(f"Measuring for {limit} on {c.device} ({c.api}, {nreq} request(s))")
            latencies, total_ms, first_ms = self.run(compiled, inputs)
            per_op: list[OpCounter] = []
            if c.perf_counts:
                probe = [compiled.create_infer_request() for _ in range(max(1, min(nreq, 4)))]
                for r, feeds in zip(probe, inputs * len(probe)):
                    r.infer(feeds, share_inputs=True)
                per_op = self.per_op_counters(probe)
            result = self.summarize(compiled, latencies, total_ms, first_ms, read_ms, compile_ms, per_op)
        finally:
            compiled.close()
        for line in self.format(result):
            self.log(line)
        if c.report_folder:
            self.log(f"Report: {self.write_report(result, c.report_folder)}")
        if c.histogram:
            self.log(f"Latency histogram: {self.write_histogram(result, c.histogram)}")
        return result


# -- command line ----------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="IR .xml, .onnx or .tflite (or -m)")
    p.add_argument("-m", "--path_to_model", dest="model_flag", help="the model, as benchmark_app's -m")
    p.add_argument("-b", "--batch_size", dest="batch", type=int, default=None,
                   help="batch size: sets the N dimension (of the layout, else the first) of every input")
    p.add_argument("-data_shape", "--data_shape", default=None,
                   help="shapes of the input data for a dynamic model (kept dynamic): [1,3,224,224] or x[1,3,224,224],...")
    p.add_argument("-i", "--input", dest="input_files", action="append", default=[], metavar="PATH",
                   help=".npy/.npz arrays or image files (NAME=path, a path, or a folder); random data otherwise")
    p.add_argument("-report_type", "--report_type", default=None,
                   choices=["no_counters", "average_counters", "detailed_counters"],
                   help="CSV reports in -report_folder, as benchmark_app (counters imply -pc)")
    p.add_argument("-d", "--device", default="AUTO", help="device: REFERENCE, CPU, AUTO, HETERO:..., MULTI:... "
                   "(default AUTO)")
    p.add_argument("-hint", "--hint", default=None, type=str.lower,
                   choices=["latency", "throughput", "cumulative_throughput", "none"],
                   help="performance hint (default: throughput for -api async, latency for -api sync)")
    p.add_argument("-nstreams", "--nstreams", type=int, default=None, help="number of streams")
    p.add_argument("-nireq", "--nireq", type=int, default=None, help="number of infer requests (async)")
    p.add_argument("-t", "--time", type=float, default=None, help=f"seconds to run (default {DEFAULT_SECONDS:g})")
    p.add_argument("-niter", "--niter", type=int, default=None, help="number of inferences (overrides -t)")
    p.add_argument("-shape", "--shape", default=None, help="input shapes: [1,3,224,224] or data[1,3,224,224],...")
    p.add_argument("-api", "--api", default="async", choices=["sync", "async"])
    p.add_argument("-pc", "--perf_counts", action="store_true", help="print per-op time")
    p.add_argument("-infer_precision", "--infer_precision", default=None, help="f32, f16 or bf16")
    p.add_argument("-cdir", "--cache_dir", default=None, help="model cache folder")
    p.add_argument("-report_folder", "--report_folder", default=None, help="write benchmark_report.json here")
    p.add_argument("-histogram", "--histogram", nargs="?", const="latency_histogram.png", default=None,
                   metavar="PNG", help="save a latency histogram (needs matplotlib)")
    p.add_argument("-nthreads", "--nthreads", dest="num_threads", type=int, default=None,
                   help="number of threads (INFERENCE_NUM_THREADS)")
    p.add_argument("-latency_percentile", "--latency_percentile", type=int, default=50,
                   help="the latency percentile to report (1-100, default 50: the median)")
    p.add_argument("-ip", "--input_precision", default=None, help="element type of every input tensor (u8, f16, f32...)")
    p.add_argument("-op", "--output_precision", default=None, help="element type of every output tensor")
    p.add_argument("-iop", "--input_output_precision", dest="io_precision", default=None,
                   help="per input/output: name:precision,... (wins over -ip/-op)")
    p.add_argument("-layout", "--layout", default=None, help="input layouts: [NCHW] or data[NCHW],mask[NC]")
    p.add_argument("-exec_graph_path", "--exec_graph_path", default=None,
                   help="save the executed (runtime) graph as IR .xml")
    p.add_argument("-load_config", "--load_config", default=None,
                   help='JSON of device properties: {"CPU": {"NUM_STREAMS": "2"}} (flags win)')
    p.add_argument("-dump_config", "--dump_config", default=None, help="write the compiled model's properties as JSON")
    p.add_argument("-inference_only", "--inference_only", action="store_true",
                   help="accepted for benchmark_app scripts: ember always measures inference only")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    model = args.model_flag or args.model
    if not model:
        raise EmberError("ember benchmark: give the model (ember benchmark MODEL or -m MODEL)")
    if args.model_flag and args.model and args.model_flag != args.model:
        raise EmberError("ember benchmark: the model is given twice (positional and -m)")
    counters = args.report_type in ("average_counters", "detailed_counters")
    return BenchmarkConfig(model=model, device=args.device, hint=args.hint, num_streams=args.nstreams,
                           num_requests=args.nireq, duration_s=args.time, niter=args.niter, shape=args.shape,
                           data_shape=args.data_shape, batch=args.batch, input_files=tuple(args.input_files),
                           report_type=args.report_type,
                           api=args.api, perf_counts=args.perf_counts or counters,
                           inference_precision=args.infer_precision,
                           cache_dir=args.cache_dir, report_folder=args.report_folder or (
                               "." if args.report_type else None), histogram=args.histogram,
                           progress=args.progress, seed=args.seed, num_threads=args.num_threads,
                           latency_percentile=args.latency_percentile, input_precision=args.input_precision,
                           output_precision=args.output_precision, io_precision=args.io_precision,
                           layout=args.layout, exec_graph_path=args.exec_graph_path,
                           load_config=args.load_config, dump_config=args.dump_config)


def _run(args: argparse.Namespace) -> int:
    Benchmark(config_from_args(args)).run_all()
    return 0


def add_parser(sub: Any) -> None:
    """Register ``ember benchmark`` on the ``ember`` command's subparsers."""
    p = sub.add_parser("benchmark", help="measure latency and throughput (like benchmark_app)")
    add_arguments(p)
    p.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a program of its own: ``python -m ember.tools.benchmark MODEL ...``."""
    parser = argparse.ArgumentParser(prog="ember benchmark", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except EmberError as e:
        print(str(e), file=sys.stderr)
        return 2


__all__ = ["Benchmark", "BenchmarkConfig", "BenchmarkResult", "LatencyStats", "OpCounter", "add_parser", "main",
           "parse_shapes", "random_inputs"]

if __name__ == "__main__":
    sys.exit(main())
