"""Seeded mutation fuzzing of ember's model readers, one case at a time in a worker process.

A case is ``(kind, seed)``: the worker rebuilds the same mutant from the seed, reads it
(IR: ``read_ir_bytes``; ONNX: ``convert_model``), and when it loads, runs it on REFERENCE and
on CPU with seeded inputs and compares them. Outcomes:

* ``correct``: it loaded, and CPU gave REFERENCE's result (or both refused with EmberError);
* ``clean_error``: ember refused it with one ``EmberError`` (reading, compiling or running);
* ``raw_exception``: a Python exception that is not an ``EmberError`` escaped (a bug);
* ``mismatch``: CPU and REFERENCE disagree (a silent wrong result: a bug);
* ``crash``: the worker process died (a signal, an abort: a bug);
* ``hang``: the case did not finish within the per-case time limit (a bug).

The parent (``run_cases``) feeds seeds to a worker over a pipe and restarts it after a
crash or a hang, so each case is isolated the way a child process per case would be, without
paying for an interpreter start per case. The worker limits its address space, so a mutant
that asks for terabytes fails fast instead of swapping.
"""

from __future__ import annotations

import copy
import json
import os
import random
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("ir", "onnx")
BAD_OUTCOMES = ("raw_exception", "mismatch", "crash", "hang")
OUTCOMES = ("correct", "clean_error") + BAD_OUTCOMES
WORKER_MEMORY = 6 << 30  # bytes of address space a worker may use

_INTERESTING_INTS = ["0", "-1", "1", "2", "3", "-2", "7", "255", "65536", "2147483647", "2147483648", "-2147483649",
                     "9223372036854775807", "9223372036854775808", "99999999999999999999", "1e3", "", "abc", " 2",
                     "1..4", "?", "1,2", "0x10", "nan", "inf"]
_INTERESTING_STRINGS = ["", "f32", "f16", "i64", "i32", "u8", "boolean", "string", "u1", "i4", "undefined", "dynamic",
                        "numpy", "none", "explicit", "pdpd", "opset1", "opset8", "opset99", "Add", "Loop", "Parameter",
                        "Const", "Result", "x" * 300, "\u00e9\u20ac", "a,b", "\\,"]


# -- base models ---------------------------------------------------------------------------------

def base_models() -> list:
    """A few small ember Models that cover common ops, constants, a body op and dynamic dims."""
    import ember
    from ember import opset

    rng = np.random.default_rng(1234)
    models = []
    x = opset.parameter([1, 3, 8, 8], np.float32, name="image")
    w = opset.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    c = opset.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
    r = opset.relu(opset.add(c, opset.constant(rng.standard_normal((1, 4, 1, 1)).astype(np.float32))))
    p = opset.max_pool(r, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2])
    flat = opset.reshape(p.output(0), opset.constant(np.array([1, -1], np.int64)), False)
    logits = opset.matmul(flat, opset.constant(rng.standard_normal((64, 5)).astype(np.float32)), False, False)
    models.append(ember.Model([opset.softmax(logits, 1)], [x], "convnet"))

    a = opset.parameter([-1, 6], np.float32, name="a")
    b = opset.parameter([6], np.float32, name="b")
    t = opset.transpose(opset.multiply(a, b), opset.constant(np.array([1, 0], np.int64)))
    g = opset.gather(t, opset.constant(np.array([0, 2, 5], np.int64)), opset.constant(np.int64(0)))
    cat = opset.concat([g, opset.sigmoid(g)], 0)
    models.append(ember.Model([cat, opset.reduce_mean(a, opset.constant(np.array([1], np.int64)), True)],
                              [a, b], "dynamic"))

    n = opset.parameter([], np.int64, name="n")
    v = opset.parameter([4], np.float32, name="v")
    bv = opset.parameter([4], np.float32, name="bv")
    step = opset.add(bv, opset.constant(np.ones(4, np.float32)))
    body = ember.Model([step, opset.constant(np.array(True))], [bv], "body")
    loop = opset.loop(n, opset.constant(np.array(True)))
    loop.set_function(body)
    loop.set_special_body_ports([-1, 1])
    loop.set_merged_input(bv, v.output(0), step.output(0))
    models.append(ember.Model([loop.get_iter_value(step.output(0), -1)], [n, v], "loop"))
    return models


def base_ir() -> list[tuple[bytes, bytes]]:
    from ember.io import serialize

    return [serialize(m) for m in base_models()]


def base_onnx() -> list[bytes]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(99)
    out = []
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    fc = numpy_helper.from_array(rng.standard_normal((64, 5)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w, bias, fc, shape])
    out.append(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())

    idx = numpy_helper.from_array(np.array([0, 2, 1], np.int64), "idx")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Mul", ["a", "b"], ["ab"]),
             helper.make_node("Transpose", ["ab"], ["t"], perm=[1, 0]),
             helper.make_node("Gather", ["t", "idx"], ["g"], axis=0),
             helper.make_node("Sigmoid", ["g"], ["s"]),
             helper.make_node("Concat", ["g", "s"], ["y"], axis=0),
             helper.make_node("ReduceMean", ["a", "axes"], ["z"], keepdims=1),
             helper.make_node("Where", ["cond", "a", "ab"], ["w"])]
    g = helper.make_graph(nodes, "dynamic",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 6]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [6]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, None)], [idx, axes])
    out.append(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())

    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "one"], ["acc_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "one")])
    g = helper.make_graph([helper.make_node("Loop", ["n", "c", "v"], ["y"], body=body)], "loop",
                          [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          [numpy_helper.from_array(np.array(True), "c")])
    out.append(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return out


# -- mutators -----------------------------------------------------------------------------------

def _elements(root: ET.Element) -> list[tuple[ET.Element, ET.Element]]:
    out = []
    for parent in root.iter():
        for child in parent:
            out.append((parent, child))
    return out


def mutate_ir(xml: bytes, weights: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """One to three structural mutations of an IR pair (or a byte-level one)."""
    if rng.random() < 0.1:
        data = bytearray(xml)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), weights
    root = ET.fromstring(xml)
    blob = bytearray(weights)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["attr", "attr", "dim", "delete", "duplicate", "text", "bin", "edge", "move"])
        pairs = _elements(root)
        parent, elem = rng.choice(pairs)
        if op == "attr" and elem.attrib:
            key = rng.choice(sorted(elem.attrib))
            value = elem.attrib[key]
            if value.lstrip("-").isdigit() or key in ("offset", "size", "id", "from-port", "to-port", "from-layer",
                                                       "to-layer", "axis"):
                elem.set(key, rng.choice(_INTERESTING_INTS + [str(int(value) + rng.choice([-1, 1]))
                                                              if value.lstrip("-").isdigit() else "0"]))
            elif "," in value:
                parts = value.split(",")
                parts[rng.randrange(len(parts))] = rng.choice(_INTERESTING_INTS)
                elem.set(key, ",".join(parts))
            else:
                elem.set(key, rng.choice(_INTERESTING_STRINGS))
        elif op == "dim":
            dims = list(root.iter("dim"))
            if dims:
                rng.choice(dims).text = rng.choice(_INTERESTING_INTS)
        elif op == "delete":
            parent.remove(elem)
        elif op == "duplicate":
            parent.append(copy.deepcopy(elem))
        elif op == "text" and elem.text is not None and elem.text.strip():
            elem.text = rng.choice(_INTERESTING_INTS)
        elif op == "bin" and blob:
            choice = rng.random()
            if choice < 0.3:
                del blob[rng.randrange(len(blob)):]
            elif choice < 0.6:
                for _ in range(rng.randint(1, 16)):
                    blob[rng.randrange(len(blob))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
            else:
                blob.extend(os.urandom(rng.randint(1, 64)))
        elif op == "edge":
            edges = list(root.iter("edge"))
            if len(edges) >= 2:
                e1, e2 = rng.sample(edges, 2)
                key = rng.choice(["from-layer", "to-layer", "from-port", "to-port"])
                v1, v2 = e1.get(key), e2.get(key)
                if v1 is not None and v2 is not None:
                    e1.set(key, v2)
                    e2.set(key, v1)
        elif op == "move":
            targets = [e for _, e in pairs if e is not elem and elem not in list(e.iter())]
            if targets:
                parent.remove(elem)
                rng.choice(targets).append(elem)
    return ET.tostring(root), bytes(blob)


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations of an ONNX model's protobuf (or of its bytes)."""
    import onnx
    from onnx import TensorProto

    if rng.random() < 0.15:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    m = onnx.ModelProto()
    m.ParseFromString(data)
    graphs = [m.graph] + [a.g for n in m.graph.node for a in n.attribute if a.HasField("g")]
    for _ in range(rng.randint(1, 3)):
        g = rng.choice(graphs)
        op = rng.choice(["attr", "attr", "op", "io", "init", "init", "vi", "opset", "external", "drop"])
        if op == "attr" and g.node:
            n = rng.choice(list(g.node))
            if n.attribute:
                a = rng.choice(list(n.attribute))
                if a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice([0, -1, 1, 2, 3, -7, 2**31, 2**62, -2**62])
                elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                    a.ints[rng.randrange(len(a.ints))] = rng.choice([0, -1, 1, 2, 5, 2**31, 2**62])
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf")])
                elif a.type == onnx.AttributeProto.INTS:
                    a.ints.extend([rng.choice([0, 1, -1, 2**40])])
        elif op == "op" and g.node:
            rng.choice(list(g.node)).op_type = rng.choice(
                ["Add", "Relu", "MatMul", "Reshape", "Concat", "Gather", "Softmax", "Conv", "Identity", "NoSuchOp",
                 "Loop", "If", "Expand", "Tile", "Range", "ConstantOfShape", "Resize", "Slice", "Pad", "Cast"])
        elif op == "io" and g.node:
            n = rng.choice(list(g.node))
            names = [v.name for v in g.input] + [t.name for t in g.initializer] + [o for k in g.node for o in k.output]
            if n.input and rng.random() < 0.5:
                n.input[rng.randrange(len(n.input))] = rng.choice(names + ["", "missing"])
            elif n.input:
                del n.input[rng.randrange(len(n.input))]
            else:
                n.input.append(rng.choice(names))
        elif op == "init" and g.initializer:
            t = rng.choice(list(g.initializer))
            choice = rng.random()
            if choice < 0.3 and t.dims:
                t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 3, -1, 2**20, 2**40])
            elif choice < 0.5:
                t.data_type = rng.choice([TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT4, TensorProto.STRING,
                                          TensorProto.BOOL, TensorProto.FLOAT16, 99])
            elif choice < 0.8 and t.raw_data:
                raw = bytearray(t.raw_data)
                if rng.random() < 0.5:
                    del raw[rng.randrange(len(raw)):]
                else:
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                t.raw_data = bytes(raw)
            else:
                t.dims.append(rng.choice([1, 2, 0]))
        elif op == "vi" and (g.input or g.output):
            v = rng.choice(list(g.input) + list(g.output))
            dims = v.type.tensor_type.shape.dim
            if len(dims):
                d = dims[rng.randrange(len(dims))]
                if rng.random() < 0.5:
                    d.dim_value = rng.choice([0, 1, 2, 7, 2**31, 2**40])
                else:
                    d.dim_param = rng.choice(["n", "", "x y"])
            else:
                v.type.tensor_type.elem_type = rng.choice([1, 6, 7, 9, 10, 99])
        elif op == "opset":
            m.opset_import[0].version = rng.choice([1, 6, 11, 13, 17, 18, 21, 99, 0, -1])
        elif op == "external" and g.initializer:
            t = rng.choice(list(g.initializer))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in rng.choice([[("location", "../x.bin")], [("location", "/etc/passwd")],
                                          [("location", "w\x00.bin")], [("location", "w.bin"), ("offset", "abc")],
                                          [("location", "")]]):
                e = t.external_data.add()
                e.key, e.value = key, value
        elif op == "drop" and g.node:
            del g.node[rng.randrange(len(g.node))]
    return m.SerializeToString()


def make_case(kind: str, seed: int) -> tuple[bytes, bytes]:
    """The mutant of ``seed``: (xml, bin) for IR, (onnx bytes, b"") for ONNX."""
    rng = random.Random(seed)
    if kind == "ir":
        bases = _cached("ir", base_ir)
        xml, weights = bases[seed % len(bases)]
        return mutate_ir(xml, weights, rng)
    bases = _cached("onnx", base_onnx)
    return mutate_onnx(bases[seed % len(bases)], rng), b""


_CACHE: dict[str, list] = {}


def _cached(key: str, fn):  # noqa: ANN001, ANN202 - tiny memo
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


# -- running one case (in the worker) ------------------------------------------------------------

def _inputs(model, rng: np.random.Generator) -> list[np.ndarray]:  # noqa: ANN001
    from ember.graph.types import Type

    out = []
    for p in model.get_parameters():
        shape = p.partial_shape
        dims = [2] if not shape.rank_is_static else [min(d.get_length(), 8) if d.is_static else 2 for d in shape]
        if p.element_type is Type.boolean:
            out.append(rng.random(dims) < 0.5)
        elif p.element_type.is_real:
            out.append(rng.standard_normal(dims).astype(p.element_type.dtype))
        elif p.element_type is Type.string:
            out.append(np.full(dims, "s", dtype=object))
        else:
            out.append(rng.integers(0, 4, dims).astype(p.element_type.dtype))
    return out


def _same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.dtype.kind in "fc":
            if not np.allclose(x, y, rtol=1e-3, atol=1e-4, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


# A mutant may loop forever by the spec (an ONNX Loop with no trip count and a condition that
# stays true): INFERENCE_TIMEOUT turns that into InferenceCancelled, a clean error.
_LIMITS = {"INFERENCE_TIMEOUT": 3000}


def run_case(kind: str, seed: int) -> tuple[str, str]:
    """``(outcome, detail)`` of one case, in this process."""
    import tempfile

    import ember
    from ember.errors import EmberError

    data, weights = make_case(kind, seed)
    try:
        if kind == "ir":
            from ember.io import read_ir_bytes

            model = read_ir_bytes(data, weights)
        else:
            with tempfile.TemporaryDirectory() as d:  # a file, so external data is looked up
                path = Path(d) / "m.onnx"
                path.write_bytes(data)
                model = ember.convert_model(path)
        inputs = _inputs(model, np.random.default_rng(seed))
        try:
            want = list(ember.compile_model(model, "REFERENCE", _LIMITS)(inputs).to_tuple())
        except EmberError as e:
            return "clean_error", f"REFERENCE: {e}"[:300]
        try:
            got = list(ember.compile_model(model, "CPU", _LIMITS)(inputs).to_tuple())
        except EmberError as e:
            return "clean_error", f"CPU: {e}"[:300]
        if not _same(want, got):
            return "mismatch", "CPU differs from REFERENCE"
        return "correct", ""
    except EmberError as e:
        return "clean_error", str(e)[:300]
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        import traceback

        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "raw_exception", f"{type(e).__name__}: {str(e)[:200]} at {Path(tb.filename).name}:{tb.lineno}"


def worker_main() -> None:
    """Read ``kind seed`` lines on stdin, answer one JSON line per case on stdout."""
    import logging
    import resource
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    sys.setrecursionlimit(3000)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ValueError, OSError):
        pass
    make_case("ir", 0)
    make_case("onnx", 0)
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not break the protocol
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        kind, seed = line.split()
        outcome, detail = run_case(kind, int(seed))
        out.write(json.dumps({"outcome": outcome, "detail": detail}) + "\n")
        out.flush()


# -- the parent ---------------------------------------------------------------------------------

@dataclass
class Report:
    """What a fuzzing run found: outcome counts per kind and the seeds of every bad case."""

    counts: dict[str, Counter] = field(default_factory=dict)
    bad: list[tuple[str, int, str, str]] = field(default_factory=list)  # kind, seed, outcome, detail
    seconds: float = 0.0

    def add(self, kind: str, seed: int, outcome: str, detail: str) -> None:
        self.counts.setdefault(kind, Counter())[outcome] += 1
        if outcome in BAD_OUTCOMES:
            self.bad.append((kind, seed, outcome, detail))

    def table(self) -> str:
        head = f"{'kind':6s} {'cases':>6s} " + " ".join(f"{o:>13s}" for o in OUTCOMES)
        rows = [head, "-" * len(head)]
        for kind, c in sorted(self.counts.items()):
            rows.append(f"{kind:6s} {sum(c.values()):6d} " + " ".join(f"{c[o]:13d}" for o in OUTCOMES))
        return "\n".join(rows)


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + str(Path(__file__).parent) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-c", "import fuzzlib; fuzzlib.worker_main()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, cwd=str(Path(__file__).parent))
        if self._readline(120) != "ready":
            self.kill()
            raise RuntimeError("the fuzz worker did not start")

    def _readline(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def run(self, kind: str, seed: int, timeout: float) -> tuple[str, str]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{kind} {seed}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "crash", "worker gone"
        line = self._readline(timeout)
        if line is None:
            if self.proc.poll() is not None:
                return "crash", f"worker died with {self.proc.returncode}"
            return "hang", f"no answer within {timeout} s"
        reply = json.loads(line)
        return reply["outcome"], reply["detail"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_cases(kinds: tuple[str, ...] = KINDS, seconds: float = 20.0, start_seed: int = 0, max_cases: int | None = None,
              case_timeout: float = 60.0, min_cases: int = 0) -> Report:
    """Fuzz for about ``seconds`` once the worker is up (cases of ``kinds`` in turn, seeds
    from ``start_seed``), and for at least ``min_cases`` cases. A case with no answer within
    ``case_timeout`` seconds is a hang (generous: a loaded machine must not make one)."""
    report = Report()
    worker = _Worker()
    t0 = time.monotonic()
    seed = start_seed
    n = 0
    try:
        while (time.monotonic() - t0 < seconds or n < min_cases) and (max_cases is None or n < max_cases):
            for kind in kinds:
                outcome, detail = worker.run(kind, seed, case_timeout)
                report.add(kind, seed, outcome, detail)
                n += 1
                if outcome in ("crash", "hang") or not worker.alive():
                    worker.kill()
                    worker = _Worker()
            seed += 1
    finally:
        worker.kill()
    report.seconds = time.monotonic() - t0
    return report
