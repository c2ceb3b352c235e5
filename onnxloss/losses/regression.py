"""Built-in regression losses (plugin ``regression``).

Every loss here is elementwise in ``d = f(x) - y`` (or in ``f(x)`` and ``y``); the core
sums the elements of a sample, weights samples and reduces (see :mod:`onnxloss.terms`).
"""

from __future__ import annotations

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError
from ..hookspecs import hookimpl
from ..terms import Loss, check_number


class MSELoss(Loss):
    """Squared error: ``e_ij = (f_ij - y_ij)²``.

    With ``reduction="sum"`` (as in ``add_loss_output``) the loss is
    ``Σ_i w_i Σ_j d_ij²``; with ``"mean"``, that divided by the batch size ``N``.
    """

    name = "squared_error"
    aliases = ("l2", "mse")

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        return g.square(g.Sub(prediction, target))


class L1Loss(Loss):
    """Absolute error: ``e_ij = |f_ij - y_ij|``; reduced as described in :mod:`onnxloss.terms`."""

    name = "absolute_error"
    aliases = ("l1", "mae")

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        return g.Abs(g.Sub(prediction, target))


class ElasticLoss(Loss):
    """Elastic error: ``e_ij = l1_weight·|d_ij| + l2_weight·d_ij²`` with ``d = f - y``.

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


class PoissonNLLLoss(Loss):
    """Poisson negative log-likelihood (PyTorch ``PoissonNLLLoss``, without the Stirling term).

    * ``log_input=True`` (default): the output is ``log λ``; ``e = exp(f) - y·f``.
    * ``log_input=False``: the output is ``λ``; ``e = f - y·log(f + eps)``.

    Args:
        log_input: whether the model outputs the log of the rate.
        eps: added inside the log when ``log_input=False`` (default 1e-8), ``> 0``.
    """

    name = "poisson"

    def __init__(self, output=None, *, log_input=True, eps=1e-8, **kwargs):
        super().__init__(output, **kwargs)
        if not isinstance(log_input, bool):
            raise CoefficientError(f"poisson log_input must be True or False, got {log_input!r}")
        self.log_input = log_input
        self.eps = check_number("poisson eps", eps, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"log_input": self.log_input, "eps": self.eps}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        if self.log_input:
            return g.Sub(g.Exp(prediction), g.Mul(target, prediction))
        return g.Sub(prediction, g.Mul(target, g.Log(g.Add(prediction, self.eps))))


class QuantileLoss(Loss):
    """Pinball loss of quantile ``q`` (scikit-learn ``mean_pinball_loss``): with
    ``d = y - f``, ``e = q·max(d, 0) + (1 - q)·max(-d, 0)``.

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
    for cls in (MSELoss, L1Loss, ElasticLoss, HuberLoss, PoissonNLLLoss, QuantileLoss):
        register(cls)
