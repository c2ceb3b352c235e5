"""Which initializers are weights: the rule behind the default trainables, and why every
other float initializer is left out.

When no weights are named, the tensors trained are the float initializers of rank >= 1
from which a *differentiable* path leads to a float graph output. A path is differentiable
when it goes through float tensors (integer and bool tensors carry no gradient), never
through an operator that the runtime treats as a constant (``Range``, ``EyeLike``, the
random ``*Like`` operators), and never through an input that takes a shape, an index, a
bound or a statistic rather than data (:data:`NON_WEIGHT_INPUTS`: ``Resize`` scales,
``Reshape`` shapes, ``Pad`` pads, ``Slice`` starts/ends, ``Tile`` repeats, ``Expand``
shapes, ``Clip`` bounds, ``BatchNormalization`` running statistics...).
onnxruntime-training refuses to train such an initializer (``failed to find NodeArg by
name: scales_grad``, measured for Resize scales, Pad's constant value, Clip bounds and
BatchNormalization's mean and variance), and exporters store them as float initializers
(torch.onnx's dynamo exporter writes ``Resize`` scales so).

The same walk gives :func:`gradient_sources`, which the readiness check uses for the paths
to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx

from .gradient_ops import NON_DIFFERENTIABLE_INPUTS, STOPS_GRADIENT
from .model_index import DEFAULT_DOMAINS, subgraphs
from .tensor_info import FLOAT_TYPES, TensorInfo

_AXES = {1: "axes"}
#: op_type -> {input position: what that input holds}: inputs that take a shape, an index,
#: a bound or a statistic, never a weight (no gradient flows into them).
NON_WEIGHT_INPUTS: dict[str, dict[int, str]] = {
    "Reshape": {1: "shape"},
    "Expand": {1: "shape"},
    "ConstantOfShape": {0: "shape"},
    "CenterCropPad": {1: "shape"},
    "Tile": {1: "repeats"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "Clip": {1: "min", 2: "max"},
    "BatchNormalization": {3: "running mean", 4: "running variance"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "Where": {0: "condition"},
    "TopK": {1: "K"},
    "Split": {1: "split"},
    "Trilu": {1: "k"},
    "OneHot": {0: "indices", 1: "depth"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "Gather": {1: "indices"},
    "GatherElements": {1: "indices"},
    "GatherND": {1: "indices"},
    "ScatterElements": {1: "indices"},
    "ScatterND": {1: "indices"},
    **{
        op: _AXES
        for op in (
            "Squeeze Unsqueeze ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 "
            "ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare"
        ).split()
    },
}

IsDifferentiable = Callable[[str], bool]


def non_differentiable_positions(node: onnx.NodeProto) -> frozenset[int]:
    """The input positions of ``node`` that no gradient flows into."""
    table = NON_WEIGHT_INPUTS.get(node.op_type, {}) if node.domain in DEFAULT_DOMAINS else {}
    return NON_DIFFERENTIABLE_INPUTS.get(node.op_type, frozenset()) | frozenset(table)


def stops_gradient(node: onnx.NodeProto) -> bool:
    """Operators the runtime treats as constants: their outputs carry no gradient."""
    return node.op_type in STOPS_GRADIENT and node.domain in DEFAULT_DOMAINS


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scopes."""
    used: set[str] = set()
    for sub in subgraphs(node):
        defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
        for inner in sub.node:
            used.update(i for i in inner.input if i and i not in defined)
            used.update(implicit_inputs(inner) - defined)
            defined.update(inner.output)
        used -= defined
    return used


def gradient_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs of ``node`` (subgraph reads included) a gradient can flow into."""
    skip = non_differentiable_positions(node)
    names = [name for k, name in enumerate(node.input) if name and k not in skip]
    return names + sorted(implicit_inputs(node))


def gradient_sources(
    graph: onnx.GraphProto, targets: Iterable[str], differentiable: IsDifferentiable
) -> set[str]:
    """Every tensor of ``graph`` from which a differentiable path leads to ``targets``
    (the targets included). The nodes must be in topological order, as ONNX requires."""
    needed = set(targets)
    for node in reversed(graph.node):
        if stops_gradient(node):
            continue
        if any(o in needed and differentiable(o) for o in node.output):
            needed.update(n for n in gradient_inputs(node) if differentiable(n))
    return needed


@dataclass(frozen=True)
class DefaultWeights:
    """What :func:`default_weights` found.

    Attributes:
        names: the initializers to train, in the model's order.
        left_out: every other float initializer, with the reason it is not a weight.
    """

    names: list[str]
    left_out: dict[str, str]


def default_weights(
    model: onnx.ModelProto, infos: dict[str, TensorInfo] | None = None
) -> DefaultWeights:
    """The weights trained when none are named (see the module's docstring).

    Args:
        model: the model (never modified).
        infos: the tensor types shape inference gives, when the caller has them already.
    """
    graph = model.graph
    floats = [t for t in graph.initializer if t.data_type in FLOAT_TYPES]
    if not floats:
        return DefaultWeights([], {})
    if infos is None:
        from .passes.node_rules import tensor_infos

        infos = tensor_infos(model)

    def differentiable(name: str) -> bool:
        info = infos.get(name)
        return info is None or not info.elem_type or info.elem_type in FLOAT_TYPES

    outputs = [o.name for o in graph.output if _may_be_float(o)]
    reach = gradient_sources(graph, outputs, differentiable)
    names, left_out = [], {}
    for tensor in floats:
        if not tensor.dims:
            left_out[tensor.name] = "a scalar (rank 0): a constant, not a weight"
        elif tensor.name not in reach:
            left_out[tensor.name] = _why_not_reached(graph, tensor.name)
        else:
            names.append(tensor.name)
    return DefaultWeights(names, left_out)


def _may_be_float(output: onnx.ValueInfoProto) -> bool:
    if not output.type.HasField("tensor_type"):
        return False
    elem = output.type.tensor_type.elem_type
    return not elem or elem in FLOAT_TYPES


def _why_not_reached(graph: onnx.GraphProto, name: str) -> str:
    uses = [
        (node, k)
        for node in graph.node
        for k, i in [*enumerate(node.input), *((-1, i) for i in implicit_inputs(node))]
        if i == name
    ]
    if not uses:
        return "unused"
    roles = []
    for node, k in uses:
        role = NON_WEIGHT_INPUTS.get(node.op_type, {}).get(k)
        if role is None and k in NON_DIFFERENTIABLE_INPUTS.get(node.op_type, frozenset()):
            role = "a non-differentiable input"
        if role is None or node.domain not in DEFAULT_DOMAINS:
            break
        roles.append(f"{role} of {node.op_type} '{node.name or node.op_type}'")
    else:
        return f"only feeds inputs that take no gradient: {', '.join(roles)}"
    used_by = ", ".join(sorted({f"{n.op_type} '{n.name or n.op_type}'" for n, _ in uses}))
    return (
        f"no differentiable path to a float output (it feeds {used_by}, whose results reach "
        "the outputs only through integer or bool tensors or constant-valued operators)"
    )
