"""Passes for the ``ai.onnx.ml`` model operators scikit-learn converters emit (the
preprocessing ones are in :mod:`~onnxloss.passes.ml_preprocessing`).

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
from ..model_index import iter_graphs
from .base import Pass
from .ml_preprocessing import (
    ArrayFeatureExtractorToGather,
    BinarizerToStandard,
    ImputerToStandard,
    NormalizerToStandard,
    ScalerToStandard,
    as_float32,
)
from .node_rules import NodeRule, NodeView, ReplaceNodes

#: Float32 post-transforms with an exact standard-operator equivalent.
_POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


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
            g.MatMul(as_float32(g, view, x), view.initializer("coef", coef)),
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

    One coefficient row per class, as skl2onnx writes them. A binary classifier written as
    two opposite rows (skl2onnx's form for LogisticRegression, LinearSVC, SGDClassifier...)
    keeps one column of weights, ``coef [F, 1]``, and computes the scores
    ``post_transform(Concat(-s, s))`` with ``s = X @ coef + intercept``: the same numbers,
    and the two scores stay opposite while training (two free columns would drift apart:
    probabilities that no longer sum to one, a label that no longer follows the score).
    The label path has no gradient, which is fine: it is not on the way to a loss on the
    scores. Left alone: ``PROBIT`` and ``SOFTMAX_ZERO``, and a single coefficient row
    (binary scores), on which onnxruntime (``[1 - s, s]``, post-transform ignored) and
    onnx.reference (``post_transform([-s, s])``) disagree.
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
        if _opposite_columns(coef, intercept):
            positive = self.scores(g, view, inputs[0], coef[:, 1:], intercept[1:])
            scores = g.Concat(g.Neg(positive), positive, axis=1)
        else:
            scores = self.scores(g, view, inputs[0], coef, intercept)
        scores = _post_transform(g, scores, view.attr("post_transform", "NONE"))
        index = g.ArgMax(scores, axis=1, keepdims=0)
        label = g.op("Gather", g.const(self._classes(view)), index, axis=0)
        return [label, scores]


def _opposite_columns(coef: np.ndarray, intercept: np.ndarray) -> bool:
    """Two score columns that are exact opposites (binary classifiers)."""
    return (
        coef.shape[1] == 2
        and np.array_equal(coef[:, 0], -coef[:, 1])
        and intercept[0] == -intercept[1]
    )


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


#: Every ai.onnx.ml rewrite rule, in the order :class:`MLOpsToStandard` lists them.
ML_RULES = (
    LinearRegressorToMatMul,
    LinearClassifierToMatMul,
    NormalizerToStandard,
    ScalerToStandard,
    ImputerToStandard,
    BinarizerToStandard,
    ArrayFeatureExtractorToGather,
)


class MLOpsToStandard(ReplaceNodes):
    """Every ai.onnx.ml rewrite in one sweep: ``LinearRegressor``, ``LinearClassifier``,
    ``Normalizer``, ``Scaler``, ``Imputer``, ``Binarizer`` and ``ArrayFeatureExtractor``
    (constant indices) become standard operators. Shape inference goes through the ML
    operators (:mod:`~onnxloss.passes.ml_shapes`), so a linear model after a ``Scaler`` is
    rewritten in the same sweep. ``ZipMap`` is a separate pass: it changes an output's type.

    Args:
        trainable_scalers: write the offsets and scales of ``Scaler`` nodes as initializers
            (trained by default) rather than constants (see :class:`ScalerToStandard`).
    """

    def __init__(self, *, trainable_scalers: bool = False):
        rules = [
            ScalerToStandard(trainable=trainable_scalers) if cls is ScalerToStandard else cls()
            for cls in ML_RULES
        ]
        super().__init__(*rules)

    @property
    def name(self) -> str:
        return "MLOpsToStandard"

    def apply(self, model: onnx.ModelProto) -> bool:
        consumed = {i for n in model.graph.node if n.domain == ML_DOMAIN for i in n.input}
        changed = super().apply(model)
        if changed:
            _drop_unused_initializers(model, consumed)
        return changed


def _drop_unused_initializers(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Remove the main-graph initializers among ``candidates`` that nothing reads any more
    (the constant indices of a rewritten ArrayFeatureExtractor...): onnxruntime warns about
    each one."""
    graph = model.graph
    used = {i for g in iter_graphs(graph) for n in g.node for i in n.input}
    used |= {o.name for o in graph.output} | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name not in candidates or t.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
