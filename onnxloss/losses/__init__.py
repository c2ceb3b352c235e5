"""The built-in terms. Each module is a plugin, registered exactly like a third party's."""

from .classification import BCELoss, BCEWithLogitsLoss, BinaryLogLoss, CrossEntropyLoss, LogLoss
from .penalties import ElasticNetPenalty, L1Penalty, L2Penalty
from .regression import ElasticLoss, HuberLoss, L1Loss, MSELoss, PoissonNLLLoss, QuantileLoss

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryLogLoss",
    "CrossEntropyLoss",
    "ElasticLoss",
    "ElasticNetPenalty",
    "HuberLoss",
    "L1Loss",
    "L1Penalty",
    "L2Penalty",
    "LogLoss",
    "MSELoss",
    "PoissonNLLLoss",
    "QuantileLoss",
]
