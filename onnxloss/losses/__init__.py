"""The built-in terms. Each module is a plugin, registered exactly like a third party's."""

from .classification import (
    BCELoss,
    BCEWithLogitsLoss,
    BinaryLogLoss,
    CrossEntropyLoss,
    KLDivLoss,
    LogLoss,
    NLLLoss,
)
from .margin import (
    HingeEmbeddingLoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    SoftMarginLoss,
)
from .penalties import ElasticNetPenalty, L1Penalty, L2Penalty
from .ranking import (
    CosineEmbeddingLoss,
    MarginRankingLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from .regression import (
    ElasticLoss,
    GaussianNLLLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    PoissonNLLLoss,
    QuantileLoss,
    SmoothL1Loss,
)

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryLogLoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "ElasticLoss",
    "ElasticNetPenalty",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "L1Penalty",
    "L2Penalty",
    "LogLoss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "PoissonNLLLoss",
    "QuantileLoss",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
]
