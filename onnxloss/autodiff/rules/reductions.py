"""Gradient rules of reductions and of the softmax family (plugin ``reductions``).

A reduction ``y = R(x, axes)`` sends its gradient back by broadcasting ``dy`` over the
reduced axes: with ``keepdims=0`` the reduced axes are put back as size 1 first
(``Unsqueeze``, which takes the same axes, negative ones included), then ``Expand`` to
``x``'s run-time shape. The axes come from the attribute (before opset 18; 13 for
``ReduceSum``) or from the input, constant or not. ``ReduceMax``/``ReduceMin`` split the
gradient equally between tied maxima, like PyTorch's ``amax``.
"""

from __future__ import annotations

from ...hookspecs import hookimpl
from . import RuleTable

rules = RuleTable()


def _axes(g, node):
    """The reduced axes as a value (None: every axis), and whether the node reduces
    nothing (empty axes with noop_with_empty_axes=1)."""
    if node.has_input(1):
        constant = node.constant_ints(1)
        if constant is not None:
            if not constant and node.attr("noop_with_empty_axes", 0):
                return None, True
            return (g.ints(constant) if constant else None), False
        return node.input(1), False
    axes = node.attr("axes")
    if axes:
        return g.ints(axes), False
    return None, bool(node.attr("noop_with_empty_axes", 0))


def broadcast_back(g, node, value):
    """``value`` (shaped like the reduction's output) broadcast to the input's shape."""
    axes, noop = _axes(g, node)
    if noop:
        return value
    if not node.attr("keepdims", 1) and axes is not None:
        value = g.op("Unsqueeze", value, axes)
    return g.expand_as(value, node.input(0))


def _reduction(fn):
    def rule(g, node, grads):
        x, y, dy = node.input(0), node.output(0), grads[0]
        return [fn(g, node, x, y, dy, lambda v: broadcast_back(g, node, v))]

    rule.__doc__ = fn.__doc__
    return rule


@rules.define("ReduceSum", non_differentiable=(1,))
@_reduction
def reduce_sum(g, node, x, y, dy, back):
    """dx = dy broadcast"""
    return back(dy)


@rules.define("ReduceMean", non_differentiable=(1,))
@_reduction
def reduce_mean(g, node, x, y, dy, back):
    """dx = dy broadcast / (number of elements reduced into each output)"""
    count = g.Div(g.size_as(x), g.size_as(y))
    return g.Div(back(dy), count)


@rules.define("ReduceSumSquare", non_differentiable=(1,))
@_reduction
def reduce_sum_square(g, node, x, y, dy, back):
    """dx = 2x·dy broadcast"""
    return g.Mul(back(dy), g.Mul(x, 2.0))


@rules.define("ReduceL1", non_differentiable=(1,))
@_reduction
def reduce_l1(g, node, x, y, dy, back):
    """dx = sign(x)·dy broadcast"""
    return g.Mul(back(dy), g.Sign(x))


@rules.define("ReduceL2", non_differentiable=(1,))
@_reduction
def reduce_l2(g, node, x, y, dy, back):
    """dx = x / y·dy broadcast, 0 where y = 0"""
    norm = back(y)
    safe = g.Where(g.Equal(norm, 0.0), 1.0, norm)
    return g.Where(g.Equal(norm, 0.0), 0.0, g.Div(g.Mul(back(dy), x), safe))


@rules.define("ReduceLogSum", non_differentiable=(1,))
@_reduction
def reduce_log_sum(g, node, x, y, dy, back):
    """dx = dy broadcast / Σx = dy·exp(-y) broadcast"""
    return back(g.Mul(dy, g.Exp(g.Neg(y))))


@rules.define("ReduceLogSumExp", non_differentiable=(1,))
@_reduction
def reduce_log_sum_exp(g, node, x, y, dy, back):
    """dx = dy broadcast·exp(x - y broadcast) (the softmax of x over the axes)"""
    return g.Mul(back(dy), g.Exp(g.Sub(x, back(y))))


@rules.define("ReduceMax", "ReduceMin", non_differentiable=(1,))
@_reduction
def reduce_extremum(g, node, x, y, dy, back):
    """dx = dy broadcast·[x = y] / #ties"""
    hit = g.mask(g.Equal(x, back(y)))
    count = broadcast_back(g, node, _reduce_like(g, node, hit))
    return g.Div(g.Mul(back(dy), hit), count)


@rules.define("ReduceProd", non_differentiable=(1,))
@_reduction
def reduce_prod(g, node, x, y, dy, back):
    """dx = dy broadcast·y broadcast / x (inputs with zeros get NaN or ∞, as the formula)"""
    return g.Div(g.Mul(back(dy), back(y)), x)


def _reduce_like(g, node, value):
    """``ReduceSum`` of ``value`` over the node's axes, with its keepdims."""
    axes, _ = _axes(g, node)
    keep = node.attr("keepdims", 1)
    if axes is None:
        return g.op("ReduceSum", value, keepdims=keep)
    return g.op("ReduceSum", value, axes, keepdims=keep)


@rules.define("Softmax")
def softmax(g, node, grads):
    """dx = y·(dy - Σ_axis dy·y)"""
    y, dy = node.output(0), grads[0]
    axis = node.attr("axis", -1)
    inner = g.reduce_sum(g.Mul(dy, y), [axis], keepdims=True)
    return [g.Mul(y, g.Sub(dy, inner))]


@rules.define("LogSoftmax")
def log_softmax(g, node, grads):
    """dx = dy - softmax(x)·Σ_axis dy = dy - exp(y)·Σ_axis dy"""
    y, dy = node.output(0), grads[0]
    axis = node.attr("axis", -1)
    total = g.reduce_sum(dy, [axis], keepdims=True)
    return [g.Sub(dy, g.Mul(g.Exp(y), total))]


@rules.define("Hardmax")
def constant_output(g, node, grads):
    """dx = 0 (piecewise constant)"""
    return [None]


@rules.define("CumSum", non_differentiable=(1,))
def cumsum(g, node, grads):
    """dx = the cumulative sum of dy in the other direction (same axis and exclusive)"""
    reverse = 0 if node.attr("reverse", 0) else 1
    exclusive = node.attr("exclusive", 0)
    return [g.CumSum(grads[0], node.input(1), exclusive=exclusive, reverse=reverse)]


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
