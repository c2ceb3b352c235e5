"""The trainer: fits a loss model's weights with onnxruntime, on one of two backends
(onnxruntime-training, or the autodiff training step on a plain onnxruntime).

Imported only when used (``import onnxloss`` never imports onnxruntime). Needs one of the
extras ``train``, ``train-gpu``, ``train-onnxruntime``, ``train-onnxruntime-gpu``. Works
without torch.
"""

from ..errors import ConvergenceError
from .distributed import DistributedError, shard
from .optimizer import OrtGradientOptimizer
from .schedules import Constant, InvScaling, LearningRateSchedule, Optimal

__all__ = [
    "Constant",
    "ConvergenceError",
    "DistributedError",
    "InvScaling",
    "LearningRateSchedule",
    "Optimal",
    "OrtGradientOptimizer",
    "shard",
]
