"""The model repository: models by name, each with version folders (``<base>/<n>/model.xml``),
served under a version policy, reloaded when folders appear or vanish, drained before unloading.

Each served version owns a bounded queue and ``nireq`` worker threads, one ember
``InferRequest`` each. With dynamic batching on, a worker that takes a request waits up to the
configured delay for more requests of the same trailing shapes, joins them along dimension 0
(up to ``max_batch_size`` rows), runs once and splits the outputs back. Inference runs on these
worker threads, never on the event loop or gRPC threads (those only wait on a future).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import InferenceError
from ember.serve.config import ModelConfig
from ember.serve.protocol import BadRequest, NotFound, QueueFull, TensorSpec, Unavailable, datatype_of

log = logging.getLogger("ember.serve")

MODEL_SUFFIXES = (".xml", ".onnx")


def _port_name(port: Any, fallback: str) -> str:
    names = sorted(port.names)
    return names[0] if names else fallback


def _spec(port: Any, name: str) -> TensorSpec:
    ps = port.partial_shape
    shape = None if ps.rank.is_dynamic else tuple(d.get_length() if d.is_static else -1 for d in ps)
    return TensorSpec(name, datatype_of(port.element_type), shape)


def find_model_file(folder: Path) -> Path | None:
    """The model in a version folder: ``model.xml``/``model.onnx`` first, else the only one."""
    for s in MODEL_SUFFIXES:
        if (folder / f"model{s}").is_file():
            return folder / f"model{s}"
    files = sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())
    return files[0] if files else None


@dataclass
class _Job:
    feeds: dict[int, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: Future
    enqueued: float


class ModelVersion:
    """One loaded version of a model: its compiled model, specs and scheduler.

    ``submit`` queues a request and returns a ``concurrent.futures.Future`` of the outputs (a
    dict by output name); it raises :class:`QueueFull` at the bound and :class:`Unavailable`
    once the version is being unloaded.
    """

    def __init__(self, config: ModelConfig, version: int, path: Path, core: Any, metrics: Any) -> None:
        self.config = config
        self.name = config.name
        self.version = version
        self.label = str(version)
        self.path = path
        self.state = "LOADING"
        self._metrics = metrics
        started = time.perf_counter()
        model = core.read_model(str(path))
        self.compiled = core.compile_model(model, config.target_device, dict(config.plugin_config))
        self.inputs = [_spec(p, _port_name(p, f"input{i}")) for i, p in enumerate(self.compiled.inputs)]
        self.outputs = [_spec(p, _port_name(p, f"output{i}")) for i, p in enumerate(self.compiled.outputs)]
        self._input_index = {s.name: i for i, s in enumerate(self.inputs)}
        self._output_index = {s.name: i for i, s in enumerate(self.outputs)}
        self.nireq = config.nireq or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.max_batch = config.batching.max_batch_size
        if self.max_batch > 1 and not self._batchable():
            log.warning("ember serve: model '%s' version %d: dynamic batching is off: every input and output "
                        "needs a dynamic first dimension", self.name, version)
            self.max_batch = 1
        self._delay = config.batching.max_queue_delay_us / 1e6
        self.buckets = config.batching.buckets() if self.max_batch > 1 else (1,)
        if self.max_batch > 1:
            self._warm_up()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._workers = [threading.Thread(target=self._work, name=f"ember-serve-{self.name}-{version}-{i}",
                                          daemon=True) for i in range(self.nireq)]
        for t in self._workers:
            t.start()
        metrics.version_loaded(self.name, self.label, self.streams, self.nireq)
        self.state = "AVAILABLE"
        log.info("ember serve: loaded model '%s' version %d from %s in %.2f s (%d infer requests, batching %s)",
                 self.name, version, path, time.perf_counter() - started, self.nireq,
                 f"up to {self.max_batch}" if self.max_batch > 1 else "off")

    def _batchable(self) -> bool:
        specs = self.inputs + self.outputs
        return all(s.shape is not None and len(s.shape) >= 1 and s.shape[0] == -1 for s in specs)

    def _warm_up(self) -> None:
        """Run each padded batch size once so its plan is compiled before the first request."""
        if any(s.shape is None or -1 in s.shape[1:] for s in self.inputs):
            return  # other dynamic dimensions: shapes are not known ahead
        request = self.compiled.create_infer_request()
        for b in self.buckets:
            feeds = {}
            for i, s in enumerate(self.inputs):
                dtype = np.dtype(self.compiled.inputs[i].element_type.dtype)
                arr = np.zeros((b, *s.shape[1:]), dtype)
                if dtype.kind == "O":
                    arr[...] = ""
                feeds[i] = arr
            request.infer(feeds)

    @property
    def ready(self) -> bool:
        return self.state == "AVAILABLE"

    def metadata(self) -> dict[str, Any]:
        return {"inputs": [s.metadata() for s in self.inputs], "outputs": [s.metadata() for s in self.outputs]}

    # ---- requests
    def check_inputs(self, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> dict[int, np.ndarray]:
        """Feeds by input index, after checking names, datatypes and shapes against the model."""
        unknown = sorted(set(inputs) - set(self._input_index))
        if unknown:
            raise BadRequest(f"model '{self.name}' has no input {unknown[0]!r}; inputs: "
                             f"{', '.join(s.name for s in self.inputs)}")
        missing = [s.name for s in self.inputs if s.name not in inputs]
        if missing:
            raise BadRequest(f"model '{self.name}': input '{missing[0]}' is missing")
        feeds = {}
        for name, arr in inputs.items():
            i = self._input_index[name]
            self.inputs[i].check(arr, datatypes[name])
            feeds[i] = arr
        return feeds

    def check_outputs(self, names: Sequence[str]) -> None:
        for n in names:
            if n not in self._output_index:
                raise BadRequest(f"model '{self.name}' has no output {n!r}; outputs: "
                                 f"{', '.join(s.name for s in self.outputs)}")

    def submit(self, feeds: dict[int, np.ndarray]) -> Future:
        rows = 1
        key: tuple[Any, ...] = ()
        if self.max_batch > 1:
            rows = int(next(iter(feeds.values())).shape[0])
            if any(a.shape[0] != rows for a in feeds.values()):
                rows = self.max_batch + 1  # inconsistent first dims: run alone, let the model judge
            key = tuple((i, a.shape[1:]) for i, a in sorted(feeds.items()))
        fut: Future = Future()
        with self._lock:
            if self.state != "AVAILABLE":
                raise Unavailable(f"model '{self.name}' version {self.version} is {self.state.lower()}")
            if self._pending >= self.config.max_queue_size:
                raise QueueFull(f"model '{self.name}' version {self.version}: the request queue is full "
                                f"({self.config.max_queue_size} requests); retry later")
            self._pending += 1
            self._queue.put(_Job(feeds, rows, key, fut, time.perf_counter()))
        self._metrics.current.labels(self.name, self.label).inc()
        self._metrics.queue_depth.labels(self.name, self.label).set(self._queue.qsize())
        return fut

    def infer(self, feeds: dict[int, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        """Submit and wait: the outputs by name (blocking; for in-process callers)."""
        return self.submit(feeds).result(timeout)

    # ---- workers
    def _work(self) -> None:
        request = self.compiled.create_infer_request()
        held: _Job | None = None
        stop = False
        while not stop:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                break
            batch, rows = [job], job.rows
            if self.max_batch > 1 and rows < self.max_batch:
                deadline = job.enqueued + self._delay
                while rows < self.max_batch:
                    wait = deadline - time.perf_counter()
                    try:
                        nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    if nxt.key != job.key or rows + nxt.rows > self.max_batch:
                        held = nxt
                        break
                    batch.append(nxt)
                    rows += nxt.rows
            self._run(request, batch, rows)
        if held is not None:
            self._run(request, [held], held.rows)

    def _run(self, request: Any, batch: list[_Job], rows: int) -> None:
        m = self._metrics
        start = time.perf_counter()
        for j in batch:
            m.wait_time.labels(self.name, self.label).observe((start - j.enqueued) * 1e6)
        m.active.labels(self.name, self.label).inc()
        m.queue_depth.labels(self.name, self.label).set(self._queue.qsize())
        try:
            if len(batch) == 1 and (rows in self.buckets or rows > self.max_batch):
                results = [self._execute(request, batch[0].feeds)]
            else:
                padded = next((b for b in self.buckets if b >= rows), rows)
                joined = {}
                for i in batch[0].feeds:
                    parts = [j.feeds[i] for j in batch]
                    if padded > rows:  # repeat a real row: padding must not produce NaN or errors
                        parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
                    joined[i] = np.concatenate(parts)
                out = self._execute(request, joined)
                if padded > rows:
                    out = {n: a[:rows] if a.ndim and a.shape[0] == padded else a for n, a in out.items()}
                if any(a.ndim == 0 or a.shape[0] != rows for a in out.values()):
                    results = [self._execute(request, j.feeds) for j in batch]  # outputs not per row
                else:
                    bounds = np.cumsum([0] + [j.rows for j in batch])
                    results = [{n: a[bounds[k]:bounds[k + 1]] for n, a in out.items()} for k in range(len(batch))]
            m.batch_size.labels(self.name, self.label).observe(rows)
            m.inference_time.labels(self.name, self.label).observe((time.perf_counter() - start) * 1e6)
            outcome: list[Any] = results
        except InferenceError as e:  # inputs the model refuses at run time: the client's to fix
            outcome = [BadRequest(f"model '{self.name}' version {self.version}: {e}")] * len(batch)
        except Exception as e:  # noqa: BLE001 - handed to the waiting request (500 / INTERNAL)
            outcome = [e] * len(batch)
        finally:
            m.active.labels(self.name, self.label).dec()
        for j, r in zip(batch, outcome):
            if isinstance(r, Exception):
                j.future.set_exception(r)
            else:
                j.future.set_result(r)
        with self._lock:
            self._pending -= len(batch)
            if self._pending == 0:
                self._idle.notify_all()
        m.current.labels(self.name, self.label).dec(len(batch))

    def _execute(self, request: Any, feeds: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
        res = request.infer(feeds)
        return {s.name: np.asarray(res[i]) for i, s in enumerate(self.outputs)}

    # ---- unloading
    def retire(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish every queued and running one, then release the model."""
        with self._lock:
            if self.state in ("UNLOADING", "END"):
                return
            self.state = "UNLOADING"
            for _ in self._workers:
                self._queue.put(None)
            self._idle.wait_for(lambda: self._pending == 0, timeout)
        for t in self._workers:
            t.join(timeout)
        self.state = "END"
        self._metrics.version_unloaded(self.name, self.label)
        self.compiled = None
        log.info("ember serve: unloaded model '%s' version %d", self.name, self.version)


class _Model:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.versions: dict[int, ModelVersion] = {}
        self.failed: dict[int, tuple[Any, str]] = {}  # version -> (folder signature, error)


class ModelRepository:
    """Every served model and its versions. ``sync()`` applies the folders' current state (load
    new versions first, then drain and unload the ones the policy drops); ``start_polling``
    calls it every ``interval`` seconds on a background thread (OVMS's
    ``file_system_poll_wait_seconds``)."""

    def __init__(self, models: Sequence[ModelConfig], metrics: Any, core: Any = None) -> None:
        if core is None:
            from ember.runtime import Core

            core = Core()
        self._core = core
        self._metrics = metrics
        self._models = {m.name: _Model(m) for m in models}
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._config_path: Path | None = None
        self._config_stamp: tuple[int, int] | None = None

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def sync(self) -> None:
        with self._sync_lock:
            if self._config_path is not None:
                self._reload_config()
            for model in list(self._models.values()):
                self._sync_model(model)

    def watch_config(self, path: Path) -> None:
        """Re-read OVMS's ``config.json`` at each poll when it changed: models added to it are
        loaded, models removed are drained and unloaded, a model whose settings changed is
        loaded anew beside the old one, which is drained once the new one serves. A config that
        does not parse is logged and the models keep serving as they were."""
        self._config_path = Path(path)
        self._config_stamp = _stamp(self._config_path)

    def _reload_config(self) -> None:
        from ember.serve.config import load_config_file

        stamp = _stamp(self._config_path)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            configs = {m.name: m for m in load_config_file(self._config_path)}
        except Exception as e:  # noqa: BLE001 - a bad edit must not take the server down
            log.error("ember serve: config %s not applied, models keep serving: %s", self._config_path, e)
            return
        old = dict(self._models)
        for name, cfg in configs.items():
            if name in old and old[name].config == cfg:
                continue
            fresh = _Model(cfg)
            self._sync_model(fresh)  # load before the swap: no gap in service
            with self._lock:
                self._models[name] = fresh
            log.info("ember serve: config %s: model '%s' %s", self._config_path, name,
                     "reloaded" if name in old else "added")
        for name in old:
            if name not in configs:
                with self._lock:
                    del self._models[name]
                log.info("ember serve: config %s: model '%s' removed", self._config_path, name)
        for name, model in old.items():
            fresh = self._models.get(name)
            if fresh is not model:
                for mv in list(model.versions.values()):
                    mv.retire()
                for mv in (fresh.versions.values() if fresh is not None else ()):
                    self._metrics.version_loaded(mv.name, mv.label, mv.streams, mv.nireq)  # same labels

    def _sync_model(self, model: _Model) -> None:
        cfg = model.config
        found: dict[int, Path] = {}
        if cfg.base_path.is_dir():
            for d in cfg.base_path.iterdir():
                if d.is_dir() and d.name.isdigit() and int(d.name) > 0:
                    f = find_model_file(d)
                    if f is not None:
                        found[int(d.name)] = f
        elif not model.failed.get(0):
            model.failed[0] = (None, f"base path {cfg.base_path} is not a folder")
            log.error("ember serve: model '%s': base path %s is not a folder", cfg.name, cfg.base_path)
        for v in [v for v in model.failed if v and v not in found]:
            model.failed.pop(v)
        while True:
            # versions whose files failed to load (unchanged since) do not count: a broken
            # newest folder leaves the previous version serving
            loadable = [v for v in found if v not in model.failed or model.failed[v][0] != _signature(found[v].parent)]
            wanted = cfg.version_policy.select(loadable)
            new = [v for v in wanted if v not in model.versions]
            if not new:
                break
            for v in new:
                sig = _signature(found[v].parent)
                try:
                    mv = ModelVersion(cfg, v, found[v], self._core, self._metrics)
                except Exception as e:  # noqa: BLE001 - a bad version must not stop the others
                    model.failed[v] = (sig, str(e))
                    log.error("ember serve: model '%s' version %d failed to load: %s", cfg.name, v, e)
                    continue
                model.failed.pop(v, None)
                with self._lock:
                    model.versions[v] = mv
        for v in [v for v in model.versions if v not in wanted]:
            mv = model.versions[v]
            mv.retire()
            with self._lock:
                model.versions.pop(v, None)

    def get(self, name: str, version: str | int | None = None) -> ModelVersion:
        """The version to serve: the newest available one when ``version`` is None/empty."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise NotFound(f"model '{name}' is not served; served models: {', '.join(self._models) or 'none'}")
            if version in (None, "", 0, "0"):
                live = [mv for mv in model.versions.values() if mv.ready]
                if not live:
                    raise Unavailable(f"model '{name}' has no version available")
                return max(live, key=lambda mv: mv.version)
            try:
                v = int(version)  # type: ignore[arg-type]
            except ValueError:
                raise BadRequest(f"model version must be an integer, got {version!r}") from None
            mv = model.versions.get(v)
            if mv is None:
                raise NotFound(f"model '{name}' has no version {v}; served versions: "
                               f"{', '.join(str(k) for k in sorted(model.versions)) or 'none'}")
            if not mv.ready:
                raise Unavailable(f"model '{name}' version {v} is {mv.state.lower()}")
            return mv

    def versions(self, name: str) -> list[ModelVersion]:
        with self._lock:
            if name not in self._models:
                raise NotFound(f"model '{name}' is not served; served models: {', '.join(self._models) or 'none'}")
            return sorted(self._models[name].versions.values(), key=lambda mv: mv.version)

    def ready(self) -> bool:
        """True when every configured model has at least one available version."""
        with self._lock:
            return all(any(mv.ready for mv in m.versions.values()) for m in self._models.values())

    def index(self) -> list[dict[str, Any]]:
        """Every model version with its state (like the repository index of KServe/Triton)."""
        out = []
        with self._lock:
            for m in self._models.values():
                for v, mv in sorted(m.versions.items()):
                    out.append({"name": m.config.name, "version": str(v), "state": mv.state})
                for v, (_, err) in sorted(m.failed.items()):
                    if v not in m.versions:
                        out.append({"name": m.config.name, "version": str(v), "state": "LOADING_FAILED",
                                    "reason": err})
        return out

    def start_polling(self, interval: float) -> None:
        if interval <= 0 or self._poller is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sync()
                except Exception:  # noqa: BLE001 - keep polling; the error is logged
                    log.exception("ember serve: repository poll failed")

        self._poller = threading.Thread(target=loop, name="ember-serve-poll", daemon=True)
        self._poller.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop polling, then drain and unload every version."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        with self._sync_lock:
            for m in self._models.values():
                for mv in list(m.versions.values()):
                    mv.retire(timeout)
                with self._lock:
                    m.versions.clear()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
    except OSError:
        return ()
