"""The errors the model zoo raises: all are ``EmberError``s with a message that says what to do."""

from __future__ import annotations

from ember.errors import ConversionError, EmberError


class ZooError(EmberError):
    """A zoo model could not be found, fetched or prepared."""


class RegistryUnreachableError(ZooError):
    """The package registry could not be reached (no network, proxy, DNS)."""


class ChecksumError(ZooError):
    """A downloaded file does not have the sha256 the zoo recorded for it; it is not used."""


class UnsafeFileError(ConversionError):
    """A weights file holds something other than plain tensors (code, arbitrary objects)."""
