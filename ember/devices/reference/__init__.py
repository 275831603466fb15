"""The REFERENCE device: every op through its numpy reference kernel."""

from ember.devices.reference.executor import ReferenceExecutor, run_model

__all__ = ["ReferenceExecutor", "run_model"]
