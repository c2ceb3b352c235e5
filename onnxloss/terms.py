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

Note that ``"mean"`` averages over samples, not over every element as PyTorch's
``MSELoss`` does; on a one-column output the two coincide.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from .errors import CoefficientError, OutputSelectionError

if TYPE_CHECKING:
    from .builder import GraphBuilder, Value
    from .tensor_info import TensorInfo

REDUCTIONS = ("sum", "mean")


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

    Args:
        output: the model output (name, or position among the graph outputs) the loss
            applies to; ``None`` when the model has a single output.
        target: name of the graph input that receives the expected values. ``None`` picks
            ``"label"`` when every loss of the spec binds the same output, else
            ``"<output>_label"``.
        weight: name of an optional ``[N]`` graph input of per-sample weights.
        reduction: ``"sum"`` or ``"mean"``; ``None`` takes the class's
            ``default_reduction``.
    """

    kind: ClassVar[str] = "loss"
    default_reduction: ClassVar[str] = "mean"

    def __init__(
        self,
        output: str | int | None = None,
        *,
        target: str | None = None,
        weight: str | None = None,
        reduction: str | None = None,
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
        reduction = self.default_reduction if reduction is None else reduction
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise CoefficientError(
                f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        self.output = output
        self.target = target
        self.weight = weight
        self.reduction = reduction

    def options(self) -> dict[str, object]:
        opts: dict[str, object] = {"output": self.output}
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

    def target_info(self, prediction: TensorInfo) -> TensorInfo:
        """Type and shape of the target input (name ignored). Default: like the prediction."""
        return prediction

    def elementwise(self, g: GraphBuilder, prediction: Value, target: Value) -> Value:
        """The loss of every element, shape ``[N, ...]``; the core sums all but axis 0."""
        raise NotImplementedError(f"{type(self).__name__} must implement elementwise()")

    def per_sample(
        self, g: GraphBuilder, prediction: Value, target: Value, info: TensorInfo
    ) -> Value:
        """The loss of each sample, shape ``[N]``; ``info`` describes the prediction.

        Default: :meth:`elementwise` summed over every axis but the first.
        """
        return g.sum_per_sample(self.elementwise(g, prediction, target), info.rank)


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
