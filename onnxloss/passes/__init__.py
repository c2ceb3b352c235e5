"""Graph passes: small model transformations with one job each, composable with
:class:`Sequential`, never modifying the caller's model.

* :mod:`~onnxloss.passes.decompositions`: operators without a gradient in
  onnxruntime-training rewritten with operators that have one (``DecomposeSoftplus``...,
  all of them at once: :class:`DecomposeForGradients`).
* :mod:`~onnxloss.passes.ml_ops`, :mod:`~onnxloss.passes.ml_preprocessing`: scikit-learn's
  ai.onnx.ml operators (linear models, Scaler, Normalizer, Imputer, Binarizer,
  ArrayFeatureExtractor) as standard operators, coefficients as trainable initializers
  (:class:`MLOpsToStandard`, all of them at once).
* :mod:`~onnxloss.passes.precision`: :class:`ToFloat32`.
* :mod:`~onnxloss.passes.versions`: :class:`LowerIRVersion`, :class:`ConvertOpset`.
* :mod:`~onnxloss.passes.structure`: :class:`InitializersNotInputs`,
  :class:`DeclareGradientOutputs`, :class:`ExplicitTransposePerm`, :class:`RedeclareOutputs`.
* :class:`AddLoss`: :func:`onnxloss.rewrite` as a pass.
* :func:`make_trainable` / :class:`MakeTrainable`: all the fixes a converted model needs.

::

    from onnxloss import MSELoss
    from onnxloss.passes import AddLoss, DecomposeForGradients, Sequential, ToFloat32

    result = Sequential(DecomposeForGradients(), ToFloat32(), AddLoss(MSELoss()))(model)
    loss_model = result.model
"""

from .base import Pass, PassError, PassResult, Sequential
from .decompositions import (
    DECOMPOSITIONS,
    DecomposeCastLike,
    DecomposeCelu,
    DecomposeElu,
    DecomposeForGradients,
    DecomposeGlobalMaxPool,
    DecomposeHardSigmoid,
    DecomposeHardSwish,
    DecomposeInstanceNormalization,
    DecomposeMean,
    DecomposeMish,
    DecomposePRelu,
    DecomposeReduceL1,
    DecomposeReduceLogSum,
    DecomposeReduceMax,
    DecomposeReduceMin,
    DecomposeReduceSumSquare,
    DecomposeSelu,
    DecomposeShrink,
    DecomposeSoftplus,
    DecomposeSoftsign,
    DecomposeSum,
    DecomposeThresholdedRelu,
    ReduceL2KeepDims,
    ReduceLogSumExpKeepDims,
)
from .loss import AddLoss
from .ml_ops import (
    ML_RULES,
    LinearClassifierToMatMul,
    LinearRegressorToMatMul,
    MLOpsToStandard,
    ZipMapToTensor,
)
from .ml_preprocessing import (
    ArrayFeatureExtractorToGather,
    BinarizerToStandard,
    ImputerToStandard,
    NormalizerToStandard,
    ScalerToStandard,
)
from .node_rules import NodeRule, NodeView, ReplaceNodes
from .pipeline import MakeTrainable, make_trainable
from .precision import ToFloat32
from .structure import (
    DeclareGradientOutputs,
    ExplicitTransposePerm,
    InitializersNotInputs,
    RedeclareOutputs,
)
from .versions import ConvertOpset, LowerIRVersion, required_ir_version

__all__ = [
    "DECOMPOSITIONS",
    "ML_RULES",
    "AddLoss",
    "ArrayFeatureExtractorToGather",
    "BinarizerToStandard",
    "ConvertOpset",
    "DeclareGradientOutputs",
    "DecomposeCastLike",
    "DecomposeCelu",
    "DecomposeElu",
    "DecomposeForGradients",
    "DecomposeGlobalMaxPool",
    "DecomposeHardSigmoid",
    "DecomposeHardSwish",
    "DecomposeInstanceNormalization",
    "DecomposeMean",
    "DecomposeMish",
    "DecomposePRelu",
    "DecomposeReduceL1",
    "DecomposeReduceLogSum",
    "DecomposeReduceMax",
    "DecomposeReduceMin",
    "DecomposeReduceSumSquare",
    "DecomposeSelu",
    "DecomposeShrink",
    "DecomposeSoftplus",
    "DecomposeSoftsign",
    "DecomposeSum",
    "DecomposeThresholdedRelu",
    "ExplicitTransposePerm",
    "ImputerToStandard",
    "InitializersNotInputs",
    "LinearClassifierToMatMul",
    "LinearRegressorToMatMul",
    "LowerIRVersion",
    "MLOpsToStandard",
    "MakeTrainable",
    "NodeRule",
    "NodeView",
    "NormalizerToStandard",
    "Pass",
    "PassError",
    "PassResult",
    "RedeclareOutputs",
    "ReduceL2KeepDims",
    "ReduceLogSumExpKeepDims",
    "ReplaceNodes",
    "ScalerToStandard",
    "Sequential",
    "ToFloat32",
    "ZipMapToTensor",
    "make_trainable",
    "required_ir_version",
]
