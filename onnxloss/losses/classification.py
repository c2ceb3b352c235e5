"""Built-in classification losses (plugin ``classification``).

Class labels are int64 class indices, ``[N]`` for an ``[N, C]`` output (or ``[N, 1]``
with ``target_rank=2``: the graph reshapes either to a column, and the checker wants a
declared rank), ``[N, d1, ...]`` for an ``[N, C, d1, ...]`` one (segmentation: the class
axis is 1). A label outside ``[0, C)`` that is not ``ignore_index`` makes the runtime
refuse the batch (see :mod:`onnxloss.losses.labels`), never silently read as another
class. Binary targets for the BCE losses are floats shaped like the output. The core
weights samples and reduces (see :mod:`onnxloss.terms`).

``weight`` follows PyTorch where PyTorch has a ``weight`` (``CrossEntropyLoss``,
``NLLLoss``, the BCE losses): a list of numbers is PyTorch's weight, a constant of the
graph; a string is onnxloss's name of a per-sample weight input, as for every loss. To have
both, give the input's name as ``sample_weight``.
"""

from __future__ import annotations

import numbers

import numpy as np
from onnx import TensorProto

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, ShapeError
from ..hookspecs import hookimpl
from ..tensor_info import TensorInfo
from ..terms import Loss, check_number, check_numbers
from .functions import TORCH_EPSILON, safe_log, softplus, where_positive
from .labels import ClassTargets, class_count, class_targets
from .weights import TorchWeight

#: PyTorch's ``binary_cross_entropy`` clamps each log at this value.
BCE_LOG_FLOOR = -100.0


def _last_axis_vector(loss: Loss, prediction: TensorInfo, what: str, values) -> None:
    last = prediction.shape[-1] if prediction.rank else None
    if values is not None and isinstance(last, int) and len(values) not in (1, last):
        raise ShapeError(
            f"loss '{loss.name}': {what} has {len(values)} values but the last axis of output "
            f"{prediction.describe()} has {last}"
        )


class BCEWithLogitsLoss(TorchWeight):
    """Binary cross-entropy on logits (PyTorch ``BCEWithLogitsLoss``): with ``z = f(x)``,
    targets ``y`` in ``[0, 1]``, ``pos_weight`` ``p_c`` and ``weight`` ``w_c`` (both
    broadcast along the last axis, default 1):
    ``e = w_c·((1 - y)·z + (1 + (p_c - 1)·y)·softplus(-z))``, which is
    ``-w_c·(p_c·y·log σ(z) + (1 - y)·log(1 - σ(z)))``.

    ``softplus`` is computed so that nothing overflows and its gradient is exactly
    ``σ`` (``1/2`` at 0): see :func:`onnxloss.losses.functions.softplus`. Reductions as in
    :mod:`onnxloss.terms`; ``"elementwise_mean"`` divides by every element (PyTorch's
    ``"mean"``, which does not divide by the weights).

    Args:
        weight: PyTorch's rescaling weight (a list, along the last axis), or the name of a
            per-sample weight input.

        pos_weight: weight of the positive examples (a list along the last axis, ``>= 0``).

        sample_weight: the per-sample weight input when ``weight`` is PyTorch's.
    """

    name = "bce_with_logits"

    def __init__(self, output=None, *, pos_weight=None, **kwargs):
        super().__init__(output, **kwargs)
        self.pos_weight = (
            None
            if pos_weight is None
            else check_numbers("bce_with_logits pos_weight", pos_weight, low=0.0)
        )

    def hyperparameters(self):
        return {} if self.pos_weight is None else {"pos_weight": list(self.pos_weight)}

    def check_prediction(self, prediction: TensorInfo) -> None:
        _last_axis_vector(self, prediction, "weight", self.torch_weight)
        _last_axis_vector(self, prediction, "pos_weight", self.pos_weight)

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        log_factor = 1.0
        if self.pos_weight is not None:
            pw = g.const(np.asarray(self.pos_weight, dtype=g.dtype))
            log_factor = g.Add(g.Mul(g.Sub(pw, 1.0), target), 1.0)
        e = g.Add(
            g.Mul(g.Sub(1.0, target), prediction),
            g.Mul(softplus(g, g.Neg(prediction)), log_factor),
        )
        if self.torch_weight is not None:
            e = g.Mul(e, g.const(np.asarray(self.torch_weight, dtype=g.dtype)))
        return e


class BCELoss(TorchWeight):
    """Binary cross-entropy on probabilities (PyTorch ``BCELoss``): with ``w_c`` the
    ``weight`` along the last axis (default 1),
    ``e = -w_c·(y·max(log p, -100) + (1 - y)·max(log(1 - p), -100))``.

    The logs are clamped at -100 as PyTorch does, so ``p = 0`` or ``1`` gives a finite
    loss; there the gradient is PyTorch's, ``w_c·(p - y)/ε`` with ``ε = 1e-12`` (as a
    float32). For ``0 < p(1 - p) < ε`` PyTorch caps the gradient's denominator at ``ε``
    while onnxloss gives the derivative of the value, ``w_c·(p - y)/(p(1 - p))``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i`` and
    ``"elementwise_mean"`` (PyTorch's ``"mean"``) the sum divided by the number of elements.

    Args:
        eps: None (default) for PyTorch's clamp; a number in ``(0, 0.5)`` clips ``p`` to
            ``[eps, 1 - eps]`` instead (onnxloss's former default, 1e-6).

        weight: PyTorch's rescaling weight (a list, along the last axis), or the name of a
            per-sample weight input.

        sample_weight: the per-sample weight input when ``weight`` is PyTorch's.
    """

    name = "bce"

    def __init__(self, output=None, *, eps=None, **kwargs):
        super().__init__(output, **kwargs)
        self.eps = None
        if eps is not None:
            self.eps = check_number(
                "bce eps", eps, low=0.0, high=0.5, low_open=True, high_open=True
            )

    def hyperparameters(self):
        return {} if self.eps is None else {"eps": self.eps}

    def check_prediction(self, prediction: TensorInfo) -> None:
        _last_axis_vector(self, prediction, "weight", self.torch_weight)

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        e = (
            self._clipped(g, prediction, target)
            if self.eps
            else self._clamped(g, prediction, target)
        )
        if self.torch_weight is not None:
            e = g.Mul(e, g.const(np.asarray(self.torch_weight, dtype=g.dtype)))
        return e

    def _clipped(self, g: GraphBuilder, p: Value, y: Value) -> Value:
        p = g.clip(p, self.eps, 1.0 - self.eps)
        pos = g.Mul(y, g.Log(p))
        neg = g.Mul(g.Sub(1.0, y), g.Log(g.Sub(1.0, p)))
        return g.Neg(g.Add(pos, neg))

    def _clamped(self, g: GraphBuilder, p: Value, y: Value) -> Value:
        tiny = float(np.finfo(g.dtype).tiny)  # Log(0) would give -inf and a NaN gradient

        def clamped_log(x: Value) -> Value:
            return g.Max(g.Log(g.Max(x, tiny)), BCE_LOG_FLOOR)

        q = g.Sub(1.0, p)
        e = g.Neg(g.Add(g.Mul(y, clamped_log(p)), g.Mul(g.Sub(1.0, y), clamped_log(q))))
        # At p = 0 (p = 1) the value is the constant -100·y (-100·(1 - y)); add a line of
        # zero value and PyTorch's slope (p - y)/ε there, so the gradient is PyTorch's.
        eps = max(TORCH_EPSILON, tiny)  # 1e-12 is 0 in float16
        at_zero = g.Sub(g.Mul(y, -BCE_LOG_FLOOR), g.Mul(g.Div(y, eps), p))
        not_y = g.Sub(1.0, y)
        at_one = g.Sub(g.Mul(not_y, -BCE_LOG_FLOOR), g.Mul(g.Div(not_y, eps), q))
        return g.Where(g.Equal(p, 0.0), at_zero, g.Where(g.Equal(p, 1.0), at_one, e))


class _ClassIndexLoss(Loss):
    """A loss whose target holds class indices (int64) along axis 1 of the output.

    Args:
        target_rank: for an ``[N, C]`` output, 1 declares the label input ``[N]``
            (default), 2 declares ``[N, 1]``.
    """

    #: Whether the output may have spatial axes after the class axis.
    spatial: bool = True

    def __init__(self, output=None, *, target_rank=1, **kwargs):
        super().__init__(output, **kwargs)
        if (
            isinstance(target_rank, bool)
            or not isinstance(target_rank, numbers.Integral)
            or target_rank not in (1, 2)
        ):
            raise CoefficientError(
                f"{self.name}: target_rank must be 1 ([N] labels) or 2 ([N, 1]), "
                f"got {target_rank!r}"
            )
        self.target_rank = target_rank

    def hyperparameters(self):
        return {"target_rank": self.target_rank} if self.target_rank != 1 else {}

    # -- what subclasses set -----------------------------------------------------------------
    ignore_index: int | None = None
    torch_weight: tuple[float, ...] | None = None

    def class_loss(
        self, g: GraphBuilder, prediction: Value, labels: ClassTargets, info: TensorInfo
    ) -> Value:
        """The loss of each label, ``[N, d1, ...]``, zero where ignored."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def check_prediction(self, prediction: TensorInfo) -> None:
        rank = prediction.rank
        if rank is not None and (rank < 2 or (rank > 2 and not self.spatial)):
            want = "[N, C] or [N, C, d1, ...]" if self.spatial else "[N, C]"
            raise ShapeError(
                f"loss '{self.name}' needs a {want} output of class scores (class axis 1); "
                f"output {prediction.describe()} is not"
            )
        if rank and rank > 2 and self.target_rank != 1:
            raise ShapeError(
                f"loss '{self.name}': target_rank=2 is for [N, C] outputs; the labels of "
                f"output {prediction.describe()} are [N, d1, ...]"
            )
        classes = class_count(self.name, prediction)
        if self.torch_weight is not None and len(self.torch_weight) != classes:
            raise ShapeError(
                f"loss '{self.name}': weight has {len(self.torch_weight)} values but output "
                f"{prediction.describe()} has {classes} classes"
            )

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        n = prediction.batch_dim
        if prediction.rank and prediction.rank > 2:
            shape = (n, *prediction.shape[2:])
        else:
            shape = (n,) if self.target_rank == 1 else (n, 1)
        return TensorInfo(prediction.name, TensorProto.INT64, shape)

    def label_info(self, prediction: TensorInfo) -> dict[str, object]:
        info: dict[str, object] = {"classes": class_count(self.name, prediction)}
        if self.ignore_index is not None:
            info["ignore_index"] = self.ignore_index
        return info

    def labels(self, g: GraphBuilder, target: Value, info: TensorInfo) -> ClassTargets:
        classes = class_count(self.name, info)
        allowed = "" if self.ignore_index is None else f"_or_{self.ignore_index}"
        rule = f"{self.name}_labels_must_be_in_0_to_{classes - 1}{allowed}"
        return class_targets(
            g,
            target,
            info,
            classes,
            rule,
            ignore_index=self.ignore_index,
            weight=self.torch_weight,
        )

    def _parts(self, g, prediction, target, info):
        labels = self.labels(g, target, info)
        unreduced = self.class_loss(g, prediction, labels, info)
        spatial = list(range(1, info.rank - 1))
        per_sample = g.reduce_sum(unreduced, spatial) if spatial else unreduced
        mask = labels.counted
        if mask is not None and spatial:
            mask = g.Min(g.reduce_sum(mask, spatial), 1.0)
        count = labels.element_weight()
        if count is not None and spatial:
            count = g.reduce_sum(count, spatial)
        elif count is None:
            count = self._spatial_size(info)
        return per_sample, mask, count

    def _spatial_size(self, info: TensorInfo) -> float:
        dims = info.shape[2:]
        if not all(isinstance(d, int) for d in dims):
            raise ShapeError(
                f"loss '{self.name}' with reduction='elementwise_mean' and no ignore_index needs "
                f"the spatial dimensions of output {info.describe()} fixed"
            )
        return float(np.prod(dims)) if dims else 1.0

    def per_sample(self, g, prediction, target, info, **others):
        return self._parts(g, prediction, target, info)[0]

    def sample_mask(self, g, prediction, target, info, **others):
        return self._parts(g, prediction, target, info)[1]

    def element_count(self, g, prediction, target, info, **others):
        return self._parts(g, prediction, target, info)[2]

    def reduced(self, g, prediction, target, info, weight=None, **others):
        # The labels are checked and gathered once for the loss and both denominators.
        per_sample, mask, count = self._parts(g, prediction, target, info)
        return self.reduce(g, per_sample, weight, mask, count)


def _picked(g: GraphBuilder, log_p: Value, labels: ClassTargets) -> Value:
    """``-log_p[y]`` at every label, ``[N, d1, ...]``, times its class weight (0 if ignored)."""
    nll = g.Neg(g.squeeze(g.GatherElements(log_p, labels.index, axis=1), [1]))
    weight = labels.element_weight()
    return nll if weight is None else g.Mul(nll, weight)


class _IgnoringLoss(_ClassIndexLoss, TorchWeight):
    """``weight`` (PyTorch's class weights ``w_c``) and ``ignore_index`` (default -100)."""

    def __init__(self, output=None, *, ignore_index=-100, **kwargs):
        super().__init__(output, **kwargs)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
            raise CoefficientError(
                f"{self.name} ignore_index must be an integer, got {ignore_index!r}"
            )
        self.ignore_index = int(ignore_index)

    def hyperparameters(self):
        return {"ignore_index": self.ignore_index, **super().hyperparameters()}


class CrossEntropyLoss(_IgnoringLoss):
    """Multi-class cross-entropy on logits (PyTorch ``CrossEntropyLoss``): with ``z`` the
    ``[N, C]`` (or ``[N, C, d1, ...]``) scores, ``y`` the class index of each label,
    ``log p = log_softmax(z)`` along axis 1, ``w`` the class weights (default 1) and ``s``
    the label smoothing:
    ``e = (1 - s)·w_y·(-log p_y) + (s/C)·Σ_c w_c·(-log p_c)`` for each label, 0 where
    ``y = ignore_index``; ``l_i`` sums a sample's labels.

    ``"elementwise_mean"`` is PyTorch's ``"mean"``: ``Σ e / Σ w_y`` over the labels that
    are not ignored. ``"mean"`` divides ``Σ_i l_i`` by the number of samples with a label
    left. A label outside ``[0, C)`` other than ``ignore_index`` fails the run.

    Args:
        weight: class weights ``w`` (a list of ``C`` numbers ``>= 0``), or the name of a
            per-sample weight input.

        ignore_index: the label value that is skipped (default -100, PyTorch's).

        label_smoothing: ``s`` in ``[0, 1)`` (default 0, plain cross-entropy).

        sample_weight: the per-sample weight input when ``weight`` is PyTorch's.
    """

    name = "cross_entropy"

    def __init__(self, output=None, *, label_smoothing=0.0, **kwargs):
        super().__init__(output, **kwargs)
        self.label_smoothing = check_number(
            "cross_entropy label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True
        )

    def hyperparameters(self):
        return {"label_smoothing": self.label_smoothing, **super().hyperparameters()}

    def class_loss(self, g, prediction, labels, info):
        log_p = g.LogSoftmax(prediction, axis=1)
        nll = _picked(g, log_p, labels)
        s = self.label_smoothing
        if s == 0:
            return nll
        if self.torch_weight is None:  # (s/C)·Σ_c -log p_c is s·mean_c(-log p_c)
            smooth, scale = g.Neg(g.reduce_mean(log_p, [1])), s
        else:
            weighted = g.Mul(log_p, self._weight_const(g, info.rank, 1))
            smooth, scale = g.Neg(g.reduce_sum(weighted, [1])), s / class_count(self.name, info)
        if labels.counted is not None:
            smooth = g.Mul(smooth, labels.counted)
        return g.Add(g.Mul(nll, 1.0 - s), g.Mul(smooth, scale))


class NLLLoss(_IgnoringLoss):
    """Negative log-likelihood on log-probabilities (PyTorch ``NLLLoss``): with ``x`` the
    ``[N, C]`` (or ``[N, C, d1, ...]``) log-probabilities, ``y`` the class index and ``w``
    the class weights (default 1), ``e = -w_y·x_y`` for each label, 0 where
    ``y = ignore_index``.

    ``"elementwise_mean"`` is PyTorch's ``"mean"``, ``Σ e / Σ w_y`` over the labels that
    are not ignored; ``"mean"`` divides by the number of samples with a label left.

    Args:
        weight: class weights ``w`` (a list of ``C`` numbers ``>= 0``), or the name of a
            per-sample weight input.

        ignore_index: the label value that is skipped (default -100).

        sample_weight: the per-sample weight input when ``weight`` is PyTorch's.
    """

    name = "nll"

    def class_loss(self, g, prediction, labels, info):
        return _picked(g, prediction, labels)


class LogLoss(_ClassIndexLoss):
    """Multi-class log loss on probabilities (scikit-learn ``log_loss``): clip ``p`` to
    ``[eps, 1 - eps]``, renormalise each row, ``l_i = -log p_{i, y_i}``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i``; one value
    per sample, so ``"elementwise_mean"`` is ``"mean"``.

    Args:
        eps: clipping bound, in ``(0, 0.5)`` (default 1e-6).
    """

    name = "log_loss"
    columns: int | None = None
    spatial = False
    unreduced = "samples"

    def __init__(self, output=None, *, eps=1e-6, **kwargs):
        super().__init__(output, **kwargs)
        self.eps = check_number(
            f"{self.name} eps", eps, low=0.0, high=0.5, low_open=True, high_open=True
        )

    def hyperparameters(self):
        return {"eps": self.eps, **super().hyperparameters()}

    def check_prediction(self, prediction: TensorInfo) -> None:
        cols = prediction.shape[1] if prediction.rank == 2 else None
        if prediction.rank not in (None, 2) or (
            self.columns is not None and isinstance(cols, int) and cols != self.columns
        ):
            want = f"[N, {self.columns}]" if self.columns else "[N, C]"
            raise ShapeError(
                f"loss '{self.name}' needs a {want} output of class probabilities; output "
                f"{prediction.describe()} is not"
            )
        super().check_prediction(prediction)

    def class_loss(self, g, prediction, labels, info):
        p = g.clip(prediction, self.eps, 1.0 - self.eps)
        row_sum = g.reduce_sum(p, [1], keepdims=True)
        p_true = g.GatherElements(p, labels.index, axis=1)
        return g.squeeze(g.Neg(g.Log(g.Div(p_true, row_sum))), [1])


class BinaryLogLoss(LogLoss):
    """Binary log loss on a two-column probability output ``[N, 2]`` (the original
    ``add_loss_output`` 'log' score): clip ``p`` to ``[eps, 1 - eps]``, renormalise each row,
    ``l_i = -log p_{i, y_i}``; ``add_loss_output`` reduces it with ``"mean"``:
    ``-(1/N) Σ_i w_i log p_{i, y_i}``.

    Reductions: ``"sum"`` is ``Σ_i w_i l_i``, ``"mean"`` ``(1/N) Σ_i w_i l_i``; one value
    per sample, so ``"elementwise_mean"`` is ``"mean"``.
    """

    name = "log"
    columns = 2


class KLDivLoss(Loss):
    """Kullback-Leibler divergence (PyTorch ``KLDivLoss``): with ``x = f(x)`` the
    log-probabilities and ``t`` the target probabilities,
    ``e = t·(log t - x)`` (0 where ``t = 0``); with ``log_target=True`` the target holds
    ``log t`` and ``e = exp(t)·(t - x)``.

    ``"mean"`` (the default, the per-sample sum averaged over samples) is PyTorch's
    ``"batchmean"``, the divergence itself; ``reduction="batchmean"`` is accepted for it.
    ``"elementwise_mean"`` is PyTorch's ``"mean"``, which also divides by the classes.

    Args:
        log_target: whether the target holds log-probabilities (default False).
    """

    name = "kl_div"

    def __init__(self, output=None, *, log_target=False, reduction=None, **kwargs):
        if reduction == "batchmean":
            reduction = "mean"
        super().__init__(output, reduction=reduction, **kwargs)
        if not isinstance(log_target, bool):
            raise CoefficientError(f"kl_div log_target must be True or False, got {log_target!r}")
        self.log_target = log_target

    def hyperparameters(self):
        return {"log_target": self.log_target}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        if self.log_target:
            return g.Mul(g.Exp(target), g.Sub(target, prediction))
        return g.Sub(
            where_positive(g, target, g.Mul(target, safe_log(g, target))), g.Mul(target, prediction)
        )


@hookimpl
def onnxloss_register_losses(register):
    for cls in (
        BCEWithLogitsLoss,
        BCELoss,
        CrossEntropyLoss,
        NLLLoss,
        KLDivLoss,
        LogLoss,
        BinaryLogLoss,
    ):
        register(cls)
