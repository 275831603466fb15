"""A FastAPI app that classifies images with EfficientNet-Lite0, running ember in-process.

    pip install "ember[serve]" fastapi pillow
    python examples/fastapi_app.py                    # then open http://127.0.0.1:8080

``GET /`` is a page with a file picker: choose an image and the top-5 ImageNet classes appear.
``POST /classify`` takes the image file as the request body (any format Pillow reads) and
answers ``{"top5": [{"label", "index", "probability"}], "ms": ...}``. The model comes from
ember's zoo (downloaded from PyPI once, converted to IR and cached) and is compiled once when
the app is created; each request runs on FastAPI's thread pool with its own infer request.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime
import argparse
import io
import threading
import time
from typing import Any

import numpy as np

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ember - EfficientNet-Lite0</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}li{margin:.3em 0}
#preview{max-width:224px;display:block;margin:1em 0}</style></head>
<body><h1>EfficientNet-Lite0 on ember</h1>
<p>Choose an image; the five most likely ImageNet classes appear below.</p>
<input type="file" id="file" accept="image/*"> <button id="submit">Classify</button>
<img id="preview" alt="">
<p id="status"></p><ol id="top5"></ol>
<script>
const file = document.getElementById('file');
file.onchange = () => { if (file.files[0]) document.getElementById('preview').src = URL.createObjectURL(file.files[0]); };
document.getElementById('submit').onclick = async () => {
  if (!file.files[0]) { document.getElementById('status').textContent = 'choose an image first'; return; }
  document.getElementById('status').textContent = 'classifying...';
  const r = await fetch('classify', {method: 'POST', body: file.files[0]});
  const j = await r.json();
  if (!r.ok) { document.getElementById('status').textContent = 'error: ' + j.detail; return; }
  const ol = document.getElementById('top5'); ol.innerHTML = '';
  for (const c of j.top5) {
    const li = document.createElement('li');
    li.textContent = c.label + ' - ' + (100 * c.probability).toFixed(1) + '%';
    ol.appendChild(li);
  }
  document.getElementById('status').textContent = 'done in ' + j.ms.toFixed(1) + ' ms';
};
</script></body></html>"""


class Classifier:
    """EfficientNet-Lite0 compiled once; ``classify`` is safe from many threads (one infer
    request per thread)."""

    def __init__(self, device: str = "CPU") -> None:
        from ember import zoo
        from ember.runtime import Core

        self.compiled = Core().compile_model(str(zoo.fetch("efficientnet-lite0").xml), device)
        self.labels = zoo.imagenet_labels()
        self._local = threading.local()

    def classify(self, image: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
        from ember.zoo.efficientnet import preprocess, top_k

        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        logits = request.infer({0: preprocess(image)})[0][0]
        return [{"label": self.labels[i], "index": int(i), "probability": float(p)} for i, p in top_k(logits, top)]


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes (PNG, JPEG, ...) as an RGB ``[H, W, 3]`` uint8 array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not an image: {e}") from None


def create_app(classifier: Classifier | None = None) -> Any:
    """The FastAPI app (the classifier is built here unless one is given)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse

    clf = classifier or Classifier()
    app = FastAPI(title="ember image classification")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        data = await request.body()
        if not data:
            raise HTTPException(400, "send the image file as the request body")
        if len(data) > 20 * 1024 * 1024:
            raise HTTPException(413, "images up to 20 MB")
        try:
            image = await run_in_threadpool(decode_image, data)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        start = time.perf_counter()
        top5 = await run_in_threadpool(clf.classify, image)
        return {"top5": top5, "ms": (time.perf_counter() - start) * 1e3}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--device", default="CPU")
    args = ap.parse_args(argv)
    uvicorn.run(create_app(Classifier(args.device)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
