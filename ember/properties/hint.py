"""Performance hints: ``ember.properties.hint.performance_mode`` and friends."""

from ember.runtime.properties import ExecutionMode, PerformanceMode, Priority, Property

performance_mode = Property("PERFORMANCE_HINT")
num_requests = Property("PERFORMANCE_HINT_NUM_REQUESTS")
inference_precision = Property("INFERENCE_PRECISION_HINT")
execution_mode = Property("EXECUTION_MODE_HINT")
model_priority = Property("MODEL_PRIORITY")
enable_cpu_pinning = Property("ENABLE_CPU_PINNING")  # the CPU device's (OpenVINO's hint.enable_cpu_pinning)

__all__ = ["ExecutionMode", "PerformanceMode", "Priority", "enable_cpu_pinning", "execution_mode", "inference_precision",
           "model_priority", "num_requests", "performance_mode"]
