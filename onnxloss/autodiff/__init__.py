"""Gradients as a graph pass: reverse-mode differentiation of ONNX graphs in pure ONNX.

* :func:`gradient` appends the backward nodes of a loss model, in standard ONNX, and adds
  one output ``∂loss/∂w`` per trained tensor, so the result trains on any ONNX runtime.
* :func:`optimizer_update` is an optimizer's update alone, as a model (for a trainer that
  all-reduces gradients between :func:`gradient` and the update).
* :func:`training_step` is the gradient and the update in one model.
* :func:`describe_training_step` says what any of these models feeds and returns.

Every operator's gradient is a small rule registered through the
``onnxloss_register_gradients`` hook; the built-in rules are plugins like a third party's.
Importing this package never imports a runtime.
"""

from __future__ import annotations

from .description import (
    StateTensor,
    TrainedTensor,
    TrainingMetadataError,
    TrainingStepInfo,
    describe_training_step,
)
from .gradient_model import gradient
from .node import GradientError, GradientNode
from .optimizers import OPTIMIZERS
from .training import optimizer_update, training_step
from .walk import Backpropagation

__all__ = [
    "OPTIMIZERS",
    "Backpropagation",
    "GradientError",
    "GradientNode",
    "StateTensor",
    "TrainedTensor",
    "TrainingMetadataError",
    "TrainingStepInfo",
    "describe_training_step",
    "gradient",
    "optimizer_update",
    "training_step",
]
