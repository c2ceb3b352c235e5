"""Built-in margin losses (plugin ``margin``): PyTorch's soft-margin, multi-margin and hinge
embedding losses.

Each hinge ``max(z, 0)`` keeps PyTorch's gradient at ``z = 0`` (see
:mod:`onnxloss.losses.functions`): 0 for the multi-margin losses, whose kernels test
``z > 0``, and 1 for the hinge embedding loss, which uses ``clamp_min``. Class-index
targets go through the label check of :mod:`onnxloss.losses.labels`.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, ShapeError
from ..hookspecs import hookimpl
from ..tensor_info import TensorInfo
from ..terms import Loss, check_number
from .functions import clamp_min, positive_part, softplus
from .labels import class_count, refuse_outside
from .weights import TorchWeight


def _require_matrix(loss: Loss, prediction: TensorInfo, what: str) -> int:
    if prediction.rank != 2:
        raise ShapeError(
            f"loss '{loss.name}' needs an [N, C] output of {what}; output "
            f"{prediction.describe()} is not"
        )
    return class_count(loss.name, prediction)


def _check_class_weight(loss: Loss, weight, classes: int) -> None:
    if weight is not None and len(weight) != classes:
        raise ShapeError(
            f"loss '{loss.name}': weight has {len(weight)} values for {classes} classes"
        )


class SoftMarginLoss(Loss):
    """Two-class logistic loss on ``±1`` targets (PyTorch ``SoftMarginLoss``):
    ``e = log(1 + exp(-y·x))``, computed without overflow (PyTorch's float32 overflows to
    ``inf`` once ``-y·x > 88``). ``"elementwise_mean"`` is PyTorch's ``"mean"``.
    """

    name = "soft_margin"

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        return softplus(g, g.Neg(g.Mul(target, prediction)))


class MultiLabelSoftMarginLoss(TorchWeight):
    """Multi-label one-versus-all logistic loss (PyTorch ``MultiLabelSoftMarginLoss``): with
    ``x`` the ``[N, C]`` logits, ``y`` the ``[N, C]`` targets in ``[0, 1]`` and ``w_c`` the
    class weights (default 1),
    ``l_i = -(1/C) Σ_c w_c·(y_c·log σ(x_c) + (1 - y_c)·log σ(-x_c))``, computed as
    ``(1/C) Σ_c w_c·(softplus(x_c) - y_c·x_c)``.

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide.

    Args:
        weight: class weights (a list of ``C`` numbers ``>= 0``), PyTorch's ``weight``;
            the per-sample weight input is ``sample_weight``.

        sample_weight: name of a per-sample weight input.
    """

    name = "multilabel_soft_margin"
    unreduced = "samples"

    def check_prediction(self, prediction: TensorInfo) -> None:
        classes = _require_matrix(self, prediction, "logits")
        _check_class_weight(self, self.torch_weight, classes)

    def per_sample(self, g, prediction, target, info, **others):
        e = g.Sub(softplus(g, prediction), g.Mul(target, prediction))
        if self.torch_weight is not None:
            e = g.Mul(e, g.const(np.asarray(self.torch_weight, dtype=g.dtype)))
        return g.Div(g.reduce_sum(e, [1]), float(class_count(self.name, info)))


class MultiMarginLoss(TorchWeight):
    """Multi-class hinge loss (PyTorch ``MultiMarginLoss``): with ``x`` the ``[N, C]``
    scores, ``y_i`` the class index and ``w`` the class weights (default 1),
    ``l_i = (1/C) Σ_{c ≠ y_i} w_{y_i}·max(0, margin - x_{y_i} + x_c)^p``; the gradient of
    the hinge is 0 where it is exactly 0, as in PyTorch.

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide. A label outside ``[0, C)`` fails the run.

    Args:
        p: 1 (default) or 2.

        margin: the margin (default 1.0).

        weight: class weights (a list of ``C`` numbers ``>= 0``), PyTorch's ``weight``; the
            per-sample weight input is ``sample_weight``.

        target_rank: 1 declares the label input ``[N]`` (default), 2 declares ``[N, 1]``.

        sample_weight: name of a per-sample weight input.
    """

    name = "multi_margin"
    unreduced = "samples"

    def __init__(
        self,
        output=None,
        *,
        p=1,
        margin=1.0,
        target_rank=1,
        **kwargs,
    ):
        super().__init__(output, **kwargs)
        if p not in (1, 2) or isinstance(p, bool):
            raise CoefficientError(f"multi_margin p must be 1 or 2, got {p!r}")
        if target_rank not in (1, 2) or isinstance(target_rank, bool):
            raise CoefficientError(f"multi_margin target_rank must be 1 or 2, got {target_rank!r}")
        self.p = int(p)
        self.margin = check_number("multi_margin margin", margin)
        self.target_rank = target_rank

    def hyperparameters(self):
        opts = {"p": self.p, "margin": self.margin}
        if self.target_rank != 1:
            opts["target_rank"] = self.target_rank
        return opts

    def check_prediction(self, prediction: TensorInfo) -> None:
        classes = _require_matrix(self, prediction, "class scores")
        _check_class_weight(self, self.torch_weight, classes)

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        n = prediction.batch_dim
        shape = (n,) if self.target_rank == 1 else (n, 1)
        return TensorInfo(prediction.name, TensorProto.INT64, shape)

    def label_info(self, prediction: TensorInfo) -> dict[str, object]:
        return {"classes": class_count(self.name, prediction)}

    def per_sample(self, g, prediction, target, info, **others):
        classes = class_count(self.name, info)
        labels = g.reshape(g.cast(target, np.int64), [-1])
        rule = f"{self.name}_labels_must_be_in_0_to_{classes - 1}"
        labels = refuse_outside(g, labels, 0, classes, (), rule)
        column = g.unsqueeze(labels, [1])
        x_y = g.GatherElements(prediction, column, axis=1)  # [N, 1]
        z = positive_part(g, g.Add(g.Sub(self.margin, x_y), prediction))
        if self.p == 2:
            z = g.square(z)
        is_label = g.Equal(column, g.const(np.arange(classes, dtype=np.int64)))
        z = g.Where(is_label, 0.0, z)
        total = g.reduce_sum(z, [1])
        if self.torch_weight is not None:
            w = g.Gather(g.const(np.asarray(self.torch_weight, dtype=g.dtype)), labels, axis=0)
            total = g.Mul(total, w)
        return g.Div(total, float(classes))


class MultiLabelMarginLoss(Loss):
    """Multi-label hinge loss (PyTorch ``MultiLabelMarginLoss``): the ``[N, C]`` int64
    target lists each sample's classes, ended by the first ``-1`` (what follows is
    ignored); with ``J_i`` that list and ``x`` the ``[N, C]`` scores,
    ``l_i = (1/C) Σ_{j ∈ J_i} Σ_{c ∉ J_i} max(0, 1 - (x_j - x_c))`` (a class listed twice
    counts twice, as in PyTorch; the hinge's gradient is 0 where it is exactly 0).

    One value per sample: ``"elementwise_mean"`` (PyTorch's ``"mean"``) and ``"mean"``
    coincide. A target value outside ``[-1, C)``, anywhere in the row, fails the run (as
    PyTorch raises).
    """

    name = "multilabel_margin"
    unreduced = "samples"

    def check_prediction(self, prediction: TensorInfo) -> None:
        _require_matrix(self, prediction, "class scores")

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        return TensorInfo(prediction.name, TensorProto.INT64, prediction.shape)

    def label_info(self, prediction: TensorInfo) -> dict[str, object]:
        return {"classes": class_count(self.name, prediction), "end": -1}

    def per_sample(self, g, prediction, target, info, **others):
        classes = class_count(self.name, info)
        rule = f"{self.name}_labels_must_be_in_-1_to_{classes - 1}"
        labels = refuse_outside(g, g.cast(target, np.int64), -1, classes, (), rule)
        ended = g.cast(g.Equal(labels, g.const(-1, np.int64)), g.dtype)  # [N, C(k)]
        # Position k is listed while no -1 comes at or before it: a prefix count by MatMul.
        upper = np.triu(np.ones((classes, classes))).astype(g.dtype)
        listed = g.Equal(g.MatMul(ended, g.const(upper)), 0.0)  # [N, k]
        listed_f = g.cast(listed, g.dtype)
        safe = g.Where(listed, labels, g.const(0, np.int64))
        # is_target[n, c]: class c is listed in row n.
        one_hot = g.Equal(g.unsqueeze(safe, [2]), g.const(np.arange(classes, dtype=np.int64)))
        hits = g.reduce_sum(g.Mul(g.cast(one_hot, g.dtype), g.unsqueeze(listed_f, [2])), [1])
        others_mask = g.cast(g.Equal(hits, 0.0), g.dtype)  # [N, c]: 1 where c ∉ J
        x_j = g.GatherElements(prediction, safe, axis=1)  # [N, k]
        z = g.Add(g.Sub(1.0, g.unsqueeze(x_j, [2])), g.unsqueeze(prediction, [1]))  # [N, k, c]
        z = g.Mul(positive_part(g, z), g.unsqueeze(others_mask, [1]))
        z = g.Mul(z, g.unsqueeze(listed_f, [2]))
        return g.Div(g.reduce_sum(z, [1, 2]), float(classes))


class HingeEmbeddingLoss(Loss):
    """Hinge embedding loss (PyTorch ``HingeEmbeddingLoss``): with ``x`` the output (a
    distance, usually) and ``y`` the target (1 or -1),
    ``e = [y ≠ 1]·max(0, margin - x) + [y ≠ -1]·x`` (``x`` for ``y = 1``,
    ``max(0, margin - x)`` for ``y = -1``, as PyTorch computes it for any ``y``); the hinge's
    gradient is 1 where it is exactly 0 (PyTorch's ``clamp_min``).
    ``"elementwise_mean"`` is PyTorch's ``"mean"``.

    Args:
        margin: the margin (default 1.0).
    """

    name = "hinge_embedding"

    def __init__(self, output=None, *, margin=1.0, **kwargs):
        super().__init__(output, **kwargs)
        self.margin = check_number("hinge_embedding margin", margin)

    def hyperparameters(self):
        return {"margin": self.margin}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        hinge = clamp_min(g, g.Sub(self.margin, prediction))
        negative = g.Where(g.Equal(target, 1.0), 0.0, hinge)
        positive = g.Where(g.Equal(target, -1.0), 0.0, prediction)
        return g.Add(negative, positive)


@hookimpl
def onnxloss_register_losses(register):
    for cls in (
        SoftMarginLoss,
        MultiLabelSoftMarginLoss,
        MultiMarginLoss,
        MultiLabelMarginLoss,
        HingeEmbeddingLoss,
    ):
        register(cls)
