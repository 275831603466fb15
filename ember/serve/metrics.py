"""Prometheus metrics under OpenVINO Model Server's names (``ovms_*``) where OVMS has one, and
``ember_*`` for what OVMS lacks (dynamic batch sizes, queue depth). One registry per server,
so two servers in one process (tests) keep separate counts."""

from __future__ import annotations

# microsecond buckets like OVMS's (10 us .. ~100 s, roughly x2.5 apart)
_US_BUCKETS = (10, 18, 32, 56, 100, 180, 320, 560, 1000, 1800, 3200, 5600, 10000, 18000, 32000, 56000,
               100000, 180000, 320000, 560000, 1000000, 1800000, 3200000, 5600000, 10000000, 18000000)


class Metrics:
    """The server's metrics; every method is cheap and thread-safe."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        req = ["api", "interface", "method", "name", "version"]
        self.success = Counter("ovms_requests_success", "Number of successful requests to a model or a DAG.",
                               req, registry=r)
        self.fail = Counter("ovms_requests_fail", "Number of failed requests to a model or a DAG.", req, registry=r)
        self.request_time = Histogram("ovms_request_time_us", "Processing time of requests to a model or a DAG.",
                                      ["interface", "name", "version"], buckets=_US_BUCKETS, registry=r)
        self.inference_time = Histogram("ovms_inference_time_us", "Inference execution time in the OpenVINO "
                                        "backend.", ["name", "version"], buckets=_US_BUCKETS, registry=r)
        self.wait_time = Histogram("ovms_wait_for_infer_req_time_us", "Request waiting time in the scheduling "
                                   "queue.", ["name", "version"], buckets=_US_BUCKETS, registry=r)
        self.streams = Gauge("ovms_streams", "Number of OpenVINO execution streams.", ["name", "version"],
                             registry=r)
        self.nireq = Gauge("ovms_infer_req_queue_size", "Inference request queue size (nireq).",
                           ["name", "version"], registry=r)
        self.active = Gauge("ovms_infer_req_active", "Number of currently consumed inference request from the "
                            "processing queue.", ["name", "version"], registry=r)
        self.current = Gauge("ovms_current_requests", "Number of inference requests currently in process.",
                             ["name", "version"], registry=r)
        self.queue_depth = Gauge("ember_request_queue_depth", "Requests waiting for an inference request.",
                                 ["name", "version"], registry=r)
        self.batch_size = Histogram("ember_batch_size", "Rows per executed (dynamically batched) inference.",
                                    ["name", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)

    def request(self, interface: str, method: str, name: str, version: str, ok: bool, seconds: float | None) -> None:
        labels = ("KServe", interface, method, name, version)
        (self.success if ok else self.fail).labels(*labels).inc()
        if seconds is not None and ok:
            self.request_time.labels(interface, name, version).observe(seconds * 1e6)

    def version_loaded(self, name: str, version: str, streams: int, nireq: int) -> None:
        self.streams.labels(name, version).set(streams)
        self.nireq.labels(name, version).set(nireq)

    def version_unloaded(self, name: str, version: str) -> None:
        for g in (self.streams, self.nireq, self.active, self.current, self.queue_depth):
            try:
                g.remove(name, version)
            except KeyError:
                pass

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        text = generate_latest(self.registry).decode()
        # OVMS's counters carry no _total suffix and no _created series
        lines = []
        for line in text.splitlines():
            name = line.split(" ")[2] if line.startswith("# ") else line.split("{")[0].split(" ")[0]
            if name.endswith("_created"):
                continue
            if name.startswith("ovms_requests_") and name.endswith("_total"):
                line = line.replace(name, name[:-len("_total")], 1)
            lines.append(line)
        return ("\n".join(lines) + "\n").encode(), CONTENT_TYPE_LATEST
