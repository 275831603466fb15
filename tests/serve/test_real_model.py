"""A real zoo model (EfficientNet-Lite0) served on the CPU device with dynamic batching: concurrent
gRPC (asyncio) and REST clients get the same logits as the model run in-process on REFERENCE."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_efficientnet_served_on_cpu_matches_reference(tmp_path):
    import tritonclient.grpc.aio as agrpc
    import tritonclient.http as httpclient

    import ember.zoo
    from ember.runtime import Core
    from ember.serve import BatchingConfig, ModelConfig, Server, ServerConfig

    xml = ember.zoo.fetch("efficientnet-lite0").xml
    folder = tmp_path / "effnet" / "1"
    folder.mkdir(parents=True)
    (folder / "model.xml").symlink_to(xml)
    (folder / "model.bin").symlink_to(xml.with_suffix(".bin"))
    images = np.random.default_rng(0).standard_normal((5, 1, 3, 224, 224)).astype(np.float32)
    reference = Core().compile_model(str(xml), "REFERENCE").create_infer_request()
    want = np.array(reference.infer({0: images[:, 0]})[0])[:, None]  # one batched run

    cfg = ServerConfig(models=(ModelConfig("effnet", tmp_path / "effnet", nireq=1,
                                           batching=BatchingConfig(4, 200_000)),),
                       rest_port=0, grpc_port=0, poll_wait_seconds=0)
    with Server(cfg) as s:
        async def run():
            client = agrpc.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
            try:
                async def one(x):
                    i = agrpc.InferInput("image", list(x.shape), "FP32")
                    i.set_data_from_numpy(x)
                    return (await client.infer("effnet", [i])).as_numpy("logits")
                return await asyncio.gather(*(one(x) for x in images[:4]))
            finally:
                await client.close()

        got = asyncio.run(run())
        http = httpclient.InferenceServerClient(f"127.0.0.1:{s.rest_port}")
        i = httpclient.InferInput("image", [1, 3, 224, 224], "FP32")
        i.set_data_from_numpy(images[4])
        got.append(http.infer("effnet", [i]).as_numpy("logits"))
        http.close()
        batches = [line for line in s.metrics.exposition()[0].decode().splitlines()
                   if line.startswith("ember_batch_size_count")]
    for g, w in zip(got, want):
        assert g.shape == (1, 1000)
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-3 * float(np.abs(w).max()))
        assert int(np.argmax(g)) == int(np.argmax(w))
    assert batches and float(batches[0].rsplit(" ", 1)[1]) < 5, "some requests were batched together"
