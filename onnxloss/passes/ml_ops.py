"""Passes for the ``ai.onnx.ml`` operators scikit-learn converters emit.

``LinearRegressor`` and ``LinearClassifier`` keep their coefficients in attributes, where
nothing can train them, and no ai.onnx.ml operator has a gradient in onnxruntime-training.
These passes rewrite them with standard operators (``MatMul``, ``Add``, ``Sigmoid``,
``Softmax``...) over float32 initializers named ``coef`` (``[n_features, n_outputs]``) and
``intercept`` (``[n_outputs]``), the names skl2onnx gives the same weights when it writes
them as initializers (``coef_1``... when taken). ``ZipMap`` (probabilities as a list of
dictionaries) is replaced by its probability tensor so that a loss can bind to it.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import GraphBuilder, Value
from ..gradient_ops import ML_DOMAIN
from .base import Pass
from .node_rules import NodeRule, NodeView, ReplaceNodes

#: Float32 post-transforms with an exact standard-operator equivalent.
_POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


def _as_float32(g: GraphBuilder, view: NodeView, x: Value) -> Value:
    """The ML operators compute in float32 whatever their input type (double, int64...)."""
    info = view.input_info(0)
    if info is not None and info.elem_type == onnx.TensorProto.FLOAT:
        return x
    return g.cast(x, np.float32)


def _post_transform(g: GraphBuilder, scores: Value, name: str) -> Value:
    if name == "LOGISTIC":
        return g.Sigmoid(scores)
    if name == "SOFTMAX":
        return g.Softmax(scores, axis=1)
    return scores


def _n_features(view: NodeView, n_coefficients: int, rows: int | None) -> int | None:
    info = view.input_info(0)
    if info is not None and info.rank == 2 and isinstance(info.shape[1], int):
        return info.shape[1]
    if rows:
        return n_coefficients // rows
    return None


class _LinearRule(NodeRule):
    domain = ML_DOMAIN
    main_graph_only = True

    def explain(self, view):
        info = view.input_info(0)
        if info is None or info.rank not in (None, 2):
            return "its input is not a known [N, features] tensor"
        post = view.attr("post_transform", "NONE")
        if post not in _POST_TRANSFORMS:
            return f"post_transform {post} has no exact standard-operator form"
        if not view.attr("coefficients"):
            return "it has no coefficients"
        return ""

    def dtype(self, view):
        return np.dtype(np.float32)

    def weights(self, view: NodeView, rows: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        """``coef [F, rows]`` and ``intercept [rows]`` from the attributes, or None."""
        coefficients = np.asarray(view.attr("coefficients"), np.float32)
        n_features = _n_features(view, coefficients.size, rows)
        if not n_features or coefficients.size % n_features:
            return None
        coef = coefficients.reshape(-1, n_features).T
        intercepts = view.attr("intercepts")
        if intercepts:
            intercept = np.asarray(intercepts, np.float32)
        else:
            intercept = np.zeros(coef.shape[1], np.float32)
        if intercept.shape != (coef.shape[1],):
            return None
        return np.ascontiguousarray(coef), intercept

    def scores(self, g: GraphBuilder, view: NodeView, x: Value, coef, intercept) -> Value:
        return g.Add(
            g.MatMul(_as_float32(g, view, x), view.initializer("coef", coef)),
            view.initializer("intercept", intercept),
        )


class LinearRegressorToMatMul(_LinearRule):
    """``LinearRegressor(X)`` (ai.onnx.ml) as ``X @ coef + intercept`` with float32
    initializers ``coef [n_features, targets]`` and ``intercept [targets]``, then the
    post-transform (``NONE``, ``LOGISTIC`` → Sigmoid, ``SOFTMAX`` → Softmax on axis 1).
    ``PROBIT`` and ``SOFTMAX_ZERO`` are left alone."""

    op_type = "LinearRegressor"
    formula = "X @ coef + intercept (coefficients become initializers)"

    def explain(self, view):
        reason = super().explain(view)
        if not reason and self.weights(view, view.attr("targets", 1)) is None:
            reason = "its coefficients do not fit its input shape and target count"
        return reason

    def build(self, g, view, inputs):
        coef, intercept = self.weights(view, view.attr("targets", 1))
        scores = self.scores(g, view, inputs[0], coef, intercept)
        return [_post_transform(g, scores, view.attr("post_transform", "NONE"))]


class LinearClassifierToMatMul(_LinearRule):
    """``LinearClassifier(X) → (label, scores)`` (ai.onnx.ml) as
    ``scores = post_transform(X @ coef + intercept)`` and
    ``label = classlabels[ArgMax(scores, axis=1)]`` (``Gather`` from a constant).

    One coefficient row per class, as skl2onnx writes them (two rows for a binary
    LogisticRegression). The label path has no gradient, which is fine: it is not on the
    way to a loss on the scores. Left alone: ``PROBIT`` and ``SOFTMAX_ZERO``, and a single
    coefficient row (binary scores), on which onnxruntime (``[1 - s, s]``, post-transform
    ignored) and onnx.reference (``post_transform([-s, s])``) disagree.
    """

    op_type = "LinearClassifier"
    formula = "post_transform(X @ coef + intercept); label = classlabels[ArgMax]"

    def _classes(self, view: NodeView) -> np.ndarray | None:
        ints, strings = view.attr("classlabels_ints"), view.attr("classlabels_strings")
        if ints:
            return np.asarray(ints, np.int64)
        if strings:
            return np.array([s.decode() if isinstance(s, bytes) else s for s in strings], object)
        return None

    def _rows(self, view: NodeView) -> int | None:
        intercepts = view.attr("intercepts")
        return len(intercepts) if intercepts else None

    def explain(self, view):
        reason = super().explain(view)
        if reason:
            return reason
        classes = self._classes(view)
        weights = self.weights(view, self._rows(view))
        if classes is None:
            return "it has no class labels"
        if weights is None:
            return "the number of features cannot be told from its input shape"
        if weights[0].shape[1] != len(classes):
            return (
                f"it has {weights[0].shape[1]} coefficient row(s) for {len(classes)} classes; "
                "runtimes disagree on what a single binary row computes"
            )
        return ""

    def build(self, g, view, inputs):
        coef, intercept = self.weights(view, self._rows(view))
        scores = self.scores(g, view, inputs[0], coef, intercept)
        scores = _post_transform(g, scores, view.attr("post_transform", "NONE"))
        index = g.ArgMax(scores, axis=1, keepdims=0)
        label = g.op("Gather", g.const(self._classes(view)), index, axis=0)
        return [label, scores]


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
        x = _as_float32(g, view, inputs[0])
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


class ZipMapToTensor(Pass):
    """Replace each ``ZipMap`` (ai.onnx.ml; probabilities as a sequence of maps) by an
    ``Identity`` of its probability tensor: the output keeps its name and becomes a float
    tensor ``[N, n_classes]`` that a loss can bind to (what skl2onnx's
    ``options={'zipmap': False}`` gives)."""

    def apply(self, model: onnx.ModelProto) -> bool:
        graph = model.graph
        found = {}
        for node in graph.node:
            if node.op_type == "ZipMap" and node.domain == ML_DOMAIN:
                labels = [a for a in node.attribute if a.name.startswith("classlabels")]
                n_classes = len(labels[0].ints or labels[0].strings) if labels else None
                node.op_type, node.domain = "Identity", ""
                del node.attribute[:]
                found[node.output[0]] = n_classes
        if not found:
            return False
        for group in (graph.output, graph.value_info):
            for vi in group:
                if vi.name in found:
                    batch = _batch_dim(graph, vi.name)
                    vi.type.CopyFrom(
                        onnx.helper.make_tensor_type_proto(
                            onnx.TensorProto.FLOAT, [batch, found[vi.name]]
                        )
                    )
        return True


def _batch_dim(graph: onnx.GraphProto, name: str) -> str | int | None:
    """The first input's first dimension: the samples of a scikit-learn model."""
    for vi in graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = dims[0]
            if d.HasField("dim_value"):
                return d.dim_value
            return d.dim_param or None
    return None


class MLOpsToStandard(ReplaceNodes):
    """The three ai.onnx.ml rewrites in one sweep: LinearRegressor, LinearClassifier and
    Normalizer become standard operators (ZipMap is a separate pass: it changes an output's
    type)."""

    def __init__(self):
        super().__init__(
            LinearRegressorToMatMul(), LinearClassifierToMatMul(), NormalizerToStandard()
        )

    @property
    def name(self) -> str:
        return "MLOpsToStandard"
