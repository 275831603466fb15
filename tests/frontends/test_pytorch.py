"""The PyTorch frontend against PyTorch itself: small modules covering the ATen converters, the
repository's networks (ResNet-50, MobileNetV2, BERT-like) on REFERENCE and CPU, dynamic shapes,
and the "every unsupported op at once" error.

Outputs must equal torch's within RTOL of the output's magnitude (max |ember - torch| / max |torch|).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
from ember.errors import ConversionError, UnsupportedOpError  # noqa: E402
from ember.graph.shape import Dimension  # noqa: E402

RTOL = 1e-4
nn = torch.nn
F = torch.nn.functional


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype == np.bool_ or want.dtype.kind in "iu":
        return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0))
    scale = max(float(np.abs(want).max(initial=0)), 1e-6)
    return float(np.abs(got.astype(np.float64) - want).max(initial=0)) / scale


def run(model: ember.Model, inputs: list[np.ndarray], device: str = "REFERENCE") -> list[np.ndarray]:
    compiled = ember.Core().compile_model(model, device)
    res = compiled(inputs)
    return [res[i] for i in range(len(compiled.outputs))]


def torch_outputs(module: torch.nn.Module, args: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*args)
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.numpy() for o in outs]


def check(module: torch.nn.Module, args: tuple, devices: tuple[str, ...] = ("REFERENCE",), **kwargs: object) -> None:
    module = module.eval()
    model = ember.convert_model(module, example_input=args, **kwargs)
    want = torch_outputs(module, args)
    for device in devices:
        got = run(model, [a.numpy() for a in args], device)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert relative_difference(g, w) <= RTOL, device


# -- small modules: one table, each row exercises a few converters ---------------------------------

class Lambda(nn.Module):
    def __init__(self, fn) -> None:  # noqa: ANN001
        super().__init__()
        self.fn = fn

    def forward(self, *args):  # noqa: ANN002, ANN201
        return self.fn(*args)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


class ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8).eval()
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = F.hardswish(self.bn(self.dw(F.silu(self.conv(x)))))
        y = F.max_pool2d(y, 3, 1, 1) + F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
        return self.up(y), F.adaptive_avg_pool2d(y, 2)


class Attention(nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.ln = nn.LayerNorm(16)
        self.causal = causal

    def forward(self, x):  # noqa: ANN001, ANN201
        b, s, _ = x.shape
        q, k, v = self.qkv(self.ln(x)).split(16, dim=-1)
        q, k, v = (t.view(b, s, 2, 8).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return F.gelu(y.transpose(1, 2).reshape(b, s, 16), approximate="tanh")


class Recurrent(nn.Module):
    """Kept whole by the export path: LSTMSequence and GRUSequence."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(12, 5)

    def forward(self, x):  # noqa: ANN001, ANN201
        y, (h, c) = self.lstm(x)
        z, hg = self.gru(y.transpose(0, 1))
        return z, h, c, hg


MODULES = {
    "arith": (Lambda(lambda a, b: (a + 2 * b - 1.5, a * b / (b.abs() + 1), torch.maximum(a, b), a ** 2,
                                   torch.where(a > b, a, b), torch.rsqrt(b.abs() + 0.1), (a > 0) & (b < 0))),
              (_x(2, 3, 4), _x(3, 4, seed=1))),
    "unary": (Lambda(lambda a: (torch.sigmoid(a), torch.tanh(a), torch.exp(a), torch.relu(a), F.gelu(a),
                                F.leaky_relu(a, 0.1), F.elu(a), F.softplus(a), torch.clamp(a, -0.5, 0.7),
                                F.relu6(a * 4), F.hardsigmoid(a), F.mish(a), torch.erf(a), torch.log1p(a.abs()),
                                a.floor(), a.ceil(), a.round(), a.sign(), -a)),
              (_x(2, 5, 7),)),
    "reduce": (Lambda(lambda a: (a.sum(-1), a.mean((0, 2), keepdim=True), a.amax(1), a.max(dim=2)[1], a.argmin(),
                                 a.var(1), a.std(-1, keepdim=True), torch.logsumexp(a, 1), a.norm(dim=-1),
                                 a.prod(0), torch.softmax(a, 1), torch.log_softmax(a, -1), a.cumsum(1))),
               (_x(3, 4, 5),)),
    "movement": (Lambda(lambda a: (a.permute(2, 0, 1), a.transpose(0, 1).contiguous().view(4, -1), a.flatten(1),
                                   a.unsqueeze(1).expand(3, 2, 4, 5), torch.cat([a, a * 2], 1), torch.stack([a, a], -1),
                                   a[:, 1:3, ::2], a[1], a[..., -1], a.chunk(2, 2)[1], a.repeat(1, 2, 1),
                                   a.flip(-1), torch.roll(a, 1, 2), torch.tril(a[0]), torch.triu(a[0], 1),
                                   F.pad(a, (1, 2)), a.squeeze(0) if a.shape[0] == 1 else a.unbind(0)[2])),
                 (_x(3, 4, 5),)),
    "index": (Lambda(lambda a, i: (a[i], a.index_select(1, i), torch.gather(a, 1, i.view(1, -1).expand(3, -1)),
                                   F.embedding(i, a), a[i, i], a.masked_fill(a > 0, -1.0))),
              (_x(3, 4), torch.tensor([2, 0, 1]))),
    "creation": (Lambda(lambda a: (torch.arange(a.shape[1]) * a, torch.zeros_like(a) + 3, torch.ones(2, 3),
                                   torch.full((2,), 7.0), a.new_zeros(2), torch.arange(0.5, 3.0, 0.5),
                                   a.to(torch.int64), (a > 0).float(), a.to(torch.float16).to(torch.float32))),
                 (_x(2, 4) * 3,)),
    "matmul": (Lambda(lambda a, b: (a @ b, torch.bmm(a, b), torch.matmul(a[0], b), torch.addmm(b[0, 0], a[0], b[0]))),
               (_x(2, 3, 4), _x(2, 4, 5, seed=1))),
    "conv": (ConvBlock(), (_x(1, 4, 16, 16),)),
    "attention": (Attention(False), (_x(2, 6, 16),)),
    "causal": (Attention(True), (_x(1, 5, 16),)),
    "resize": (Lambda(lambda a: (F.interpolate(a, scale_factor=2, mode="nearest"),
                                 F.interpolate(a, size=(5, 7), mode="bilinear", align_corners=False),
                                 F.interpolate(a, scale_factor=2, mode="bilinear", align_corners=True),
                                 F.group_norm(a, 2), F.layer_norm(a, (6,)), F.pixel_shuffle(a, 2))),
               (_x(1, 4, 3, 6),)),
    "sort_scatter": (Lambda(lambda a, i: (a.topk(2, dim=1)[0], a.topk(2, dim=0, largest=False)[1], a.sort(1)[0],
                                          a.argsort(0, descending=True), a.scatter(1, i, 5.0),
                                          a.scatter_add(1, i, a[:, :2]), torch.nonzero(a > 0.5),
                                          a.trunc(), torch.exp2(a), F.glu(a, 1), F.logsigmoid(a),
                                          torch.var_mean(a, 1)[1], torch.einsum("ij,kj->ik", a, a),
                                          F.prelu(a, torch.tensor([0.2])))),
                     (_x(3, 4) * 2, torch.tensor([[0, 3], [1, 1], [2, 0]]))),
    "advanced_index": (Lambda(lambda a, i, j: (a[:, i, j], a[i, :, j], a[:, i], a[..., j], a[i, j],
                                               F.unfold(a, 2, padding=1),
                                               F.grid_sample(a, a[:, :2].permute(0, 2, 3, 1).tanh(),
                                                             align_corners=False),
                                               F.grid_sample(a, a[:, 1:3].permute(0, 2, 3, 1).tanh(), mode="nearest",
                                                             padding_mode="border", align_corners=True))),
                       (_x(3, 4, 4, 4), torch.tensor([[0, 2], [1, 1]]), torch.tensor([3, 0]))),
    "fake_quantize": (Lambda(lambda a: (torch.fake_quantize_per_tensor_affine(a, 0.1, 3, 0, 255),
                                        torch.fake_quantize_per_channel_affine(
                                            a, torch.tensor([0.1, 0.2, 0.05]), torch.tensor([0, 1, -2], dtype=torch.int32),
                                            1, -128, 127))),
                      (_x(2, 3, 4) * 4 + 0.013,)),
    "rnn": (Recurrent(), (_x(2, 5, 4),)),
    "index_put": (Lambda(lambda a, i: (a.index_put((i,), torch.tensor(7.0)), a.index_put((i,), a[:2] * 3),
                                      a.index_put((i,), a[1], accumulate=True),
                                      a.masked_fill(a > 0.5, 2.0).index_put((a[:, 0] > 0,), torch.tensor(-1.0),
                                                                            accumulate=True))),
                  (_x(4, 3), torch.tensor([2, 0]))),
    "conv1d": (nn.Sequential(nn.Conv1d(3, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 2, 3, dilation=2)),
               (_x(2, 3, 20),)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_module_matches_torch(name: str) -> None:
    module, args = MODULES[name]
    check(module, args)


# -- the repository's networks, on REFERENCE and CPU -----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "bert_like"])
def test_network_matches_torch(name: str) -> None:
    from models.torch_models import BertLike, MobileNetV2, ResNet50, _seeded

    torch.manual_seed(0)
    if name == "bert_like":
        module = _seeded(BertLike(), 0)
        args = (torch.randint(0, 30522, (1, 32)), torch.ones(1, 32, dtype=torch.int64))
        args[1][0, 28:] = 0
    else:
        module = _seeded(ResNet50() if name == "resnet50" else MobileNetV2(), 0)
        args = (torch.randn(1, 3, 64, 64),)
    check(module, args, ("REFERENCE", "CPU"))


# -- dynamic shapes --------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_dynamic_batch_and_sequence_one_compile(device: str) -> None:
    module = Attention(True).eval()
    model = ember.convert_model(module, example_input=(_x(1, 5, 16),), input=[(-1, Dimension(1, 64), 16)])
    shape = model.inputs[0].partial_shape
    assert shape[0].is_dynamic and shape[1] == Dimension(1, 64) and shape[2] == Dimension(16)
    compiled = ember.Core().compile_model(model, device)
    for b, s in ((1, 3), (2, 7), (3, 1), (1, 64)):
        x = _x(b, s, 16, seed=b * 100 + s)
        got = compiled([x.numpy()])[0]
        assert relative_difference(got, torch_outputs(module, (x,))[0]) <= RTOL, (b, s)


def test_dynamic_shapes_by_input_name() -> None:
    from models.torch_models import BertLike, _seeded

    module = _seeded(BertLike(layers=1, hidden=32, heads=4, ffn=64, vocab=100, max_len=64), 0)
    ids = torch.randint(0, 100, (1, 8))
    model = ember.convert_model(module, example_input=(ids, torch.ones_like(ids)),
                                input={"input_ids": [-1, -1], "attention_mask": [-1, -1]})
    compiled = ember.Core().compile_model(model, "REFERENCE")
    for b, s in ((2, 5), (1, 17)):
        ids = torch.randint(0, 100, (b, s), generator=torch.Generator().manual_seed(s))
        mask = torch.ones_like(ids)
        mask[:, -1] = 0
        got = compiled([ids.numpy(), mask.numpy()])[0]
        assert relative_difference(got, torch_outputs(module, (ids, mask))[0]) <= RTOL


def test_input_shapes_alone_trace_the_module() -> None:
    """OpenVINO converts a module from ``input=`` shapes without an example (zeros are traced)."""

    class TwoArgs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3)) + y

    module = TwoArgs().eval()
    x, y = _x(3, 3, 10, 10, seed=1), _x(1, 4, seed=2)
    for spec in ([[1, 3, 10, 10], [1, 4]], [("y", [1, 4]), ("x", [-1, 3, 10, 10])]):
        model = ember.convert_model(module, input=spec)
        assert [p.get_any_name() for p in model.inputs] == ["x", "y"]
        batch = 3 if model.inputs[0].partial_shape[0].is_dynamic else 1
        got = run(model, [x[:batch].numpy(), y.numpy()])[0]
        assert relative_difference(got, torch_outputs(module, (x[:batch], y))[0]) <= RTOL


def test_exported_program_keeps_its_dynamic_shapes() -> None:
    module = nn.Sequential(nn.Linear(8, 4), nn.ReLU()).eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    ep = torch.export.export(module, (_x(3, 8),), dynamic_shapes=({0: batch},))
    model = ember.convert_model(ep)
    assert model.inputs[0].partial_shape[0] == Dimension(1, 32)
    x = _x(5, 8, seed=3)
    assert relative_difference(run(model, [x.numpy()])[0], torch_outputs(module, (x,))[0]) <= RTOL


# -- errors ----------------------------------------------------------------------------------------

def test_every_unsupported_op_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.frontends.pytorch import registry

    registry.load_converters()
    for name in ("aten.sigmoid", "aten.cos"):
        monkeypatch.delitem(registry._CONVERTERS, name)
    module = Lambda(lambda a: torch.sigmoid(a) + torch.cos(a) + torch.sigmoid(a * 2))
    with pytest.raises(UnsupportedOpError) as e:
        ember.convert_model(module, example_input=(_x(2, 3),))
    msg = str(e.value)
    assert "2 unsupported op(s)" in msg and "aten.sigmoid.default" in msg and "aten.cos.default" in msg
    assert "test_pytorch.py:" in msg  # the source line of the first use
    from ember.frontends.pytorch import unsupported_ops

    assert [op for op, _, _ in unsupported_ops(module, (_x(2, 3),))] == ["aten.cos", "aten.sigmoid"]


def test_module_without_example_input_is_refused() -> None:
    with pytest.raises(ConversionError, match="example_input"):
        ember.convert_model(nn.Linear(2, 2))


def test_training_mode_model_is_converted_in_eval_mode() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    module.train()
    x = _x(1, 3, 8, 8)
    model = ember.convert_model(module, example_input=(x,))
    assert relative_difference(run(model, [x.numpy()])[0], torch_outputs(module.eval(), (x,))[0]) <= RTOL


def test_importing_ember_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, ember, ember.frontends.pytorch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_the_error_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    import sys

    path = tmp_path / "model.pt"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConversionError, match="pip install torch"):
        ember.convert_model(path)


def test_supported_ops_lists_the_converters() -> None:
    from ember.frontends.pytorch import supported_ops

    names = supported_ops()
    for op in ("aten.convolution", "aten.linear", "aten.scaled_dot_product_attention", "aten.layer_norm",
               "aten.upsample_bilinear2d", "aten._native_batch_norm_legit_no_training", "operator.mul"):
        assert op in names
