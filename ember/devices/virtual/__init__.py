"""The virtual devices: AUTO (chooses a device), HETERO (splits a model across devices) and
MULTI (spreads requests across devices). They compile through other devices' plugins."""

from ember.devices.virtual.auto import AutoDevice
from ember.devices.virtual.hetero import HeteroDevice, split_model
from ember.devices.virtual.multi import MultiDevice

__all__ = ["AutoDevice", "HeteroDevice", "MultiDevice", "split_model"]
