"""Read-only facts about a model that the rewriter looks up many times.

Built once per rewrite from the caller's model without copying or modifying it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from itertools import chain

import onnx

from .errors import OpsetError, OutputSelectionError, TensorNotFoundError
from .tensor_info import TensorInfo

#: Lowest default-domain opset the emitted loss nodes are written for (ReduceSum, Squeeze
#: and Unsqueeze take their axes as inputs from 13 on).
MIN_OPSET = 13
#: Highest default-domain opset: whatever the installed onnx knows.
MAX_OPSET = onnx.defs.onnx_opset_version()

DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    """The model's ``ai.onnx`` opset version, checked against the supported range."""
    versions = [op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    if not versions:
        raise OpsetError(
            "the model imports no ai.onnx opset; onnxloss emits standard operators and needs "
            f"one between {MIN_OPSET} and {MAX_OPSET} in model.opset_import"
        )
    version = versions[0]
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise OpsetError(
            f"the model uses ai.onnx opset {version}; onnxloss supports opsets {MIN_OPSET} to "
            f"{MAX_OPSET}. Convert it first, e.g. "
            f"onnx.version_converter.convert_version(model, {max(MIN_OPSET, min(version, 21))})"
        )
    return version


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in a node's attributes (the branches of If, the body of Loop...)."""
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph nested in its nodes' attributes (If, Loop, Scan...)."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def model_graphs(model: onnx.ModelProto, functions: bool = False) -> list[onnx.GraphProto]:
    """The main graph and all its subgraphs, with ``functions`` also the subgraphs in
    local function bodies; a list, so passes may edit the graphs while going through it."""
    graphs = list(iter_graphs(model.graph))
    if functions:
        for function in model.functions:
            for node in function.node:
                for sub in subgraphs(node):
                    graphs.extend(iter_graphs(sub))
    return graphs


def all_names(model: onnx.ModelProto) -> set[str]:
    """Every node, value and initializer name in the model, subgraphs included."""
    names: set[str] = set()
    for graph in iter_graphs(model.graph):
        names.add(graph.name)
        nodes = graph.node
        names.update(node.name for node in nodes)
        # Node inputs need no pass of their own: in a valid model each one is an input,
        # an initializer or a node output of this graph or an enclosing one.
        names.update(chain.from_iterable(node.output for node in nodes))
        for group in (graph.input, graph.output, graph.value_info):
            names.update(v.name for v in group)
        names.update(t.name for t in graph.initializer)
        names.update(t.values.name for t in graph.sparse_initializer)
    names.discard("")
    return names


class ModelIndex:
    """Lookups on the main graph of ``model`` (which is not copied and never modified)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)

    @cached_property
    def taken_names(self) -> set[str]:
        return all_names(self.model)

    @cached_property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.output]

    @cached_property
    def input_names(self) -> list[str]:
        return [i.name for i in self.graph.input]

    @cached_property
    def initializer_names(self) -> list[str]:
        return [t.name for t in self.graph.initializer]

    @cached_property
    def _declared(self) -> dict[str, onnx.ValueInfoProto]:
        # Later groups win: an output's declared type is the most authoritative.
        found: dict[str, onnx.ValueInfoProto] = {}
        for group in (self.graph.value_info, self.graph.input, self.graph.output):
            for vi in group:
                found[vi.name] = vi
        return found

    @cached_property
    def _initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    @cached_property
    def _node_outputs(self) -> set[str]:
        return {o for node in self.graph.node for o in node.output if o}

    @cached_property
    def _inferred(self) -> dict[str, onnx.ValueInfoProto]:
        # Only needed when a loss binds to an intermediate tensor with no declared type.
        # Shape inference reads no weights, so external data never gets loaded here.
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # inference is best effort: undeclared types stay unknown
            return {}
        graph = inferred.graph
        return {vi.name: vi for group in (graph.value_info, graph.output) for vi in group}

    def resolve_output(self, output: str | int | None, what: str) -> str:
        """The name of the tensor a term binds to: a name, a graph-output index, or None.

        ``None`` is allowed only when the model has exactly one output.
        """
        outputs = self.output_names
        if output is None:
            if len(outputs) == 1:
                return outputs[0]
            raise OutputSelectionError(
                f"{what}: the model has {len(outputs)} outputs {outputs}; say which one the loss "
                "applies to with output_index=<position or name> (or output=<name> on the term)"
            )
        if isinstance(output, bool) or not isinstance(output, int | str):
            raise OutputSelectionError(
                f"{what}: output must be an output name or an integer position, got {output!r}"
            )
        if isinstance(output, int):
            if not -len(outputs) <= output < len(outputs):
                raise OutputSelectionError(
                    f"{what}: output index {output} is out of range; the model has "
                    f"{len(outputs)} outputs {outputs}"
                )
            return outputs[output]
        if output in self._declared or output in self._node_outputs:
            return output
        raise OutputSelectionError(
            f"{what}: there is no output or tensor named '{output}' in the model; its outputs "
            f"are {outputs}"
        )

    def tensor_info(self, name: str) -> TensorInfo | None:
        """Type and shape of a main-graph tensor, or None if it is not a typed tensor."""
        if name in self._initializers:
            return TensorInfo.from_initializer(self._initializers[name])
        vi = self._declared.get(name)
        declared = None
        if vi is not None and vi.type.WhichOneof("value") is not None:
            declared = TensorInfo.from_value_info(vi)
            if declared is None or declared.shape is not None:
                return declared
        vi = self._inferred.get(name)
        inferred = TensorInfo.from_value_info(vi) if vi is not None else None
        if inferred is not None and (declared is None or inferred.elem_type == declared.elem_type):
            return inferred
        return declared

    def value_kind(self, name: str) -> str:
        vi = self._declared.get(name) or self._inferred.get(name)
        return "untyped" if vi is None else TensorInfo.value_kind(vi)

    def has_tensor(self, name: str) -> bool:
        return name in self._initializers or name in self._declared or name in self._node_outputs

    def require_tensor(self, name: str, what: str) -> TensorInfo:
        info = self.tensor_info(name)
        if info is not None:
            return info
        if not self.has_tensor(name):
            raise TensorNotFoundError(
                f"{what}: no tensor named '{name}' in the model; initializers are "
                f"{_preview(self.initializer_names)}"
            )
        raise TensorNotFoundError(
            f"{what}: tensor '{name}' has no known type (kind: {self.value_kind(name)}); "
            "declare it in graph.value_info or bind to a typed tensor"
        )


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"
