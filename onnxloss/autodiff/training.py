"""The optimizer step as a graph: ``optimizer_update`` (the update alone) and
``training_step`` (gradient and update in one model).

A data-parallel trainer runs the :func:`~onnxloss.autodiff.gradient` model, all-reduces
the gradients, then the :func:`optimizer_update` model; a single-process trainer runs the
:func:`training_step` model. Both read every name they feed from
:func:`~onnxloss.autodiff.describe_training_step`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from ..builder import GraphBuilder, Value
from ..model_index import ModelIndex, all_names
from ..model_io import ModelLike, load_model
from ..naming import NameAllocator
from ..registry import PluginRegistry
from ..rewrite import _validate_model
from ..tensor_info import TensorInfo
from .description import GRADIENT_KEY, STEP_KEY, UPDATE_KEY, write_metadata
from .gradient_model import dims, gradient_metadata
from .node import GradientError
from .optimizers import check_max_grad_norm, clip_by_global_norm, make_optimizer
from .walk import _wrt_infos, differentiate


def _scalar_input(name: str, elem: int) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem, [])


class _Update:
    """The update nodes for a list of weights, built into ``g`` with names from ``names``."""

    def __init__(self, g: GraphBuilder, names: NameAllocator, optimizer, max_grad_norm):
        self.g, self.names = g, names
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.lr_name = names.fresh("learning_rate")
        self.step_name = names.fresh("step")
        self.new_names: list[str] = []
        self.state: list[dict] = []

    def reserve(self, weights: Sequence[TensorInfo]) -> None:
        """Claim the output and state names, before anything else takes them."""
        for w in weights:
            self.new_names.append(self.names.fresh(f"{w.name}_new"))
            for role in self.optimizer.state_roles:
                self.state.append(
                    {
                        "input": self.names.fresh(f"{w.name}_{role}"),
                        "output": self.names.fresh(f"{w.name}_{role}_new"),
                        "weight": w.name,
                        "role": role,
                        "init": "zeros",
                    }
                )

    def build(self, weights: Sequence[TensorInfo], grads: Sequence[Value]) -> list[Value]:
        """The new weights then the new states, named as reserved."""
        g = self.g
        with g.scope("onnxloss_step", dtype=np.float32):
            lr = g.value(self.lr_name, np.float32, [])
            step = g.value(self.step_name, np.int64, [])
            shared = self.optimizer.step_constants(g, lr, step)
        if self.max_grad_norm is not None:
            grads = clip_by_global_norm(g, grads, [w.dtype for w in weights], self.max_grad_norm)
        new_weights, new_states = [], []
        states = iter(self.state)
        for w, grad, new_name in zip(weights, grads, self.new_names, strict=True):
            mine = [next(states) for _ in self.optimizer.state_roles]
            with g.scope(f"{w.name}_update", dtype=w.dtype):
                current = {s["role"]: g.value(s["input"], w.dtype, w.shape) for s in mine}
                new_w, new_state = self.optimizer.update(
                    g, g.value(w.name, w.dtype, w.shape), grad, current, lr, shared
                )
                new_w = _named(g, new_w, new_name, w)
                new_weights.append(new_w)
                for s in mine:
                    new_states.append(_named(g, new_state[s["role"]], s["output"], w))
        return [*new_weights, *new_states]

    def inputs(self, weights: Sequence[TensorInfo]) -> list[onnx.ValueInfoProto]:
        """The state, learning-rate and step inputs."""
        by_name = {w.name: w for w in weights}
        found = [by_name[s["weight"]].renamed(s["input"]).value_info() for s in self.state]
        found.append(_scalar_input(self.lr_name, onnx.TensorProto.FLOAT))
        found.append(_scalar_input(self.step_name, onnx.TensorProto.INT64))
        return found

    def outputs(self, weights: Sequence[TensorInfo]) -> list[onnx.ValueInfoProto]:
        by_name = {w.name: w for w in weights}
        found = [w.renamed(n).value_info() for w, n in zip(weights, self.new_names, strict=True)]
        found += [by_name[s["weight"]].renamed(s["output"]).value_info() for s in self.state]
        return found

    def record(self) -> dict:
        return {
            "state": self.state,
            "learning_rate": self.lr_name,
            "step": self.step_name,
            "optimizer": self.optimizer.name,
            "hyperparameters": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.optimizer.params.items()
            },
            "max_grad_norm": self.max_grad_norm,
        }


def _named(g: GraphBuilder, value: Value, name: str, like: TensorInfo) -> Value:
    if g._inputs.get(value.name) is value:  # a tensor of the model: copy it under the name
        value = g.Identity(value)
    value.name = name
    value.dtype, value.shape = like.dtype, list(like.shape or [])
    return value


def optimizer_update(
    model: ModelLike,
    wrt: Sequence[str] | None = None,
    optimizer: str = "sgd",
    *,
    optimizer_params: Mapping | None = None,
    max_grad_norm: float | None = None,
    validate: bool = True,
) -> onnx.ModelProto:
    """The update of ``optimizer`` alone, as a model (see :mod:`onnxloss.autodiff.optimizers`
    for the formulas).

    Args:
        model: the loss model (or its :func:`~onnxloss.autodiff.gradient` model, whose
            gradient output names then become this model's gradient inputs); only the
            trained tensors' names, types and shapes and the opset and IR version are read.
        wrt: the trained tensors (default: as :func:`~onnxloss.autodiff.gradient`).
        optimizer: ``"sgd"`` or ``"adamw"``.
        optimizer_params: AdamW's ``betas``, ``eps``, ``weight_decay``, ``bias_correction``.
        max_grad_norm: clip the gradients to this global L2 norm first (None: no clipping).

    Returns:
        A model with inputs: every weight (under its own name), its gradient
        (``<w>_grad``), the optimizer state, ``learning_rate`` (float32, ``[]``) and
        ``step`` (int64, ``[]``: the number of the update, 1 for the first); outputs: the
        new weights (``<w>_new``) and the new state. Same ai.onnx opset and IR version as
        ``model``. :func:`~onnxloss.autodiff.describe_training_step` reads its layout.
    """
    model = load_model(model, load_external_data=False)
    index = ModelIndex(model)
    opt = make_optimizer(optimizer, optimizer_params)
    clip = check_max_grad_norm(max_grad_norm)
    gradient_names = _gradient_names(model)
    if wrt is None and gradient_names:
        wrt = list(gradient_names)
    weights = _wrt_infos(model, index, wrt)
    if any(w.shape is None or not all(isinstance(d, int) for d in w.shape) for w in weights):
        raise GradientError("the trained tensors need static shapes for the update model")
    names = NameAllocator(all_names(model))
    grad_names = [gradient_names.get(w.name) or names.fresh(f"{w.name}_grad") for w in weights]
    for n in grad_names:
        names.reserve(n)
    update = _Update(GraphBuilder(index.opset, names), names, opt, clip)
    update.reserve(weights)
    g = update.g
    grads = [g.value(n, w.dtype, w.shape) for n, w in zip(grad_names, weights, strict=True)]
    outputs = update.build(weights, grads)
    nodes = g.export_nodes(outputs)
    graph = onnx.helper.make_graph(
        nodes,
        f"{model.graph.name or 'model'}_optimizer_update",
        [
            *(w.value_info() for w in weights),
            *(w.renamed(n).value_info() for w, n in zip(weights, grad_names, strict=True)),
            *update.inputs(weights),
        ],
        update.outputs(weights),
    )
    out = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", index.opset)],
        ir_version=model.ir_version,
        producer_name="onnxloss.autodiff",
    )
    record = {
        "loss": None,
        "trained": [
            {
                "name": w.name,
                "dtype": w.type_name,
                "shape": dims(w.shape),
                "input": w.name,
                "output": new,
                "gradient": grad,
            }
            for w, new, grad in zip(weights, update.new_names, grad_names, strict=True)
        ],
        **update.record(),
    }
    write_metadata(out, UPDATE_KEY, record)
    if validate:
        _validate_model(out)
    return out


def _gradient_names(model: onnx.ModelProto) -> dict[str, str]:
    from .description import describe_training_step

    if not any(p.key == GRADIENT_KEY for p in model.metadata_props):
        return {}
    info = describe_training_step(model)
    return {t.name: t.gradient for t in info.trained}


def training_step(
    loss_model: ModelLike,
    wrt: Sequence[str] | None = None,
    optimizer: str = "sgd",
    *,
    optimizer_params: Mapping | None = None,
    max_grad_norm: float | None = None,
    loss_output: str | None = None,
    gradients: bool = False,
    validate: bool = True,
    registry: PluginRegistry | None = None,
) -> onnx.ModelProto:
    """One training step as one model: the loss, its gradient and the optimizer's update.

    Args:
        loss_model: a ``ModelProto`` (never modified) or a path; the loss is its first
            output (or ``loss_output``), differentiated as is (a sum-reduced loss is not
            rescaled).
        wrt: the initializers to train (default: every float initializer of rank >= 1).
        optimizer: ``"sgd"`` or ``"adamw"``, with onnxruntime-training's formulas.
        optimizer_params: AdamW's ``betas``, ``eps``, ``weight_decay``, ``bias_correction``.
        max_grad_norm: clip the gradients to this global L2 norm (None: no clipping).
        gradients: also output each (unclipped) gradient.

    Returns:
        A model whose inputs are the loss model's inputs (the data), then each trained
        tensor under its own name (no longer an initializer), the optimizer state,
        ``learning_rate`` (float32, ``[]``) and ``step`` (int64, ``[]``: the number of the
        update, 1 for the first); whose outputs are the loss, the loss model's other
        outputs, the new weights (``<w>_new``), the new state and, with ``gradients``,
        the gradients (``<w>_grad``). Every name is fresh against the loss model;
        :func:`~onnxloss.autodiff.describe_training_step` reads them all. IR version,
        opsets, functions and metadata are the loss model's.
    """
    model = load_model(loss_model, load_external_data=False)
    opt = make_optimizer(optimizer, optimizer_params)
    clip = check_max_grad_norm(max_grad_norm)
    built = differentiate(model, wrt, loss_output, registry)
    weights = built.wrt
    if any(w.shape is None or not all(isinstance(d, int) for d in w.shape) for w in weights):
        raise GradientError("the trained tensors need static shapes for a training step")
    update = _Update(built.builder, built.ctx.names, opt, clip)
    update.reserve(weights)
    outputs = update.build(weights, built.gradients)
    wanted = [*outputs, *(built.gradients if gradients else [])]
    nodes = built.builder.export_nodes(wanted)

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    trained = {w.name for w in weights}
    kept = [t for t in graph.initializer if t.name not in trained]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = {i.name for i in graph.input}
    graph.input.extend(w.value_info() for w in weights if w.name not in inputs)
    graph.input.extend(update.inputs(weights))
    graph.node.extend(nodes)
    graph.output.extend(update.outputs(weights))
    if gradients:
        graph.output.extend(
            w.renamed(v.name).value_info() for w, v in zip(weights, built.gradients, strict=True)
        )
    base = gradient_metadata(built)
    record = {
        **base,
        "trained": [
            {
                **item,
                "input": item["name"],
                "output": new,
                "gradient": item["gradient"] if gradients else None,
            }
            for item, new in zip(base["trained"], update.new_names, strict=True)
        ],
        **update.record(),
    }
    write_metadata(out, STEP_KEY, record)
    if validate:
        _validate_model(out)
    return out
