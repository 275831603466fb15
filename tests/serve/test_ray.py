"""``ember.serve.ray`` on a local Ray instance (loopback only, no usage reporting): the Ray Serve
deployment answers KServe v2 requests (tritonclient HTTP, JSON and binary) with the same outputs
as ``ember serve`` for the same models and requests."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from serve_helpers import wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False, object_store_memory=200 * 1024 * 1024)
    except Exception as e:  # noqa: BLE001 - any failure to start means no Ray here
        pytest.skip(f"a local Ray instance cannot start on this machine: {e}")
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def test_ray_deployment_matches_ember_serve(local_ray, repo, server):
    import tritonclient.http as httpclient

    from ember.serve import ModelConfig, VersionPolicy
    from ember.serve.ray import deploy

    models = [ModelConfig("scale", repo / "scale", VersionPolicy("all"), target_device="REFERENCE"),
              ModelConfig("t_bytes", repo / "t_bytes", target_device="REFERENCE")]
    port = _free_port()
    deploy(models, http_port=port, num_replicas=2, ray_actor_options={"num_cpus": 0.5})
    ray_client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    ref_client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")

    def ready() -> bool:
        try:
            return ray_client.is_server_ready()
        except Exception:  # noqa: BLE001 - the proxy is not up yet
            return False

    wait_until(ready, 120, "the Ray Serve proxy")
    assert ray_client.get_model_metadata("scale") == ref_client.get_model_metadata("scale")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for version in ("", "1", "3"):
        for binary in (False, True):
            results = []
            for c in (ray_client, ref_client):
                i = httpclient.InferInput("x", [3, 4], "FP32")
                i.set_data_from_numpy(x, binary_data=binary)
                outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "row_sum")]
                results.append(c.infer("scale", [i], model_version=version, outputs=outs, request_id="r1"))
            for n in ("y", "row_sum"):
                np.testing.assert_array_equal(results[0].as_numpy(n), results[1].as_numpy(n))
            assert results[0].get_response()["id"] == "r1"
            assert results[0].get_response()["model_version"] == (version or "3")
    words = np.array([["a", "héllo", ""]], dtype=object)
    i = httpclient.InferInput("in", [1, 3], "BYTES")
    i.set_data_from_numpy(words)
    got = ray_client.infer("t_bytes", [i]).as_numpy("out")
    assert [w.decode() for w in got.reshape(-1)] == ["a", "héllo", "", "a", "héllo", ""]
    with pytest.raises(Exception, match="no version 9"):
        ray_client.get_model_metadata("scale", "9")
    ray_client.close()
    ref_client.close()
