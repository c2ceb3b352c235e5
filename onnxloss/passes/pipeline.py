"""``make_trainable``: every fix a converted model needs before onnxruntime-training can
train it, in one call."""

from __future__ import annotations

import onnx

from ..model_io import ModelLike
from .base import Sequential
from .decompositions import DecomposeForGradients
from .ml_ops import MLOpsToStandard, ZipMapToTensor
from .precision import ToFloat32
from .structure import (
    DeclareGradientOutputs,
    ExplicitTransposePerm,
    InitializersNotInputs,
    RedeclareOutputs,
)
from .versions import ConvertOpset, LowerIRVersion


class MakeTrainable(Sequential):
    """The passes :func:`make_trainable` runs, in order:

    1. :class:`InitializersNotInputs`: weights listed as graph inputs become plain
       initializers.
    2. :class:`ConvertOpset`: an ai.onnx opset outside 13–21 is converted into that range
       (the loss rewriter needs 13, the runtime trains up to 21).
    3. :class:`ZipMapToTensor`, :class:`MLOpsToStandard`: scikit-learn's ai.onnx.ml
       operators become standard operators: linear models over ``coef`` / ``intercept``
       initializers, preprocessing (``Scaler``, ``Imputer``, ``ArrayFeatureExtractor``...)
       over constants.
    4. :class:`DecomposeForGradients`: operators without a gradient become compositions of
       operators with one.
    5. :class:`DeclareGradientOutputs`, :class:`ExplicitTransposePerm`: forms the gradient
       builders need (optional outputs declared, permutations written out).
    6. :class:`RedeclareOutputs`: outputs declared with a shape their nodes do not compute
       are declared again from shape inference.
    7. :class:`ToFloat32`: float64 weights, inputs, outputs and casts become float32.
    8. :class:`LowerIRVersion`: IR version 10 when nothing needs a newer one.
    """

    def __init__(self, *, float32: bool = True):
        passes = [
            InitializersNotInputs(),
            ConvertOpset(),
            ZipMapToTensor(),
            MLOpsToStandard(),
            DecomposeForGradients(),
            DeclareGradientOutputs(),
            ExplicitTransposePerm(),
            RedeclareOutputs(),
        ]
        if float32:
            passes.append(ToFloat32())
        passes.append(LowerIRVersion())
        super().__init__(*passes)

    @property
    def name(self) -> str:
        return "MakeTrainable"


def make_trainable(model: ModelLike, *, float32: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` with every :class:`MakeTrainable` fix applied (``model`` itself is
    never modified). ``MakeTrainable()(model).applied`` also says which passes acted.

    Args:
        model: a ``ModelProto`` or a path.
        float32: convert float64 tensors to float32 (the runtime trains float32 only).

    Run :func:`onnxloss.check_trainable` on the result (after adding a loss) to see what,
    if anything, still stands in the way.
    """
    return MakeTrainable(float32=float32)(model).model
