"""Stream counts: ``ember.properties.streams.num(ember.properties.streams.Num.AUTO)``."""

from ember.runtime.properties import Property
from ember.runtime.properties import StreamsNum as Num

num = Property("NUM_STREAMS")

__all__ = ["Num", "num"]
