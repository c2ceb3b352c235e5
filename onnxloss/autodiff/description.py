"""What a gradient, optimizer-update or training-step model feeds and returns, read from
the metadata entry its builder writes.

A trainer finds every name it feeds and reads through :func:`describe_training_step`,
never by guessing: the builders record the names in ``metadata_props`` (JSON under
``onnxloss.training_step``, ``onnxloss.optimizer_update`` or ``onnxloss.gradient``) and
this module checks them against the model's inputs and outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx

from .node import GradientError

GRADIENT_KEY = "onnxloss.gradient"
UPDATE_KEY = "onnxloss.optimizer_update"
STEP_KEY = "onnxloss.training_step"
#: The kinds of model, by metadata key, in the order they are looked for.
KINDS = {STEP_KEY: "training_step", UPDATE_KEY: "optimizer_update", GRADIENT_KEY: "gradient"}
METADATA_FORMAT = 1


class TrainingMetadataError(GradientError):
    """The metadata of a gradient, update or training-step model is missing or malformed."""


@dataclass(frozen=True)
class TrainedTensor:
    """One trained tensor.

    Attributes:
        name: its name in the loss model.
        dtype: its ONNX element type name (``"FLOAT"``).
        shape: its shape.
        input: the input fed with its current value (None in a gradient model, where it
            stays an initializer).
        output: the output holding its new value (None in a gradient model).
        gradient: the output holding ``∂loss/∂w`` (gradient model; training step built
            with ``gradients=True``), or, in an optimizer-update model, the input its
            gradient is fed to; None when absent.
    """

    name: str
    dtype: str
    shape: tuple
    input: str | None = None
    output: str | None = None
    gradient: str | None = None

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(
            onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.DataType.Value(self.dtype))
        )


@dataclass(frozen=True)
class StateTensor:
    """One optimizer state tensor (AdamW's moments).

    Attributes:
        input: the input fed with its current value.
        output: the output holding its new value (feed it back at the next step).
        weight: the name of the trained tensor it belongs to.
        role: ``"exp_avg"`` (first moment) or ``"exp_avg_sq"`` (second moment).
        init: how to initialise it before the first step: ``"zeros"``, zeros of the
            weight's shape and type.
    """

    input: str
    output: str
    weight: str
    role: str
    init: str = "zeros"


@dataclass(frozen=True)
class TrainingStepInfo:
    """How to run a model built by :mod:`onnxloss.autodiff`.

    Attributes:
        kind: ``"training_step"``, ``"optimizer_update"`` or ``"gradient"``.
        loss_output: the loss output (None in an update model).
        data_inputs: the inputs fed with data (features, targets, sample weights), in order.
        outputs: the loss model's other outputs, carried over (predictions...).
        trained: the trained tensors, in order.
        state: the optimizer state tensors (empty for SGD and gradient models).
        learning_rate_input: the learning-rate input: a float32 scalar (shape ``[]``).
        step_input: the step input: an int64 scalar (shape ``[]``) holding the number of
            the update being taken, 1 for the first (as onnxruntime-training's optimizer
            counts: AdamW's bias correction uses it as a power). SGD ignores its value.
        optimizer: ``"sgd"`` or ``"adamw"`` (None in a gradient model).
        hyperparameters: the optimizer's hyper-parameters, defaults filled in.
        max_grad_norm: the gradient-norm clipping threshold, or None.
    """

    kind: str
    loss_output: str | None
    data_inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    trained: tuple[TrainedTensor, ...]
    state: tuple[StateTensor, ...] = ()
    learning_rate_input: str | None = None
    step_input: str | None = None
    optimizer: str | None = None
    hyperparameters: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    max_grad_norm: float | None = None

    def initial_state(self) -> dict[str, np.ndarray]:
        """The value of every state input before the first step (zeros of the weight's
        shape and type)."""
        by_name = {t.name: t for t in self.trained}
        return {
            s.input: np.zeros(by_name[s.weight].shape, by_name[s.weight].numpy_dtype)
            for s in self.state
        }


def write_metadata(model: onnx.ModelProto, key: str, record: dict) -> None:
    """Add the record under ``key`` to ``model.metadata_props`` (refusing a second one)."""
    if any(p.key in KINDS for p in model.metadata_props):
        raise GradientError(
            "the model already was built by onnxloss.autodiff (metadata "
            f"{[p.key for p in model.metadata_props if p.key in KINDS]}); start from the loss "
            "model"
        )
    entry = model.metadata_props.add()
    entry.key = key
    entry.value = json.dumps({"format": METADATA_FORMAT, "kind": KINDS[key], **record})


def describe_training_step(model: onnx.ModelProto) -> TrainingStepInfo:
    """Read what a model built by :func:`~onnxloss.autodiff.training_step`,
    :func:`~onnxloss.autodiff.optimizer_update` or :func:`~onnxloss.autodiff.gradient`
    feeds and returns.

    Raises:
        TrainingMetadataError: no such metadata, or metadata that is not valid JSON, lacks
            a field, or names an input or output the model does not have.
    """
    props = {p.key: p.value for p in model.metadata_props}
    key = next((k for k in KINDS if k in props), None)
    if key is None:
        raise TrainingMetadataError(
            f"the model has none of the metadata entries {list(KINDS)}: it was not built by "
            "onnxloss.autodiff (gradient, optimizer_update or training_step)"
        )
    try:
        record = json.loads(props[key])
    except ValueError as exc:
        raise TrainingMetadataError(f"metadata '{key}' is not valid JSON: {exc}") from exc
    try:
        info = _parse(record, KINDS[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingMetadataError(
            f"metadata '{key}' is malformed ({type(exc).__name__}: {exc}); rebuild the model "
            "with onnxloss.autodiff"
        ) from exc
    _check_names(model, info, key)
    return info


def _text(value, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _names(values, what: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise ValueError(f"{what} must be a list")
    return tuple(_text(v, what) for v in values)


def _parse(record: Any, kind: str) -> TrainingStepInfo:
    if not isinstance(record, dict):
        raise ValueError("the record is not a JSON object")
    if record.get("format") != METADATA_FORMAT or record.get("kind") != kind:
        raise ValueError(
            f"format {record.get('format')!r} / kind {record.get('kind')!r}, expected "
            f"{METADATA_FORMAT} / {kind!r}"
        )
    trained = []
    for item in record["trained"]:
        shape = item["shape"]
        if not isinstance(shape, list):
            raise ValueError(f"the shape of {item.get('name')!r} must be a list")
        trained.append(
            TrainedTensor(
                _text(item["name"], "a trained tensor's name"),
                onnx.TensorProto.DataType.Name(onnx.TensorProto.DataType.Value(item["dtype"])),
                tuple(shape),
                _text(item.get("input"), "input", optional=True),
                _text(item.get("output"), "output", optional=True),
                _text(item.get("gradient"), "gradient", optional=True),
            )
        )
    weights = {t.name for t in trained}
    state = []
    for item in record.get("state", []):
        s = StateTensor(
            _text(item["input"], "a state input"),
            _text(item["output"], "a state output"),
            _text(item["weight"], "a state's weight"),
            _text(item["role"], "a state's role"),
            _text(item.get("init", "zeros"), "a state's init"),
        )
        if s.weight not in weights or s.init != "zeros":
            raise ValueError(
                f"state '{s.input}' belongs to no trained tensor or has init {s.init!r}"
            )
        state.append(s)
    clip = record.get("max_grad_norm")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float)):
        raise ValueError(f"max_grad_norm must be a number, got {clip!r}")
    params = record.get("hyperparameters", {})
    if not isinstance(params, dict):
        raise ValueError("hyperparameters must be an object")
    return TrainingStepInfo(
        kind=kind,
        loss_output=_text(record.get("loss"), "loss", optional=kind == "optimizer_update"),
        data_inputs=_names(record.get("data_inputs", []), "data_inputs"),
        outputs=_names(record.get("outputs", []), "outputs"),
        trained=tuple(trained),
        state=tuple(state),
        learning_rate_input=_text(record.get("learning_rate"), "learning_rate", optional=True),
        step_input=_text(record.get("step"), "step", optional=True),
        optimizer=_text(record.get("optimizer"), "optimizer", optional=True),
        hyperparameters=MappingProxyType(dict(params)),
        max_grad_norm=None if clip is None else float(clip),
    )


def _check_names(model: onnx.ModelProto, info: TrainingStepInfo, key: str) -> None:
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    want_in = [*info.data_inputs, *(s.input for s in info.state)]
    want_out = [*info.outputs, *(s.output for s in info.state)]
    if info.loss_output:
        want_out.append(info.loss_output)
    for t in info.trained:
        want_in += [t.input] if t.input else []
        want_out += [t.output] if t.output else []
        if t.gradient:
            (want_in if info.kind == "optimizer_update" else want_out).append(t.gradient)
    scalars = {
        info.learning_rate_input: onnx.TensorProto.FLOAT,
        info.step_input: onnx.TensorProto.INT64,
    }
    want_in += [n for n in scalars if n]
    missing = [n for n in want_in if n not in inputs] + [n for n in want_out if n not in outputs]
    if missing:
        raise TrainingMetadataError(
            f"metadata '{key}' names {missing}, which the model does not have as "
            "inputs/outputs; it was edited after onnxloss built it"
        )
    for name, elem in scalars.items():
        if name is None:
            continue
        tt = inputs[name].type.tensor_type
        if tt.elem_type != elem or len(tt.shape.dim) != 0:
            raise TrainingMetadataError(
                f"input '{name}' must be a {onnx.TensorProto.DataType.Name(elem)} scalar of "
                "shape []"
            )
