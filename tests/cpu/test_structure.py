"""The layering rules of issue 11, checked on the source: the graph layer imports no ops, the
CPU device's modules form no import cycle and import no private names from each other, code
outside ember/graph uses the public node API, and registries refuse duplicates."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.errors import EmberError

ROOT = Path(ember.__file__).parent
INTERNALS = ("_inputs", "_consumers", "_out_shapes", "_out_types")


@functools.cache
def _modules(package: Path) -> dict[str, ast.Module]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``tree``, at any depth (lazy imports count)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_graph_does_not_import_ops_or_devices() -> None:
    for name, tree in _modules(ROOT / "graph").items():
        for mod, _ in _imports(tree):
            assert not mod.startswith(("ember.ops", "ember.devices", "ember.runtime")), f"{name} imports {mod}"


def test_cpu_device_has_no_import_cycle() -> None:
    mods = _modules(ROOT / "devices" / "cpu")
    edges = {name: set() for name in mods}
    for name, tree in mods.items():
        for mod, names in _imports(tree):
            for target in (mod, *(f"{mod}.{n}" for n in names)):
                if target in mods and target != name:
                    edges[name].add(target)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in mods:
        if name not in state:
            visit(name, [name])


def test_cpu_modules_import_no_private_names() -> None:
    for name, tree in _modules(ROOT / "devices" / "cpu").items():
        for mod, names in _imports(tree):
            if mod.startswith("ember"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{name} imports private {private} from {mod}"


def _own_attributes(tree: ast.Module) -> set[str]:
    """Attributes a module's classes set on ``self`` (``self._inputs = ...``): their own, not a Node's."""
    own = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                own.add(t.attr)
    return own


@pytest.mark.parametrize("package", ["devices", "passes", "preprocess", "runtime", "tools", "quantize", "ops",
                                     "frontends", "io", "serve", "nncf", "zoo", "properties", "convert.py",
                                     "layout_helpers.py"])
def test_public_node_api_outside_graph(package: str) -> None:
    path = ROOT / package
    trees = _modules(path) if path.is_dir() else {package: ast.parse(path.read_text())}
    for name, tree in trees.items():
        own = _own_attributes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in own:
                    continue  # an object's own attribute of that name (e.g. PrePostProcessor._inputs)
                raise AssertionError(f"{name}:{node.lineno} reads node internals .{node.attr}")


def test_builder_registry_refuses_a_duplicate_name() -> None:
    from ember.graph import registry

    def relu(x, name=None):  # noqa: ANN001, ANN202 - a second 'relu'
        return x

    ember.opset.relu  # noqa: B018 - ops loaded
    with pytest.raises(EmberError, match="two opset builders named 'relu'"):
        registry.builder(relu)
    assert registry.get_builder("relu").__module__ == "ember.ops.elementwise"


def test_lowering_rules_one_table_and_no_duplicates() -> None:
    from ember.devices.cpu.lowering import driver

    driver.load_rules()
    assert {"Convolution", "MatMul", "Add", "Reshape", "If", "Softmax"} <= set(driver.RULES)
    with pytest.raises(EmberError, match="two CPU lowering rules for MatMul"):
        driver.lowers("MatMul")(lambda lowering, node: False)


def test_devices_receive_the_typed_compile_config() -> None:
    """OpenVINO's string keys stop at Core.compile_model: a device's transform/compile get the
    typed CompileConfig with streams and threads resolved, and AUTO's choice travels as fields."""
    from ember.devices.base import register_device, unregister_device
    from ember.devices.reference.device import ReferenceDevice
    from ember.runtime.properties import CompileConfig, PerformanceMode

    seen: list[tuple[str, object]] = []

    class Recording(ReferenceDevice):
        name = "RECORDING"

        def transform(self, model, config):  # noqa: ANN001, ANN202
            seen.append(("transform", config))
            return model

        def compile(self, model, config):  # noqa: ANN001, ANN202
            seen.append(("compile", config))
            return super().compile(model, config)

        def query_model(self, model, config):  # noqa: ANN001, ANN202
            seen.append(("query", config))
            return super().query_model(model, config)

    register_device("RECORDING", Recording)
    try:
        x = ember.opset.parameter([2, 3], ember.Type.f32, name="x")
        model = ember.Model([ember.opset.relu(x)], [x], "m")
        core = ember.Core()
        compiled = core.compile_model(model, "RECORDING", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2,
                                                           "INFERENCE_PRECISION_HINT": "bf16",
                                                           "EXECUTION_MODE_HINT": "ACCURACY"})
        assert compiled.create_infer_request().infer({"x": -np.ones((2, 3), np.float32)})[0].max() == 0
        core.query_model(model, "RECORDING")
        core.compile_model(model, "AUTO:RECORDING,REFERENCE", {"ALLOW_FALLBACK": False})
    finally:
        unregister_device("RECORDING")
    assert [what for what, _ in seen] == ["transform", "compile", "query", "query", "transform", "compile"]
    for _, config in seen:
        assert isinstance(config, CompileConfig)
    first = seen[1][1]
    assert isinstance(first, CompileConfig)
    assert first.performance_mode is PerformanceMode.THROUGHPUT and first.num_streams == 2
    assert first.inference_num_threads >= 1 and first.effective_precision == ember.Type.f32  # ACCURACY: f32
