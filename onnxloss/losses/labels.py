"""Class-index targets: the range check that makes the runtime refuse a bad label, the
``ignore_index`` mask and the class weights.

ONNX has no assertion operator, and ``Gather``/``GatherElements`` read a label ``-1`` as
the last class (negative indices count from the end) while ``onnx.reference`` wraps any
out-of-range index silently. So before a label indexes anything it goes through
:func:`refuse_outside`: a ``Reshape`` of the flattened labels to ``[K + number of bad
labels]``, the identity when every label is valid and an error of the runtime otherwise
(onnxruntime and onnx.reference alike). The failing node is named after the rule, so the
runtime's message says what was wrong, e.g.::

    ... running Reshape node. Name:'cross_entropy_labels_must_be_in_0_to_2_or_-100' ...
    The input tensor cannot be reshaped to the requested shape. Input shape:{6},
    requested shape:{7}

(the requested size minus the input size is the number of refused labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..builder import GraphBuilder, Value
from ..errors import ShapeError
from ..tensor_info import TensorInfo


def refuse_outside(
    g: GraphBuilder, labels: Value, low: int, high: int, allowed: Sequence[int], rule: str
) -> Value:
    """``labels`` (int64) unchanged, behind a check that fails the run when a label is
    outside ``[low, high)`` and not one of ``allowed``; the failing node is named ``rule``."""
    ok = g.And(
        g.GreaterOrEqual(labels, g.const(low, np.int64)), g.Less(labels, g.const(high, np.int64))
    )
    for value in allowed:
        ok = g.Or(ok, g.Equal(labels, g.const(value, np.int64)))
    flat = g.reshape(labels, [-1])
    bad = g.reduce_sum(g.cast(g.Not(g.reshape(ok, [-1])), np.int64), keepdims=True)
    wanted = g.Add(g.Shape(flat), bad)
    with g.scope(rule):
        checked = g.Reshape(flat, wanted)
    return g.Reshape(checked, g.Shape(labels))


@dataclass
class ClassTargets:
    """Class-index labels after the range check, in the layout of the unreduced loss.

    Attributes:
        index: int64 labels of shape ``[N, 1, d1, ...]`` (the class axis kept as 1), the
            ignored ones replaced by 0, ready for ``GatherElements`` along axis 1.
        counted: float ``[N, d1, ...]``, 1 where the label counts and 0 where it is
            ``ignore_index``; None when no label can be ignored.
        weight: float ``[N, d1, ...]``, the class weight of each label (0 where ignored);
            None without class weights (then it is ``counted``, or 1).
    """

    index: Value
    counted: Value | None
    weight: Value | None

    def element_weight(self) -> Value | None:
        """What each element weighs in PyTorch's weighted mean (None: 1)."""
        return self.weight if self.weight is not None else self.counted


def class_targets(
    g: GraphBuilder,
    target: Value,
    prediction: TensorInfo,
    classes: int,
    rule: str,
    *,
    ignore_index: int | None = None,
    weight: Sequence[float] | None = None,
) -> ClassTargets:
    """Checked labels, ignore mask and class weights for a ``[N, C, d1, ...]`` prediction
    whose target is ``[N, d1, ...]`` (or ``[N]`` / ``[N, 1]`` for a ``[N, C]`` one)."""
    labels = g.cast(target, np.int64)
    if prediction.rank == 2:
        labels = g.reshape(labels, [-1])  # [N] or [N, 1] → [N]
    allowed = () if ignore_index is None else (ignore_index,)
    labels = refuse_outside(g, labels, 0, classes, allowed, rule)
    counted = None
    safe = labels
    if ignore_index is not None:  # a class index too, when in [0, C): PyTorch ignores it
        ignored = g.Equal(labels, g.const(ignore_index, np.int64))
        safe = g.Where(ignored, g.const(0, np.int64), labels)
        counted = g.Where(ignored, 0.0, 1.0)
    class_weight = None
    if weight is not None:
        class_weight = g.Gather(g.const(np.asarray(weight, dtype=g.dtype)), safe, axis=0)
        if counted is not None:
            class_weight = g.Mul(class_weight, counted)
    index = g.unsqueeze(safe, [1])
    return ClassTargets(index, counted, class_weight)


def class_count(loss_name: str, prediction: TensorInfo, axis: int = 1) -> int:
    """The static number of classes (size of ``axis``) of the prediction, else a ShapeError."""
    classes = prediction.shape[axis] if prediction.rank and prediction.rank > axis else None
    if not isinstance(classes, int):
        raise ShapeError(
            f"loss '{loss_name}' needs the number of classes (axis {axis}) of output "
            f"{prediction.describe()} as a fixed dimension, to check the labels against it"
        )
    return classes
