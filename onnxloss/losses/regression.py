"""Built-in regression losses (plugin ``regression``).

Every loss here is elementwise in ``d = f(x) - y`` (or in ``f(x)`` and ``y``); the core
sums the elements of a sample, weights samples and reduces (see :mod:`onnxloss.terms`).
"""

from __future__ import annotations

import math
import numbers

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, ShapeError
from ..hookspecs import hookimpl
from ..tensor_info import TensorInfo
from ..terms import Loss, check_number


class MSELoss(Loss):
    """Squared error: ``e_ij = (f_ij - y_ij)²``.

    With ``reduction="sum"`` (as in ``add_loss_output``) the loss is
    ``Σ_i w_i Σ_j d_ij²``; with ``"mean"``, that divided by the batch size ``N``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.
    """

    name = "squared_error"
    aliases = ("l2", "mse")

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        return g.square(g.Sub(prediction, target))


class L1Loss(Loss):
    """Absolute error: ``e_ij = |f_ij - y_ij|``; reduced as described in :mod:`onnxloss.terms`.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.
    """

    name = "absolute_error"
    aliases = ("l1", "mae")

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        return g.Abs(g.Sub(prediction, target))


class ElasticLoss(Loss):
    """Elastic error: ``e_ij = l1_weight·|d_ij| + l2_weight·d_ij²`` with ``d = f - y``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        l1_weight: weight of the absolute error (default 0.5), ``>= 0``.

        l2_weight: weight of the squared error (default 0.5), ``>= 0``; not both zero.
    """

    name = "elastic"

    def __init__(self, output=None, *, l1_weight=0.5, l2_weight=0.5, **kwargs):
        super().__init__(output, **kwargs)
        self.l1_weight = check_number("elastic l1_weight", l1_weight, low=0.0)
        self.l2_weight = check_number("elastic l2_weight", l2_weight, low=0.0)
        if self.l1_weight == 0 and self.l2_weight == 0:
            raise CoefficientError("elastic loss: l1_weight and l2_weight are both 0")

    def hyperparameters(self):
        return {"l1_weight": self.l1_weight, "l2_weight": self.l2_weight}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        d = g.Sub(prediction, target)
        return g.Add(g.Mul(g.Abs(d), self.l1_weight), g.Mul(g.square(d), self.l2_weight))


class HuberLoss(Loss):
    """Huber loss (PyTorch ``HuberLoss``): with ``a = |f - y|``,
    ``e = a²/2`` if ``a <= delta`` else ``delta·(a - delta/2)``.

    Computed as ``m²/2 + delta·(a - m)`` with ``m = min(a, delta)``, which has a gradient
    everywhere the runtime needs one.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        delta: where the loss turns from quadratic to linear, ``> 0`` (default 1.0).
    """

    name = "huber"

    def __init__(self, output=None, *, delta=1.0, **kwargs):
        super().__init__(output, **kwargs)
        self.delta = check_number("huber delta", delta, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"delta": self.delta}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        a = g.Abs(g.Sub(prediction, target))
        m = g.Min(a, self.delta)
        return g.Add(g.Mul(g.square(m), 0.5), g.Mul(g.Sub(a, m), self.delta))


class SmoothL1Loss(Loss):
    """Smooth L1 loss (PyTorch ``SmoothL1Loss``): with ``a = |f - y|``,
    ``e = a²/(2·beta)`` if ``a < beta`` else ``a - beta/2``; ``beta = 0`` is the L1 loss.

    Computed as ``m²/(2·beta) + (a - m)`` with ``m = min(a, beta)``; it equals
    ``HuberLoss(delta=beta) / beta``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        beta: where the loss turns from quadratic to linear, ``>= 0`` (default 1.0).
    """

    name = "smooth_l1"

    def __init__(self, output=None, *, beta=1.0, **kwargs):
        super().__init__(output, **kwargs)
        self.beta = check_number("smooth_l1 beta", beta, low=0.0)

    def hyperparameters(self):
        return {"beta": self.beta}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        a = g.Abs(g.Sub(prediction, target))
        if self.beta == 0:
            return a
        m = g.Min(a, self.beta)
        return g.Add(g.Mul(g.square(m), 0.5 / self.beta), g.Sub(a, m))


class PoissonNLLLoss(Loss):
    """Poisson negative log-likelihood (PyTorch ``PoissonNLLLoss``).

    * ``log_input=True`` (default): the output is ``log λ``; ``e = exp(f) - y·f``.
    * ``log_input=False``: the output is ``λ``; ``e = f - y·log(f + eps)``.
    * ``full=True`` adds Stirling's approximation of ``log(y!)``,
      ``y·log y - y + log(2πy)/2``, where ``y > 1`` (it does not depend on ``f``).

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        log_input: whether the model outputs the log of the rate.

        full: whether to add the Stirling term (default False).

        eps: added inside the log when ``log_input=False`` (default 1e-8), ``> 0``.
    """

    name = "poisson"

    def __init__(self, output=None, *, log_input=True, full=False, eps=1e-8, **kwargs):
        super().__init__(output, **kwargs)
        for what, value in (("log_input", log_input), ("full", full)):
            if not isinstance(value, bool):
                raise CoefficientError(f"poisson {what} must be True or False, got {value!r}")
        self.log_input = log_input
        self.full = full
        self.eps = check_number("poisson eps", eps, low=0.0, low_open=True)

    def hyperparameters(self):
        opts = {"log_input": self.log_input, "eps": self.eps}
        if self.full:
            opts["full"] = True
        return opts

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        if self.log_input:
            e = g.Sub(g.Exp(prediction), g.Mul(target, prediction))
        else:
            e = g.Sub(prediction, g.Mul(target, g.Log(g.Add(prediction, self.eps))))
        if not self.full:
            return e
        log_y = g.Log(g.Max(target, 1.0))  # only read where y > 1: never log(0)
        stirling = g.Add(
            g.Sub(g.Mul(target, log_y), target),
            g.Mul(g.Add(log_y, math.log(2.0 * math.pi)), 0.5),
        )
        return g.Add(e, g.Where(g.Greater(target, 1.0), stirling, 0.0))


class GaussianNLLLoss(Loss):
    """Gaussian negative log-likelihood (PyTorch ``GaussianNLLLoss``): with ``μ = f(x)``
    the expectation, ``v`` the variance clamped to ``eps`` from below and ``y`` the target,
    ``e = (log v + (μ - y)²/v)/2`` (plus ``log(2π)/2`` with ``full=True``).

    The variance is a second prediction, ``var=``: the name of an output or tensor shaped
    like ``μ`` (heteroscedastic), like ``μ`` without its last axis or with one axis of size
    1 (homoscedastic), or a number (one variance for all). Reductions as in
    :mod:`onnxloss.terms`; ``"elementwise_mean"`` is PyTorch's ``"mean"``.

    For ``v < eps`` PyTorch's gradient with respect to the variance passes through the
    clamp (computed at ``eps``) while onnxloss's is 0; PyTorch also raises on a negative
    variance, which onnxloss clamps like any other below ``eps``.

    Args:
        var: output or tensor name of the variance, or a positive number.

        full: add the constant ``log(2π)/2`` (default False).

        eps: lower clamp of the variance, ``> 0`` (default 1e-6).
    """

    name = "gaussian_nll"
    extra_predictions = ("var",)

    def __init__(self, output=None, *, var=None, full=False, eps=1e-6, **kwargs):
        self.var_value = None
        if isinstance(var, numbers.Real) and not isinstance(var, bool):
            self.var_value = check_number("gaussian_nll var", var, low=0.0, low_open=True)
            self.extra_predictions = ()  # a constant variance binds nothing
            var = None
        super().__init__(
            output, predictions={"var": var} if self.extra_predictions else {}, **kwargs
        )
        if not isinstance(full, bool):
            raise CoefficientError(f"gaussian_nll full must be True or False, got {full!r}")
        self.full = full
        self.eps = check_number("gaussian_nll eps", eps, low=0.0, low_open=True)

    def options(self):
        opts = super().options()
        if self.var_value is not None:
            opts["var"] = self.var_value
        return opts

    def hyperparameters(self):
        return {"full": self.full, "eps": self.eps}

    def check_predictions(self, prediction: TensorInfo, others) -> None:
        var = others.get("var")
        if var is None or var.shape is None or prediction.shape is None:
            return
        p, v = prediction.shape, var.shape
        if len(v) == len(p) - 1:
            v = (*v, 1)
        mismatched = (
            [i for i, (a, b) in enumerate(zip(p, v, strict=True)) if a != b]
            if len(v) == len(p)
            else None
        )
        if mismatched is None or len(mismatched) > 1 or any(v[i] != 1 for i in mismatched):
            raise ShapeError(
                f"loss 'gaussian_nll': var {var.describe()} must be shaped like the output "
                f"{prediction.describe()}, like it without its last axis, or with one axis of "
                "size 1"
            )

    def per_sample(self, g, prediction, target, info, var=None):
        if var is None:
            v = g.const(max(self.var_value, self.eps))
        else:
            if var.shape is not None and info.rank is not None and len(var.shape) == info.rank - 1:
                var = g.unsqueeze(var, [info.rank - 1])
            v = g.Max(var, self.eps)
        e = g.Mul(g.Add(g.Log(v), g.Div(g.square(g.Sub(prediction, target)), v)), 0.5)
        if self.full:
            e = g.Add(e, 0.5 * math.log(2 * math.pi))
        return g.sum_per_sample(e, info.rank)


class QuantileLoss(Loss):
    """Pinball loss of quantile ``q`` (scikit-learn ``mean_pinball_loss``): with
    ``d = y - f``, ``e = q·max(d, 0) + (1 - q)·max(-d, 0)``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        quantile: the quantile ``q`` to estimate, in ``(0, 1)`` (default 0.5, half the
            absolute error).
    """

    name = "quantile"
    aliases = ("pinball",)

    def __init__(self, output=None, *, quantile=0.5, **kwargs):
        super().__init__(output, **kwargs)
        self.quantile = check_number(
            "quantile", quantile, low=0.0, high=1.0, low_open=True, high_open=True
        )

    def hyperparameters(self):
        return {"quantile": self.quantile}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        d = g.Sub(target, prediction)
        over = g.Mul(g.Relu(d), self.quantile)
        under = g.Mul(g.Relu(g.Neg(d)), 1.0 - self.quantile)
        return g.Add(over, under)


@hookimpl
def onnxloss_register_losses(register):
    for cls in (
        MSELoss,
        L1Loss,
        ElasticLoss,
        HuberLoss,
        SmoothL1Loss,
        PoissonNLLLoss,
        GaussianNLLLoss,
        QuantileLoss,
    ):
        register(cls)
