"""Gradient rules of elementwise operators (plugin ``elementwise``).

With ``x`` the input, ``y`` the output and ``dy`` the gradient flowing into ``y``, each rule
states ``dx``. Binary and variadic operators broadcast (numpy rules): the gradient of a
broadcast input is summed back to its shape (``node.sum_to_input``). Subgradients at kinks
follow PyTorch: ``Relu``/``Abs`` give 0 at 0, ``Clip`` passes the gradient at its bounds,
``Max``/``Min`` split it equally between tied inputs. ``Sign``, ``Floor``, ``Ceil`` and
``Round`` have a zero gradient.
"""

from __future__ import annotations

import math

import numpy as np

from ...hookspecs import hookimpl
from . import RuleTable

rules = RuleTable()

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _unary(fn):
    """A rule from ``dx = fn(g, node, x, y, dy)``."""

    def rule(g, node, grads):
        return [fn(g, node, node.input(0), node.output(0), grads[0])]

    rule.__doc__ = fn.__doc__
    rule.__name__ = fn.__name__
    return rule


@rules.define("Identity")
@_unary
def identity(g, node, x, y, dy):
    """dx = dy"""
    return dy


@rules.define("Neg")
@_unary
def neg(g, node, x, y, dy):
    """dx = -dy"""
    return g.Neg(dy)


@rules.define("Abs")
@_unary
def abs_(g, node, x, y, dy):
    """dx = dy·sign(x)"""
    return g.Mul(dy, g.Sign(x))


@rules.define("Exp")
@_unary
def exp(g, node, x, y, dy):
    """dx = dy·y"""
    return g.Mul(dy, y)


@rules.define("Log")
@_unary
def log(g, node, x, y, dy):
    """dx = dy / x"""
    return g.Div(dy, x)


@rules.define("Sqrt")
@_unary
def sqrt(g, node, x, y, dy):
    """dx = dy / (2y)"""
    return g.Div(g.Mul(dy, 0.5), y)


@rules.define("Reciprocal")
@_unary
def reciprocal(g, node, x, y, dy):
    """dx = -dy·y²"""
    return g.Neg(g.Mul(dy, g.Mul(y, y)))


@rules.define("Sigmoid")
@_unary
def sigmoid(g, node, x, y, dy):
    """dx = dy·y·(1 - y)"""
    return g.Mul(dy, g.Mul(y, g.Sub(1.0, y)))


@rules.define("Tanh")
@_unary
def tanh(g, node, x, y, dy):
    """dx = dy·(1 - y²)"""
    return g.Mul(dy, g.Sub(1.0, g.Mul(y, y)))


@rules.define("Relu")
@_unary
def relu(g, node, x, y, dy):
    """dx = dy where x > 0, else 0"""
    return g.keep(g.Greater(x, 0.0), dy)


@rules.define("LeakyRelu")
@_unary
def leaky_relu(g, node, x, y, dy):
    """dx = dy where x > 0, else alpha·dy (as dy·(alpha + (1 - alpha)·[x > 0]), exact)"""
    alpha = node.attr("alpha", 0.01)
    return g.Mul(dy, g.Add(g.Mul(g.mask(g.Greater(x, 0.0)), 1.0 - alpha), alpha))


@rules.define("Elu")
@_unary
def elu(g, node, x, y, dy):
    """dx = dy where x > 0, else dy·(y + alpha)"""
    return g.Where(g.Greater(x, 0.0), dy, g.Mul(dy, g.Add(y, node.attr("alpha", 1.0))))


@rules.define("Selu")
@_unary
def selu(g, node, x, y, dy):
    """dx = gamma·dy where x > 0, else dy·(y + alpha·gamma)"""
    alpha, gamma = node.attr("alpha"), node.attr("gamma")
    return g.Where(g.Greater(x, 0.0), g.Mul(dy, gamma), g.Mul(dy, g.Add(y, alpha * gamma)))


@rules.define("Celu")
@_unary
def celu(g, node, x, y, dy):
    """dx = dy where x > 0, else dy·exp(x/alpha)"""
    alpha = node.attr("alpha", 1.0)
    return g.Where(g.Greater(x, 0.0), dy, g.Mul(dy, g.Exp(g.Div(g.Min(x, 0.0), alpha))))


@rules.define("Softplus")
@_unary
def softplus(g, node, x, y, dy):
    """dx = dy·sigmoid(x)"""
    return g.Mul(dy, g.Sigmoid(x))


@rules.define("Softsign")
@_unary
def softsign(g, node, x, y, dy):
    """dx = dy / (1 + |x|)²"""
    d = g.Add(g.Abs(x), 1.0)
    return g.Div(dy, g.Mul(d, d))


@rules.define("HardSigmoid")
@_unary
def hard_sigmoid(g, node, x, y, dy):
    """dx = alpha·dy where 0 < alpha·x + beta < 1, else 0"""
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    z = g.Add(g.Mul(x, alpha), beta)
    inside = g.And(g.Greater(z, 0.0), g.Less(z, 1.0))
    return g.Where(inside, g.Mul(dy, alpha), 0.0)


_ONE_SIXTH = float(np.float32(1.0 / 6.0))


@rules.define("HardSwish")
@_unary
def hard_swish(g, node, x, y, dy):
    """With z = x/6 + 1/2: dx = dy·(x/3 + 1/2) where 0 < z < 1, dy where z >= 1, else 0"""
    z = g.Add(g.Mul(x, _ONE_SIXTH), 0.5)
    slope = g.Add(g.Mul(x, 2 * _ONE_SIXTH), 0.5)
    inside = g.Where(g.Greater(z, 0.0), g.Mul(dy, slope), 0.0)
    return g.Where(g.Less(z, 1.0), inside, dy)


@rules.define("Mish")
@_unary
def mish(g, node, x, y, dy):
    """With t = tanh(softplus(x)): dx = dy·(t + x·sigmoid(x)·(1 - t²))"""
    a = g.Abs(x)
    sp = g.Add(g.Mul(g.Add(x, a), 0.5), g.Log(g.Add(g.Exp(g.Neg(a)), 1.0)))
    t = g.Tanh(sp)
    return g.Mul(dy, g.Add(t, g.Mul(g.Mul(x, g.Sigmoid(x)), g.Sub(1.0, g.Mul(t, t)))))


@rules.define("Gelu")
@_unary
def gelu(g, node, x, y, dy):
    """approximate='none': dx = dy·(Φ(x) + x·φ(x)); 'tanh': with u = √(2/π)(x + 0.044715x³),
    dx = dy·(½(1 + tanh u) + ½x(1 - tanh²u)·√(2/π)(1 + 0.134145x²))"""
    if node.attr("approximate", "none") == "tanh":
        x2 = g.Mul(x, x)
        u = g.Mul(g.Mul(x, g.Add(g.Mul(x2, 0.044715), 1.0)), _SQRT_2_OVER_PI)
        t = g.Tanh(u)
        du = g.Mul(g.Add(g.Mul(x2, 3 * 0.044715), 1.0), _SQRT_2_OVER_PI)
        inner = g.Mul(g.Mul(g.Mul(x, 0.5), g.Sub(1.0, g.Mul(t, t))), du)
        return g.Mul(dy, g.Add(g.Mul(g.Add(t, 1.0), 0.5), inner))
    cdf = g.Mul(g.Add(g.Erf(g.Mul(x, 1.0 / math.sqrt(2.0))), 1.0), 0.5)
    pdf = g.Mul(g.Exp(g.Mul(g.Mul(x, x), -0.5)), _INV_SQRT_2PI)
    return g.Mul(dy, g.Add(cdf, g.Mul(x, pdf)))


@rules.define("Erf")
@_unary
def erf(g, node, x, y, dy):
    """dx = dy·2/√π·exp(-x²)"""
    return g.Mul(dy, g.Mul(g.Exp(g.Neg(g.Mul(x, x))), _TWO_OVER_SQRT_PI))


@rules.define("Sin")
@_unary
def sin(g, node, x, y, dy):
    """dx = dy·cos(x)"""
    return g.Mul(dy, g.Cos(x))


@rules.define("Cos")
@_unary
def cos(g, node, x, y, dy):
    """dx = -dy·sin(x)"""
    return g.Neg(g.Mul(dy, g.Sin(x)))


@rules.define("Tan")
@_unary
def tan(g, node, x, y, dy):
    """dx = dy·(1 + y²)"""
    return g.Mul(dy, g.Add(g.Mul(y, y), 1.0))


@rules.define("Sinh")
@_unary
def sinh(g, node, x, y, dy):
    """dx = dy·cosh(x)"""
    return g.Mul(dy, g.Cosh(x))


@rules.define("Cosh")
@_unary
def cosh(g, node, x, y, dy):
    """dx = dy·sinh(x)"""
    return g.Mul(dy, g.Sinh(x))


@rules.define("Asin")
@_unary
def asin(g, node, x, y, dy):
    """dx = dy / √(1 - x²)"""
    return g.Div(dy, g.Sqrt(g.Sub(1.0, g.Mul(x, x))))


@rules.define("Acos")
@_unary
def acos(g, node, x, y, dy):
    """dx = -dy / √(1 - x²)"""
    return g.Neg(g.Div(dy, g.Sqrt(g.Sub(1.0, g.Mul(x, x)))))


@rules.define("Atan")
@_unary
def atan(g, node, x, y, dy):
    """dx = dy / (1 + x²)"""
    return g.Div(dy, g.Add(g.Mul(x, x), 1.0))


@rules.define("Asinh")
@_unary
def asinh(g, node, x, y, dy):
    """dx = dy / √(x² + 1)"""
    return g.Div(dy, g.Sqrt(g.Add(g.Mul(x, x), 1.0)))


@rules.define("Acosh")
@_unary
def acosh(g, node, x, y, dy):
    """dx = dy / √(x² - 1)"""
    return g.Div(dy, g.Sqrt(g.Sub(g.Mul(x, x), 1.0)))


@rules.define("Atanh")
@_unary
def atanh(g, node, x, y, dy):
    """dx = dy / (1 - x²)"""
    return g.Div(dy, g.Sub(1.0, g.Mul(x, x)))


@rules.define("ThresholdedRelu")
@_unary
def thresholded_relu(g, node, x, y, dy):
    """dx = dy where x > alpha, else 0"""
    return g.keep(g.Greater(x, node.attr("alpha", 1.0)), dy)


@rules.define("Shrink")
@_unary
def shrink(g, node, x, y, dy):
    """dx = dy where |x| > lambd, else 0"""
    lambd = node.attr("lambd", 0.5)
    return g.keep(g.Or(g.Less(x, -lambd), g.Greater(x, lambd)), dy)


@rules.define("Sign", "Floor", "Ceil", "Round")
def piecewise_constant(g, node, grads):
    """dx = 0 (piecewise constant)"""
    return [None]


@rules.define("Cast", "CastLike", non_differentiable=(1,))
def cast(g, node, grads):
    """dx = dy cast back to x's float type (an integer x carries no gradient)"""
    info = node.input_info(0)
    if info is None or not info.is_float:
        return [None]
    return [g.cast(grads[0], info.dtype)]


def _dropout_check(node) -> str:
    if _dropout_training(node) is False or (node.num_outputs > 1 and node.node.output[1]):
        return ""
    return (
        "its training_mode input is not the constant False and its mask output is not "
        "declared, so the dropped elements cannot be known"
    )


def _dropout_training(node):
    """False when the node is in inference form (no training_mode, or a constant False)."""
    if not node.has_input(2):
        return False
    value = node.constant_input(2)
    if value is not None and not bool(np.asarray(value).reshape(-1)[0]):
        return False
    return None


@rules.define("Dropout", non_differentiable=(1,), check=_dropout_check)
def dropout(g, node, grads):
    """inference form: dx = dy; training mode: dx = dy·mask / (1 - ratio)"""
    dy = grads[0]
    if _dropout_training(node) is False:
        return [dy]
    ratio = node.input(1)
    scale = g.Div(1.0, g.Sub(1.0, g.cast(ratio, g.dtype) if ratio is not None else 0.5))
    dropped = g.Mul(g.Mul(dy, g.mask(node.output(1))), scale)
    return [g.Where(node.input(2), dropped, dy)]


@rules.define("Clip")
def clip(g, node, grads):
    """dx = dy where min <= x <= max; d(min) = Σ dy where x < min; d(max) = Σ dy where x > max"""
    x, lo, hi, dy = node.input(0), node.input(1), node.input(2), grads[0]
    keep = None
    below = above = None
    if lo is not None:
        below = g.Less(x, lo)
        keep = g.Not(below)
    if hi is not None:
        above = g.Greater(x, hi)
        keep = g.Not(above) if keep is None else g.And(keep, g.Not(above))
    dx = dy if keep is None else g.keep(keep, dy)
    dlo = g.reduce_sum(g.keep(below, dy)) if node.needs(1) else None
    dhi = g.reduce_sum(g.keep(above, dy)) if node.needs(2) else None
    return [dx, dlo, dhi]


# -- binary and variadic (broadcasting) ---------------------------------------------------
@rules.define("Add")
def add(g, node, grads):
    """da = dy, db = dy (each summed to its input's shape)"""
    dy = grads[0]
    return [node.sum_to_input(dy, k) if node.needs(k) else None for k in (0, 1)]


@rules.define("Sub")
def sub(g, node, grads):
    """da = dy, db = -dy"""
    dy = grads[0]
    da = node.sum_to_input(dy, 0) if node.needs(0) else None
    db = node.sum_to_input(g.Neg(dy), 1) if node.needs(1) else None
    return [da, db]


@rules.define("Mul")
def mul(g, node, grads):
    """da = dy·b, db = dy·a"""
    a, b, dy = node.input(0), node.input(1), grads[0]
    da = node.sum_to_input(g.Mul(dy, b), 0) if node.needs(0) else None
    db = node.sum_to_input(g.Mul(dy, a), 1) if node.needs(1) else None
    return [da, db]


@rules.define("Div")
def div(g, node, grads):
    """da = dy / b, db = -dy·y / b"""
    b, y, dy = node.input(1), node.output(0), grads[0]
    da = node.sum_to_input(g.Div(dy, b), 0) if node.needs(0) else None
    db = node.sum_to_input(g.Neg(g.Div(g.Mul(dy, y), b)), 1) if node.needs(1) else None
    return [da, db]


@rules.define("Pow")
def pow_(g, node, grads):
    """da = dy·b·a^(b-1); db = dy·y·log(a), 0 where a = 0 and b >= 0 (PyTorch's choice)"""
    a, b, y, dy = node.input(0), node.input(1), node.output(0), grads[0]
    a_info, b_info = node.input_info(0), node.input_info(1)
    if b_info is not None and a_info is not None and b_info.elem_type != a_info.elem_type:
        b = g.cast(b, a_info.dtype)
    da = db = None
    if node.needs(0):
        da = node.sum_to_input(g.Mul(dy, g.Mul(b, g.Pow(a, g.Sub(b, 1.0)))), 0)
    if node.needs(1):
        zero = g.And(g.Equal(a, 0.0), g.GreaterOrEqual(b, 0.0))
        db = node.sum_to_input(g.Where(zero, 0.0, g.Mul(dy, g.Mul(y, g.Log(a)))), 1)
    return [da, db]


@rules.define("Mod")
def mod(g, node, grads):
    """float fmod y = a - b·trunc(a/b): da = dy, db = dy·(y - a)/b"""
    a, b, y, dy = node.input(0), node.input(1), node.output(0), grads[0]
    da = node.sum_to_input(dy, 0) if node.needs(0) else None
    db = node.sum_to_input(g.Mul(dy, g.Div(g.Sub(y, a), b)), 1) if node.needs(1) else None
    return [da, db]


@rules.define("Max", "Min")
def extremum(g, node, grads):
    """dx_i = dy·[x_i = y] / #{j: x_j = y} (ties share the gradient equally)"""
    y, dy = node.output(0), grads[0]
    if node.num_inputs == 1:
        return [dy]
    masks = [g.mask(g.Equal(node.input(k), y)) for k in range(node.num_inputs)]
    share = g.Div(dy, g.add_all(masks))
    return [
        node.sum_to_input(g.Mul(share, m), k) if node.needs(k) else None
        for k, m in enumerate(masks)
    ]


@rules.define("Sum")
def sum_(g, node, grads):
    """dx_i = dy"""
    return [
        node.sum_to_input(grads[0], k) if node.needs(k) else None for k in range(node.num_inputs)
    ]


@rules.define("Mean")
def mean(g, node, grads):
    """dx_i = dy / n"""
    share = g.Div(grads[0], float(node.num_inputs))
    return [node.sum_to_input(share, k) if node.needs(k) else None for k in range(node.num_inputs)]


@rules.define("Where", non_differentiable=(0,))
def where(g, node, grads):
    """da = dy where c, db = dy where not c"""
    c, dy = node.input(0), grads[0]
    da = node.sum_to_input(g.keep(c, dy), 1) if node.needs(1) else None
    db = node.sum_to_input(g.keep(g.Not(c), dy), 2) if node.needs(2) else None
    return [None, da, db]


@rules.define("PRelu")
def prelu(g, node, grads):
    """dx = dy where x > 0, else dy·slope; d(slope) = dy·x where x <= 0"""
    x, slope, dy = node.input(0), node.input(1), grads[0]
    positive = g.Greater(x, 0.0)
    dx = g.Where(positive, dy, g.Mul(dy, slope)) if node.needs(0) else None
    dslope = None
    if node.needs(1):
        dslope = node.sum_to_input(g.Where(positive, 0.0, g.Mul(dy, x)), 1)
    return [dx, dslope]


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
