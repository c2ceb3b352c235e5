"""onnxloss: turn an ONNX inference graph into a training graph with a scalar loss.

``rewrite(model, spec)`` returns a copy of ``model`` whose first output is the loss; a
spec is a sum of scaled terms (losses bound to outputs, regularizers on weights). Terms
come from plugins (entry-point group ``onnxloss``); the built-in ones are plugins too.
The trainer lives in :mod:`onnxloss.train` and is imported only when used.
"""

from __future__ import annotations

from .builder import GraphBuilder
from .compat import add_loss_output, penalty_terms
from .errors import (
    CoefficientError,
    ConvergenceError,
    DtypeError,
    MetadataError,
    ModelFileError,
    NameCollisionError,
    OnnxLossError,
    OpsetError,
    OutputSelectionError,
    PenaltyError,
    PluginError,
    PluginWarning,
    ShapeError,
    TensorNotFoundError,
    UnknownTermError,
)
from .hookspecs import hookimpl
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    BinaryLogLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    ElasticLoss,
    ElasticNetPenalty,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    L1Penalty,
    L2Penalty,
    LogLoss,
    MarginRankingLoss,
    MSELoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    QuantileLoss,
    SmoothL1Loss,
    SoftMarginLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from .model_index import MAX_OPSET, MIN_OPSET
from .readiness import NotTrainableError, Problem, TrainabilityReport, check_trainable
from .registry import (
    PluginRegistry,
    available_losses,
    available_regularizers,
    get_registry,
)
from .rewrite import read_metadata, rewrite, rewrite_file, strip_loss
from .tensor_info import TensorInfo
from .terms import Loss, Regularizer, Spec, Term, check_number, check_numbers

__version__ = "0.1.0"

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryLogLoss",
    "CoefficientError",
    "ConvergenceError",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "DtypeError",
    "ElasticLoss",
    "ElasticNetPenalty",
    "GaussianNLLLoss",
    "GraphBuilder",
    "HingeEmbeddingLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "L1Penalty",
    "L2Penalty",
    "LogLoss",
    "Loss",
    "MAX_OPSET",
    "MIN_OPSET",
    "MSELoss",
    "MarginRankingLoss",
    "MetadataError",
    "ModelFileError",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "NameCollisionError",
    "NotTrainableError",
    "OnnxLossError",
    "OpsetError",
    "OutputSelectionError",
    "PenaltyError",
    "PluginError",
    "PluginRegistry",
    "PluginWarning",
    "PoissonNLLLoss",
    "Problem",
    "QuantileLoss",
    "Regularizer",
    "ShapeError",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "Spec",
    "TensorInfo",
    "TensorNotFoundError",
    "Term",
    "TrainabilityReport",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "UnknownTermError",
    "add_loss_output",
    "available_losses",
    "available_regularizers",
    "check_number",
    "check_numbers",
    "check_trainable",
    "get_registry",
    "hookimpl",
    "penalty_terms",
    "read_metadata",
    "rewrite",
    "rewrite_file",
    "strip_loss",
]
