"""Hints become streams and request counts as the table in ember.runtime.streams says."""

from __future__ import annotations

import pytest
from runtime_helpers import small_model

import ember.properties as props
import ember.properties.hint as hints
from ember.runtime import Core
from ember.runtime.properties import CompileConfig, PerformanceMode, parse_properties
from ember.runtime.streams import available_cores, plan_streams


def _plan(cores, **props_):
    return plan_streams(CompileConfig.from_properties(parse_properties(props_)), cores=cores)


# (cores, properties, streams, optimal requests, threads per stream)
TABLE = [
    (8, {}, 1, 1, 8),
    (8, {"PERFORMANCE_HINT": "LATENCY"}, 1, 1, 8),
    (8, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}, 1, 1, 2),
    (8, {"PERFORMANCE_HINT": "THROUGHPUT"}, 8, 8, 1),
    (2, {"PERFORMANCE_HINT": "THROUGHPUT"}, 2, 2, 1),
    (8, {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 3}, 3, 3, 2),
    (8, {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": 4}, 2, 2, 2),
    (8, {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}, 8, 8, 1),
    (8, {"NUM_STREAMS": 3}, 3, 3, 2),
    (8, {"NUM_STREAMS": 3, "PERFORMANCE_HINT": "THROUGHPUT"}, 3, 3, 2),
    (8, {"NUM_STREAMS": "AUTO"}, 8, 8, 1),
    (1, {"NUM_STREAMS": 4}, 4, 4, 1),
    (8, {"NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 1}, 1, 1, 1),  # OpenVINO: 1 thread, 1 stream
    (1, {"PERFORMANCE_HINT": "THROUGHPUT"}, 1, 1, 1),
]


@pytest.mark.parametrize("cores, properties, streams, requests, threads", TABLE)
def test_hint_table(cores, properties, streams, requests, threads):
    plan = _plan(cores, **properties)
    assert (plan.streams, plan.optimal_requests, plan.threads_per_stream) == (streams, requests, threads)


def test_numa_is_at_least_one():
    assert _plan(4, NUM_STREAMS="NUMA").streams >= 1


def test_device_cap():
    cfg = CompileConfig(performance_mode=PerformanceMode.THROUGHPUT)
    assert plan_streams(cfg, cores=16, max_streams=4).streams == 4


def test_compiled_model_reports_the_plan():
    core = Core()
    cores = available_cores()
    lat = core.compile_model(small_model(), "REFERENCE", {hints.performance_mode: hints.PerformanceMode.LATENCY})
    assert lat.get_property(props.num_streams) == 1
    assert lat.get_property(props.optimal_number_of_infer_requests) == 1
    tput = core.compile_model(small_model(), "REFERENCE",
                              {hints.performance_mode: hints.PerformanceMode.THROUGHPUT})
    assert tput.get_property(props.num_streams) == cores
    assert tput.get_property(props.optimal_number_of_infer_requests) == cores
    assert tput.get_property(props.inference_num_threads) == cores
    three = core.compile_model(small_model(), "REFERENCE", {props.num_streams: 3})
    assert three.get_property(props.num_streams) == 3
    assert three._executor.size == 3
