"""Replacing single nodes by equivalent subgraphs: the machinery behind the rewrite passes.

A :class:`NodeRule` knows one operator: which nodes it matches and how to build their
replacement with a :class:`~onnxloss.builder.GraphBuilder` (nodes valid for the model's
opset, fresh deterministic names). :class:`ReplaceNodes` applies rules in one sweep over the
main graph and every subgraph. The replacement takes the replaced node's place in the node
list and produces the same output names, so every consumer still finds its tensors. New
nodes are named after the node they replace (``n3`` → ``n3_Relu``, ``n3_Log``...).

Every rule is also a pass on its own: ``DecomposeSoftplus()(model)``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.external_data_helper import uses_external_data

from ..builder import GraphBuilder, Value
from ..errors import OpsetError
from ..model_index import DEFAULT_DOMAINS, all_names, iter_graphs
from ..naming import NameAllocator
from ..tensor_info import FLOAT_TYPES, TensorInfo
from .base import Pass
from .ml_shapes import infer_shapes

#: Lowest ai.onnx opset the rules emit nodes for (Clip takes its bounds as inputs from 11).
MIN_RULE_OPSET = 11


class RewriteContext:
    """What the rules of one sweep share: opsets, tensor types, names, new initializers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opsets = {op.domain or "": op.version for op in model.opset_import}
        self.opset = next((v for d, v in self.opsets.items() if d in DEFAULT_DOMAINS), None)
        if self.opset is None:
            raise OpsetError("the model imports no ai.onnx opset; add one to model.opset_import")
        self.opsets.setdefault("ai.onnx", self.opset)
        self.opsets[""] = self.opset
        self.names = NameAllocator(all_names(model))
        self.infos = tensor_infos(model)
        self.initializers: list[onnx.TensorProto] = []
        self._constants: dict[str, onnx.TensorProto] | None = None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output (any graph), else None."""
        if self._constants is None:
            self._constants = _constant_tensors(self.model.graph)
        tensor = self._constants.get(name)
        if tensor is None or uses_external_data(tensor):  # not loaded: treat it as unknown
            return None
        return onnx.numpy_helper.to_array(tensor)

    def domain_opset(self, domain: str) -> int:
        return self.opsets.get(domain or "", 1)

    def initializer(self, hint: str, array: np.ndarray) -> gs.Variable:
        """A new main-graph initializer named after ``hint`` (``coef``, ``coef_1``...)."""
        name = self.names.fresh(hint)
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return gs.Variable(name, dtype=array.dtype, shape=list(array.shape))


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Type and shape of every tensor that shape inference (or a declaration) knows, through
    the ai.onnx.ml operators too (:func:`~onnxloss.passes.ml_shapes.infer_shapes`)."""
    try:
        inferred = infer_shapes(model)
    except Exception:  # best effort: fall back on what the model declares
        inferred = model
    infos: dict[str, TensorInfo] = {}
    for graph in iter_graphs(inferred.graph):
        for group in (graph.value_info, graph.input, graph.output):
            for vi in group:
                info = TensorInfo.from_value_info(vi)
                if info is not None and info.elem_type:
                    infos[vi.name] = info
        for t in graph.initializer:
            infos[t.name] = TensorInfo.from_initializer(t)
    return infos


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    found: dict[str, onnx.TensorProto] = {}
    for g in iter_graphs(graph):
        found.update((t.name, t) for t in g.initializer)
        for node in g.node:
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        found[node.output[0]] = attr.t
                    elif attr.name == "value_ints":
                        found[node.output[0]] = onnx.numpy_helper.from_array(
                            np.array(attr.ints, np.int64), node.output[0]
                        )
    return found


class NodeView:
    """One node as a rule sees it: attributes with their schema defaults, input types."""

    def __init__(self, node: onnx.NodeProto, ctx: RewriteContext):
        self.node = node
        self.ctx = ctx
        self.opset = ctx.domain_opset(node.domain)
        self._attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    @property
    def name(self) -> str:
        return self.node.name or self.node.op_type

    def attr(self, name: str, default=None):
        """The attribute's value, else its default in the operator's schema, else ``default``."""
        if name in self._attrs:
            value = self._attrs[name]
        else:
            value = _schema_default(self.node, self.opset, name, default)
        return value.decode() if isinstance(value, bytes) else value

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def has_input(self, index: int) -> bool:
        return len(self.node.input) > index and bool(self.node.input[index])

    def input_info(self, index: int) -> TensorInfo | None:
        if not self.has_input(index):
            return None
        return self.ctx.infos.get(self.node.input[index])

    def constant_input(self, index: int) -> np.ndarray | None:
        """The input's value when it is an initializer or a ``Constant``, else None."""
        return self.ctx.constant(self.node.input[index]) if self.has_input(index) else None

    def input_is_float(self, index: int = 0) -> bool:
        info = self.input_info(index)
        return info is not None and info.elem_type in FLOAT_TYPES

    def initializer(self, hint: str, array: np.ndarray) -> gs.Variable:
        return self.ctx.initializer(hint, array)


def _schema_default(node: onnx.NodeProto, opset: int, name: str, default):
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return default
    attr = schema.attributes.get(name)
    if attr is None or not attr.default_value.name:
        return default
    return onnx.helper.get_attribute_value(attr.default_value)


class NodeRule(Pass):
    """Replace every matching ``op_type`` node by an equivalent subgraph.

    Subclasses set ``op_type`` (and ``domain``), and implement :meth:`build`. By default a
    rule matches nodes whose first input is a float tensor of known type (the constants it
    emits take that type); override :meth:`explain` (the reason a node is left alone, ""
    when it is rewritten) to narrow that.
    """

    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    #: Rules that add initializers only act on the main graph (where trainables live).
    main_graph_only: ClassVar[bool] = False
    #: The replacement in one line, for messages and docs.
    formula: ClassVar[str] = ""

    def matches(self, view: NodeView) -> bool:
        return not self.explain(view)

    def explain(self, view: NodeView) -> str:
        """Why this rule leaves ``view``'s node alone ("" when it rewrites it)."""
        if view.input_info(0) is None:
            return "the type of its input is unknown (run onnx.shape_inference first)"
        if not view.input_is_float(0):
            return "its input is not a float tensor"
        return ""

    def build(self, g: GraphBuilder, view: NodeView, inputs: list[Value | None]):
        """Emit the replacement; return one value per output of the node (None for an
        output the node does not declare)."""
        raise NotImplementedError

    def dtype(self, view: NodeView) -> np.dtype:
        """The float type of the constants the replacement uses."""
        info = view.input_info(0)
        return info.dtype if info is not None else np.dtype("float32")

    def apply(self, model: onnx.ModelProto) -> bool:
        return ReplaceNodes(self).apply(model)


class ReplaceNodes(Pass):
    """Apply several :class:`NodeRule` s in one sweep (one type inference for all)."""

    def __init__(self, *rules: NodeRule):
        self.rules = rules
        self._by_key = {(r.domain or "", r.op_type): r for r in rules}

    @property
    def name(self) -> str:
        return "+".join(r.name for r in self.rules) if len(self.rules) == 1 else "ReplaceNodes"

    def apply(self, model: onnx.ModelProto) -> bool:
        if not self._has_candidates(model.graph):
            return False
        ctx = RewriteContext(model)
        if ctx.opset < MIN_RULE_OPSET:
            raise OpsetError(
                f"the model uses ai.onnx opset {ctx.opset}; the rewrite rules emit operators for "
                f"opset {MIN_RULE_OPSET} and later. Convert it first: ConvertOpset(13)"
            )
        changed = self._rewrite_graph(model.graph, ctx, main=True)
        if ctx.initializers:
            model.graph.initializer.extend(ctx.initializers)
        return changed

    def _has_candidates(self, graph: onnx.GraphProto) -> bool:
        for node in graph.node:
            if ((node.domain if node.domain != "ai.onnx" else ""), node.op_type) in self._by_key:
                return True
            for attr in node.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                if any(self._has_candidates(s) for s in subs):
                    return True
        return False

    def _rewrite_graph(self, graph: onnx.GraphProto, ctx: RewriteContext, main: bool) -> bool:
        changed = False
        for node in graph.node:  # subgraphs first: they are edited in place
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    changed |= self._rewrite_graph(attr.g, ctx, main=False)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        changed |= self._rewrite_graph(sub, ctx, main=False)
        new_nodes: list[onnx.NodeProto] = []
        replaced = False
        for node in graph.node:
            domain = node.domain if node.domain != "ai.onnx" else ""
            rule = self._by_key.get((domain, node.op_type))
            replacement = None
            if rule is not None and (main or not rule.main_graph_only):
                view = NodeView(node, ctx)
                if rule.matches(view):
                    replacement = _replace(rule, view, ctx)
            if replacement is None:
                new_nodes.append(node)
            else:
                new_nodes.extend(replacement)
                replaced = True
        if replaced:
            del graph.node[:]
            graph.node.extend(new_nodes)
        return changed or replaced


def _replace(rule: NodeRule, view: NodeView, ctx: RewriteContext) -> list[onnx.NodeProto]:
    node = view.node
    g = GraphBuilder(ctx.opset, ctx.names, rule.dtype(view))
    inputs: list[Value | None] = []
    known: dict[str, gs.Variable] = {}
    for name in node.input:
        if not name:
            inputs.append(None)
            continue
        # Untyped handles: the exporter needs no types, and some inputs have none known.
        inputs.append(known.setdefault(name, gs.Variable(name)))
    with g.scope(node.name or node.op_type.lower()):
        values = list(rule.build(g, view, inputs))
        if len(values) != len(node.output):
            raise ValueError(
                f"rule {rule.name} returned {len(values)} values for the {len(node.output)} "
                f"outputs of node '{view.name}'"
            )
        outputs: list[Value] = []
        for value, name in zip(values, node.output, strict=True):
            if not name:
                continue
            if value is None:
                raise ValueError(f"rule {rule.name} gave no value for output '{name}'")
            # An input passed through, or a value already used for another output, needs a
            # node of its own to carry the output name.
            if not value.inputs or any(value is o for o in outputs):
                value = g.Identity(value)
            value.name = name
            outputs.append(value)
    return g.export_nodes(outputs)
