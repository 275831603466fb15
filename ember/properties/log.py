"""The log level: ``ember.properties.log.level(ember.properties.log.Level.DEBUG)``."""

from ember.runtime.properties import LogLevel as Level
from ember.runtime.properties import Property

level = Property("LOG_LEVEL")

__all__ = ["Level", "level"]
