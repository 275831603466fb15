"""The restricted torch state-dict reader: tensors come out right, anything else is refused
without being run. Files are built opcode by opcode here (no torch needed) and, when torch is
installed, also written by torch itself in both of its layouts."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ember.errors import ConversionError
from ember.zoo.errors import UnsafeFileError
from ember.zoo.torch_state import LEGACY_MAGIC, load_state_dict, load_torch_file

STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage", np.dtype("float16"): "HalfStorage",
           np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage", np.dtype("float64"): "DoubleStorage"}


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor_record(key: str, arr: np.ndarray, offset: int = 0, size=None, stride=None, numel=None) -> bytes:
    size = arr.shape if size is None else size
    stride = tuple(s // arr.itemsize for s in arr.strides) if stride is None else stride
    pid = _tuple([_s("storage"), f"ctorch\n{STORAGE[arr.dtype]}\n".encode(), _s(key), _s("cpu"),
                  _i(arr.size if numel is None else numel), b"N"]) + b"Q"
    args = _tuple([pid, _i(offset), _tuple([_i(d) for d in size]), _tuple([_i(d) for d in stride]), b"\x89",
                   b"ccollections\nOrderedDict\n)R"])
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def legacy_file(entries: dict[str, bytes], storages: dict[str, np.ndarray], extra: bytes = b"") -> bytes:
    """A legacy torch.save file: entries are name -> pickled value records."""
    head = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, 2)
    body = b"\x80\x02ccollections\nOrderedDict\n)R" + b"".join(_s(k) + v + b"s" for k, v in entries.items())
    body += extra + b"."
    keys = sorted(storages)
    data = b"".join(struct.pack("<q", storages[k].size) + np.ascontiguousarray(storages[k]).tobytes() for k in keys)
    return head + body + pickle.dumps(keys, 2) + data


def simple_state(tensors: dict[str, np.ndarray]) -> bytes:
    return legacy_file({n: _tensor_record(str(i), a) for i, (n, a) in enumerate(tensors.items())},
                       {str(i): a.reshape(-1) for i, a in enumerate(tensors.values())})


CASES = {
    "f32 4-d": np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) - 7.5,
    "f32 nan inf": np.array([np.nan, np.inf, -np.inf, -0.0], np.float32),
    "i64 scalar-like": np.array([42], np.int64),
    "f16": np.linspace(-2, 2, 7).astype(np.float16),
    "f64 2-d": np.eye(3),
    "u8": np.arange(10, dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 3), np.float32),
}


@pytest.mark.parametrize("name", list(CASES))
def test_handmade_legacy_tensors_round_trip(name: str) -> None:
    arr = CASES[name]
    sd = load_state_dict(simple_state({"w": arr, "b": np.ones(2, np.float32)}))
    assert list(sd) == ["w", "b"]
    assert sd["w"].dtype == arr.dtype and sd["w"].shape == arr.shape
    np.testing.assert_array_equal(sd["w"], arr)


def test_views_share_a_storage_with_offset_and_stride() -> None:
    base = np.arange(12, dtype=np.float32)
    entries = {"full": _tensor_record("s", base),
               "transposed": _tensor_record("s", base, 0, (4, 3), (1, 4)),
               "tail": _tensor_record("s", base, 6, (2, 3), (3, 1))}
    sd = load_state_dict(legacy_file(entries, {"s": base}))
    np.testing.assert_array_equal(sd["transposed"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(sd["tail"], base[6:].reshape(2, 3))
    assert sd["transposed"].flags.c_contiguous


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - what a hostile pickle carries
        return (os.system, (f"touch {self.marker}",))


def _hostile_values(marker: Path) -> dict[str, bytes]:
    def value(obj: object, protocol: int) -> bytes:
        raw = pickle.dumps(obj, protocol)
        start = 2 if protocol < 4 else 11  # drop PROTO (and FRAME), keep the opcodes
        assert raw.endswith(b".")
        return raw[start:-1]

    return {
        "os.system via GLOBAL": value(_RunsCode(marker), 2),
        "os.system via STACK_GLOBAL": value(_RunsCode(marker), 4),
        "a Fraction object": value(Fraction(1, 3), 2),
        "an eval call": b"cbuiltins\neval\n" + _tuple([_s(f"open('{marker}', 'w')")]) + b"R",
        "an object built with NEWOBJ": b"ccollections\nOrderedDict\n)\x81",
        "a text persistent id": b"Pstorage\n",
    }


@pytest.mark.parametrize("case", list(_hostile_values(Path("x"))))
def test_hostile_state_dicts_are_refused_without_running_anything(case: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    entries = {"w": _tensor_record("0", np.ones(3, np.float32)), "evil": _hostile_values(marker)[case]}
    path = tmp_path / "evil.pth"
    path.write_bytes(legacy_file(entries, {"0": np.ones(3, np.float32)}))
    with pytest.raises(UnsafeFileError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg and "not a plain state dict of tensors" in msg
    assert not marker.exists()


def test_refusal_names_the_offending_callable(tmp_path: Path) -> None:
    entries = {"evil": _hostile_values(tmp_path / "m")["os.system via GLOBAL"]}
    with pytest.raises(UnsafeFileError, match=r"(posix|os)\.system"):
        load_torch_file(legacy_file(entries, {}), name="evil.pth")


def test_build_on_anything_but_an_ordered_dict_is_refused() -> None:
    extra = _s("x") + b"}" + _s("a") + _i(1) + b"s" + b"}b" + b"s"  # state set on a plain dict value
    with pytest.raises(UnsafeFileError, match="object state"):
        load_torch_file(legacy_file({}, {}, extra=extra))


def test_hostile_zip_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _RunsCode(marker)}, 2))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(UnsafeFileError):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated data", "storage past its end", "wrong numel", "not torch",
                                    "no magic", "garbage"])
def test_damaged_files_raise_conversion_errors(damage: str) -> None:
    arr = np.arange(6, dtype=np.float32)
    good = simple_state({"w": arr})
    if damage == "truncated data":
        data = good[:-5]
    elif damage == "storage past its end":
        data = legacy_file({"w": _tensor_record("0", arr, 4, (6,), (1,))}, {"0": arr})
    elif damage == "wrong numel":
        data = legacy_file({"w": _tensor_record("0", arr, numel=7)}, {"0": arr})
    elif damage == "not torch":
        data = b"hello world"
    elif damage == "no magic":
        data = pickle.dumps(123, 2) + good[len(pickle.dumps(LEGACY_MAGIC, 2)):]
    else:
        data = b"\x80\x02" + bytes(range(200, 256))
    with pytest.raises(ConversionError):
        load_state_dict(data)


def test_a_dict_without_tensors_is_not_a_state_dict() -> None:
    data = legacy_file({"lr": _i(3)}, {})
    with pytest.raises(ConversionError, match="state dict of tensors"):
        load_state_dict(data)
    assert load_torch_file(data) == {"lr": 3}


@pytest.mark.parametrize("zip_format", [False, True])
def test_files_written_by_torch(zip_format: bool, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    state = {"conv.weight": torch.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             "bn.num_batches_tracked": torch.tensor(7),
             "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
             "bf16": torch.tensor([1.0, -3.5, 1e20], dtype=torch.bfloat16),
             "view": torch.arange(20.0).reshape(4, 5).t()[1:3]}
    path = tmp_path / "sd.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    got = load_state_dict(path)
    assert list(got) == list(state)
    for k, v in state.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        np.testing.assert_array_equal(got[k], want)
        assert got[k].dtype == want.dtype, k
