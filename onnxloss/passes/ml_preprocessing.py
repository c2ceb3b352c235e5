"""Passes for the ``ai.onnx.ml`` preprocessing operators of scikit-learn pipelines.

``StandardScaler``, ``Normalizer``, ``SimpleImputer``, ``Binarizer`` and the column
selections of a ``ColumnTransformer`` become ``Scaler``, ``Normalizer``, ``Imputer``,
``Binarizer`` and ``ArrayFeatureExtractor`` nodes. No ai.onnx.ml operator has a gradient in
onnxruntime-training, so a model whose weights sit after one of them still trains (the
gradient never has to cross it), but a weight before one does not, and the rules that
rewrite the linear models need the shapes these nodes hide. Each rule below writes the
node with standard operators that compute the same numbers as onnxruntime.

``OneHotEncoder``, ``LabelEncoder`` and ``CategoryMapper`` are left as they are: they map
categories (integers, strings) to data, onnx infers their output shapes, and no weight
comes before them in a converted pipeline, so they are never on a gradient path.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..builder import GraphBuilder, Value
from ..gradient_ops import ML_DOMAIN
from .node_rules import NodeRule, NodeView

_FLOAT_INPUTS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
_INT_INPUTS = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def as_float32(g: GraphBuilder, view: NodeView, x: Value) -> Value:
    """The ML operators compute in float32 whatever their input type (double, int64...)."""
    info = view.input_info(0)
    if info is not None and info.elem_type == onnx.TensorProto.FLOAT:
        return x
    return g.cast(x, np.float32)


def _per_feature(view: NodeView, length: int) -> str:
    """Why a per-feature attribute of ``length`` values cannot broadcast like onnxruntime
    applies it (to the second axis of an ``[N, C]`` input, or to a 1-D input), or ""."""
    if length == 1:
        return ""
    info = view.input_info(0)
    if info is None or info.rank not in (1, 2):
        return (
            f"it holds {length} values per feature and its input is not a known 1-D or 2-D tensor"
        )
    features = info.shape[-1]
    if isinstance(features, int) and features != length:
        return f"it holds {length} values per feature for an input of {features} features"
    return ""


class ScalerToStandard(NodeRule):
    """``Scaler(X)`` (ai.onnx.ml, scikit-learn's ``StandardScaler``, ``MinMaxScaler``...)
    as ``(X - offset) * scale`` in float32.

    By default ``offset`` and ``scale`` are ``Constant`` nodes: they are statistics of the
    data the pipeline was fitted on, not weights, and a linear model after them can already
    absorb any change of scale or offset in its coefficients. ``ScalerToStandard(
    trainable=True)`` writes them as float32 initializers named ``offset`` and ``scale``
    (``offset_1``... when taken) instead, which the trainer then trains with the rest.
    """

    op_type = "Scaler"
    domain = ML_DOMAIN
    formula = "(X - offset) * scale"

    def __init__(self, *, trainable: bool = False):
        self.trainable = trainable
        # Initializers are created in the main graph, where trainables live.
        self.main_graph_only = trainable

    def explain(self, view):
        if view.input_info(0) is None:
            return "the type of its input is unknown (run onnx.shape_inference first)"
        offset, scale = view.attr("offset") or [], view.attr("scale") or []
        if not scale or len(offset) != len(scale):
            return (
                f"it has {len(offset)} offset(s) and {len(scale)} scale(s); onnxruntime "
                "refuses a Scaler unless both have the same non-zero length"
            )
        return _per_feature(view, len(scale))

    def dtype(self, view):
        return np.dtype(np.float32)

    def build(self, g, view, inputs):
        offset = np.asarray(view.attr("offset"), np.float32)
        scale = np.asarray(view.attr("scale"), np.float32)
        if self.trainable:
            offset, scale = view.initializer("offset", offset), view.initializer("scale", scale)
        else:
            offset, scale = g.const(offset), g.const(scale)
        return [g.Mul(g.Sub(as_float32(g, view, inputs[0]), offset), scale)]

    def __repr__(self) -> str:
        return f"{self.name}(trainable={self.trainable})"


class NormalizerToStandard(NodeRule):
    """``Normalizer(X)`` (ai.onnx.ml) as ``X / d`` with, per row, ``d = ReduceSum(|X|)``
    for ``L1``, ``ReduceL2(X)`` for ``L2`` (its gradient is zero-safe) and ``TopK(X, k=1)``
    (the largest value, as the specification and onnxruntime define it) for ``MAX``; a row
    whose divisor is zero is returned unchanged (``d`` replaced by 1 there)."""

    op_type = "Normalizer"
    domain = ML_DOMAIN
    formula = "X / norm(X, axis=1), rows with a zero norm unchanged"

    def explain(self, view):
        info = view.input_info(0)
        if info is None or info.rank not in (None, 2):
            return "its input is not a known [N, features] tensor"
        norm = view.attr("norm", "MAX")
        return "" if norm in ("L1", "L2", "MAX") else f"norm {norm!r} is not L1, L2 or MAX"

    def dtype(self, view):
        return np.dtype(np.float32)

    def build(self, g, view, inputs):
        x = as_float32(g, view, inputs[0])
        norm = view.attr("norm", "MAX")
        if norm == "L1":
            divisor = g.reduce_sum(g.Abs(x), [1], keepdims=True)
        elif norm == "L2":
            divisor = g.reduce("ReduceL2", x, [1], keepdims=True)
        else:
            k = g.const([1], np.int64)
            divisor = g.op("TopK", x, k, axis=1, num_outputs=2)[0]
        safe = g.Where(g.Equal(divisor, 0.0), 1.0, divisor)
        return [g.Div(x, safe)]


class ImputerToStandard(NodeRule):
    """``Imputer(X)`` (ai.onnx.ml, scikit-learn's ``SimpleImputer``) as
    ``Where(missing(X), imputed, X)``, with ``missing`` = ``IsNaN`` when the replaced value
    is NaN, ``Equal(X, replaced)`` otherwise; ``imputed`` holds one value, or one per
    feature of an ``[N, C]`` input. The gradient flows to ``X`` where nothing is imputed."""

    op_type = "Imputer"
    domain = ML_DOMAIN
    formula = "Where(X is missing, imputed, X)"

    def _values(self, view: NodeView) -> tuple[list, float | int]:
        info = view.input_info(0)
        if info is not None and info.elem_type in _INT_INPUTS:
            return view.attr("imputed_value_int64s") or [], view.attr("replaced_value_int64", 0)
        return view.attr("imputed_value_floats") or [], view.attr("replaced_value_float", 0.0)

    def explain(self, view):
        info = view.input_info(0)
        if info is None:
            return "the type of its input is unknown (run onnx.shape_inference first)"
        if info.elem_type not in (*_FLOAT_INPUTS, *_INT_INPUTS):
            return f"its input is {info.type_name}, not a float or integer tensor"
        imputed, _ = self._values(view)
        if not imputed:
            return "it has no imputed values for its input type"
        if len(imputed) > 1 and info.rank != 2:
            return f"it holds {len(imputed)} values per feature for an input that is not [N, C]"
        return _per_feature(view, len(imputed))

    def build(self, g, view, inputs):
        x = inputs[0]
        imputed, replaced = self._values(view)
        dtype = self.dtype(view)
        if dtype.kind == "f" and math.isnan(replaced):
            missing = g.IsNaN(x)
        else:
            missing = g.Equal(x, g.const(np.asarray(replaced, dtype)))
        return [g.Where(missing, g.const(np.asarray(imputed, dtype)), x)]


class BinarizerToStandard(NodeRule):
    """``Binarizer(X)`` (ai.onnx.ml) as ``Cast(X > threshold, to=type(X))``: 1 where the
    value exceeds the threshold, 0 elsewhere (NaN included), in the input's type. An integer
    input is compared with ``floor(threshold)``, which gives the same answer exactly.
    Piecewise constant: no gradient flows through it (the comparison is boolean)."""

    op_type = "Binarizer"
    domain = ML_DOMAIN
    formula = "Cast(X > threshold, to=type(X))"

    def explain(self, view):
        info = view.input_info(0)
        if info is None:
            return "the type of its input is unknown (run onnx.shape_inference first)"
        if info.elem_type not in (*_FLOAT_INPUTS, *_INT_INPUTS):
            return f"its input is {info.type_name}, not a float or integer tensor"
        return ""

    def build(self, g, view, inputs):
        info = view.input_info(0)
        dtype = info.dtype
        threshold = float(np.float32(view.attr("threshold", 0.0)))  # a float attribute
        if dtype.kind == "i":
            bounds = np.iinfo(dtype)
            threshold = min(max(math.floor(threshold), bounds.min), bounds.max)
        above = g.Greater(inputs[0], g.const(np.asarray(threshold, dtype)))
        return [g.Cast(above, to=info.elem_type)]


class ArrayFeatureExtractorToGather(NodeRule):
    """``ArrayFeatureExtractor(X, indices)`` (ai.onnx.ml) with constant indices as
    ``Gather(X, indices, axis=-1)``: the selected columns of the last axis, ``[..., k]``
    for ``k`` indices (flattened), ``[1, k]`` for a 1-D input (a ``Reshape`` after the
    ``Gather``). Gather has a gradient: a column selection in a ``ColumnTransformer`` or the
    positive-class column of a ``LinearSVC`` no longer blocks training.

    Left alone: indices computed at run time (the label lookup ``classes[ArgMax(...)]``
    of classifiers: no gradient goes there) and negative indices (onnx.reference counts them
    from the end, onnxruntime reads outside the row)."""

    op_type = "ArrayFeatureExtractor"
    domain = ML_DOMAIN
    formula = "Gather(X, indices, axis=-1)"

    def explain(self, view):
        indices = view.constant_input(1)
        if indices is None:
            return "its indices are computed at run time, not constant"
        if indices.dtype.kind not in "iu" or (indices.size and indices.min() < 0):
            return "its indices are not non-negative integers"
        info = view.input_info(0)
        if info is None or info.rank is None or info.rank == 0:
            return "the rank of its input is unknown"
        return ""

    def dtype(self, view):
        return np.dtype(np.float32)  # the only constants are the int64 indices

    def build(self, g, view, inputs):
        indices = g.const(view.constant_input(1).astype(np.int64).ravel())
        rank = view.input_info(0).rank
        picked = g.Gather(inputs[0], indices, axis=rank - 1)
        return [g.reshape(picked, [1, -1]) if rank == 1 else picked]
