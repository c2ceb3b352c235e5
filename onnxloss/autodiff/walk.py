"""Reverse-mode differentiation of an ONNX graph into ONNX nodes.

The walk follows the readiness check's path logic (:func:`onnxloss.readiness.gradient_path`)
from the tensors to differentiate to the loss, then visits the nodes on the path in reverse
topological order. Each node's rule receives the gradient of the loss with respect to the
node's outputs (the contributions of every consumer, summed) and emits, through the graph
builder, the gradient with respect to its inputs. Nothing else of the graph is touched.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..builder import GraphBuilder, Value
from ..errors import OnnxLossError, PluginError
from ..gradient_ops import DIFFERENTIABLE_TYPES
from ..model_index import ModelIndex
from ..passes.node_rules import RewriteContext
from ..readiness import default_trainables, gradient_path, implicit_inputs, stops_gradient
from ..registry import GradientRegistration, PluginRegistry, get_registry
from ..tensor_info import FLOAT_TYPES, TensorInfo
from .node import GradientError, GradientNode

#: Shown when many nodes lack a rule.
_SHOWN = 8


class Backpropagation:
    """Emits the gradient nodes of one or more graphs into one builder.

    Args:
        ctx: the model's types, shapes, constants and name allocator.
        g: the builder that receives every gradient node.
        registry: where the rules come from (the process-wide registry by default).
    """

    def __init__(
        self, ctx: RewriteContext, g: GraphBuilder, registry: PluginRegistry | None = None
    ):
        self.ctx = ctx
        self.g = g
        self.registry = registry or get_registry()

    # -- queries ---------------------------------------------------------------------------
    def differentiable(self, name: str) -> bool:
        info = self.ctx.infos.get(name)
        return info is None or not info.elem_type or info.elem_type in DIFFERENTIABLE_TYPES

    def rule(self, node: onnx.NodeProto) -> GradientRegistration | None:
        return self.registry.gradient_rule(node.op_type, node.domain)

    def skipped_inputs(self, node: onnx.NodeProto) -> frozenset[int]:
        rule = self.rule(node)
        return rule.non_differentiable if rule is not None else frozenset()

    def path(self, nodes: Sequence[onnx.NodeProto], wrt: Sequence[str], targets: Sequence[str]):
        return gradient_path(
            nodes,
            wrt,
            targets,
            differentiable=self.differentiable,
            skipped_inputs=self.skipped_inputs,
            stops=stops_gradient,
        )

    def problems(self, nodes: Sequence[onnx.NodeProto]) -> list[tuple[onnx.NodeProto, str]]:
        """The nodes among ``nodes`` no rule handles, each with the reason."""
        found = []
        for node in nodes:
            rule = self.rule(node)
            if rule is None:
                domain = f" of domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
                found.append((node, f"no gradient rule is registered for {node.op_type}{domain}"))
            elif rule.check is not None:
                reason = rule.check(self._view(node, [], []))
                if reason:
                    found.append((node, reason))
        return found

    # -- the walk --------------------------------------------------------------------------
    def run(
        self,
        nodes: Sequence[onnx.NodeProto],
        seeds: Mapping[str, Value],
        wrt: Sequence[str],
    ) -> dict[str, Value | None]:
        """The gradients of the scalar whose cotangents are ``seeds`` (tensor name → the
        gradient flowing into it) with respect to each of ``wrt``, through ``nodes`` (one
        graph, topologically sorted). A tensor no path reaches gets None.
        """
        path = self.path(nodes, wrt, list(seeds))
        blocked = self.problems(path.nodes)
        if blocked:
            raise _no_rule_error(blocked)
        cotangents: dict[str, list[Value]] = {name: [v] for name, v in seeds.items()}
        for node in reversed(path.nodes):
            grads = [self._take(cotangents, o) for o in node.output]
            if all(grad is None for grad in grads):
                continue
            skip = self.skipped_inputs(node)
            implicit = sorted(implicit_inputs(node))
            needs = [
                bool(name) and k not in skip and name in path.live and self.differentiable(name)
                for k, name in enumerate(node.input)
            ]
            needs += [name in path.live and self.differentiable(name) for name in implicit]
            results = self._call(node, needs, implicit, grads)
            for name, need, grad in zip([*node.input, *implicit], needs, results, strict=False):
                if need and grad is not None:
                    cotangents.setdefault(name, []).append(grad)
        return {name: self._take(cotangents, name) for name in wrt}

    def _take(self, cotangents: dict[str, list[Value]], name: str) -> Value | None:
        parts = cotangents.pop(name, None) if name else None
        return self.g.add_all(parts) if parts else None

    def _view(self, node, needs, implicit) -> GradientNode:
        return GradientNode(node, self.ctx, self.g, needs, implicit, engine=self)

    def _call(self, node, needs, implicit, grads) -> list[Value | None]:
        rule = self.rule(node)
        view = self._view(node, needs, implicit)
        with self.g.scope(f"{view.name}_grad", dtype=self._dtype(node)):
            try:
                results = rule.rule(self.g, view, grads)
            except OnnxLossError:
                raise
            except Exception as exc:  # a bug in the rule: name it and its plugin
                raise PluginError(
                    f"the gradient rule for {rule.operator} from {rule.plugin.describe()} "
                    f"failed on node '{view.name}': {type(exc).__name__}: {exc}"
                ) from exc
        if results is None or isinstance(results, Value) or not isinstance(results, Sequence):
            raise PluginError(
                f"the gradient rule for {rule.operator} from {rule.plugin.describe()} returned "
                f"{type(results).__name__} for node '{view.name}'; it must return a list with "
                "one gradient (or None) per input"
            )
        bad = [r for r in results if r is not None and not isinstance(r, Value)]
        extra = [r for r in results[len(needs) :] if r is not None]  # trailing Nones: fine
        if bad or extra:
            raise PluginError(
                f"the gradient rule for {rule.operator} from {rule.plugin.describe()} returned "
                f"{len(results)} items for node '{view.name}' with {len(needs)} inputs "
                f"({'some not graph values' if bad else 'too many'})"
            )
        return list(results)

    def _dtype(self, node: onnx.NodeProto) -> np.dtype:
        for name in [*node.output, *node.input]:
            info = self.ctx.infos.get(name)
            if info is not None and info.elem_type in FLOAT_TYPES:
                return info.dtype
        return self.g.dtype


def _no_rule_error(blocked: list[tuple[onnx.NodeProto, str]]) -> GradientError:
    lines = [f"node '{n.name or n.op_type}' ({n.op_type}): {why}" for n, why in blocked[:_SHOWN]]
    more = f"; and {len(blocked) - _SHOWN} more" if len(blocked) > _SHOWN else ""
    return GradientError(
        f"{len(blocked)} node(s) on the gradient path cannot be differentiated: "
        f"{'; '.join(lines)}{more}. Fix: register a rule for the operator "
        "(hook onnxloss_register_gradients), rewrite the node, or leave the weights before "
        "it out of wrt"
    )


@dataclass
class GradientGraph:
    """What :func:`differentiate` built: the gradient nodes live in ``builder``.

    Attributes:
        model: the caller's model (never modified).
        index: lookups on its main graph.
        ctx: types, shapes and the name allocator shared with whatever is built next.
        builder: holds the gradient nodes (and anything built after them).
        loss: the differentiated output.
        wrt: the tensors differentiated with respect to.
        gradients: for each of ``wrt``, its gradient value, named ``<w>_grad`` (fresh).
    """

    model: onnx.ModelProto
    index: ModelIndex
    ctx: RewriteContext
    builder: GraphBuilder
    loss: TensorInfo
    wrt: list[TensorInfo]
    gradients: list[Value]


def differentiate(
    model: onnx.ModelProto,
    wrt: Sequence[str] | None = None,
    loss_output: str | None = None,
    registry: PluginRegistry | None = None,
) -> GradientGraph:
    """Emit the nodes of ``∂loss/∂w`` for each ``w`` of ``wrt`` (see :func:`gradient`)."""
    index = ModelIndex(model)  # refuses opsets below 13 or unknown to onnx
    ctx = RewriteContext(model)
    loss = _loss_info(model, index, ctx, loss_output)
    tensors = _wrt_infos(model, index, wrt)
    g = GraphBuilder(index.opset, ctx.names, dtype=loss.dtype, share_constants=True)
    names = [ctx.names.fresh(f"{t.name}_grad") for t in tensors]  # claimed before any other
    engine = Backpropagation(ctx, g, registry)
    with g.scope("onnxloss_grad_seed"):
        loss_value = g.value(loss.name, loss.dtype, loss.shape)
        seed = g.const(1.0) if loss.shape == () else g.ones_like(loss_value)
    path = engine.path(model.graph.node, [t.name for t in tensors], [loss.name])
    unreachable = [t.name for t in tensors if t.name not in path.needed]
    if unreachable:
        raise GradientError(
            f"{', '.join(map(repr, unreachable))} do(es) not reach the loss '{loss.name}' "
            "through differentiable operators (unused, used only by integer/bool "
            "computations or non-differentiable inputs such as Clip bounds, or by other "
            f"outputs). Fix: leave {'it' if len(unreachable) == 1 else 'them'} out of wrt"
        )
    found = engine.run(model.graph.node, {loss.name: seed}, [t.name for t in tensors])
    gradients = []
    taken: set[int] = set()
    for info, name in zip(tensors, names, strict=True):
        value = found[info.name]
        with g.scope(f"{info.name}_grad", dtype=info.dtype):
            if value is None:  # only through zero-gradient operators (Sign, Floor...)
                value = g.zeros_like(g.value(info.name, info.dtype, info.shape))
            if id(value) in taken or _is_model_tensor(value, g):
                value = g.Identity(value)
        taken.add(id(value))
        value.name = name
        value.dtype, value.shape = info.dtype, None if info.shape is None else list(info.shape)
        gradients.append(value)
    return GradientGraph(model, index, ctx, g, loss, tensors, gradients)


def _is_model_tensor(value: Value, g: GraphBuilder) -> bool:
    return g._inputs.get(value.name) is value


def _loss_info(model, index: ModelIndex, ctx: RewriteContext, loss_output) -> TensorInfo:
    outputs = index.output_names
    if not outputs:
        raise GradientError("the model has no output to differentiate")
    if loss_output is None:
        name = outputs[0]
    elif not isinstance(loss_output, str) or loss_output not in outputs:
        raise GradientError(
            f"loss_output {loss_output!r} is not an output of the model; its outputs are {outputs}"
        )
    else:
        name = loss_output
    info = index.tensor_info(name) or ctx.infos.get(name)
    if info is None or not info.elem_type:
        raise GradientError(
            f"the loss output '{name}' has no known type; declare it (a float scalar)"
        )
    if not info.is_float:
        raise GradientError(
            f"the loss output {info.describe()} is not a float tensor; differentiate a float "
            "scalar (onnxloss.rewrite makes one the first output)"
        )
    return info


def _wrt_infos(model: onnx.ModelProto, index: ModelIndex, wrt) -> list[TensorInfo]:
    if wrt is None:
        names = default_trainables(model)
        if not names:
            raise GradientError(
                "the model has no float initializer of rank >= 1 to differentiate; name the "
                "tensors with wrt=[...]"
            )
    elif isinstance(wrt, str) or not all(isinstance(n, str) and n for n in wrt):
        raise GradientError(f"wrt must be a list of tensor names, got {wrt!r}")
    else:
        names = list(dict.fromkeys(wrt))
        if not names:
            raise GradientError("wrt is empty: name the tensors to differentiate")
    initializers = {t.name: t for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input}
    infos = []
    for name in names:
        if name in initializers:
            info = TensorInfo.from_initializer(initializers[name])
        elif name in inputs:
            info = TensorInfo.from_value_info(inputs[name])
        else:
            candidates = [*initializers, *inputs]
            close = difflib.get_close_matches(name, candidates, n=3)
            hint = (
                f"did you mean {', '.join(map(repr, close))}?"
                if close
                else (f"initializers are {index.initializer_names[:12]}")
            )
            raise GradientError(
                f"wrt names '{name}', which is neither an initializer nor a graph input of "
                f"the model; {hint}"
            )
        if info is None or not info.is_float:
            kind = info.type_name if info is not None else "not a tensor"
            raise GradientError(
                f"'{name}' is {kind}; only float tensors have gradients. Fix: leave it out of wrt"
            )
        infos.append(info)
    return infos
