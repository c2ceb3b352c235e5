"""Built-in classification losses (plugin ``classification``).

Class labels are int64 class indices. The label input is declared ``[N]``, or ``[N, 1]``
with ``target_rank=2`` (the graph reshapes either to a column, and the checker wants a
declared rank); binary targets for the BCE losses are floats shaped like the output. The
core weights samples and reduces (see :mod:`onnxloss.terms`).
"""

from __future__ import annotations

import numbers

from onnx import TensorProto

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, ShapeError
from ..hookspecs import hookimpl
from ..tensor_info import TensorInfo
from ..terms import Loss, check_number


def _class_index_target(prediction: TensorInfo, rank: int) -> TensorInfo:
    n = prediction.batch_dim
    return TensorInfo(prediction.name, TensorProto.INT64, (n,) if rank == 1 else (n, 1))


class _ClassIndexLoss(Loss):
    """A loss whose target holds class indices (int64, ``[N]`` or ``[N, 1]``).

    Args:
        target_rank: 1 declares the label input ``[N]`` (default), 2 declares ``[N, 1]``.
    """

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

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        return _class_index_target(prediction, self.target_rank)


def _require_matrix(loss: Loss, prediction: TensorInfo, columns: int | None = None) -> None:
    rank_ok = prediction.rank in (None, 2)
    cols = prediction.shape[1] if prediction.rank == 2 else None
    cols_ok = columns is None or not isinstance(cols, int) or cols == columns
    if rank_ok and cols_ok:
        return
    want = f"[N, {columns}]" if columns else "[N, C]"
    raise ShapeError(
        f"loss '{loss.name}' needs a {want} output of class "
        f"{'probabilities' if 'log' in loss.name else 'scores'}; output "
        f"{prediction.describe()} is not"
    )


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (PyTorch ``BCEWithLogitsLoss``): with ``z = f(x)`` and
    targets ``y`` in ``[0, 1]``, ``e = log(1 + exp(z)) - y·z``, computed stably as
    ``max(z, 0) - y·z + log(1 + exp(-|z|))``.
    """

    name = "bce_with_logits"

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        softplus = g.Add(g.Relu(prediction), g.Log(g.Add(g.Exp(g.Neg(g.Abs(prediction))), 1.0)))
        return g.Sub(softplus, g.Mul(target, prediction))


class BCELoss(Loss):
    """Binary cross-entropy on probabilities (PyTorch ``BCELoss``): with ``p`` clipped to
    ``[eps, 1 - eps]``, ``e = -(y·log p + (1 - y)·log(1 - p))``.

    Args:
        eps: clipping bound, in ``(0, 0.5)`` (default 1e-6).
    """

    name = "bce"

    def __init__(self, output=None, *, eps=1e-6, **kwargs):
        super().__init__(output, **kwargs)
        self.eps = check_number("bce eps", eps, low=0.0, high=0.5, low_open=True, high_open=True)

    def hyperparameters(self):
        return {"eps": self.eps}

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        p = g.clip(prediction, self.eps, 1.0 - self.eps)
        pos = g.Mul(target, g.Log(p))
        neg = g.Mul(g.Sub(1.0, target), g.Log(g.Sub(1.0, p)))
        return g.Neg(g.Add(pos, neg))


class CrossEntropyLoss(_ClassIndexLoss):
    """Multi-class cross-entropy on logits (PyTorch ``CrossEntropyLoss``): with ``z`` the
    ``[N, C]`` scores and ``y_i`` the class index,
    ``l_i = -(1 - s)·log softmax(z_i)[y_i] - (s / C)·Σ_c log softmax(z_i)[c]``.

    Args:
        label_smoothing: ``s`` in ``[0, 1)`` (default 0, plain cross-entropy).
    """

    name = "cross_entropy"

    def __init__(self, output=None, *, label_smoothing=0.0, **kwargs):
        super().__init__(output, **kwargs)
        self.label_smoothing = check_number(
            "cross_entropy label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True
        )

    def hyperparameters(self):
        return {"label_smoothing": self.label_smoothing, **super().hyperparameters()}

    def check_prediction(self, prediction: TensorInfo) -> None:
        _require_matrix(self, prediction)

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        log_p = g.LogSoftmax(prediction, axis=1)
        nll = g.Neg(g.GatherElements(log_p, g.column_index(target), axis=1))
        s = self.label_smoothing
        if s == 0:
            return nll
        smooth = g.Neg(g.reduce_mean(log_p, [1], keepdims=True))
        return g.Add(g.Mul(nll, 1.0 - s), g.Mul(smooth, s))


class LogLoss(_ClassIndexLoss):
    """Multi-class log loss on probabilities (scikit-learn ``log_loss``): clip ``p`` to
    ``[eps, 1 - eps]``, renormalise each row, ``l_i = -log p_{i, y_i}``.

    Args:
        eps: clipping bound, in ``(0, 0.5)`` (default 1e-6).
    """

    name = "log_loss"
    columns: int | None = None

    def __init__(self, output=None, *, eps=1e-6, **kwargs):
        super().__init__(output, **kwargs)
        self.eps = check_number(
            f"{self.name} eps", eps, low=0.0, high=0.5, low_open=True, high_open=True
        )

    def hyperparameters(self):
        return {"eps": self.eps, **super().hyperparameters()}

    def check_prediction(self, prediction: TensorInfo) -> None:
        _require_matrix(self, prediction, self.columns)

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        p = g.clip(prediction, self.eps, 1.0 - self.eps)
        row_sum = g.reduce_sum(p, [1], keepdims=True)
        p_true = g.GatherElements(p, g.column_index(target), axis=1)
        return g.Neg(g.Log(g.Div(p_true, row_sum)))


class BinaryLogLoss(LogLoss):
    """Binary log loss on a two-column probability output ``[N, 2]`` (the original
    ``add_loss_output`` 'log' score): clip ``p`` to ``[eps, 1 - eps]``, renormalise each row,
    ``l_i = -log p_{i, y_i}``; ``add_loss_output`` reduces it with ``"mean"``:
    ``-(1/N) Σ_i w_i log p_{i, y_i}``.
    """

    name = "log"
    columns = 2


@hookimpl
def onnxloss_register_losses(register):
    for cls in (BCEWithLogitsLoss, BCELoss, CrossEntropyLoss, LogLoss, BinaryLogLoss):
        register(cls)
