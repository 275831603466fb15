"""Preprocessing as graph ops: ``from ember.preprocess import PrePostProcessor`` as in
``openvino.preprocess``."""

from ember.preprocess.prepostprocessor import (
    ColorFormat,
    InputInfo,
    InputTensorInfo,
    ModelInfo,
    OutputInfo,
    OutputTensorInfo,
    PostProcessSteps,
    PrePostProcessor,
    PreProcessSteps,
    ResizeAlgorithm,
)

InputModelInfo = ModelInfo
OutputModelInfo = ModelInfo

__all__ = ["ColorFormat", "InputInfo", "InputModelInfo", "InputTensorInfo", "ModelInfo", "OutputInfo",
           "OutputModelInfo", "OutputTensorInfo", "PostProcessSteps", "PrePostProcessor", "PreProcessSteps",
           "ResizeAlgorithm"]
