"""Graph building blocks the built-in losses share: each returns PyTorch's value and, under
onnxruntime-training, PyTorch's gradient, kinks included.

A function with a kink (``max(z, 0)``) has a one-sided choice of gradient at the kink, and
PyTorch makes a different choice in different losses. The choice is written out with a
``Where`` on the sign, never left to the gradient the runtime happens to give ``Relu``,
``Abs``, ``Max`` or ``Clip`` at a tie (onnxruntime-training 1.19.2: ``Relu'(0) = 0``,
``Abs'(0) = 0``, ``Max``/``Min`` split a tie 1/2 - 1/2, ``Clip`` passes it).
"""

from __future__ import annotations

import numpy as np

from ..builder import GraphBuilder, Value

#: PyTorch's ``EPSILON`` of ``cosine_embedding_loss`` and ``binary_cross_entropy``'s
#: gradient: ``1e-12`` rounded to float32, the type it is declared with in ATen.
TORCH_EPSILON = float(np.float32(1e-12))


def softplus(g: GraphBuilder, x: Value) -> Value:
    """``log(1 + exp(x))`` as ``(x + |x|)/2 + Log(1 + Exp(-|x|))``.

    No exponential overflows, and the gradient is exactly ``sigmoid(x)`` everywhere: at 0 it
    is ``(1 + s)/2 - s·sigmoid(0) = 1/2`` whatever gradient ``s`` the runtime gives ``Abs``
    at 0, where ``Relu(x) + Log(1 + Exp(-|x|))`` gets ``Relu'(0) = 0`` from onnxruntime
    instead of 1/2. For ``x < 0`` the value is ``Log(1 + e)`` with ``e = exp(x)``: ONNX has no
    ``log1p``, so its absolute error is about half an ulp of 1 (6e-8 in float32).
    """
    a = g.Abs(x)
    return g.Add(g.Mul(g.Add(x, a), 0.5), g.Log(g.Add(g.Exp(g.Neg(a)), 1.0)))


def clamp_min(g: GraphBuilder, z: Value) -> Value:
    """``max(z, 0)`` whose gradient is 1 at ``z = 0``: PyTorch's ``clamp_min(z, 0)``
    (margin ranking, hinge embedding, cosine embedding and triplet losses)."""
    return g.Where(g.Less(z, 0.0), 0.0, z)


def positive_part(g: GraphBuilder, z: Value) -> Value:
    """``max(z, 0)`` whose gradient is 0 at ``z = 0``: PyTorch's ``if (z > 0)`` kernels
    (multi-margin losses) and ``relu``."""
    return g.Where(g.Greater(z, 0.0), z, 0.0)


def where_positive(g: GraphBuilder, x: Value, value: Value, otherwise: float = 0.0) -> Value:
    """``value`` where ``x > 0``, else ``otherwise``: a product ``x·log x`` made 0 at
    ``x = 0`` (PyTorch's ``xlogy``) without evaluating ``0·(-inf)``."""
    return g.Where(g.Greater(x, 0.0), value, otherwise)


def safe_log(g: GraphBuilder, x: Value) -> Value:
    """``log(x)`` for ``x > 0``, ``0`` elsewhere (where the caller masks it out)."""
    return g.Log(g.Where(g.Greater(x, 0.0), x, 1.0))


def last_axis_sum(g: GraphBuilder, x: Value, rank: int) -> Value:
    """``Σ`` over the last axis of a rank-``rank`` tensor (the axis is dropped)."""
    return g.reduce_sum(x, [rank - 1])


def pairwise_distance(g: GraphBuilder, x1: Value, x2: Value, rank: int, p: float, eps: float):
    """PyTorch's ``pairwise_distance``: ``‖x1 - x2 + eps‖_p`` over the last axis.

    ``p = 1`` is ``Σ|d|``; any other ``p`` is ``max(Σ|d|^p, tiny)^(1/p)``, with ``tiny`` the
    type's smallest normal number: at a zero distance the gradient is then 0, as PyTorch's,
    instead of ``0·∞ = NaN`` (``ReduceL2`` would do that too, but onnxruntime has no
    float64 kernel for it).
    """
    d = g.Add(g.Sub(x1, x2), eps)
    axis = rank - 1
    if p == 1:
        return g.reduce_sum(g.Abs(d), [axis])
    powered = g.square(d) if p == 2 else g.Pow(g.Abs(d), p)
    total = g.Max(g.reduce_sum(powered, [axis]), float(np.finfo(g.dtype).tiny))
    return g.Sqrt(total) if p == 2 else g.Pow(total, 1.0 / p)


def cosine_similarity(g: GraphBuilder, x1: Value, x2: Value, rank: int) -> Value:
    """PyTorch's ``cosine_embedding_loss`` similarity over the last axis:
    ``Σ x1·x2 / sqrt((Σ x1² + ε)(Σ x2² + ε))`` with ``ε`` = :data:`TORCH_EPSILON`."""
    dot = last_axis_sum(g, g.Mul(x1, x2), rank)
    sq1 = g.Add(last_axis_sum(g, g.Mul(x1, x1), rank), TORCH_EPSILON)
    sq2 = g.Add(last_axis_sum(g, g.Mul(x2, x2), rank), TORCH_EPSILON)
    return g.Div(dot, g.Sqrt(g.Mul(sq1, sq2)))
