"""ember: convert, optimize and run neural networks fast on the hardware at hand."""

from ember.graph import Dimension, Layout, Model, PartialShape, Shape, Type

__version__ = "0.1.0"
__all__ = ["Dimension", "Layout", "Model", "PartialShape", "Shape", "Type"]
