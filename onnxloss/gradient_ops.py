"""Which operators onnxruntime-training 1.19.2 can differentiate, and in which forms.

Every entry was measured, not read: a graph ``W → op → ReduceSum`` (or a small variant that
gives the operator valid inputs) went through ``artifacts.generate_artifacts`` and, when that
worked, one training step. ``tests/test_readiness_runtime.py`` repeats the measurement for
every entry against the installed runtime, so the tables cannot silently go stale.

The module only holds data and a classifier: it never imports onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

RUNTIME = "onnxruntime-training 1.19.2"

#: Operators (ai.onnx) with a working gradient builder and CPU kernels. Some need a
#: particular form, checked by :func:`gradient_support` (see ``_FORM_RULES``).
GRADIENT = frozenset(
    """
    Abs Add AveragePool BatchNormalization Cast Clip Concat Conv ConvTranspose Cos Div
    Dropout Erf Exp Expand Flatten Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool Identity If LayerNormalization LeakyRelu Log LogSoftmax MatMul Max
    MaxPool Min Mul Neg Pad Pow Reciprocal ReduceL2 ReduceLogSumExp ReduceMean ReduceSum
    Relu Reshape Resize ScatterElements ScatterND Sigmoid Sin Slice Softmax
    SoftmaxCrossEntropyLoss Split Sqrt Squeeze Sub Tanh Tile TopK Transpose Trilu Unsqueeze
    Where
    """.split()
)

#: Operators whose gradient builder is missing ("The gradient builder has not been
#: registered"): on the path from a trained tensor to the loss they stop generation.
NO_GRADIENT = frozenset(
    """
    Acos Acosh Asin Asinh Atan Atanh Bernoulli CastLike Ceil Celu CenterCropPad Compress
    Cosh CumSum DFT DepthToSpace Det Einsum Elu Floor GlobalMaxPool GridSample
    GroupNormalization HardSigmoid HardSwish Hardmax InstanceNormalization LRN
    LpNormalization LpPool MaxRoiPool Mean MeanVarianceNormalization Mish Mod
    NegativeLogLikelihoodLoss PRelu ReduceL1 ReduceLogSum ReduceMax ReduceMin ReduceProd
    ReduceSumSquare ReverseSequence RoiAlign Round Scan Selu Shrink Sign Sinh Softplus
    Softsign SpaceToDepth Sum Tan ThresholdedRelu Upsample
    """.split()
)

#: Operators that stop gradients without an error: their float outputs do not depend on
#: their inputs' values in a differentiable way, so the runtime treats them as constants.
#: A trained tensor whose only way to the loss goes through one of them gets no gradient
#: ("Cannot compute the partial derivative ... unreachable").
STOPS_GRADIENT = frozenset({"EyeLike", "RandomNormalLike", "RandomUniformLike", "Range"})

#: Inputs (by position) that carry no gradient even when float: a trained tensor used only
#: there is unreachable for the runtime (measured for Clip's bounds).
NON_DIFFERENTIABLE_INPUTS = {"Clip": frozenset({1, 2}), "Where": frozenset({0})}

#: Gradient builders whose gradient kernel exists for CUDA only in the CPU package:
#: generation works, creating the training session fails ("Could not find an implementation").
NO_CPU_KERNEL = {"ConvTranspose": "ConvTransposeGrad", "Resize": "ResizeGrad"}

#: Operators on the gradient path that abort the whole process during generation.
CRASHES = frozenset({"Loop"})

#: Element types a gradient flows through.
DIFFERENTIABLE_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)

ML_DOMAIN = "ai.onnx.ml"
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class GradientSupport:
    """How the runtime treats one node on the gradient path.

    ``status`` is one of ``"ok"``, ``"none"`` (no gradient builder), ``"form"`` (a builder
    exists but not for this node's attributes or outputs), ``"cpu"`` (no CPU kernel for the
    gradient), ``"crash"`` (aborts the process), ``"stop"`` (treated as a constant) or
    ``"unknown"`` (not measured); ``reason`` says why in words.
    """

    status: str
    reason: str = ""

    @property
    def blocks(self) -> bool:
        return self.status in ("none", "form", "crash")


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _declared_outputs(node: onnx.NodeProto) -> int:
    return sum(1 for o in node.output if o)


def _has_input(node: onnx.NodeProto, index: int) -> bool:
    return len(node.input) > index and bool(node.input[index])


def _reduce_form(node: onnx.NodeProto, opset: int) -> str:
    # Measured: builds with keepdims=1, or with keepdims=0 when the axes come as an input
    # (opset >= 18); keepdims=0 with attribute axes or no axes fails in shape inference.
    if _attr(node, "keepdims", 1) == 1:
        return ""
    if opset >= 18 and _has_input(node, 1):
        return ""
    return "keepdims=0 without an axes input (the gradient graph loses a shape)"


def _layer_norm_form(node: onnx.NodeProto, opset: int) -> str:
    if _declared_outputs(node) >= 3:
        return ""
    return "its optional outputs Mean and InvStdDev are not declared"


def _dropout_form(node: onnx.NodeProto, opset: int) -> str:
    if _declared_outputs(node) >= 2 or not (_has_input(node, 1) or _has_input(node, 2)):
        return ""
    return "it has a ratio or training_mode input but no declared mask output"


def _sce_form(node: onnx.NodeProto, opset: int) -> str:
    if _declared_outputs(node) >= 2:
        return ""
    return "its optional log_prob output is not declared"


def _pad_form(node: onnx.NodeProto, opset: int) -> str:
    mode = _attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return "" if mode == "constant" else f"mode '{mode}' (only 'constant' has a gradient)"


def _batch_norm_form(node: onnx.NodeProto, opset: int) -> str:
    if _attr(node, "training_mode", 0) == 0:
        return ""
    return "training_mode=1 (the eval model it produces cannot be loaded)"


def _transpose_form(node: onnx.NodeProto, opset: int) -> str:
    # Measured: without perm the gradient builder fails with "unordered_map::at".
    return "" if _attr(node, "perm") is not None else "no perm attribute (the default reversal)"


_FORM_RULES = {
    "Transpose": _transpose_form,
    "ReduceL2": _reduce_form,
    "ReduceLogSumExp": _reduce_form,
    "LayerNormalization": _layer_norm_form,
    "Dropout": _dropout_form,
    "SoftmaxCrossEntropyLoss": _sce_form,
    "Pad": _pad_form,
    "BatchNormalization": _batch_norm_form,
}


def gradient_support(node: onnx.NodeProto, opset: int) -> GradientSupport:
    """Classify ``node`` (of a model with ai.onnx opset ``opset``) for gradient building."""
    op, domain = node.op_type, node.domain
    if domain == ML_DOMAIN:
        return GradientSupport(
            "none", f"{RUNTIME} has no gradient for ai.onnx.ml operators such as {op}"
        )
    if domain not in DEFAULT_DOMAINS:
        return GradientSupport(
            "unknown", f"operator of domain '{domain}' not measured; it may have no gradient"
        )
    if op in CRASHES:
        return GradientSupport(
            "crash", f"{RUNTIME} aborts the process when it meets a {op} on the gradient path"
        )
    if op in NO_GRADIENT:
        return GradientSupport("none", f"{RUNTIME} has no gradient builder for {op}")
    if op in STOPS_GRADIENT:
        return GradientSupport("stop", f"{op} is treated as a constant: no gradient flows")
    if op in GRADIENT:
        rule = _FORM_RULES.get(op)
        problem = rule(node, opset) if rule else ""
        if problem:
            return GradientSupport(
                "form", f"{RUNTIME} cannot differentiate this form of {op}: {problem}"
            )
        if op in NO_CPU_KERNEL:
            return GradientSupport(
                "cpu",
                f"{RUNTIME} builds the gradient of {op} but its CPU package has no "
                f"{NO_CPU_KERNEL[op]} kernel (the CUDA package has one)",
            )
        return GradientSupport("ok")
    return GradientSupport("unknown", f"{op} was not measured; it may have no gradient")
