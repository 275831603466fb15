"""Properties: typed values behind OpenVINO's keys, Core/CompiledModel get/set, errors."""

from __future__ import annotations

import numpy as np
import openvino.properties as ov_props
import openvino.properties.hint as ov_hints
import pytest
from runtime_helpers import small_model

import ember
import ember.properties as props
import ember.properties.hint as hints
from ember.errors import PropertyError
from ember.runtime import Core

# (ember property object, the key real OpenVINO uses for it)
NAMES = [
    (hints.performance_mode, ov_hints.performance_mode),
    (hints.num_requests, ov_hints.num_requests),
    (hints.inference_precision, ov_hints.inference_precision),
    (hints.execution_mode, ov_hints.execution_mode),
    (props.num_streams, ov_props.num_streams),
    (props.inference_num_threads, ov_props.inference_num_threads),
    (props.enable_profiling, ov_props.enable_profiling),
    (props.cache_dir, ov_props.cache_dir),
    (props.log.level, ov_props.log.level),
    (props.supported_properties, ov_props.supported_properties),
    (props.available_devices, ov_props.available_devices),
    (props.optimal_number_of_infer_requests, ov_props.optimal_number_of_infer_requests),
    (props.execution_devices, ov_props.execution_devices),
    (props.device.full_name, ov_props.device.full_name),
    (props.device.capabilities, ov_props.device.capabilities),
    (props.device.priorities, ov_props.device.priorities),
    (props.streams.num, ov_props.streams.num),
    (props.loaded_from_cache, ov_props.loaded_from_cache),
]


@pytest.mark.parametrize("ours, theirs", NAMES, ids=[str(t) for _, t in NAMES])
def test_keys_match_openvino(ours, theirs):
    assert str(ours) == str(theirs)
    assert ours() == theirs()


def test_import_ember_as_ov_style():
    assert ember.properties.hint.PerformanceMode.LATENCY == "LATENCY"
    assert ember.properties.hint.performance_mode(ember.properties.hint.PerformanceMode.THROUGHPUT) == \
        ("PERFORMANCE_HINT", hints.PerformanceMode.THROUGHPUT)


# (key, what the user passes, the typed value stored)
GOOD = [
    ("PERFORMANCE_HINT", "THROUGHPUT", hints.PerformanceMode.THROUGHPUT),
    ("PERFORMANCE_HINT", "latency", hints.PerformanceMode.LATENCY),
    (hints.performance_mode, hints.PerformanceMode.CUMULATIVE_THROUGHPUT, hints.PerformanceMode.CUMULATIVE_THROUGHPUT),
    ("NUM_STREAMS", 3, 3),
    ("NUM_STREAMS", "4", 4),
    ("NUM_STREAMS", "AUTO", -1),
    ("NUM_STREAMS", props.streams.Num.NUMA, -2),
    ("INFERENCE_NUM_THREADS", 0, 0),
    ("INFERENCE_PRECISION_HINT", "bf16", ember.Type.bf16),
    ("INFERENCE_PRECISION_HINT", ember.Type.f32, ember.Type.f32),
    ("INFERENCE_PRECISION_HINT", np.float16, ember.Type.f16),
    ("PERF_COUNT", "YES", True),
    ("ENABLE_PROFILING", True, True),
    ("PERF_COUNT", "false", False),
    ("PERFORMANCE_HINT_NUM_REQUESTS", 8, 8),
    ("LOG_LEVEL", props.log.Level.WARNING, props.log.Level.WARNING),
    ("LOG_LEVEL", "LOG_DEBUG", props.log.Level.DEBUG),
    ("CACHE_DIR", "", ""),
    ("EXECUTION_MODE_HINT", "ACCURACY", hints.ExecutionMode.ACCURACY),
]


@pytest.mark.parametrize("key, value, typed", GOOD)
def test_set_get_roundtrip(key, value, typed):
    core = Core()
    core.set_property("REFERENCE", {key: value})
    got = core.get_property("REFERENCE", key)
    assert got == typed and type(got) is type(typed)


# (key, bad value, words the error must contain)
BAD = [
    ("PERFORMANCE_HINT", "FAST", ["PERFORMANCE_HINT", "LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]),
    ("NUM_STREAMS", 0, ["NUM_STREAMS", "AUTO", "NUMA"]),
    ("NUM_STREAMS", -5, ["NUM_STREAMS"]),
    ("NUM_STREAMS", "many", ["NUM_STREAMS"]),
    ("INFERENCE_NUM_THREADS", -1, [">= 0"]),
    ("INFERENCE_NUM_THREADS", 2.5, ["integer"]),
    ("INFERENCE_PRECISION_HINT", "i8", ["f32", "f16", "bf16"]),
    ("PERF_COUNT", "MAYBE", ["True", "False"]),
    ("LOG_LEVEL", "LOUD", ["DEBUG", "WARNING"]),
    ("CACHE_DIR", 5, ["string"]),
]


@pytest.mark.parametrize("key, value, words", BAD)
def test_bad_values_name_the_allowed_ones(key, value, words):
    core = Core()
    with pytest.raises(PropertyError) as e:
        core.set_property("REFERENCE", {key: value})
    for w in words:
        assert w in str(e.value)
    with pytest.raises(PropertyError):
        core.compile_model(small_model(), "REFERENCE", {key: value})


def test_unknown_key_lists_known_ones():
    core = Core()
    with pytest.raises(PropertyError) as e:
        core.set_property("REFERENCE", {"FOO": 1})
    assert "FOO" in str(e.value) and "PERFORMANCE_HINT" in str(e.value) and "NUM_STREAMS" in str(e.value)
    with pytest.raises(PropertyError):
        core.compile_model(small_model(), "REFERENCE", {"PERFORMANCE_HINTS": "LATENCY"})


def test_read_only_keys_cannot_be_set():
    core = Core()
    for key in ("OPTIMAL_NUMBER_OF_INFER_REQUESTS", "SUPPORTED_PROPERTIES", "FULL_DEVICE_NAME"):
        with pytest.raises(PropertyError, match="read-only"):
            core.set_property("REFERENCE", {key: 1})
    with pytest.raises(PropertyError, match="read-only"):
        props.optimal_number_of_infer_requests(3)


def test_unknown_device():
    with pytest.raises(ember.EmberError, match="REFERENCE"):
        Core().set_property("NOPE", {"PERF_COUNT": True})


def test_device_facts():
    core = Core()
    sp = core.get_property("REFERENCE", props.supported_properties)
    assert sp["PERFORMANCE_HINT"] == "RW" and sp["FULL_DEVICE_NAME"] == "RO"
    for key in sp:  # every listed property can be read
        core.get_property("REFERENCE", key)
    assert core.get_property("REFERENCE", props.device.full_name)
    assert "FP32" in core.get_property("REFERENCE", props.device.capabilities)
    assert core.get_property("REFERENCE", props.available_devices) == [""]
    assert "REFERENCE" in core.available_devices
    assert not {"AUTO", "HETERO", "MULTI"} & set(core.available_devices)
    with pytest.raises(PropertyError, match="supported"):
        core.get_property("REFERENCE", "NOT_A_PROPERTY")


def test_defaults_match_openvino_cpu_where_they_agree():
    core = Core()
    assert core.get_property("REFERENCE", hints.performance_mode) == hints.PerformanceMode.LATENCY
    assert core.get_property("REFERENCE", props.num_streams) == 1
    assert core.get_property("REFERENCE", props.enable_profiling) is False
    assert core.get_property("REFERENCE", props.inference_num_threads) == 0
    # ember's default precision is f32 everywhere (no silent bf16)
    assert core.get_property("REFERENCE", hints.inference_precision) == ember.Type.f32


def test_global_then_device_then_call():
    core = Core()
    core.set_property({props.enable_profiling: True})
    assert core.get_property("REFERENCE", props.enable_profiling) is True
    core.set_property("REFERENCE", {props.enable_profiling: False})
    assert core.get_property("REFERENCE", props.enable_profiling) is False
    cm = core.compile_model(small_model(), "REFERENCE", dict([props.enable_profiling(True)]))
    assert cm.get_property(props.enable_profiling) is True
    cm = core.compile_model(small_model(), "REFERENCE")
    assert cm.get_property("PERF_COUNT") is False


def test_config_as_pairs_and_core_wide_cache_dir(tmp_path):
    core = Core()
    core.set_property({props.cache_dir: str(tmp_path)})
    assert core.get_property(props.cache_dir) == str(tmp_path)
    assert core.get_property("REFERENCE", "CACHE_DIR") == str(tmp_path)
    cm = core.compile_model(small_model(), "REFERENCE", [hints.performance_mode(hints.PerformanceMode.THROUGHPUT),
                                                         props.num_streams(2)])
    assert cm.get_property(hints.performance_mode) == hints.PerformanceMode.THROUGHPUT
    assert cm.get_property(props.num_streams) == 2


def test_compiled_model_properties():
    core = Core()
    cm = core.compile_model(small_model(), "REFERENCE", {"INFERENCE_PRECISION_HINT": "bf16",
                                                         "EXECUTION_MODE_HINT": "ACCURACY"})
    sp = cm.get_property(props.supported_properties)
    for key in sp:
        cm.get_property(key)
    assert set(sp.values()) == {"RO"}
    assert cm.get_property(props.execution_devices) == ["REFERENCE"]
    assert cm.get_property(props.model_name) == "small"
    assert cm.get_property(props.loaded_from_cache) is False
    # ACCURACY means the model's own precision: the bf16 hint is not applied silently
    assert cm.get_property(hints.inference_precision) == ember.Type.f32
    with pytest.raises(PropertyError):
        cm.get_property("FOO")
    with pytest.raises(PropertyError):
        cm.set_property({"NUM_STREAMS": 2})


def test_log_level_sets_the_ember_logger():
    import logging

    core = Core()
    try:
        core.set_property({props.log.level: props.log.Level.DEBUG})
        assert logging.getLogger("ember").level == logging.DEBUG
        core.set_property({props.log.level: props.log.Level.NO})
        assert logging.getLogger("ember").level > logging.CRITICAL
    finally:
        logging.getLogger("ember").setLevel(logging.NOTSET)
