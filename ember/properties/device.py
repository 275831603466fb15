"""Device facts: ``ember.properties.device.full_name``, ``capabilities``, ``priorities``."""

from ember.runtime.properties import Capability, Property
from ember.runtime.properties import DeviceType as Type

full_name = Property("FULL_DEVICE_NAME")
capabilities = Property("OPTIMIZATION_CAPABILITIES")
priorities = Property("MULTI_DEVICE_PRIORITIES")
type = Property("DEVICE_TYPE")  # noqa: A001 - OpenVINO's name

__all__ = ["Capability", "Type", "capabilities", "full_name", "priorities", "type"]
