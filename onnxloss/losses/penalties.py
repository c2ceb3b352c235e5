"""Built-in regularizers (plugin ``penalties``).

Each penalty is a scalar summed over every element of every tensor it matches, and is
not divided by the batch size: with ``reduction="mean"`` on the losses the objective is
``mean per-sample loss + penalty``.
"""

from __future__ import annotations

from ..builder import GraphBuilder, Value
from ..errors import PenaltyError
from ..hookspecs import hookimpl
from ..terms import Regularizer, check_number


class _ScaledPenalty(Regularizer):
    """A penalty with one strength ``alpha > 0`` (default 1.0)."""

    def __init__(self, tensors, alpha=1.0):
        super().__init__(tensors)
        self.alpha = _strength(self, "alpha", alpha)

    def hyperparameters(self):
        return {"alpha": self.alpha}


class L1Penalty(_ScaledPenalty):
    """Lasso penalty: ``alpha · Σ_w Σ |w|``.

    Args:
        tensors: name(s) or glob(s) of the tensors to penalise.
        alpha: strength, ``> 0`` (default 1.0).
    """

    name = "l1"

    def penalty(self, g: GraphBuilder, tensors: list[Value]) -> Value:
        return g.Mul(g.sum_of_abs(tensors), self.alpha)


class L2Penalty(_ScaledPenalty):
    """Ridge penalty: ``alpha · Σ_w Σ w²`` (no factor 1/2).

    Args:
        tensors: name(s) or glob(s) of the tensors to penalise.
        alpha: strength, ``> 0`` (default 1.0).
    """

    name = "l2"

    def penalty(self, g: GraphBuilder, tensors: list[Value]) -> Value:
        return g.Mul(g.sum_of_squares(tensors), self.alpha)


class ElasticNetPenalty(Regularizer):
    """Elastic-net penalty: ``l1 · Σ_w Σ |w| + l2 · Σ_w Σ w²``.

    Args:
        tensors: name(s) or glob(s) of the tensors to penalise.
        l1: weight of the absolute values, ``>= 0``.
        l2: weight of the squares, ``>= 0``; not both zero.
    """

    name = "elastic_net"

    def __init__(self, tensors, l1=0.0, l2=0.0):
        super().__init__(tensors)
        self.l1 = check_number(f"penalty on {self.tensors[0]!r}: l1", l1, low=0.0)
        self.l2 = check_number(f"penalty on {self.tensors[0]!r}: l2", l2, low=0.0)
        if self.l1 == 0 and self.l2 == 0:
            raise PenaltyError(
                f"penalty on {', '.join(map(repr, self.tensors))}: l1 and l2 are both 0, so it "
                "adds nothing; give at least one a positive weight or drop the penalty"
            )

    def hyperparameters(self):
        return {"l1": self.l1, "l2": self.l2}

    def penalty(self, g: GraphBuilder, tensors: list[Value]) -> Value:
        parts = []
        if self.l1:
            parts.append(g.Mul(g.sum_of_abs(tensors), self.l1))
        if self.l2:
            parts.append(g.Mul(g.sum_of_squares(tensors), self.l2))
        return g.add_all(parts)


def _strength(term: Regularizer, what: str, value: object) -> float:
    x = check_number(f"{term.name} penalty on {term.tensors[0]!r}: {what}", value, low=0.0)
    if x == 0:
        raise PenaltyError(
            f"{term.name} penalty on {', '.join(map(repr, term.tensors))}: {what} is 0, so it "
            "adds nothing; give it a positive value or drop the penalty"
        )
    return x


@hookimpl
def onnxloss_register_regularizers(register):
    for cls in (L1Penalty, L2Penalty, ElasticNetPenalty):
        register(cls)
