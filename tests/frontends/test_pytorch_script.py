"""The TorchScript path of the PyTorch frontend: scripted and traced modules, saved archives by
path, and the Silero VAD TorchScript model shipped in ``silero-vad==6.2.3`` against its own ONNX
variant (state carried between chunks), on REFERENCE and CPU."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
from ember import zoo  # noqa: E402
from ember.errors import UnsupportedOpError  # noqa: E402

RTOL = 1e-4
nn = torch.nn


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got.astype(np.float64) - want).max()) / max(float(np.abs(want).max()), 1e-6)


class ShapeDependent(nn.Module):
    """Branches on ranks and sizes (known at conversion), size arithmetic, lists, an LSTM cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 3, padding=1)
        self.cell = nn.LSTMCell(8, 6)
        self.proj = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        b, c, t = x.size()
        y = torch.relu(self.conv(x))
        y = y[:, :, : t // 2 * 2].reshape(b, 8, t // 2, 2).mean(-1).mean(-1)
        if len(state) > 0:
            h, cc = self.cell(y, (state[0], state[1]))
        else:
            h, cc = self.cell(y)
        return torch.sigmoid(self.proj(h)), torch.stack([h, cc])


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 2, 11, generator=g), torch.randn(2, 3, 6, generator=g)


@pytest.mark.parametrize("how", ["script", "trace", "archive", "by-name"])
def test_torchscript_matches_torch(how: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ShapeDependent().eval()
    x, state = _inputs()
    if how == "script":
        src = torch.jit.script(module)
    else:
        src = torch.jit.trace(module, (x, state))
        if how == "archive":
            torch.jit.save(src, str(tmp_path / "model.pt"))
            src = tmp_path / "model.pt"
    example = {"state": state, "x": x} if how == "by-name" else (x, state)
    model = ember.convert_model(src, example_input=example)
    with torch.no_grad():
        want = module(x, state)
    compiled = ember.Core().compile_model(model, "REFERENCE")
    got = compiled([x.numpy(), state.numpy()])
    for i, w in enumerate(want):
        assert relative_difference(got[i], w.numpy()) <= RTOL


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_dynamic_shapes(how: str) -> None:
    """Sizes read at run time (``x.size()`` unpacked, ``t // 2 * 2``) become shape subgraphs."""
    torch.manual_seed(0)
    module = ShapeDependent().eval()
    x, state = _inputs()
    src = torch.jit.script(module) if how == "script" else torch.jit.trace(module, (x, state))
    model = ember.convert_model(src, example_input=(x, state), input=[[-1, 2, -1], [2, -1, 6]])
    assert model.inputs[0].partial_shape.is_dynamic
    compiled = ember.Core().compile_model(model, "REFERENCE")
    g = torch.Generator().manual_seed(1)
    for b, t in ((1, 6), (5, 20)):
        xx, ss = torch.randn(b, 2, t, generator=g), torch.randn(2, b, 6, generator=g)
        got = compiled([xx.numpy(), ss.numpy()])
        with torch.no_grad():
            want = module(xx, ss)
        for i, w in enumerate(want):
            assert relative_difference(got[i], w.numpy()) <= RTOL, (b, t)


@pytest.mark.parametrize("layer", [nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True),
                                   nn.LSTM(4, 5, bias=False), nn.GRU(4, 6, num_layers=2, bidirectional=True),
                                   nn.GRU(4, 3, batch_first=True)], ids=["lstm-2-bi", "lstm-nobias", "gru-2-bi", "gru"])
def test_recurrent_layers_as_sequences(layer: nn.Module) -> None:
    """``aten::lstm`` / ``aten::gru`` of traced modules as LSTMSequence / GRUSequence per layer."""
    torch.manual_seed(0)
    layer = layer.eval()
    x = torch.randn(2, 7, 4) if layer.batch_first else torch.randn(7, 2, 4)
    model = ember.convert_model(torch.jit.trace(layer, (x,)), example_input=(x,))
    assert {n.type_name for n in model.get_ordered_ops()} & {"LSTMSequence", "GRUSequence"}
    with torch.no_grad():
        y, state = layer(x)
    states = state if isinstance(state, tuple) else (state,)
    got = ember.Core().compile_model(model, "REFERENCE")([x.numpy()])
    for i, want in enumerate((y, *states)):
        assert relative_difference(got[i], want.numpy()) <= RTOL, i


def test_ember_convert_command_on_a_torchscript_archive(tmp_path: Path) -> None:
    from ember.tools.cli import main

    torch.manual_seed(0)
    module = ShapeDependent().eval()
    x, state = _inputs()
    torch.jit.save(torch.jit.script(module), str(tmp_path / "net.pt"))
    assert main(["convert", str(tmp_path / "net.pt"), "--input", "x[3,2,11],state[2,3,6]",
                 "--compress_to_fp16=false", "-o", str(tmp_path / "ir")]) == 0
    core = ember.Core()
    compiled = core.compile_model(core.read_model(str(tmp_path / "ir" / "net.xml")), "REFERENCE")
    got = compiled([x.numpy(), state.numpy()])
    with torch.no_grad():
        want = module(x, state)
    for i, w in enumerate(want):
        assert relative_difference(got[i], w.numpy()) <= RTOL


def test_torchscript_unsupported_ops_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.frontends.pytorch import registry

    registry.load_converters()
    monkeypatch.delitem(registry._CONVERTERS, "aten.sigmoid")
    monkeypatch.delitem(registry._CONVERTERS, "aten.lstm_cell")
    with pytest.raises(UnsupportedOpError) as e:
        ember.convert_model(torch.jit.script(ShapeDependent().eval()), example_input=_inputs())
    msg = str(e.value)
    assert "2 unsupported op(s)" in msg and "aten.sigmoid" in msg and "aten.lstm_cell" in msg
    assert "test_pytorch_script.py" in msg


def test_runtime_branch_becomes_an_if() -> None:
    @torch.jit.script
    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            y = torch.matmul(x, w) * 2
        else:
            y = x[:, :3] - 1
        if x.shape[0] != 4:
            raise ValueError("four rows")
        return torch.relu(y)

    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, generator=g)
    x = torch.randn(4, 5, generator=g)
    model = ember.convert_model(f, example_input=(x, w))
    assert "If" in {n.type_name for n in model.get_ordered_ops()}
    compiled = ember.Core().compile_model(model, "REFERENCE")
    for sign in (1.0, -1.0):
        xs = sign * x.abs()
        assert relative_difference(compiled([xs.numpy(), w.numpy()])[0], f(xs, w).numpy()) <= RTOL


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x * 2
        return -x


def test_module_torch_export_refuses_goes_through_torchscript(caplog: pytest.LogCaptureFixture) -> None:
    module = DataDependent().eval()
    x = torch.ones(2, 3)
    with caplog.at_level("WARNING", logger="ember.frontends.pytorch"):
        model = ember.convert_model(module, example_input=(x,))
    assert "TorchScript" in caplog.text
    compiled = ember.Core().compile_model(model, "REFERENCE")
    for v in (x, -x):
        assert relative_difference(compiled([v.numpy()])[0], module(v).numpy()) <= RTOL


def test_loop_with_a_known_trip_count_is_unrolled() -> None:
    @torch.jit.script
    def f(x: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros_like(x[0])
        for i in range(x.shape[0]):
            acc = acc + x[i] * (i + 1)
        return acc

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    model = ember.convert_model(f, example_input=(x,))
    got = ember.Core().compile_model(model, "REFERENCE")([x.numpy()])[0]
    assert relative_difference(got, f(x).numpy()) <= RTOL


def test_loops_on_run_time_values_become_a_loop() -> None:
    @torch.jit.script
    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros_like(x[0])
        for i in range(x.shape[0]):  # trip count known only at run time (dynamic first axis)
            acc = torch.tanh(acc @ w + x[i]) * (i + 1)
        while bool(acc.abs().sum() < 50.0):  # stops on a value
            acc = acc * 2 + 0.5
        k = 0
        while k < 100:  # unrolled until its condition becomes a run-time value, then a Loop
            acc = acc + k
            k += 1
            if bool(acc.sum() > 200.0):
                break
        return acc

    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 3, generator=g)
    x = torch.randn(4, 3, generator=g)
    model = ember.convert_model(f, example_input=(x, w), input=[[-1, 3], [3, 3]])
    assert [n.type_name for n in model.get_ordered_ops()].count("Loop") == 3
    compiled = ember.Core().compile_model(model, "REFERENCE")
    for n in (1, 4, 9):
        xs = torch.randn(n, 3, generator=g) * 0.1
        assert relative_difference(compiled([xs.numpy(), w.numpy()])[0], f(xs, w).numpy()) <= RTOL, n


# -- Silero VAD: the TorchScript archive against its ONNX variant ----------------------------------

@pytest.mark.slow
def test_silero_vad_torchscript_matches_onnx(tmp_path: Path) -> None:
    from ember.zoo.download import fetch_wheel
    from ember.zoo.registry import get_entry

    try:
        wheel = fetch_wheel(get_entry("silero-vad").source)
    except zoo.RegistryUnreachableError as e:
        pytest.skip(f"the package registry cannot be reached: {str(e).splitlines()[0]}")
    with zipfile.ZipFile(wheel) as zf:
        for name in ("silero_vad/data/silero_vad.jit", "silero_vad/data/silero_vad.onnx"):
            zf.extract(name, tmp_path)
    jit = torch.jit.load(str(tmp_path / "silero_vad/data/silero_vad.jit"), map_location="cpu")
    context, chunk = 64, 512
    state = np.zeros((2, 1, 128), np.float32)
    model = ember.convert_model(jit._model, example_input=(torch.zeros(1, context + chunk), torch.from_numpy(state)))
    onnx_model = ember.convert_model(tmp_path / "silero_vad/data/silero_vad.onnx")
    from frontends.test_real_models import speech_clip, vad_chunks

    chunks = vad_chunks(speech_clip(), 16000)
    with pytest.raises(UnsupportedOpError, match="jit._model"):  # the stateful wrapper: a clear refusal
        ember.convert_model(tmp_path / "silero_vad/data/silero_vad.jit", example_input=(torch.zeros(1, chunk), 16000))
    for device in ("REFERENCE", "CPU"):
        ts = ember.Core().compile_model(model, device)
        ox = ember.Core().compile_model(onnx_model, device)
        s_ts, s_ox = state, state
        probs = []
        for k, x in enumerate(chunks[:, None]):
            got = ts([x, s_ts])
            want = ox({"input": x, "state": s_ox, "sr": np.array(16000, np.int64)})
            assert relative_difference(got[0], want[0]) <= RTOL, (device, k)
            assert relative_difference(got[1], want[1]) <= RTOL, (device, k)
            s_ts, s_ox = got[1], want[1]
            probs.append(float(got[0].ravel()[0]))
        assert max(probs) > 0.5 and min(probs) < 0.5  # it hears speech and pauses
