"""Learning-rate schedules, with scikit-learn's ``SGDRegressor`` formulas.

``t`` counts samples as scikit-learn does: it is 1 before the first sample and grows by the
batch size after each step, so a schedule means the same thing whatever the batch size.

* ``constant``:   ``η_t = eta0``
* ``invscaling``: ``η_t = eta0 / t^power_t``
* ``optimal``:    ``η_t = 1 / (alpha·(t0 + t - 1))`` with Bottou's heuristic
  ``t0 = 1 / (alpha·η_init)``, ``η_init = τ / max(1, 1 + τ)``, ``τ = sqrt(1 / sqrt(alpha))``
  (scikit-learn's choice, with the squared-error derivative it uses for regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import CoefficientError
from ..terms import check_number


@dataclass(frozen=True)
class LearningRateSchedule:
    """Base class: ``rate(t)`` is the learning rate after ``t - 1`` samples."""

    def rate(self, t: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(LearningRateSchedule):
    eta0: float = 0.01

    def __post_init__(self):
        check_number("learning rate eta0", self.eta0, low=0.0, low_open=True)

    def rate(self, t: int) -> float:
        return self.eta0


@dataclass(frozen=True)
class InvScaling(LearningRateSchedule):
    eta0: float = 0.01
    power_t: float = 0.25

    def __post_init__(self):
        check_number("learning rate eta0", self.eta0, low=0.0, low_open=True)
        check_number("power_t", self.power_t)

    def rate(self, t: int) -> float:
        return self.eta0 / math.pow(t, self.power_t)


@dataclass(frozen=True)
class Optimal(LearningRateSchedule):
    alpha: float = 1e-4

    def __post_init__(self):
        check_number("alpha", self.alpha, low=0.0, low_open=True)

    @property
    def t0(self) -> float:
        typw = math.sqrt(1.0 / math.sqrt(self.alpha))
        eta_init = typw / max(1.0, 1.0 + typw)
        return 1.0 / (eta_init * self.alpha)

    def rate(self, t: int) -> float:
        return 1.0 / (self.alpha * (self.t0 + t - 1))


def make_schedule(
    learning_rate: float | str | LearningRateSchedule,
    eta0: float = 0.01,
    power_t: float = 0.25,
    alpha: float = 1e-4,
) -> LearningRateSchedule:
    """A schedule from the estimator's ``learning_rate`` parameter.

    A number is a constant rate; a name picks a schedule using ``eta0``, ``power_t`` and
    ``alpha``; a :class:`LearningRateSchedule` is used as is.
    """
    if isinstance(learning_rate, LearningRateSchedule):
        return learning_rate
    if isinstance(learning_rate, str):
        if learning_rate == "constant":
            return Constant(eta0)
        if learning_rate == "invscaling":
            return InvScaling(eta0, power_t)
        if learning_rate == "optimal":
            return Optimal(alpha)
        raise CoefficientError(
            f"learning_rate {learning_rate!r} is not a schedule; use a positive number, "
            "'constant', 'invscaling', 'optimal' or a LearningRateSchedule"
        )
    return Constant(check_number("learning_rate", learning_rate, low=0.0, low_open=True))
