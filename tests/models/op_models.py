"""The op-coverage networks of the CPU op-coverage issue, built in PyTorch (or, where PyTorch's
exporter cannot say it, with onnx.helper) with seeded weights, exported to ONNX once and cached.

- ``bilstm_tagger``: 2-layer bidirectional LSTM (hidden 256) over 100 steps, a tag per step;
- ``gru_encoder``: a GRU over a padded batch of 4 with sequence lengths (ONNX ``sequence_lens``);
- ``crnn``: a CRNN text recognizer (CNN, then a BiLSTM over the width, a CTC log-softmax head);
- ``unet1d``: a 1-D U-Net (strided Conv1d down, ConvTranspose1d up, skip concatenations);
- ``gnn``: a 3-layer message-passing graph network (gather by source, scatter-add to target) on
  a random graph of 2,000 nodes and 10,000 edges;
- ``decoder``: a DCGAN-style image decoder (ConvTranspose2d from a latent to 64x64 RGB).

torch is a test extra; only benchmarks and tests that ``importorskip("torch")`` import this.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.torch_models import CACHE

NAMES = ("bilstm_tagger", "gru_encoder", "crnn", "unet1d", "gnn", "decoder")


class BiLSTMTagger(nn.Module):
    def __init__(self, features: int = 128, hidden: int = 256, tags: int = 24) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


class CRNN(nn.Module):
    def __init__(self, classes: int = 97, hidden: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool, pool)]

        self.cnn = nn.Sequential(*block(1, 64, (2, 2)), *block(64, 128, (2, 2)), *block(128, 256, (2, 1)),
                                 *block(256, 256, (2, 1)))
        self.rnn = nn.LSTM(256 * 2, hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)  # [N, 256, 2, W/4]
        n, c, h, w = f.shape
        seq = f.permute(0, 3, 1, 2).reshape(n, w, c * h)
        return torch.log_softmax(self.head(self.rnn(seq)[0]), dim=-1)


class UNet1D(nn.Module):
    def __init__(self, channels: int = 16, width: int = 32) -> None:
        super().__init__()
        w = width
        self.inp = nn.Conv1d(channels, w, 7, padding=3)
        self.down = nn.ModuleList([nn.Conv1d(w * 2**i, w * 2**(i + 1), 4, 2, 1) for i in range(3)])
        self.up = nn.ModuleList([nn.ConvTranspose1d(w * 2**(i + 1), w * 2**i, 4, 2, 1) for i in reversed(range(3))])
        self.fuse = nn.ModuleList([nn.Conv1d(w * 2**(i + 1), w * 2**i, 3, padding=1) for i in reversed(range(3))])
        self.out = nn.Conv1d(w, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        skips = []
        for d in self.down:
            skips.append(h)
            h = torch.relu(d(h))
        for u, f, s in zip(self.up, self.fuse, reversed(skips)):
            h = torch.relu(f(torch.cat([torch.relu(u(h)), s], dim=1)))
        return self.out(h)


class GNN(nn.Module):
    def __init__(self, nodes: int = 2000, features: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.nodes = nodes
        self.msg = nn.ModuleList([nn.Linear(features, features) for _ in range(layers)])
        self.upd = nn.ModuleList([nn.Linear(2 * features, features) for _ in range(layers)])

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        index = dst.unsqueeze(1).expand(-1, x.shape[1])
        for msg, upd in zip(self.msg, self.upd):
            m = torch.relu(msg(torch.gather(x, 0, src.unsqueeze(1).expand(-1, x.shape[1]))))
            agg = torch.zeros_like(x).scatter_add(0, index, m)
            x = torch.relu(upd(torch.cat([x, agg], dim=1)))
        return x


class Decoder(nn.Module):
    def __init__(self, latent: int = 100, width: int = 64) -> None:
        super().__init__()
        w = width

        def up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False) if first else nn.ConvTranspose2d(cin, cout, 4, 2, 1,
                                                                                                        bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(*up(latent, w * 8, True), *up(w * 8, w * 4), *up(w * 4, w * 2), *up(w * 2, w),
                                 nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    """Seeded weights, and BatchNorm statistics that are not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _gru_encoder(path: Path, seed: int) -> None:
    """ONNX GRU with ``sequence_lens`` (PyTorch's exporter drops packed lengths), batch 4,
    100 steps, 64 features, hidden 128, bidirectional, linear_before_reset as PyTorch's GRU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    feats, hidden, dirs = 64, 128, 2
    k = 1 / np.sqrt(hidden)
    inits = [numpy_helper.from_array(rng.uniform(-k, k, (dirs, 3 * hidden, feats)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-k, k, (dirs, 3 * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.uniform(-k, k, (dirs, 6 * hidden)).astype(np.float32), "B")]
    nodes = [helper.make_node("GRU", ["x", "W", "R", "B", "lengths"], ["y", "h"], hidden_size=hidden,
                              direction="bidirectional", linear_before_reset=1)]
    graph = helper.make_graph(nodes, "gru_encoder",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [100, 4, feats]),
                               helper.make_tensor_value_info("lengths", TensorProto.INT32, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100, dirs, 4, hidden]),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, [dirs, 4, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def example_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of network ``name``, by ONNX input name."""
    rng = np.random.default_rng(seed)
    if name == "bilstm_tagger":
        return {"x": rng.standard_normal((1, 100, 128)).astype(np.float32)}
    if name == "gru_encoder":
        return {"x": rng.standard_normal((100, 4, 64)).astype(np.float32),
                "lengths": np.array([100, 73, 50, 12], np.int32)}
    if name == "crnn":
        return {"image": rng.standard_normal((1, 1, 32, 256)).astype(np.float32)}
    if name == "unet1d":
        return {"signal": rng.standard_normal((1, 16, 4096)).astype(np.float32)}
    if name == "gnn":
        g = np.random.default_rng(1234)  # the graph is part of the network's input, fixed
        return {"x": rng.standard_normal((2000, 64)).astype(np.float32),
                "src": g.integers(0, 2000, 10000).astype(np.int64), "dst": g.integers(0, 2000, 10000).astype(np.int64)}
    if name == "decoder":
        return {"z": rng.standard_normal((1, 100, 1, 1)).astype(np.float32)}
    raise ValueError(f"unknown op-coverage network {name!r}; known: {', '.join(NAMES)}")


def export(name: str, seed: int = 0) -> Path:
    """The ONNX file of op-coverage network ``name``, exported once (cached beside the other
    test models)."""
    feeds = example_inputs(name)
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{name}-{seed}-{torch.__version__}-op-v1".encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{key}.onnx"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    if name == "gru_encoder":
        _gru_encoder(tmp, seed)
    else:
        torch.manual_seed(seed)
        model = _seeded({"bilstm_tagger": BiLSTMTagger, "crnn": CRNN, "unet1d": UNet1D, "gnn": GNN,
                         "decoder": Decoder}[name](), seed)
        args = tuple(torch.from_numpy(v) for v in feeds.values())
        with torch.no_grad():
            torch.onnx.export(model, args, str(tmp), input_names=list(feeds), output_names=["out"], opset_version=17,
                              dynamo=False)
    tmp.rename(path)
    return path
