"""The sigmoid focal loss as an onnxloss term."""

from __future__ import annotations

import numpy as np

from onnxloss import CoefficientError, GraphBuilder, Loss
from onnxloss.losses.functions import softplus
from onnxloss.terms import check_number


class SigmoidFocalLoss(Loss):
    """Sigmoid focal loss on logits (Lin et al., 2017): ``α_t · (1 - p_t)^γ · BCE(z, y)``.

    With ``z`` the output (logits), ``y`` the target in ``[0, 1]`` (usually 0 or 1) and
    ``p = sigmoid(z)``:

    * ``BCE(z, y) = softplus(z) - y·z``, the binary cross-entropy on logits, with onnxloss's
      softplus ``(z + |z|)/2 + log(1 + exp(-|z|))``: no exponential overflows and the
      gradient is exactly ``sigmoid(z) - y``, ``1/2 - y`` at ``z = 0`` too;
    * ``1 - p_t = y·sigmoid(-z) + (1 - y)·sigmoid(z)``, which avoids computing ``1 - p``
      (that rounds to 0 for confident predictions), floored at the smallest normal number
      of the output's type so that ``Pow`` keeps a finite gradient when ``γ < 1``;
    * ``α_t = α·y + (1 - α)·(1 - y)``, or 1 when ``alpha`` is None.

    This is torchvision's ``sigmoid_focal_loss`` elementwise (its ``alpha=-1`` is
    ``alpha=None`` here); onnxloss then sums each sample's elements, weights samples and
    reduces (``"mean"`` by default: the mean per-sample loss). Built from operators
    onnxruntime-training can differentiate (Abs, Exp, Log, Sigmoid, Clip, Pow).

    Args:
        output: the model output holding the logits (``None``: the only output).
        alpha: weight of the positive class, in ``[0, 1]`` (default 0.25), or None.
        gamma: focusing parameter ``γ >= 0`` (default 2.0); 0 gives the (α-weighted)
            binary cross-entropy.
        target, weight, reduction: as for every :class:`onnxloss.Loss`.
    """

    name = "sigmoid_focal"

    def __init__(self, output=None, *, alpha=0.25, gamma=2.0, **kwargs):
        super().__init__(output, **kwargs)
        if alpha is not None:
            alpha = check_number("sigmoid_focal alpha", alpha)
            if not 0.0 <= alpha <= 1.0:
                raise CoefficientError(
                    f"sigmoid_focal alpha must be in [0, 1], or None for no class weighting "
                    f"(torchvision's alpha=-1), got {alpha}"
                )
        self.alpha = alpha
        self.gamma = check_number("sigmoid_focal gamma", gamma, low=0.0)

    def hyperparameters(self):
        return {"alpha": self.alpha, "gamma": self.gamma}

    def elementwise(self, g: GraphBuilder, prediction, target):
        z, y = prediction, target
        loss = g.Sub(softplus(g, z), g.Mul(y, z))
        if self.gamma != 0:
            one_minus_p_t = g.Add(g.Mul(y, g.Sigmoid(g.Neg(z))), g.Mul(g.Sub(1.0, y), g.Sigmoid(z)))
            floored = g.clip(one_minus_p_t, _smallest_normal(g.dtype))
            loss = g.Mul(loss, g.Pow(floored, self.gamma))
        if self.alpha is not None:
            alpha_t = g.Add(g.Mul(y, 2.0 * self.alpha - 1.0), 1.0 - self.alpha)
            loss = g.Mul(loss, alpha_t)
        return loss


def _smallest_normal(dtype: np.dtype) -> float:
    try:
        return float(np.finfo(dtype).tiny)
    except (TypeError, ValueError):  # bfloat16 and friends: float32's exponent range
        return float(np.finfo(np.float32).tiny)
