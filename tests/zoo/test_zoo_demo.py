"""``ember demo``: real photos in, top-5 labels, latency and the IR location out."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ember.tools.cli import main


@pytest.mark.slow
def test_demo_on_the_sample_photos(effnet, capsys) -> None:
    pytest.importorskip("skimage.data", reason="the sample photos come with scikit-image")
    assert main(["demo", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    cat, coffee = out.split("a cup of coffee")
    assert "Chelsea the cat" in cat and re.search(r"1\. (tabby|tiger cat|Egyptian cat)", cat)
    assert re.search(r"1\. (espresso|cup)", coffee)
    assert len(re.findall(r"ms per inference", out)) == 2
    assert len(re.findall(r"^\s+[1-5]\. .+%$", out, re.M)) == 10
    assert f"IR saved at {effnet.xml}" in out.strip().splitlines()[-1]


@pytest.mark.slow
def test_demo_on_an_image_file(effnet, capsys, tmp_path) -> None:
    data = pytest.importorskip("skimage.data")
    image_mod = pytest.importorskip("PIL.Image")
    path = tmp_path / "cat.png"
    image_mod.fromarray(np.asarray(data.chelsea())).save(path)
    assert main(["demo", "--top", "3", "--runs", "1", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and not re.search(r"^\s+4\. ", out, re.M)  # --top 3: no 4th class
    assert re.search(r"1\. (tabby|tiger cat|Egyptian cat)", out)


def test_demo_reports_a_missing_image_before_downloading(capsys, tmp_path, monkeypatch) -> None:
    from ember.tools import demo

    def no_download(cache):  # noqa: ANN001, ANN202
        raise AssertionError("the model must not be fetched for a bad image path")

    monkeypatch.setattr(demo, "prepare_model", no_download)
    assert main(["demo", str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg' does not exist" in capsys.readouterr().err
