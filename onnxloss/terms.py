"""Loss and regularizer terms, and the algebra that combines them into a loss spec.

A *term* produces one scalar. A :class:`Loss` compares a model output with a target fed as
a new graph input; a :class:`Regularizer` penalises tensors of the model (usually weights).
Terms compose with ``+`` and scalar ``*`` (or ``/``)::

    spec = 0.1 * L1Loss() + 0.9 * MSELoss() + L2Penalty("coef", 0.01)

and a :class:`Spec` is a sum of ``coefficient × term``. The rewriter emits each term once
and adds them up into a single scalar loss.

Reduction of a loss term
------------------------
With ``e_ij`` the term's elementwise value for sample ``i`` (batch axis 0) and element
``j`` (all other axes), the per-sample loss is ``l_i = Σ_j e_ij`` and, with optional
per-sample weights ``w_i`` (default 1) and ``N`` the batch size:

* ``reduction="sum"``:  ``Σ_i w_i l_i``
* ``reduction="mean"``: ``(1/N) Σ_i w_i l_i``  (the mean per-sample loss)
* ``reduction="elementwise_mean"``: ``Σ_i w_i l_i / Σ_i c_i``, PyTorch's ``"mean"``: the
  mean over every element of the loss PyTorch computes with ``reduction="none"``, where
  ``c_i`` is the number of those elements in sample ``i`` (:meth:`Loss.element_count`):
  every element of the prediction for an elementwise loss (``MSELoss``: ``N·M`` in all),
  one per sample for a per-sample loss (``TripletMarginLoss``), and for class-index losses
  the sum of the class weights of the labels that are not ``ignore_index`` (PyTorch's
  weighted mean).

``"mean"`` averages over samples, not over every element; on a one-column output the
two coincide. Sample weights ``w_i`` scale the numerator only, in every reduction. A loss
that ignores some labels (``ignore_index``) leaves the ignored elements out of the sum and
``"mean"`` counts only the samples with an element left (:meth:`Loss.sample_mask`); when
nothing is left the loss is 0 (PyTorch gives NaN), so one empty batch does not stop
training.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .errors import CoefficientError, OutputSelectionError, ShapeError

if TYPE_CHECKING:
    from .builder import GraphBuilder, Value
    from .tensor_info import TensorInfo

REDUCTIONS = ("sum", "mean", "elementwise_mean")


def check_number(
    what: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within bounds, else a :class:`CoefficientError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CoefficientError(f"{what} must be a real number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise CoefficientError(f"{what} must be finite, got {x}")
    if low is not None and (x < low or (low_open and x == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise CoefficientError(f"{what} must be {bound}, got {x}")
    if high is not None and (x > high or (high_open and x == high)):
        bound = f"< {high}" if high_open else f"<= {high}"
        raise CoefficientError(f"{what} must be {bound}, got {x}")
    return x


def check_representable(what: str, value: object, elem_type: int) -> None:
    """A :class:`CoefficientError` if ``value`` (a number, or any number of a list, tuple or
    array) would become infinite, or a nonzero value 0, as a constant of ``elem_type``.

    The rewriter calls it on every term's coefficient and every numeric hyper-parameter
    (from :meth:`Term.hyperparameters`), against the loss's element type, so a new term
    gets the check without writing it.
    """
    from .tensor_info import FLOAT_RANGES, type_name

    low, high = FLOAT_RANGES[elem_type]
    for x in _numbers(value):
        if not math.isfinite(x) or abs(x) > high:
            raise CoefficientError(
                f"{what} is {x:g}, beyond the range of {type_name(elem_type)} (largest finite "
                f"value {high:g}): it would be infinite in the graph; choose a smaller value"
            )
        if x != 0 and abs(x) < low:
            raise CoefficientError(
                f"{what} is {x:g}, below the smallest {type_name(elem_type)} ({low:g}): it "
                "would be 0 in the graph; choose a larger value"
            )


def _numbers(value: object) -> list[float]:
    """The real numbers in a hyper-parameter value (bools and strings are not numbers)."""
    if isinstance(value, bool) or isinstance(value, str | bytes):
        return []
    if isinstance(value, numbers.Real):
        return [float(value)]
    if isinstance(value, list | tuple):
        return [x for item in value for x in _numbers(item)]
    if hasattr(value, "dtype") and hasattr(value, "ravel"):  # a numpy array
        if value.dtype.kind in "iuf":
            return [float(x) for x in value.ravel()]
    return []


def check_numbers(
    what: str, values: object, *, low: float | None = None, length: int | None = None
) -> tuple[float, ...]:
    """``values`` (a sequence or 1-D array of real numbers, e.g. PyTorch's class ``weight``)
    as a non-empty tuple of finite floats, each ``>= low``, else a :class:`CoefficientError`."""
    if isinstance(values, str | bytes | numbers.Number) or not isinstance(
        values, Iterable | np.ndarray
    ):
        raise CoefficientError(f"{what} must be a list of numbers, got {values!r}")
    array = np.asarray(values, dtype=object)
    if array.ndim != 1 or array.size == 0:
        raise CoefficientError(
            f"{what} must be a non-empty 1-D list of numbers, got shape {list(array.shape)}"
        )
    out = tuple(check_number(f"{what}[{i}]", v, low=low) for i, v in enumerate(array.tolist()))
    if length is not None and len(out) != length:
        raise CoefficientError(f"{what} must have {length} values, got {len(out)}")
    return out


class _Composable:
    """``+``, ``*`` and ``/`` for terms and specs."""

    def as_spec(self) -> Spec:
        raise NotImplementedError

    def __add__(self, other: object) -> Spec:
        if not isinstance(other, _Composable):
            return NotImplemented
        return Spec(self.as_spec().items + other.as_spec().items)

    def __radd__(self, other: object) -> Spec:
        # sum([t1, t2]) starts from 0.
        if isinstance(other, numbers.Number) and other == 0 and not isinstance(other, bool):
            return self.as_spec()
        return NotImplemented

    def __mul__(self, coef: object) -> Spec:
        if isinstance(coef, _Composable):
            raise CoefficientError("terms can be scaled by numbers, not multiplied together")
        c = check_number("a term's coefficient", coef)
        return Spec(tuple((c * k, t) for k, t in self.as_spec().items))

    __rmul__ = __mul__

    def __truediv__(self, coef: object) -> Spec:
        c = check_number("a term's divisor", coef)
        if c == 0:
            raise CoefficientError("cannot divide a term by zero")
        return self * (1.0 / c)

    def __neg__(self) -> Spec:
        return self * -1.0


class Term(_Composable):
    """One scalar contribution to the loss. Subclass :class:`Loss` or :class:`Regularizer`."""

    #: Registry name, e.g. ``"huber"``; what ``add_loss_output(score_name=...)`` accepts.
    name: ClassVar[str] = ""
    #: Other names the registry accepts for this term.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: ``"loss"`` or ``"regularizer"``.
    kind: ClassVar[str] = ""

    def as_spec(self) -> Spec:
        return Spec(((1.0, self),))

    def options(self) -> dict[str, object]:
        """The term's hyper-parameters, for ``repr`` and the model's metadata."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.options() == other.options()

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))


class Loss(Term):
    """A data term: compares the output ``output`` with a target fed as input ``target``.

    Subclasses implement :meth:`elementwise` (or :meth:`per_sample` for losses that are not
    a sum over elements) and may override :meth:`target_info` and :meth:`check_prediction`.
    The core does the per-sample sum, the sample weighting and the reduction (see the module
    docstring), so a subclass never handles weights or reductions itself.

    A loss that compares several predictions (ranking, embedding and triplet losses) lists
    the keyword names of the others in :attr:`extra_predictions`; each binds a model output
    or tensor by name, as ``output`` does, and reaches :meth:`per_sample` (and the other
    hooks) as a keyword argument of that name. A loss without a target (a triplet loss) sets
    :attr:`has_target` to False: it adds no target input and receives ``target=None``.

    Args:
        output: the model output (name, or position among the graph outputs) the loss
            applies to; ``None`` when the model has a single output.
        target: name of the graph input that receives the expected values. ``None`` picks
            ``"label"`` when every loss of the spec binds the same output, else
            ``"<output>_label"``.
        weight: name of an optional ``[N]`` graph input of per-sample weights.
        reduction: ``"sum"``, ``"mean"`` or ``"elementwise_mean"``; ``None`` takes the
            class's ``default_reduction``.
        predictions: for losses with :attr:`extra_predictions`, the output or tensor name
            each of them binds (subclasses take them as keywords of their own).
    """

    kind: ClassVar[str] = "loss"
    default_reduction: ClassVar[str] = "mean"
    #: Keyword names of the predictions the loss compares besides ``output``.
    extra_predictions: ClassVar[tuple[str, ...]] = ()
    #: Whether the loss compares its predictions with a target input.
    has_target: ClassVar[bool] = True
    #: What PyTorch's ``reduction="none"`` returns, which ``"elementwise_mean"`` averages:
    #: ``"elements"`` (one value per element of the prediction) or ``"samples"`` (one
    #: value per sample).
    unreduced: ClassVar[str] = "elements"

    def __init__(
        self,
        output: str | int | None = None,
        *,
        target: str | None = None,
        weight: str | None = None,
        reduction: str | None = None,
        predictions: Mapping[str, str | int | None] | None = None,
    ):
        if output is not None and (
            isinstance(output, bool) or not isinstance(output, int | str) or output == ""
        ):
            raise OutputSelectionError(
                f"{type(self).__name__}: output must be an output name or position, got {output!r}"
            )
        for label, value in (("target", target), ("weight", weight)):
            if value is not None and (not isinstance(value, str) or not value):
                raise OutputSelectionError(
                    f"{type(self).__name__}: {label} must be a non-empty input name, got {value!r}"
                )
        if target is not None and not self.has_target:
            raise OutputSelectionError(
                f"{type(self).__name__} compares predictions only and has no target input; "
                f"drop target={target!r}"
            )
        reduction = self.default_reduction if reduction is None else reduction
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise CoefficientError(
                f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        if predictions is not None and not isinstance(predictions, Mapping):
            raise OutputSelectionError(
                f"{type(self).__name__}: predictions must map {list(self.extra_predictions)} to "
                f"output or tensor names, got {predictions!r}"
            )
        predictions = dict(predictions or {})
        unknown = sorted(set(predictions) - set(self.extra_predictions))
        if unknown:
            raise OutputSelectionError(
                f"{type(self).__name__}: unknown prediction(s) {unknown}; it compares "
                f"{['output', *self.extra_predictions]}"
            )
        for role in self.extra_predictions:
            value = predictions.get(role)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | str) or value == ""
            ):
                raise OutputSelectionError(
                    f"{type(self).__name__}: {role} must be an output or tensor name (or an "
                    f"output position), got {value!r}"
                )
        self.output = output
        self.target = target
        self.weight = weight
        self.reduction = reduction
        #: Output or tensor each of :attr:`extra_predictions` binds (None: not given yet).
        self.predictions: dict[str, str | int | None] = {
            role: predictions.get(role) for role in self.extra_predictions
        }

    def options(self) -> dict[str, object]:
        opts: dict[str, object] = {"output": self.output, **self.predictions}
        if self.target is not None:
            opts["target"] = self.target
        if self.weight is not None:
            opts["weight"] = self.weight
        opts["reduction"] = self.reduction
        opts.update(self.hyperparameters())
        return opts

    def hyperparameters(self) -> dict[str, object]:
        """The loss's own options (``delta``, ``eps``...), beyond output/target/reduction."""
        return {}

    # -- what plugins implement ------------------------------------------------------------
    def check_prediction(self, prediction: TensorInfo) -> None:
        """Raise an :class:`~onnxloss.OnnxLossError` if the loss cannot apply to this output.

        The core has already checked that the output is a float tensor.
        """

    def check_predictions(self, prediction: TensorInfo, others: Mapping[str, TensorInfo]) -> None:
        """Check the :attr:`extra_predictions` against ``prediction`` (after
        :meth:`check_prediction`). Default: each has the prediction's rank and, where both
        are known, its dimensions."""
        for role, info in others.items():
            if info.shape is None or prediction.shape is None:
                continue
            same_rank = len(info.shape) == len(prediction.shape)
            if not same_rank or not all(
                not (isinstance(a, int) and isinstance(b, int)) or a == b
                for a, b in zip(info.shape, prediction.shape, strict=True)
            ):
                raise ShapeError(
                    f"loss '{self.name}': {role} {info.describe()} must have the shape of "
                    f"the output {prediction.describe()}"
                )

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        """Type and shape of the target input (name ignored). Default: like the prediction."""
        return prediction

    def label_info(self, prediction: TensorInfo) -> dict[str, object] | None:
        """For class-index targets, what a trainer needs to check labels before training
        (recorded in the model's metadata, key ``"labels"``): e.g. ``{"classes": C,
        "ignore_index": -100}``. Default: None (the target holds no class indices)."""
        return None

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        """The loss of every element, shape ``[N, ...]``; the core sums all but axis 0."""
        raise NotImplementedError(f"{type(self).__name__} must implement elementwise()")

    def per_sample(
        self, g: GraphBuilder, prediction: Value, target: Value, info: TensorInfo, **others
    ) -> Value:
        """The loss of each sample, shape ``[N]``; ``info`` describes the prediction and
        ``others`` holds the :attr:`extra_predictions` by name.

        Default: :meth:`elementwise` summed over every axis but the first.
        """
        return g.sum_per_sample(self.elementwise(g, prediction, target), info.rank)

    def sample_mask(
        self, g: GraphBuilder, prediction: Value, target: Value, info: TensorInfo, **others
    ) -> Value | None:
        """``[N]``, 1 for the samples ``"mean"`` counts and 0 for the others (a sample all of
        whose labels are ``ignore_index``); None (default): every sample counts."""
        return None

    def element_count(
        self, g: GraphBuilder, prediction: Value, target: Value, info: TensorInfo, **others
    ) -> Value | float:
        """``c_i``, what each sample adds to the denominator of ``"elementwise_mean"``: a
        python number (the same for every sample) or an ``[N]`` tensor. Default: 1 when
        :attr:`unreduced` is ``"samples"``, else the number of elements of one sample of the
        prediction (computed at run time when its shape is not static)."""
        if self.unreduced == "samples" or info.rank in (None, 0, 1):
            return 1.0
        dims = info.shape[1:]
        if all(isinstance(d, int) for d in dims):
            return float(math.prod(dims))
        # Symbolic dimensions: size / batch elements per sample, repeated for each sample.
        shape = g.Shape(prediction)
        batch = g.op("Slice", shape, g.const([0], np.int64), g.const([1], np.int64))
        per_sample = g.Div(g.cast(g.Size(prediction), g.dtype), g.cast(batch, g.dtype))
        return g.Expand(per_sample, batch)

    # -- what the core calls ---------------------------------------------------------------
    def reduced(
        self,
        g: GraphBuilder,
        prediction: Value,
        target: Value | None,
        info: TensorInfo,
        weight: Value | None = None,
        **others: Value,
    ) -> Value:
        """The scalar loss: :meth:`per_sample`, times the sample weights, reduced by
        :attr:`reduction` as the module docstring states."""
        per_sample = self.per_sample(g, prediction, target, info, **others)
        mask = count = None
        if self.reduction == "mean":
            mask = self.sample_mask(g, prediction, target, info, **others)
        elif self.reduction == "elementwise_mean":
            count = self.element_count(g, prediction, target, info, **others)
        return self.reduce(g, per_sample, weight, mask, count)

    def reduce(
        self,
        g: GraphBuilder,
        per_sample: Value,
        weight: Value | None,
        mask: Value | None,
        count: Value | float | None,
    ) -> Value:
        """``per_sample`` (``[N]``) times ``weight`` reduced by :attr:`reduction`, with the
        :meth:`sample_mask` ``mask`` (``"mean"``) and :meth:`element_count` ``count``
        (``"elementwise_mean"``; None counts 1 per sample)."""
        if weight is not None:
            per_sample = g.Mul(per_sample, weight)
        if self.reduction == "sum":
            return g.reduce_sum(per_sample)
        if self.reduction == "mean":
            if mask is None:
                return g.reduce_mean(per_sample)
            # max(count, 1): a batch with nothing left gives 0 rather than 0/0.
            return g.Div(g.reduce_sum(per_sample), g.Max(g.reduce_sum(mask), 1.0))
        if count is None or isinstance(count, numbers.Real):
            mean = g.reduce_mean(per_sample)
            return mean if count in (None, 1) else g.Div(mean, float(count))
        # The floor (the type's smallest normal number) turns 0/0 into 0 when every label
        # of the batch is ignored; any real count is far above it.
        floor = float(np.finfo(g.dtype).tiny)
        return g.Div(g.reduce_sum(per_sample), g.Max(g.reduce_sum(count), floor))


class Regularizer(Term):
    """A penalty on tensors of the model, typically weights.

    Subclasses implement :meth:`penalty`, the scalar penalty of every tensor the term
    matches (given all at once, so a penalty can also couple tensors, as group lasso does).

    Args:
        tensors: a tensor name or glob (``"coef"``, ``"layer*.weight"``), or a list of
            them. Exact names may be any typed tensor of the main graph; globs match
            initializers only.
    """

    kind: ClassVar[str] = "regularizer"

    def __init__(self, tensors: str | Sequence[str]):
        if isinstance(tensors, str):
            names = [tensors]
        elif isinstance(tensors, Iterable) and not isinstance(tensors, bytes | dict):
            names = list(tensors)
        else:
            names = []
        if not names or not all(isinstance(n, str) and n for n in names):
            raise OutputSelectionError(
                f"{type(self).__name__}: tensors must be a non-empty name or list of names, "
                f"got {tensors!r}"
            )
        self.tensors = tuple(names)

    def options(self) -> dict[str, object]:
        tensors = self.tensors[0] if len(self.tensors) == 1 else list(self.tensors)
        return {"tensors": tensors, **self.hyperparameters()}

    def hyperparameters(self) -> dict[str, object]:
        return {}

    def penalty(self, g: GraphBuilder, tensors: list[Value]) -> Value:
        """The scalar penalty of the matched ``tensors`` (already in the loss's float type)."""
        raise NotImplementedError(f"{type(self).__name__} must implement penalty()")


class Spec(_Composable):
    """A sum of ``coefficient × term``; what :func:`onnxloss.rewrite` applies."""

    def __init__(self, items: Iterable[tuple[float, Term]]):
        self.items: tuple[tuple[float, Term], ...] = tuple(items)

    def as_spec(self) -> Spec:
        return self

    @property
    def losses(self) -> list[tuple[float, Loss]]:
        return [(c, t) for c, t in self.items if isinstance(t, Loss)]

    @property
    def regularizers(self) -> list[tuple[float, Regularizer]]:
        return [(c, t) for c, t in self.items if isinstance(t, Regularizer)]

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        parts = [repr(t) if c == 1.0 else f"{c!r} * {t!r}" for c, t in self.items]
        return " + ".join(parts) if parts else "Spec(())"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and self.items == other.items

    __hash__ = None  # type: ignore[assignment]
