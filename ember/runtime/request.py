"""``InferRequest``, ``AsyncInferQueue`` and ``OVDict``: running a compiled model.

Threads and copies, in one place:

* ``InferRequest.infer`` runs on the calling thread, on the first free stream of the compiled
  model. ``start_async`` returns at once; the inference runs on a stream's worker thread, and
  the callback (if any) runs on that worker thread right after, before ``wait`` returns.
* Inputs given as ``numpy`` arrays are copied into the request when ``share_inputs=False``
  (the default of ``infer``/``start_async``), so the caller may reuse its arrays at once.
  With ``share_inputs=True`` the request reads the caller's arrays in place: they must not
  change until ``infer`` returns (or, for ``start_async``, until ``wait`` returns). A dtype
  conversion (e.g. f64 data for an f32 input) is always a copy. ``Tensor`` inputs, and
  ``set_tensor``, are always shared: the request uses the tensor's memory.
* Results are fresh arrays with ``share_outputs=False`` (the default). With
  ``share_outputs=True`` they are the request's own output buffers, valid until the next
  inference of this request overwrites them. ``get_tensor``/``results`` are always the
  request's buffers. An output tensor set with ``set_tensor`` receives a copy of the result.
* One request runs one inference at a time and is not meant to be shared between threads;
  create one request per thread (or use ``AsyncInferQueue``). ``CompiledModel.__call__`` is
  thread safe (it serializes on an internal request).
* Stopping an inference: ``cancel()`` (from any thread) or the ``INFERENCE_TIMEOUT``
  property (milliseconds) stop a running inference; ``infer``/``wait`` then raise
  ``InferenceCancelled``. The stop takes effect at the next Python step of the device (between
  kernels, between Loop iterations): a single native kernel call runs to its end first. The
  request and its compiled model stay usable.
* ONNX sequence and optional values (inputs or outputs of element type ``sequence``): a
  sequence input takes a list of arrays, an optional input ``None`` or its value; give them in
  a dict (a bare list means one value per input). Their items are always copied in. Such
  outputs come back as a list of arrays, ``None`` or the value (``ember.ops.sequence``).
"""

from __future__ import annotations

import collections
import ctypes
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.errors import EmberError, InferenceCancelled, InferenceError
from ember.graph.core_ops import Parameter
from ember.graph.node import Input, Output
from ember.graph.types import Type
from ember.runtime.tensor import Tensor

if TYPE_CHECKING:
    from ember.runtime.core import CompiledModel

log = logging.getLogger("ember.runtime")


class OVDict(Mapping):
    """Inference results: look up by output port, by index, or by tensor name."""

    def __init__(self, ports: list[Output], values: list[np.ndarray]) -> None:
        self._ports = ports
        self._values = values

    def _index(self, key: Any) -> int:
        if isinstance(key, int):
            if not -len(self._ports) <= key < len(self._ports):
                raise KeyError(f"ember: there are {len(self._ports)} outputs; no output {key}")
            return key % len(self._ports)
        if isinstance(key, Output):
            for i, p in enumerate(self._ports):
                if p == key:
                    return i
            names = key.names if key.node._outputs_desc else set()
            for i, p in enumerate(self._ports):
                if names and names & p.names:
                    return i
            raise KeyError(f"ember: {key} is not an output of this model")
        if isinstance(key, str):
            for i, p in enumerate(self._ports):
                if key in p.names:
                    return i
            for i, p in enumerate(self._ports):
                if key == p.node.friendly_name:
                    return i
            raise KeyError(f"ember: no output named '{key}'; outputs: "
                           f"{', '.join(sorted(n for p in self._ports for n in p.names))}")
        raise KeyError(f"ember: cannot look up results by {type(key).__name__}")

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._values[self._index(key)]

    def __iter__(self) -> Iterator[Output]:
        return iter(self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def to_tuple(self) -> tuple[np.ndarray, ...]:
        return tuple(self._values)

    def to_dict(self) -> dict[Output, np.ndarray]:
        return dict(zip(self._ports, self._values))

    def names(self) -> tuple[set[str], ...]:
        return tuple(p.names for p in self._ports)

    def __repr__(self) -> str:
        return "<OVDict " + ", ".join(f"{sorted(p.names)}: {getattr(v, 'shape', type(v).__name__)}"
                                      for p, v in zip(self._ports, self._values)) + ">"


class ProfilingStatus(Enum):
    NOT_RUN = 0
    OPTIMIZED_OUT = 1
    EXECUTED = 2


@dataclass(frozen=True)
class ProfilingInfo:
    """Time spent in one op during the last inference (``PERF_COUNT`` / ``enable_profiling``)."""

    node_name: str
    node_type: str
    exec_type: str
    real_time: timedelta
    cpu_time: timedelta
    status: ProfilingStatus = ProfilingStatus.EXECUTED

    Status = ProfilingStatus


# -- stopping a running inference ---------------------------------------------------------------

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class _Stoppable:
    """Brackets one inference so that another thread may stop it.

    ``stop`` raises ``InferenceCancelled`` in the running thread (CPython's asynchronous
    exception, delivered at the thread's next Python step), at most once, and only while the
    thread is inside the bracket (``StreamExecutor.run`` places it inside the stream's
    borrowing, so a stop never leaks a stream). Leaving the bracket withdraws a stop that has
    not been delivered yet. A stop that comes before the bracket is entered (the inference is
    queued or converting its inputs) is kept and delivered on entry. ``ticket`` ties a stop
    to one inference: a late timer cannot stop the next one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._ticket: object | None = None
        self._stopped = False
        self._pending = False
        self.reason = ""

    def begin(self) -> object:
        """A new inference of this request: returns its ticket."""
        with self._lock:
            self._ticket = object()
            self._stopped = self._pending = False
            self.reason = ""
            return self._ticket

    def end(self) -> None:
        with self._lock:
            self._ticket = None
            self._pending = False

    def __enter__(self) -> _Stoppable:
        with self._lock:
            if self._pending:
                self._stopped = True
                raise InferenceCancelled("")
            self._thread = threading.get_ident()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            tid, self._thread = self._thread, None
            if self._stopped and tid is not None:
                _set_async_exc(tid, ctypes.py_object())  # NULL: withdraw a stop not delivered yet

    def stop(self, reason: str, ticket: object | None = None) -> bool:
        """Stop the current inference (only the one of ``ticket`` when given); False when
        there is none or it is already stopped."""
        with self._lock:
            if self._ticket is None or self._stopped or (ticket is not None and ticket is not self._ticket):
                return False
            self.reason = reason
            if self._thread is None:
                self._pending = True
                return True
            self._stopped = True
            _set_async_exc(self._thread, ctypes.py_object(InferenceCancelled))
            return True


class _Watchdog:
    """One daemon thread that calls ``fn()`` at deadlines (started when first needed)."""

    _instance: _Watchdog | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        threading.Thread(target=self._loop, daemon=True, name="ember-inference-watchdog").start()

    @classmethod
    def get(cls) -> _Watchdog:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def add(self, delay_s: float, fn: Callable[[], object]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + delay_s, token, fn))
            self._cond.notify()
            return token

    def remove(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, token, fn = self._heap[0]
                now = time.monotonic()
                if token in self._cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled.discard(token)
                    continue
                if when > now:
                    self._cond.wait(when - now)
                    continue
                heapq.heappop(self._heap)
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the watchdog must survive
                log.error("ember: inference watchdog: %s", e)


def convert_input(value: Any, param: Parameter, where: str, copy: bool) -> np.ndarray:
    """``value`` as an array the model accepts for ``param``; copied when ``copy`` or converted."""
    if param.element_type is Type.sequence:  # an ONNX sequence or optional: a list, None or a value
        return _sequence_input(value, param, where)
    if isinstance(value, Tensor):
        arr, copy = value.data, False
    else:
        arr = np.asarray(value)
    et = param.element_type
    if et is Type.string:
        if arr.dtype.kind not in "USO":
            raise InferenceError(f"ember: input '{where}' expects strings, got {arr.dtype}")
        if arr.dtype.kind != "O":
            arr, copy = arr.astype(object), False
    elif not et.is_dynamic and arr.dtype != et.dtype:
        src = arr.dtype
        ok = np.can_cast(src, et.dtype, "same_kind") or (src.kind in "biuf" and et.is_real)
        if not ok:
            raise InferenceError(f"ember: input '{where}' expects element type {et.name}, got {src}; "
                                 f"convert it first (e.g. arr.astype(np.{et.dtype.name}))")
        try:
            arr, copy = arr.astype(et.dtype), False
        except MemoryError:
            raise InferenceError(f"ember: input '{where}' of shape {list(arr.shape)} does not fit in memory once "
                                 f"converted to {et.name}") from None
    if not param.partial_shape.accepts(arr.shape):
        raise InferenceError(f"ember: input '{where}' expects shape {param.partial_shape}, got {list(arr.shape)}")
    if copy:
        try:
            return np.array(arr, copy=True)
        except MemoryError:
            raise InferenceError(f"ember: input '{where}' of shape {list(arr.shape)} ({arr.nbytes} bytes) does not "
                                 "fit in memory to be copied; pass share_inputs=True or a smaller batch") from None
    return arr


def _sequence_input(value: Any, param: Parameter, where: str) -> np.ndarray:
    from ember.ops.sequence import boundary_kind, item_type_name, pack_value

    item = item_type_name(param)
    et = Type.from_name(item) if item else None

    def conv(v: Any) -> np.ndarray:
        arr = v.data if isinstance(v, Tensor) else np.asarray(v)
        if et is Type.string and arr.dtype.kind in "US":
            return arr.astype(object)
        if et is not None and et is not Type.string and arr.dtype != et.dtype:
            if not (np.can_cast(arr.dtype, et.dtype, "same_kind") or (arr.dtype.kind in "biuf" and et.is_real)):
                raise InferenceError(f"ember: input '{where}' holds {et.name} items, got {arr.dtype}")
            arr = arr.astype(et.dtype)
        return np.array(arr, copy=True)

    try:
        return pack_value(boundary_kind(param) or "sequence", value, conv)
    except TypeError as e:
        raise InferenceError(f"ember: input '{where}': {e}") from None


def _user_value(result: Any, value: Any) -> Any:
    """An output as the user sees it: a list for a sequence, None or a value for an optional."""
    from ember.ops.sequence import boundary_kind, unpack_value

    return unpack_value(boundary_kind(result), value)


class InferRequest:
    """One inference at a time on a compiled model (see the module docstring for threads and
    copies). Create with ``compiled_model.create_infer_request()``."""

    def __init__(self, compiled: CompiledModel) -> None:
        self._compiled = compiled
        n_in, n_out = len(compiled.inputs), len(compiled.outputs)
        self._inputs: list[np.ndarray | None] = [None] * n_in
        # The Tensor objects get_tensor handed out for inputs: the user may fill them in place or
        # give them a new shape (which allocates new storage); the next inference reads them.
        self._input_views: list[Tensor | None] = [None] * n_in
        self._outputs: list[np.ndarray] | None = None
        self._output_tensors: list[Tensor | None] = [None] * n_out
        self._profile: dict[str, float] | None = None
        self._latency_ms = 0.0
        self._callback: Callable[[Any], None] | None = None
        self._hook: Callable[[InferRequest], None] | None = None  # AsyncInferQueue's callback
        self._on_idle: Callable[[], None] | None = None  # AsyncInferQueue's bookkeeping
        self.userdata: Any = None
        self._done = threading.Event()
        self._done.set()
        self._error: BaseException | None = None
        self._callback_thread: int | None = None
        self._stoppable = _Stoppable()
        self._ticket: object | None = None  # begun by start_async, used by the queued job

    # -- tensors ------------------------------------------------------------------------
    def _check_idle(self, what: str) -> None:
        if not self._done.is_set():
            raise EmberError(f"ember: cannot {what} while this request is running; wait() first")

    def _output_key(self, key: Any) -> int | None:
        """The output index for ``key`` when it names an output and not an input."""
        c = self._compiled
        if isinstance(key, Output):
            for i, p in enumerate(c.outputs):
                if p == key:
                    return i
            return None
        if isinstance(key, str) and not c._has_input_name(key):
            try:
                return c._output_index(key)
            except EmberError:
                return None
        return None

    def set_tensor(self, key: Any, tensor: Tensor | np.ndarray) -> None:
        """Give input (or output) ``key`` (a name, a port, or an input index) a tensor. The
        request uses the tensor's memory: later writes to it are seen by the next inference.
        An output tensor receives a copy of each result."""
        self._check_idle("set a tensor")
        o = self._output_key(key)
        if o is not None:
            self._output_tensors[o] = tensor if isinstance(tensor, Tensor) else Tensor(tensor, shared_memory=True)
            return
        i = self._compiled._input_index(key)
        self._inputs[i] = convert_input(tensor, self._compiled._params[i], self._compiled._input_label(i), copy=False)
        self._input_views[i] = tensor if isinstance(tensor, Tensor) else None

    def set_tensors(self, tensors: Mapping[Any, Any]) -> None:
        """Set several tensors at once: ``{index, name or port: Tensor or array}``."""
        for k, v in tensors.items():
            self.set_tensor(k, v)

    def set_input_tensor(self, *args: Any) -> None:
        """``set_input_tensor(tensor)`` for a one-input model, or ``set_input_tensor(index, tensor)``."""
        if len(args) == 1:
            self.set_tensor(0, args[0])
        else:
            self.set_tensor(int(args[0]), args[1])

    def set_input_tensors(self, tensors: Mapping[Any, Any]) -> None:
        """Set several inputs at once: ``{index, name or port: Tensor or array}`` (see
        ``set_tensor`` for what is copied)."""
        self.set_tensors(tensors)

    def set_output_tensor(self, *args: Any) -> None:
        """Give output ``index`` (default 0) a preallocated tensor; the next inference writes into
        it."""
        index, tensor = (0, args[0]) if len(args) == 1 else (int(args[0]), args[1])
        self.set_tensor(self._compiled.outputs[index], tensor)

    def set_output_tensors(self, tensors: Mapping[int, Any]) -> None:
        """Give several outputs preallocated tensors: ``{index: tensor}``."""
        for k, v in tensors.items():
            self.set_output_tensor(k, v)

    def get_tensor(self, key: Any) -> Tensor:
        """The tensor of input or output ``key`` (name or port); it shares the request's memory.

        An input that was given no value yet gets one as in OpenVINO: zeros of the input's shape
        and element type (a dynamic dimension is 0 until the tensor's ``shape`` is set). Filling
        the tensor (``tensor.data[:] = ...``) or reshaping it feeds the next inference.
        """
        o = self._output_key(key)
        if o is not None:
            return self.get_output_tensor(o)
        i = self._compiled._input_index(key)
        view = self._input_views[i]
        if view is not None:
            return view
        value = self._inputs[i]
        if value is None:
            param = self._compiled._params[i]
            if param.element_type is Type.sequence or param.partial_shape.rank.is_dynamic:
                raise EmberError(f"ember: input '{self._compiled._input_label(i)}' (of dynamic rank or a "
                                 "sequence) has no tensor yet; set one with set_tensor")
            dims = [d.get_length() if d.is_static else 0 for d in param.partial_shape]
            view = Tensor(param.element_type, dims)
            if param.partial_shape.is_static:
                self._inputs[i] = view.data
        else:
            view = Tensor(value, shared_memory=True)
        self._input_views[i] = view
        return view

    def get_input_tensor(self, index: int = 0) -> Tensor:
        """The tensor of input ``index``; it shares the request's memory (see ``get_tensor``)."""
        return self.get_tensor(self._compiled.inputs[index])

    def get_output_tensor(self, index: int = 0) -> Tensor:
        """The tensor of output ``index`` from the last inference (shared with ``results``, not
        copied)."""
        if not -len(self._compiled.outputs) <= index < len(self._compiled.outputs):
            raise EmberError(f"ember: the model has {len(self._compiled.outputs)} outputs; no output {index}")
        preset = self._output_tensors[index]
        if preset is not None:
            return preset
        if self._outputs is None:  # as OpenVINO: a tensor of the output's shape, filled by inference
            port = self._compiled.outputs[index]
            if port.element_type is Type.sequence or port.partial_shape.rank.is_dynamic:
                raise EmberError("ember: no inference has run yet, so this output (of dynamic rank or a "
                                 "sequence) has no tensor")
            preset = Tensor(port.element_type, [d.get_length() if d.is_static else 0 for d in port.partial_shape])
            self._output_tensors[index] = preset
            return preset
        return Tensor(self._outputs[index], shared_memory=True)

    @property
    def input_tensors(self) -> list[Tensor]:
        """The tensors of every input, in order (see ``get_input_tensor``)."""
        return [self.get_input_tensor(i) for i in range(len(self._inputs))]

    @property
    def output_tensors(self) -> list[Tensor]:
        """The tensors of every output from the last inference, in order."""
        return [self.get_output_tensor(i) for i in range(len(self._compiled.outputs))]

    # -- inference ----------------------------------------------------------------------
    def _feed(self, inputs: Any, share: bool) -> None:
        if inputs is None:
            return
        c = self._compiled
        if isinstance(inputs, Mapping):
            items = list(inputs.items())
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(c.inputs):
                raise InferenceError(f"ember: the model has {len(c.inputs)} inputs, {len(inputs)} were given")
            items = list(enumerate(inputs))
        else:
            if len(c.inputs) != 1:
                raise InferenceError(f"ember: the model has {len(c.inputs)} inputs; pass a list or a dict")
            items = [(0, inputs)]
        for k, v in items:
            if isinstance(k, Input):
                k = k.source
            i = c._input_index(k)
            self._inputs[i] = convert_input(v, c._params[i], c._input_label(i), copy=not share)
            self._input_views[i] = None

    def _ready_inputs(self) -> list[np.ndarray]:
        c = self._compiled
        for i, view in enumerate(self._input_views):  # a handed-out tensor given a new shape
            if view is not None and view.data is not self._inputs[i]:
                self._inputs[i] = convert_input(view, c._params[i], c._input_label(i), copy=False)
        missing = [self._compiled._input_label(i) for i, v in enumerate(self._inputs) if v is None]
        if missing:
            raise InferenceError(f"ember: no value for input(s) {', '.join(missing)}")
        return list(self._inputs)  # type: ignore[arg-type]

    def _execute(self, inputs: list[np.ndarray]) -> None:
        profile: dict[str, float] | None = {} if self._compiled._profiling else None
        timeout_ms = int(getattr(self._compiled._cfg, "inference_timeout_ms", 0) or 0)
        stoppable = self._stoppable
        ticket = stoppable.begin() if self._ticket is None else self._ticket
        self._ticket = None
        token = None
        if timeout_ms > 0:
            token = _Watchdog.get().add(timeout_ms / 1000.0, lambda: stoppable.stop(
                f"it ran longer than INFERENCE_TIMEOUT={timeout_ms} ms", ticket))
        t0 = time.perf_counter()
        try:
            outs = self._compiled._executor.run(inputs, profile, stoppable)
        except InferenceCancelled:
            raise InferenceCancelled(f"ember: inference of '{self._compiled._model.friendly_name}' was stopped: "
                                     f"{stoppable.reason or 'cancel() was called'}") from None
        except MemoryError:
            shapes = ", ".join(str(list(np.shape(a))) for a in inputs)
            raise InferenceError(f"ember: inference of '{self._compiled._model.friendly_name}' ran out of memory "
                                 f"(input shapes {shapes}); use a smaller batch") from None
        finally:
            stoppable.end()
            if token is not None:
                _Watchdog.get().remove(token)
        self._latency_ms = (time.perf_counter() - t0) * 1e3
        for k, t in enumerate(self._output_tensors):
            if t is not None:
                if t.data.shape == outs[k].shape and t.data.flags.writeable:
                    np.copyto(t.data, outs[k], casting="unsafe")
                else:
                    t._data = np.array(outs[k], copy=True)
                outs[k] = t.data
        self._profile = profile
        self._outputs = outs

    def _results(self, share_outputs: bool) -> OVDict:
        outs = self._outputs or []
        values = list(outs) if share_outputs else [np.array(o, copy=True) for o in outs]
        results = self._compiled._model.get_results()
        values = [_user_value(r, v) if r.get_output_element_type(0) is Type.sequence else v
                  for r, v in zip(results, values)]
        return OVDict(self._compiled.outputs, values)

    def infer(self, inputs: Any = None, share_inputs: bool = False, share_outputs: bool = False) -> OVDict:
        """Run one inference on the calling thread and return the results.

        ``inputs``: one array (one-input models), a list in input order, or a dict keyed by
        input name, index or port. See the module docstring for ``share_inputs`` and
        ``share_outputs``.
        """
        self._check_idle("call infer")
        self._feed(inputs, share_inputs)
        ins = self._ready_inputs()
        self._done.clear()  # running: cancel() from another thread reaches it
        try:
            self._execute(ins)
        finally:
            self._done.set()
        return self._results(share_outputs)

    def start_async(self, inputs: Any = None, userdata: Any = None, share_inputs: bool = False) -> None:
        """Start one inference on a worker thread and return at once; ``wait`` for it. The
        callback set with ``set_callback`` runs on the worker thread when it finishes (with
        ``userdata`` when given here, else the one given to ``set_callback``)."""
        self._check_idle("start another inference")
        self._feed(inputs, share_inputs)
        ins = self._ready_inputs()
        if userdata is not None:
            self.userdata = userdata
        self._error = None
        self._ticket = self._stoppable.begin()
        self._done.clear()
        try:
            self._compiled._executor.submit(lambda: self._run_job(ins))
        except BaseException:
            self._ticket = None
            self._stoppable.end()
            self._done.set()
            raise

    def _run_job(self, inputs: list[np.ndarray]) -> None:
        try:
            self._execute(inputs)
        except BaseException as e:  # noqa: BLE001 - handed to wait()
            self._error = e
        self._callback_thread = threading.get_ident()
        try:
            if self._callback is not None:
                self._callback(self.userdata)
            if self._hook is not None:
                self._hook(self)
        except BaseException as e:  # noqa: BLE001 - a failing callback is reported by wait()
            log.error("ember: an inference callback raised %s: %s", type(e).__name__, e)
            if self._error is None:
                self._error = e
        finally:
            self._callback_thread = None
            self._done.set()
            if self._on_idle is not None:
                self._on_idle()

    def wait(self) -> None:
        """Block until the running inference (and its callback) is done; re-raise its error."""
        if self._callback_thread == threading.get_ident():
            raise EmberError("ember: wait() called from this request's own callback would never return")
        self._done.wait()
        self._raise_error()

    def wait_for(self, timeout: int) -> bool:
        """Wait at most ``timeout`` milliseconds (-1: forever); True when the request is done."""
        if timeout < 0:
            self.wait()
            return True
        if self._callback_thread == threading.get_ident():
            return False
        done = self._done.wait(timeout / 1000.0)
        if done:
            self._raise_error()
        return done

    def _raise_error(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def set_callback(self, callback: Callable[[Any], None] | None, userdata: Any = None) -> None:
        """Call ``callback(userdata)`` on the worker thread after each ``start_async``
        (on success and on failure; ``wait`` reports the failure)."""
        self._check_idle("set a callback")
        self._callback = callback
        self.userdata = userdata

    def cancel(self) -> None:
        """Stop the running inference (from any thread, including its own callback's), or
        the one ``start_async`` just queued; ``infer``/``wait`` then raise
        ``InferenceCancelled``. Does nothing when the request is idle. Returns at once."""
        self._stoppable.stop("cancel() was called")

    @property
    def latency(self) -> float:
        """Duration of the last inference, in milliseconds."""
        return self._latency_ms

    @property
    def results(self) -> OVDict:
        """The outputs of the last inference as a dict-like by port, name or index; raises
        EmberError before the first inference. The arrays are the request's own: copy them before
        the next inference if you keep them."""
        if self._outputs is None:
            raise EmberError("ember: no inference has run yet")
        return OVDict(self._compiled.outputs, list(self._outputs))

    @property
    def model_inputs(self) -> list[Output]:
        """The compiled model's input ports."""
        return self._compiled.inputs

    @property
    def model_outputs(self) -> list[Output]:
        """The compiled model's output ports."""
        return self._compiled.outputs

    def get_compiled_model(self) -> CompiledModel:
        """The CompiledModel this request belongs to."""
        return self._compiled

    def get_profiling_info(self) -> list[ProfilingInfo]:
        """Per-op times of the last inference, in execution order; empty unless the model was
        compiled with ``PERF_COUNT``/``enable_profiling`` on."""
        if self._profile is None:
            return []
        types = self._compiled._node_types
        per_op = getattr(self._compiled._executable, "exec_types", None) or {}  # e.g. the CPU's int8 kernels
        out = []
        for name, secs in self._profile.items():
            t = timedelta(seconds=secs)
            out.append(ProfilingInfo(name, types.get(name, ""), per_op.get(name, self._compiled._exec_type), t, t))
        return out

    @property
    def profiling_info(self) -> list[ProfilingInfo]:
        """Per-node timings of the last inference (needs ``ENABLE_PROFILING``/``PERF_COUNT``)."""
        return self.get_profiling_info()

    def query_state(self) -> list[Any]:
        """Variable states of stateful models; ember's models keep state in explicit inputs and
        outputs, so this is empty."""
        return []

    def reset_state(self) -> None:
        """Reset variable states (a no-op: ember's models carry state in explicit inputs and
        outputs)."""
        return None


class AsyncInferQueue:
    """A pool of ``jobs`` infer requests fed round the clock: ``start_async`` takes the next
    idle request (waiting for one if all are busy), and the callback set with
    ``set_callback(fn)`` runs as ``fn(request, userdata)`` on a worker thread when each
    inference ends. ``jobs=0`` uses the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS.

    A callback may call ``start_async`` on its own queue: when no request is idle, the job is
    queued and starts on the first request that finishes (where OpenVINO would deadlock, since
    the callback's own request is released only after the callback returns). ``wait_all``
    waits for those queued jobs too; calling it from a callback raises ``EmberError``.
    """

    def __init__(self, model: CompiledModel, jobs: int = 0) -> None:
        from ember.runtime.properties import MAX_REQUESTS

        if jobs < 0 or jobs > MAX_REQUESTS:
            raise EmberError(f"ember: AsyncInferQueue needs 0 <= jobs <= {MAX_REQUESTS}, got {jobs}")
        n = jobs or int(model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [model.create_infer_request() for _ in range(n)]
        self._userdata: list[Any] = [None] * n
        self._idle: collections.deque[int] = collections.deque(range(n))
        self._cond = threading.Condition()
        self._callback: Callable[[InferRequest, Any], None] | None = None
        self._errors: list[BaseException] = []
        self._pending: collections.deque[tuple[Any, Any, bool]] = collections.deque()
        for i, r in enumerate(self._requests):
            r._hook = self._make_hook(i)
            r._on_idle = self._make_release(i)

    # The hooks hold the queue weakly: no reference cycle, so a queue nobody uses is freed at
    # once (and with it, its requests and possibly the compiled model and its threads).
    def _make_hook(self, i: int) -> Callable[[InferRequest], None]:
        ref = weakref.ref(self)

        def hook(request: InferRequest) -> None:
            queue = ref()
            if queue is None:
                return
            try:
                if request._error is not None:
                    with queue._cond:
                        queue._errors.append(request._error)
                    request._error = None
                if queue._callback is not None:
                    queue._callback(request, queue._userdata[i])
            except BaseException as e:  # noqa: BLE001 - reported by wait_all
                log.error("ember: an AsyncInferQueue callback raised %s: %s", type(e).__name__, e)
                with queue._cond:
                    queue._errors.append(e)
        return hook

    def _make_release(self, i: int) -> Callable[[], None]:
        ref = weakref.ref(self)

        def release() -> None:
            queue = ref()
            if queue is None:
                return
            while True:
                with queue._cond:
                    if not queue._pending:
                        queue._idle.append(i)
                        queue._cond.notify_all()
                        return
                    inputs, userdata, share = queue._pending.popleft()
                # a job a callback queued: run it on this request, which has just become free
                queue._userdata[i] = userdata
                try:
                    queue._requests[i].start_async(inputs, share_inputs=share)
                    return
                except BaseException as e:  # noqa: BLE001 - reported by wait_all
                    with queue._cond:
                        queue._errors.append(e)
        return release

    def _in_own_callback(self) -> bool:
        me = threading.get_ident()
        return any(r._callback_thread == me for r in self._requests)

    def set_callback(self, callback: Callable[[InferRequest, Any], None] | None) -> None:
        """Call ``callback(request, userdata)`` after each inference, on a worker thread."""
        self._callback = callback

    def _take_idle(self) -> int:
        with self._cond:
            while not self._idle:
                self._cond.wait()
            return self._idle.popleft()

    def get_idle_request_id(self) -> int:
        """The id of an idle request, waiting for one to finish if all are busy."""
        with self._cond:
            while not self._idle:
                self._cond.wait()
            return self._idle[0]

    def start_async(self, inputs: Any = None, userdata: Any = None, share_inputs: bool = False) -> None:
        """Start an inference on the next idle request (blocks while all are busy; from a
        callback of this queue, queues the job instead of blocking)."""
        with self._cond:
            if not self._idle and self._in_own_callback():
                self._pending.append((inputs, userdata, share_inputs))
                return
        i = self._take_idle()
        self._userdata[i] = userdata
        try:
            self._requests[i].start_async(inputs, share_inputs=share_inputs)
        except BaseException:
            with self._cond:
                self._idle.appendleft(i)
                self._cond.notify_all()
            raise

    def is_ready(self) -> bool:
        """True when at least one request is idle (``start_async`` would not block)."""
        with self._cond:
            return bool(self._idle)

    def wait_all(self) -> None:
        """Block until every request is idle and no queued job is left; re-raise the first
        error any of them met."""
        if self._in_own_callback():
            raise EmberError("ember: AsyncInferQueue.wait_all() called from one of its callbacks would never "
                             "return (the callback's request is busy until the callback ends)")
        with self._cond:
            while len(self._idle) < len(self._requests) or self._pending:
                self._cond.wait()
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    @property
    def userdata(self) -> list[Any]:
        """The userdata of each job slot, as last passed to ``start_async``."""
        return list(self._userdata)

    def __len__(self) -> int:
        return len(self._requests)

    def __getitem__(self, i: int) -> InferRequest:
        return self._requests[i]

    def __iter__(self) -> Iterator[InferRequest]:
        return iter(self._requests)

    def __repr__(self) -> str:
        return f"<AsyncInferQueue: {len(self._requests)} jobs>"
