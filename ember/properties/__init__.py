"""OpenVINO-style property names: ``import ember.properties as props`` as ``openvino.properties``.

Each name is a ``str`` equal to the property's key; calling it with a value returns the
``(key, value)`` pair (validated). Hints live in ``ember.properties.hint``, the log level in
``ember.properties.log``, stream counts in ``ember.properties.streams``, device facts in
``ember.properties.device``.
"""

from ember.properties import device, hint, log, streams
from ember.runtime.properties import CacheMode, Property

available_devices = Property("AVAILABLE_DEVICES")
cache_dir = Property("CACHE_DIR")
cache_mode = Property("CACHE_MODE")
enable_profiling = Property("PERF_COUNT")
execution_devices = Property("EXECUTION_DEVICES")
inference_num_threads = Property("INFERENCE_NUM_THREADS")
loaded_from_cache = Property("LOADED_FROM_CACHE")
model_name = Property("NETWORK_NAME")
num_streams = Property("NUM_STREAMS")
optimal_number_of_infer_requests = Property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
range_for_async_infer_requests = Property("RANGE_FOR_ASYNC_INFER_REQUESTS")
range_for_streams = Property("RANGE_FOR_STREAMS")
supported_properties = Property("SUPPORTED_PROPERTIES")
#: ember's own: False makes AUTO and HETERO raise instead of falling back to another device
allow_fallback = Property("ALLOW_FALLBACK")
inference_timeout = Property("INFERENCE_TIMEOUT")  # ember's own: milliseconds, 0 = no limit

__all__ = ["CacheMode", "Property", "allow_fallback", "available_devices", "cache_dir", "cache_mode", "device",
           "enable_profiling", "execution_devices", "hint", "inference_num_threads", "inference_timeout",
           "loaded_from_cache", "log",
           "model_name", "num_streams", "optimal_number_of_infer_requests", "range_for_async_infer_requests",
           "range_for_streams", "streams", "supported_properties"]
