"""Operators without a gradient in onnxruntime-training, rewritten with operators that have
one (see :mod:`onnxloss.gradient_ops`).

Each class replaces one operator by a composition that computes the same numbers (checked
against ``onnx.reference`` and onnxruntime on random inputs, zeros and large magnitudes in
``tests/test_passes_decompositions.py``) and whose gradient onnxruntime-training 1.19.2
builds. Only nodes whose input is a float tensor are rewritten: integer arithmetic (shape
computations) carries no gradient and is left alone. The docstring of each class states the
formula it emits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..builder import GraphBuilder, Value
from ..errors import OnnxLossError
from ..losses.functions import softplus as stable_softplus
from .node_rules import NodeRule, NodeView, ReplaceNodes


def _negative_branch(g: GraphBuilder, x: Value) -> Value:
    """``x`` where ``x <= 0``, else 0: the argument of ``exp`` in the ``x <= 0`` branch of
    the ELU family. No overflow in the branch not taken, and at ``x = 0`` the gradient goes
    to this branch whole (``Min(x, 0)`` splits a tie in halves in onnxruntime-training)."""
    return g.Where(g.Greater(x, 0.0), 0.0, x)


def _elu_like(g: GraphBuilder, x: Value, alpha: float, scale: float = 1.0) -> Value:
    """``x if x > 0 else alpha·(exp(x/scale) - 1)``, as
    ``Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)/scale) - 1))``: the gradient at 0 is
    the left one, ``alpha/scale``, as PyTorch's (``Relu'(0) = 0`` and ``Min``'s tie would
    give half of it)."""
    m = _negative_branch(g, x)
    if scale != 1.0:
        m = g.Div(m, scale)
    return g.Where(g.Greater(x, 0.0), x, g.Mul(g.Sub(g.Exp(m), 1.0), alpha))


def _unit_clip(g: GraphBuilder, z: Value) -> Value:
    """``min(max(z, 0), 1)`` whose gradient is 0 at ``z = 0`` and ``z = 1``, as PyTorch's
    hardsigmoid and hardswish (``Clip`` passes the gradient at its bounds)."""
    return g.Where(g.Greater(z, 0.0), g.Where(g.Less(z, 1.0), z, 1.0), 0.0)


class DecomposeSoftplus(NodeRule):
    """``Softplus(x) = log(1 + exp(x))`` as ``(x + |x|)/2 + Log(1 + Exp(-|x|))``.

    Stable: exact ``x`` for large ``x`` where ``Log(1 + Exp(x))`` overflows in float32 (x ≳ 88),
    and its gradient is exactly ``sigmoid(x)``, ``1/2`` at 0 included, whatever gradient the
    runtime gives ``Abs`` at 0 (:func:`onnxloss.losses.functions.softplus`).
    """

    op_type = "Softplus"
    formula = "(x + |x|)/2 + Log(1 + Exp(-|x|))"

    def build(self, g, view, inputs):
        return [stable_softplus(g, inputs[0])]


class DecomposeElu(NodeRule):
    """``Elu(x) = x if x > 0 else alpha·(exp(x) - 1)`` as
    ``Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)) - 1))``: no overflow in the branch not
    taken, and the gradient at 0 is ``alpha`` (PyTorch's)."""

    op_type = "Elu"
    formula = "Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)) - 1))"

    def build(self, g, view, inputs):
        return [_elu_like(g, inputs[0], view.attr("alpha", 1.0))]


class DecomposeSelu(NodeRule):
    """``Selu(x) = gamma·x if x > 0 else gamma·alpha·(exp(x) - 1)`` as
    ``gamma·Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)) - 1))`` (gradient
    ``gamma·alpha`` at 0, PyTorch's)."""

    op_type = "Selu"
    formula = "gamma·Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)) - 1))"

    def build(self, g, view, inputs):
        alpha, gamma = view.attr("alpha"), view.attr("gamma")
        return [g.Mul(_elu_like(g, inputs[0], alpha), gamma)]


class DecomposeCelu(NodeRule):
    """``Celu(x) = max(0, x) + min(0, alpha·(exp(x/alpha) - 1))`` as
    ``Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)/alpha) - 1))`` (gradient 1 at 0, where
    ``Celu`` is smooth)."""

    op_type = "Celu"
    formula = "Where(x > 0, x, alpha·(Exp(Where(x > 0, 0, x)/alpha) - 1))"

    def build(self, g, view, inputs):
        alpha = view.attr("alpha", 1.0)
        return [_elu_like(g, inputs[0], alpha, scale=alpha)]


class DecomposeHardSigmoid(NodeRule):
    """``HardSigmoid(x) = max(0, min(1, alpha·x + beta))`` as
    ``Where(z > 0, Where(z < 1, z, 1), 0)`` with ``z = alpha·x + beta`` (gradient 0 at the
    two corners, as PyTorch's; ``Clip`` would pass it there)."""

    op_type = "HardSigmoid"
    formula = "Where(z > 0, Where(z < 1, z, 1), 0), z = alpha·x + beta"

    def build(self, g, view, inputs):
        z = g.Add(g.Mul(inputs[0], view.attr("alpha")), view.attr("beta"))
        return [_unit_clip(g, z)]


_ONE_SIXTH = float(np.float32(1.0 / 6.0))


class DecomposeHardSwish(NodeRule):
    """``HardSwish(x) = x·max(0, min(1, x/6 + 1/2))`` as ``x·Where(z > 0, Where(z < 1, z, 1),
    0)`` with ``z = x·(1/6) + 0.5`` (gradient 0 at -3 and 1 at 3, as PyTorch's)."""

    op_type = "HardSwish"
    formula = "x·Where(z > 0, Where(z < 1, z, 1), 0), z = x/6 + 1/2"

    def build(self, g, view, inputs):
        x = inputs[0]
        # 1/6 rounded to float32, as onnxruntime and onnx.reference use it in every precision
        return [g.Mul(x, _unit_clip(g, g.Add(g.Mul(x, _ONE_SIXTH), 0.5)))]


class DecomposeSoftsign(NodeRule):
    """``Softsign(x) = x / (1 + |x|)``."""

    op_type = "Softsign"
    formula = "x / (1 + |x|)"

    def build(self, g, view, inputs):
        x = inputs[0]
        return [g.Div(x, g.Add(g.Abs(x), 1.0))]


class DecomposeMish(NodeRule):
    """``Mish(x) = x·tanh(softplus(x))`` with the stable, exact-gradient softplus of
    :class:`DecomposeSoftplus`."""

    op_type = "Mish"
    formula = "x·Tanh((x + |x|)/2 + Log(1 + Exp(-|x|)))"

    def build(self, g, view, inputs):
        x = inputs[0]
        return [g.Mul(x, g.Tanh(stable_softplus(g, x)))]


class DecomposeThresholdedRelu(NodeRule):
    """``ThresholdedRelu(x) = x if x > alpha else 0`` as ``Where(x > alpha, x, 0)``."""

    op_type = "ThresholdedRelu"
    formula = "Where(x > alpha, x, 0)"

    def build(self, g, view, inputs):
        x = inputs[0]
        return [g.Where(g.Greater(x, view.attr("alpha", 1.0)), x, 0.0)]


class DecomposeShrink(NodeRule):
    """``Shrink(x) = x + bias if x < -lambd, x - bias if x > lambd, else 0`` as two ``Where``."""

    op_type = "Shrink"
    formula = "Where(x < -lambd, x + bias, Where(x > lambd, x - bias, 0))"

    def build(self, g, view, inputs):
        x = inputs[0]
        lambd, bias = view.attr("lambd", 0.5), view.attr("bias", 0.0)
        upper = g.Where(g.Greater(x, lambd), g.Sub(x, bias), 0.0)
        return [g.Where(g.Less(x, -lambd), g.Add(x, bias), upper)]


class DecomposePRelu(NodeRule):
    """``PRelu(x, slope) = x if x > 0 else slope·x`` as ``Where(x > 0, x, x·slope)``; the
    gradient reaches ``slope`` too (PyTorch's ``PReLU`` weight)."""

    op_type = "PRelu"
    formula = "Where(x > 0, x, x·slope)"

    def build(self, g, view, inputs):
        x, slope = inputs
        return [g.Where(g.Greater(x, 0.0), x, g.Mul(x, slope))]


class DecomposeSum(NodeRule):
    """``Sum(x1, ..., xn)`` as ``((x1 + x2) + x3) + ...`` (``Identity`` for one input)."""

    op_type = "Sum"
    formula = "((x1 + x2) + x3) + ..."

    def build(self, g, view, inputs):
        return [g.add_all([v for v in inputs if v is not None])]


class DecomposeMean(NodeRule):
    """``Mean(x1, ..., xn)`` as ``(((x1 + x2) + ...) + xn) / n``."""

    op_type = "Mean"
    formula = "(x1 + x2 + ... + xn) / n"

    def build(self, g, view, inputs):
        values = [v for v in inputs if v is not None]
        total = g.add_all(values)
        return [total if len(values) == 1 else g.Div(total, float(len(values)))]


class DecomposeCastLike(NodeRule):
    """``CastLike(x, like)`` as ``Cast(x, to=<element type of like>)`` when that type is known."""

    op_type = "CastLike"
    formula = "Cast(x, to=type(like))"

    def explain(self, view):
        target = view.input_info(1)
        if target is None or not target.elem_type:
            return "the element type of its second input is unknown"
        return super().explain(view)

    def build(self, g, view, inputs):
        attrs = {"to": view.input_info(1).elem_type}
        if view.has_attr("saturate"):
            attrs["saturate"] = view.attr("saturate")
        return [g.op("Cast", inputs[0], **attrs)]


class _SpatialRule(NodeRule):
    """A rule over the spatial axes ``2..r-1``: it needs the rank (at least 3) of its input."""

    def explain(self, view):
        reason = super().explain(view)
        if not reason and (view.input_info(0).rank or 0) < 3:
            reason = "the rank of its input is unknown (or below 3)"
        return reason


class DecomposeInstanceNormalization(_SpatialRule):
    """``InstanceNormalization(x, scale, B) = scale·(x - mean)/sqrt(var + epsilon) + B`` with
    ``mean``, ``var`` over the spatial axes ``2..r-1`` of each sample and channel
    (``ReduceMean`` twice); needs the rank of ``x``."""

    op_type = "InstanceNormalization"
    formula = "scale·(x - mean)/Sqrt(var + epsilon) + B, moments by ReduceMean"

    def build(self, g, view, inputs):
        x, scale, bias = inputs
        rank = view.input_info(0).rank
        spatial = list(range(2, rank))
        channel = list(range(1, rank - 1))  # [C] → [C, 1, ..., 1]
        d = g.Sub(x, g.reduce_mean(x, spatial, keepdims=True))
        var = g.reduce_mean(g.Mul(d, d), spatial, keepdims=True)
        scaled = g.Mul(_unsqueeze(g, scale, channel), d)
        normed = g.Div(scaled, g.Sqrt(g.Add(var, view.attr("epsilon", 1e-5))))
        return [g.Add(normed, _unsqueeze(g, bias, channel))]


# -- reductions -----------------------------------------------------------------------------
def _unsqueeze(g: GraphBuilder, x: Value, axes: Sequence[int]) -> Value:
    if g.opset >= 13:
        return g.unsqueeze(x, axes)
    return g.Unsqueeze(x, axes=list(axes))


def _squeeze(g: GraphBuilder, x: Value, axes: Sequence[int]) -> Value:
    if g.opset >= 13:
        return g.squeeze(x, axes)
    return g.Squeeze(x, axes=list(axes))


@dataclass(frozen=True)
class _Reduction:
    """The axes of a ``Reduce*`` node, whatever its opset wrote them as.

    ``axes`` are the static axes (an attribute or a constant input; None: every axis);
    ``dynamic`` says they come from an input computed at run time (``axes_input``);
    ``identity`` says the node reduces nothing (empty axes with ``noop_with_empty_axes=1``).
    """

    keepdims: int
    noop: int
    axes: list[int] | None
    dynamic: bool
    axes_input: Value | None
    identity: bool
    rank: int | None

    @classmethod
    def of(cls, view: NodeView, inputs: Sequence[Value | None]) -> _Reduction:
        keepdims = int(view.attr("keepdims", 1))
        noop = int(view.attr("noop_with_empty_axes", 0))
        axes_input = inputs[1] if len(inputs) > 1 else None
        axes = view.attr("axes")
        dynamic = False
        if view.has_input(1):
            constant = view.constant_input(1)
            dynamic = constant is None
            axes = None if dynamic else constant.ravel().tolist()
        identity = False
        if axes is not None and len(axes) == 0:
            identity, axes = bool(noop), None
        elif axes is None and not dynamic and noop:
            identity = True
        info = view.input_info(0)
        rank = info.rank if info is not None else None
        axes = None if axes is None else [int(a) for a in axes]
        return cls(keepdims, noop, axes, dynamic, axes_input, identity, rank)

    def static_axes(self) -> list[int] | None:
        """The reduced axes as sorted non-negative ints, or None when dynamic or unknown."""
        if self.dynamic:
            return None
        if self.axes is None:
            return None if self.rank is None else list(range(self.rank))
        if self.rank is None:
            return sorted(set(self.axes)) if all(a >= 0 for a in self.axes) else None
        return sorted({a % self.rank for a in self.axes})


def _reduce_like(g: GraphBuilder, op: str, x: Value, r: _Reduction) -> Value:
    """``op`` over the same axes as the node being replaced, in the model opset's form."""
    if r.identity:
        return x
    if r.dynamic:
        extra = {"noop_with_empty_axes": r.noop} if r.noop else {}
        return g.op(op, x, r.axes_input, keepdims=r.keepdims, **extra)
    if r.axes is None:
        return g.op(op, x, keepdims=r.keepdims)
    return g.reduce(op, x, r.axes, bool(r.keepdims))


class _ReductionRule(NodeRule):
    """A reduction node; one with empty axes and ``noop_with_empty_axes=1`` reduces nothing
    and returns its input unchanged (the ONNX specification and onnxruntime; onnx.reference
    applies the elementwise part, e.g. squares for ReduceSumSquare), so it becomes an
    ``Identity``."""

    def build(self, g, view, inputs):
        r = _Reduction.of(view, inputs)
        return [inputs[0] if r.identity else self.compose(g, inputs[0], r)]

    def compose(self, g: GraphBuilder, x: Value, r: _Reduction) -> Value:
        raise NotImplementedError


class DecomposeReduceSumSquare(_ReductionRule):
    """``ReduceSumSquare(x) = ReduceSum(x·x)`` over the same axes."""

    op_type = "ReduceSumSquare"
    formula = "ReduceSum(x·x)"

    def compose(self, g, x, r):
        return _reduce_like(g, "ReduceSum", g.Mul(x, x), r)


class DecomposeReduceL1(_ReductionRule):
    """``ReduceL1(x) = ReduceSum(|x|)`` over the same axes."""

    op_type = "ReduceL1"
    formula = "ReduceSum(Abs(x))"

    def compose(self, g, x, r):
        return _reduce_like(g, "ReduceSum", g.Abs(x), r)


class DecomposeReduceLogSum(_ReductionRule):
    """``ReduceLogSum(x) = Log(ReduceSum(x))`` over the same axes."""

    op_type = "ReduceLogSum"
    formula = "Log(ReduceSum(x))"

    def compose(self, g, x, r):
        return g.Log(_reduce_like(g, "ReduceSum", x, r))


class _ExtremumRule(_ReductionRule):
    """Max or min over static axes as one ``TopK(k=1)`` per axis (TopK has a gradient; the
    gradient goes to the element TopK picks, the first one on ties)."""

    largest = 1

    def explain(self, view):
        reason = super().explain(view)
        if reason:
            return reason
        r = _Reduction.of(view, [None] * len(view.node.input))
        if not r.identity and r.static_axes() is None:
            return "its axes are computed at run time (or its input rank is unknown)"
        return ""

    def compose(self, g, x, r):
        return _extremum(g, x, r.static_axes(), bool(r.keepdims), self.largest)


def _extremum(g: GraphBuilder, x: Value, axes: list[int], keepdims: bool, largest: int) -> Value:
    k = g.const([1], np.int64)
    value = x
    for axis in axes:
        value = g.op("TopK", value, k, axis=axis, largest=largest, num_outputs=2)[0]
    return value if keepdims or not axes else _squeeze(g, value, axes)


class DecomposeReduceMax(_ExtremumRule):
    """``ReduceMax(x)`` over static axes as ``TopK(x, k=1, largest=1)`` along each axis, then
    ``Squeeze`` when ``keepdims=0``."""

    op_type = "ReduceMax"
    formula = "TopK(k=1) along each reduced axis (+ Squeeze)"
    largest = 1


class DecomposeReduceMin(_ExtremumRule):
    """``ReduceMin(x)`` over static axes as ``TopK(x, k=1, largest=0)`` along each axis, then
    ``Squeeze`` when ``keepdims=0``."""

    op_type = "ReduceMin"
    formula = "TopK(k=1, largest=0) along each reduced axis (+ Squeeze)"
    largest = 0


class DecomposeGlobalMaxPool(_SpatialRule):
    """``GlobalMaxPool(x)`` (max over the spatial axes ``2..r-1``, kept as size 1) as one
    ``TopK(k=1)`` per spatial axis; needs the rank of ``x``."""

    op_type = "GlobalMaxPool"
    formula = "TopK(k=1) along each spatial axis"

    def build(self, g, view, inputs):
        rank = view.input_info(0).rank
        return [_extremum(g, inputs[0], list(range(2, rank)), True, 1)]


class _KeepDimsForm(_ReductionRule):
    """The runtime differentiates this reduction only with ``keepdims=1`` (or an axes input
    from opset 18): reduce with ``keepdims=1``, then drop the reduced axes."""

    def explain(self, view):
        reason = super().explain(view)
        if reason:
            return reason
        if int(view.attr("keepdims", 1)) == 1 or (view.opset >= 18 and view.has_input(1)):
            return "its form has a gradient already"
        if _Reduction.of(view, [None] * len(view.node.input)).identity:
            return "it reduces nothing"
        return ""

    def compose(self, g, x, r):
        reduced = _reduce_like(g, self.op_type, x, replace(r, keepdims=1))
        if r.axes is None:  # every axis: a scalar
            return g.Reshape(reduced, g.const(np.zeros(0, np.int64)))
        return _squeeze(g, reduced, r.axes)


class ReduceL2KeepDims(_KeepDimsForm):
    """``ReduceL2(x, keepdims=0)`` as ``ReduceL2(x, keepdims=1)`` then ``Squeeze`` (or
    ``Reshape`` to a scalar): the form whose gradient the runtime builds (and which keeps its
    zero-safe gradient, unlike ``Sqrt(ReduceSum(x·x))``)."""

    op_type = "ReduceL2"
    formula = "ReduceL2(keepdims=1) + Squeeze"


class ReduceLogSumExpKeepDims(_KeepDimsForm):
    """``ReduceLogSumExp(x, keepdims=0)`` as ``ReduceLogSumExp(x, keepdims=1)`` then
    ``Squeeze`` (or ``Reshape`` to a scalar), the form the runtime differentiates."""

    op_type = "ReduceLogSumExp"
    formula = "ReduceLogSumExp(keepdims=1) + Squeeze"


#: Every decomposition, in the order :class:`DecomposeForGradients` applies them.
DECOMPOSITIONS: tuple[type[NodeRule], ...] = (
    DecomposeSoftplus,
    DecomposeElu,
    DecomposeSelu,
    DecomposeCelu,
    DecomposeHardSigmoid,
    DecomposeHardSwish,
    DecomposeSoftsign,
    DecomposeMish,
    DecomposeThresholdedRelu,
    DecomposeShrink,
    DecomposePRelu,
    DecomposeSum,
    DecomposeMean,
    DecomposeCastLike,
    DecomposeInstanceNormalization,
    DecomposeReduceSumSquare,
    DecomposeReduceL1,
    DecomposeReduceLogSum,
    DecomposeReduceMax,
    DecomposeReduceMin,
    DecomposeGlobalMaxPool,
    ReduceL2KeepDims,
    ReduceLogSumExpKeepDims,
)


class DecomposeForGradients(ReplaceNodes):
    """Every decomposition of this module in one sweep (or only those for ``ops``)."""

    def __init__(self, ops: Sequence[str] | None = None):
        rules = [cls() for cls in DECOMPOSITIONS if ops is None or cls.op_type in ops]
        if ops is not None:
            unknown = sorted(set(ops) - {r.op_type for r in rules})
            if unknown:
                known = sorted(cls.op_type for cls in DECOMPOSITIONS)
                raise OnnxLossError(f"no decomposition for {unknown}; there is one for {known}")
        super().__init__(*rules)

    @property
    def name(self) -> str:
        return "DecomposeForGradients"
