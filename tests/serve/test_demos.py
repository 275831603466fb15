"""The FastAPI and Gradio demos in a real browser (headless Chromium from the Debian package,
driven by Playwright): the page loads, an image is uploaded, the top-5 appears, a screenshot is
saved (``$EMBER_TEST_ARTIFACTS`` or the test's tmp folder). The expected classes come from the
same photo run on the REFERENCE device in-process."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    img = np.asarray(skimage.chelsea())
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(img).save(path)
    return path, img


@pytest.fixture(scope="module")
def classifier():
    sys.path.insert(0, str(EXAMPLES))
    from fastapi_app import Classifier

    return Classifier("CPU")


@pytest.fixture(scope="module")
def expected(photo, classifier) -> list[str]:
    """Top-5 labels of the photo on the REFERENCE device (the oracle of the CPU device)."""
    from fastapi_app import Classifier, decode_image

    ref = Classifier("REFERENCE")
    want = [c["label"] for c in ref.classify(decode_image(photo[0].read_bytes()))]
    assert [c["label"] for c in classifier.classify(photo[1])][:2] == want[:2]
    return want


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium binary (Debian: apt-get install -y chromium): the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def artifacts(tmp_path: Path) -> Path:
    d = Path(os.environ.get("EMBER_TEST_ARTIFACTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_fastapi_demo_in_browser(browser, classifier, photo, expected, tmp_path):
    import uvicorn
    from fastapi_app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(classifier), host="127.0.0.1", port=port, log_config=None,
                                           lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and t.is_alive(), "the FastAPI app did not start"
            time.sleep(0.05)
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{port}/classify", data=photo[0].read_bytes(), method="POST")
        api = __import__("json").loads(urllib.request.urlopen(req, timeout=60).read())
        assert [c["label"] for c in api["top5"]][:2] == expected[:2]
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/classify", data=b"not an image", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=60)
        assert e.value.code == 400

        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=30000)
        assert "EfficientNet-Lite0" in page.inner_text("h1")
        page.set_input_files("#file", str(photo[0]))
        page.click("#submit")
        page.wait_for_function("document.querySelectorAll('#top5 li').length == 5", timeout=60000)
        items = page.locator("#top5 li").all_inner_texts()
        assert items[0].startswith(expected[0] + " - "), items
        assert [i.rsplit(" - ", 1)[0] for i in items][:2] == expected[:2]
        shot = artifacts(tmp_path) / "fastapi_demo.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        page.close()
    finally:
        server.should_exit = True
        t.join(30)


def test_gradio_demo_in_browser(browser, classifier, photo, expected, tmp_path):
    pytest.importorskip("gradio")
    from gradio_app import build_demo

    port = _free_port()
    demo = build_demo(classifier)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=60000)
        page.wait_for_selector("input[type=file]", state="attached", timeout=60000)
        page.set_input_files("input[type=file]", str(photo[0]))
        page.wait_for_selector("img", timeout=30000)
        page.get_by_role("button", name="Submit").click()
        page.get_by_text(expected[0], exact=True).first.wait_for(timeout=60000)
        text = page.inner_text("body")
        for label in expected[:3]:
            assert label in text, (label, text[-2000:])
        shot = artifacts(tmp_path) / "gradio_demo.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        page.close()
    finally:
        demo.close()
