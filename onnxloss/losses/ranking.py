"""Built-in losses on pairs and triplets of predictions (plugin ``ranking``): PyTorch's
margin ranking, cosine embedding and triplet margin losses.

Each loss compares two or three predictions, every one bound to a model output or tensor
by name (``output`` is the first; the others are keywords: ``output2``, or ``positive``
and ``negative``), like ``output=`` for any loss. The triplet losses have no target: they
add no input besides an optional sample weight. The hinge ``max(z, 0)`` is PyTorch's
``clamp_min``, whose gradient is 1 where ``z`` is exactly 0.
"""

from __future__ import annotations

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, ShapeError
from ..hookspecs import hookimpl
from ..tensor_info import TensorInfo
from ..terms import Loss, check_number
from .functions import clamp_min, cosine_similarity, pairwise_distance


class MarginRankingLoss(Loss):
    """Margin ranking loss (PyTorch ``MarginRankingLoss``): with ``x1 = f(x)`` (``output``),
    ``x2`` (``output2``, shaped like it) and ``y`` the target (1: ``x1`` should rank
    higher, -1: lower), ``e = max(0, -y·(x1 - x2) + margin)``.
    ``"elementwise_mean"`` is PyTorch's ``"mean"``.

    Args:
        output2: output or tensor name of the second prediction.

        margin: the margin (default 0).
    """

    name = "margin_ranking"
    extra_predictions = ("output2",)

    def __init__(self, output=None, *, output2=None, margin=0.0, **kwargs):
        super().__init__(output, predictions={"output2": output2}, **kwargs)
        self.margin = check_number("margin_ranking margin", margin)

    def hyperparameters(self):
        return {"margin": self.margin}

    def per_sample(self, g, prediction, target, info, output2):
        z = g.Add(g.Neg(g.Mul(target, g.Sub(prediction, output2))), self.margin)
        return g.sum_per_sample(clamp_min(g, z), info.rank)


def _require_vectors(loss: Loss, prediction: TensorInfo) -> None:
    if prediction.rank != 2:
        raise ShapeError(
            f"loss '{loss.name}' needs [N, D] outputs (one vector per sample); output "
            f"{prediction.describe()} is not"
        )


class CosineEmbeddingLoss(Loss):
    """Cosine embedding loss (PyTorch ``CosineEmbeddingLoss``): with ``x1 = f(x)``
    (``output``) and ``x2`` (``output2``) ``[N, D]`` and ``y`` the ``[N]`` target (1:
    similar, -1: dissimilar),
    ``cos = Σ x1·x2 / sqrt((Σ x1² + ε)(Σ x2² + ε))`` (``ε = 1e-12``) and
    ``l_i = 1 - cos`` if ``y = 1``, ``max(0, cos - margin)`` if ``y = -1``, 0 for any other
    ``y`` (as PyTorch).

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide.

    Args:
        output2: output or tensor name of the second prediction.

        margin: the margin, in ``[-1, 1]`` (default 0).
    """

    name = "cosine_embedding"
    extra_predictions = ("output2",)
    unreduced = "samples"

    def __init__(self, output=None, *, output2=None, margin=0.0, **kwargs):
        super().__init__(output, predictions={"output2": output2}, **kwargs)
        self.margin = check_number("cosine_embedding margin", margin, low=-1.0, high=1.0)

    def hyperparameters(self):
        return {"margin": self.margin}

    def check_prediction(self, prediction: TensorInfo) -> None:
        _require_vectors(self, prediction)

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        return prediction.with_type(prediction.elem_type, (prediction.batch_dim,))

    def per_sample(self, g, prediction, target, info, output2):
        y = g.reshape(target, [-1])
        cos = cosine_similarity(g, prediction, output2, 2)
        similar = g.Where(g.Equal(y, 1.0), g.Sub(1.0, cos), 0.0)
        dissimilar = g.Where(g.Equal(y, -1.0), clamp_min(g, g.Sub(cos, self.margin)), 0.0)
        return g.Add(similar, dissimilar)


class _TripletLoss(Loss):
    """``l_i = max(0, margin + d(a, p) - d(a, n))`` over ``[N, D]`` anchors ``a``
    (``output``), positives and negatives; ``swap`` replaces ``d(a, n)`` by
    ``min(d(a, n), d(p, n))``."""

    extra_predictions = ("positive", "negative")
    has_target = False
    unreduced = "samples"

    def __init__(self, output=None, *, positive=None, negative=None, swap=False, **kwargs):
        super().__init__(output, predictions={"positive": positive, "negative": negative}, **kwargs)
        if not isinstance(swap, bool):
            raise CoefficientError(f"{self.name} swap must be True or False, got {swap!r}")
        self.swap = swap

    def check_prediction(self, prediction: TensorInfo) -> None:
        _require_vectors(self, prediction)

    def distance(self, g: GraphBuilder, x1: Value, x2: Value) -> Value:
        raise NotImplementedError

    def per_sample(self, g, prediction, target, info, positive, negative):
        d_pos = self.distance(g, prediction, positive)
        d_neg = self.distance(g, prediction, negative)
        if self.swap:
            # Min splits a tie's gradient in halves, as PyTorch's minimum does.
            d_neg = g.Min(d_neg, self.distance(g, positive, negative))
        return clamp_min(g, g.Sub(g.Add(d_pos, self.margin), d_neg))


class TripletMarginLoss(_TripletLoss):
    """Triplet margin loss (PyTorch ``TripletMarginLoss``): with anchors ``a = f(x)``
    (``output``), ``positive`` and ``negative`` predictions (``[N, D]`` each) and
    ``d(x1, x2) = ‖x1 - x2 + eps‖_p`` (PyTorch's ``pairwise_distance``),
    ``l_i = max(0, margin + d(a_i, p_i) - d(a_i, n_i))``; ``swap=True`` uses
    ``min(d(a, n), d(p, n))`` for the negative distance. No target input.

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide.

    Args:
        positive, negative: output or tensor names of the positive and negative examples.

        margin: the margin (default 1.0).

        p: the norm's degree, ``>= 1`` (default 2).

        eps: added to the difference before the norm (default 1e-6), ``>= 0``.

        swap: the distance swap of Balntas et al. (default False).
    """

    name = "triplet_margin"

    def __init__(self, output=None, *, margin=1.0, p=2.0, eps=1e-6, **kwargs):
        super().__init__(output, **kwargs)
        self.margin = check_number("triplet_margin margin", margin)
        self.p = check_number("triplet_margin p", p, low=1.0)
        self.eps = check_number("triplet_margin eps", eps, low=0.0)

    def hyperparameters(self):
        return {"margin": self.margin, "p": self.p, "eps": self.eps, "swap": self.swap}

    def distance(self, g, x1, x2):
        return pairwise_distance(g, x1, x2, 2, self.p, self.eps)


class TripletMarginWithDistanceLoss(_TripletLoss):
    """Triplet margin loss with a distance function (PyTorch
    ``TripletMarginWithDistanceLoss``): ``l_i = max(0, margin + d(a_i, p_i) - d(a_i, n_i))``
    with ``d`` PyTorch's default, ``pairwise_distance`` (``‖x1 - x2 + 1e-6‖_2``);
    ``swap=True`` uses ``min(d(a, n), d(p, n))``. No target input.

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide.

    Args:
        positive, negative: output or tensor names of the positive and negative examples.

        distance_function: ``"pairwise"`` (the default, PyTorch's ``None``); a Python
            callable cannot become a graph.

        margin: the margin, ``> 0`` (default 1.0), as PyTorch requires.

        swap: the distance swap (default False).
    """

    name = "triplet_margin_with_distance"
    DISTANCES = ("pairwise",)

    def __init__(self, output=None, *, distance_function="pairwise", margin=1.0, **kwargs):
        super().__init__(output, **kwargs)
        if distance_function is None:
            distance_function = "pairwise"
        if distance_function not in self.DISTANCES:
            raise CoefficientError(
                f"triplet_margin_with_distance distance_function must be one of "
                f"{self.DISTANCES} (or None), got {distance_function!r}"
            )
        self.distance_function = distance_function
        self.margin = check_number(
            "triplet_margin_with_distance margin", margin, low=0.0, low_open=True
        )

    def hyperparameters(self):
        return {
            "distance_function": self.distance_function,
            "margin": self.margin,
            "swap": self.swap,
        }

    def distance(self, g, x1, x2):
        return pairwise_distance(g, x1, x2, 2, 2.0, 1e-6)


@hookimpl
def onnxloss_register_losses(register):
    for cls in (
        MarginRankingLoss,
        CosineEmbeddingLoss,
        TripletMarginLoss,
        TripletMarginWithDistanceLoss,
    ):
        register(cls)
