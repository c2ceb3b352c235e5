"""The trainer: fits a loss model's weights with onnxruntime-training.

Imported only when used (``import onnxloss`` never imports onnxruntime). Needs the extra
``train`` (CPU) or ``train-gpu`` (CUDA). Works without torch.
"""

from ..errors import ConvergenceError
from .optimizer import OrtGradientOptimizer
from .schedules import Constant, InvScaling, LearningRateSchedule, Optimal

__all__ = [
    "Constant",
    "ConvergenceError",
    "InvScaling",
    "LearningRateSchedule",
    "Optimal",
    "OrtGradientOptimizer",
]
