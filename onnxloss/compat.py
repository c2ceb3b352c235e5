"""``add_loss_output``: the original library's entry point, as a thin facade over
:func:`onnxloss.rewrite`.
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Mapping

import onnx

from .errors import CoefficientError, PenaltyError
from .losses import ElasticNetPenalty, L2Penalty
from .model_io import ModelLike
from .registry import get_registry
from .rewrite import rewrite, rewrite_file
from .terms import Loss, Regularizer, Spec

#: Reductions the original ``add_loss_output`` used; other losses keep their own default.
SEED_REDUCTIONS = {"squared_error": "sum", "absolute_error": "sum", "elastic": "sum", "log": "mean"}


def add_loss_output(
    onx: ModelLike,
    score_name: str = "squared_error",
    loss_name: str = "loss",
    label_name: str = "label",
    weight_name: str | None = None,
    penalty: Mapping[str, object] | None = None,
    output_index: int | str | None = None,
    **kwargs: object,
) -> onnx.ModelProto:
    """Add a scalar loss output (first) to a model, as the original library did.

    With ``d = f(x) - y`` per sample ``i`` and element ``j``, and ``w_i`` the optional
    per-sample weight (input ``weight_name``, shape ``[N]``):

    * ``'squared_error'`` / ``'l2'``: ``Σ_i w_i Σ_j d_ij²``
    * ``'absolute_error'`` / ``'l1'``: ``Σ_i w_i Σ_j |d_ij|``
    * ``'elastic'``: ``Σ_i w_i Σ_j (l1_weight·|d_ij| + l2_weight·d_ij²)`` (0.5 / 0.5)
    * ``'log'``: binary log loss on a two-column probability output; probabilities clipped
      to ``[eps, 1 - eps]`` (``eps=1e-6``) and renormalised, then
      ``-(1/N) Σ_i w_i log p_{i, y_i}``; the label is int64 ``[N]`` or ``[N, 1]``.
    * any other registered loss name, with its own options in ``kwargs`` (``reduction``
      included; these keep their class's default reduction).

    ``penalty`` maps a tensor name or glob to ``c`` (adds ``c·Σ w²``) or to
    ``{'l1': a, 'l2': b}`` (adds ``a·Σ|w| + b·Σ w²``).

    Args:
        onx: the model (``ModelProto``, never modified, or path).
        score_name: the loss name.
        loss_name: name of the scalar loss output.
        label_name: name of the new label input.
        weight_name: name of the new per-sample weight input, if any.
        penalty: penalties on weights, see above.
        output_index: which output the loss applies to (position or name); required when
            the model has several outputs.
        **kwargs: options of the loss (``l1_weight``, ``eps``, ``delta``...).

    Returns:
        The loss model: inputs ``original + label (+ weight)``, outputs
        ``[loss, original outputs...]``.
    """
    spec = seed_spec(score_name, label_name, weight_name, penalty, output_index, **kwargs)
    return rewrite(onx, spec, loss_name=loss_name)


def add_loss_output_file(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    score_name: str = "squared_error",
    loss_name: str = "loss",
    label_name: str = "label",
    weight_name: str | None = None,
    penalty: Mapping[str, object] | None = None,
    output_index: int | str | None = None,
    validate: bool = True,
    **kwargs: object,
) -> None:
    """Path-to-path :func:`add_loss_output`, written atomically; external data is never
    loaded (see :func:`onnxloss.rewrite_file`)."""
    spec = seed_spec(score_name, label_name, weight_name, penalty, output_index, **kwargs)
    rewrite_file(source, destination, spec, loss_name=loss_name, validate=validate)


def seed_spec(
    score_name: str,
    label_name: str = "label",
    weight_name: str | None = None,
    penalty: Mapping[str, object] | None = None,
    output_index: int | str | None = None,
    **kwargs: object,
) -> Spec:
    """The :class:`Spec` that ``add_loss_output`` applies for these arguments."""
    reg = get_registry().lookup("loss", score_name)
    _check_set_by(reg.cls, reg.name, kwargs)
    options = dict(kwargs)
    options.setdefault("reduction", SEED_REDUCTIONS.get(reg.name, reg.cls.default_reduction))
    if reg.cls.has_target:  # a triplet loss has no label input to name
        options["target"] = label_name
    if weight_name is not None:
        # An option weight=[...] is PyTorch's class weight: the input goes to sample_weight.
        options["sample_weight" if "weight" in options else "weight"] = weight_name
    _check_options(reg.cls, reg.name, options)
    spec: Spec = reg.cls(output_index, **options).as_spec()
    for regularizer in penalty_terms(penalty):
        spec = spec + regularizer
    return spec


def accepted_options(cls: type[Loss]) -> set[str]:
    """Keyword options a loss class accepts, following ``**kwargs`` up its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {
            n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    # ``predictions`` is how a subclass hands its named predictions (``output2=``...) to
    # Loss: the caller names them, never the mapping.
    return names - {"self", "output", "predictions"}


#: Term arguments that ``add_loss_output`` sets from its own parameters.
_SET_BY = {"target": "label_name", "weight": "weight_name", "output": "output_index"}


def _check_set_by(cls: type[Loss], name: str, options: Mapping[str, object]) -> None:
    """The caller's options must not set what add_loss_output's own parameters set."""
    set_by = dict(_SET_BY)
    if "sample_weight" in accepted_options(cls):
        del set_by["weight"]  # there ``weight`` is PyTorch's class weight, an option
    for option, parameter in set_by.items():
        if option in options:
            raise CoefficientError(
                f"add_loss_output: {option}={options[option]!r} is not an option of loss "
                f"'{name}'; add_loss_output sets it from {parameter}, so pass "
                f"{parameter}={options[option]!r} instead"
            )


def _check_options(cls: type[Loss], name: str, options: dict[str, object]) -> None:
    """Unknown options name the loss and list what it accepts (not a bare TypeError)."""
    accepted = accepted_options(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        shown = sorted(accepted - {"target", "weight"})
        raise CoefficientError(
            f"loss '{name}' has no option {', '.join(map(repr, unknown))}; it accepts "
            f"{', '.join(shown)}"
        )


def penalty_terms(penalty: Mapping[str, object] | None) -> list[Regularizer]:
    """Regularizers from the original ``penalty`` dict.

    ``{name: c}`` → ``L2Penalty(name, c)``; ``{name: {'l1': a, 'l2': b}}`` →
    ``ElasticNetPenalty(name, l1=a, l2=b)``.
    """
    if penalty is None:
        return []
    if not isinstance(penalty, Mapping):
        raise PenaltyError(
            f"penalty must be a dict {{tensor name: coefficient or {{'l1': a, 'l2': b}}}}, "
            f"got {type(penalty).__name__}"
        )
    terms: list[Regularizer] = []
    for name, value in penalty.items():
        if isinstance(value, Mapping):
            extra = sorted(set(map(str, value)) - {"l1", "l2"})
            if extra:
                raise PenaltyError(
                    f"penalty on '{name}': unknown key(s) {extra}; use 'l1' and/or 'l2'"
                )
            terms.append(ElasticNetPenalty(name, l1=value.get("l1", 0.0), l2=value.get("l2", 0.0)))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            terms.append(L2Penalty(name, value))
        else:
            raise CoefficientError(
                f"penalty on '{name}': expected a number or {{'l1': a, 'l2': b}}, got {value!r}"
            )
    return terms
