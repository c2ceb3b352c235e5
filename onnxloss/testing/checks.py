"""Assertions about loss models and registrations, usable on their own in any test.

Each raises an :class:`AssertionError` whose message says what is wrong and where; none
relies on pytest's assertion rewriting.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection

import onnx

from ..model_index import all_names
from ..registry import PluginRegistry
from ..rewrite import METADATA_KEY, read_metadata
from ..tensor_info import FLOAT_TYPES
from ..terms import Term

#: Sentinel for :attr:`Conformance.distribution`: the term is one of onnxloss's built-ins.
BUILTIN = "built-in"


def _fail(message: str) -> None:
    raise AssertionError(message)


def assert_valid_loss_model(
    original: onnx.ModelProto,
    result: onnx.ModelProto,
    *,
    loss_name: str = "loss",
    new_inputs: Collection[str] | None = None,
) -> None:
    """``result`` is a sound rewrite of ``original``.

    * it passes ``onnx.checker.check_model(full_check=True)`` and strict shape inference;
    * its first output is ``loss_name``, a float scalar, followed by ``original``'s outputs;
    * its inputs are ``original``'s followed by the new ones (exactly ``new_inputs`` when
      given), each fully typed;
    * ``original``'s nodes, initializers, functions, opsets, IR version, doc strings and
      metadata are carried over unchanged; nodes are only appended.
    """
    try:
        onnx.checker.check_model(result, full_check=True)
    except Exception as exc:
        _fail(f"the loss model fails onnx.checker.check_model(full_check=True): {exc}")
    try:
        inferred = onnx.shape_inference.infer_shapes(result, check_type=True, strict_mode=True)
    except Exception as exc:
        _fail(f"strict shape inference fails on the loss model: {exc}")
    graph, before = result.graph, original.graph
    if not graph.output or graph.output[0].name != loss_name:
        first = graph.output[0].name if graph.output else None
        _fail(f"the first output must be the loss '{loss_name}', not {first!r}")
    loss_type = inferred.graph.output[0].type.tensor_type
    if loss_type.elem_type not in FLOAT_TYPES:
        _fail(f"the loss '{loss_name}' has element type {loss_type.elem_type}, not a float type")
    dims = [d.dim_value or d.dim_param or "?" for d in loss_type.shape.dim]
    if not loss_type.HasField("shape") or dims:
        _fail(f"the loss '{loss_name}' must be a scalar (shape []), inferred shape {dims}")
    if list(graph.output[1:]) != list(before.output):
        _fail(
            "the original outputs must follow the loss unchanged and in order: expected "
            f"{[o.name for o in before.output]}, got {[o.name for o in graph.output[1:]]}"
        )
    n_in = len(before.input)
    if list(graph.input[:n_in]) != list(before.input):
        _fail("the original graph inputs must come first and unchanged")
    added = [i.name for i in graph.input[n_in:]]
    if new_inputs is not None and sorted(added) != sorted(new_inputs):
        _fail(f"the loss model adds inputs {added}; expected {sorted(new_inputs)}")
    for vi in graph.input[n_in:]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or not tt.elem_type:
            _fail(f"new input '{vi.name}' has no element type or no declared rank")
    n_nodes = len(before.node)
    if list(graph.node[:n_nodes]) != list(before.node):
        _fail("the original nodes must be kept unchanged, in order, before the loss nodes")
    same = {
        "initializers": (graph.initializer, before.initializer),
        "sparse initializers": (graph.sparse_initializer, before.sparse_initializer),
        "value_info": (graph.value_info, before.value_info),
        "functions": (result.functions, original.functions),
        "opset imports": (result.opset_import, original.opset_import),
    }
    for what, (got, expected) in same.items():
        if list(got) != list(expected):
            _fail(f"the model's {what} changed")
    scalars = {
        "ir_version": (result.ir_version, original.ir_version),
        "producer_name": (result.producer_name, original.producer_name),
        "producer_version": (result.producer_version, original.producer_version),
        "model_version": (result.model_version, original.model_version),
        "model doc_string": (result.doc_string, original.doc_string),
        "graph name": (graph.name, before.name),
        "graph doc_string": (graph.doc_string, before.doc_string),
    }
    for what, (got, expected) in scalars.items():
        if got != expected:
            _fail(f"the model's {what} changed from {expected!r} to {got!r}")
    props = {p.key: p.value for p in result.metadata_props}
    for p in original.metadata_props:
        if props.get(p.key) != p.value:
            _fail(f"metadata entry {p.key!r} was lost or changed")
    if read_metadata(result) is None:
        _fail(f"the loss model lacks the '{METADATA_KEY}' metadata entry the trainer reads")


def new_names(original: onnx.ModelProto, result: onnx.ModelProto) -> list[str]:
    """Names of the nodes and tensors the rewrite appended (loss output and new inputs
    excluded: the user chose those), in order of appearance."""
    added = result.graph.node[len(original.graph.node) :]
    names = []
    for node in added:
        names.append(node.name)
        names.extend(o for o in node.output if o)
    user_chosen = {result.graph.output[0].name} | {
        i.name for i in result.graph.input[len(original.graph.input) :]
    }
    return list(dict.fromkeys(n for n in names if n and n not in user_chosen))


def assert_names_unique(original: onnx.ModelProto, result: onnx.ModelProto) -> None:
    """Every node the rewrite appended has a name; no new name (node or tensor) is one the
    original model uses anywhere (subgraphs and functions' callers included); node names
    are unique and every tensor of the result has exactly one producer."""
    taken = all_names(original)
    added = result.graph.node[len(original.graph.node) :]
    unnamed = [n.op_type for n in added if not n.name]
    if unnamed:
        _fail(f"appended nodes without a name: {unnamed}")
    clashes = sorted(
        {n.name for n in added if n.name in taken}
        | {o for n in added for o in n.output if o in taken}
        | {i.name for i in result.graph.input[len(original.graph.input) :] if i.name in taken}
    )
    if clashes:
        _fail(f"new names already used in the original model: {clashes}")
    node_names = Counter(n.name for n in result.graph.node if n.name)
    repeated = sorted(n for n, k in node_names.items() if k > 1)
    if repeated:
        _fail(f"node names used more than once: {repeated}")
    graph = result.graph
    producers = Counter(
        [i.name for i in graph.input]
        + [t.name for t in graph.initializer]
        + [o for n in graph.node for o in n.output if o]
    )
    repeated = sorted(n for n, k in producers.items() if k > 1)
    if repeated:
        _fail(f"tensors produced more than once (inputs, initializers, node outputs): {repeated}")


def assert_deterministic(first: onnx.ModelProto, second: onnx.ModelProto) -> None:
    """Two rewrites of the same model with the same spec serialize to the same bytes."""
    a = first.SerializeToString(deterministic=True)
    b = second.SerializeToString(deterministic=True)
    if a != b:
        na = [(n.name, list(n.output)) for n in first.graph.node]
        nb = [(n.name, list(n.output)) for n in second.graph.node]
        diff = next(
            (
                f"node #{i}: {x} vs {y}"
                for i, (x, y) in enumerate(zip(na, nb, strict=False))
                if x != y
            ),
            f"{len(na)} vs {len(nb)} nodes" if len(na) != len(nb) else "attributes or metadata",
        )
        _fail(f"two identical rewrites gave different models (first difference: {diff})")


def _normalize(distribution: str) -> str:
    # PEP 503 normalisation: 'onnxloss_focal' and 'OnnxLoss-Focal' are the same project.
    return re.sub(r"[-_.]+", "-", distribution).lower()


def assert_registered(registry: PluginRegistry, term: type[Term], distribution: str) -> None:
    """``term`` is registered under its name and aliases by a plugin of ``distribution``
    (:data:`BUILTIN` for onnxloss's own), which loaded without any problem."""
    kind = term.kind
    if kind not in ("loss", "regularizer"):
        _fail(f"{term.__name__}.kind is {kind!r}; subclass onnxloss.Loss or onnxloss.Regularizer")
    if not (term.__doc__ or "").strip():
        _fail(
            f"{term.__name__} has no docstring; 'onnxloss plugins' shows its first line, which "
            "should state the formula"
        )
    if distribution == BUILTIN:
        problems = [f for f in registry.failures if f.plugin.builtin]
    else:
        problems = [
            f
            for f in registry.failures
            if f.plugin.distribution
            and _normalize(f.plugin.distribution) == _normalize(distribution)
        ]
    if problems:
        _fail("the plugin has problems: " + "; ".join(f.describe() for f in problems))
    entry = registry.registrations(kind).get(term.name)
    if entry is None:
        plugins = ", ".join(p.describe() for p in registry.plugins)
        others = "; ".join(f.describe() for f in registry.failures) or "none"
        _fail(
            f"no plugin registers a {kind} named {term.name!r}. Loaded plugins: {plugins}. "
            f"Plugins that failed: {others}. Is '{distribution}' installed (pip install -e .) "
            "with an entry point in the 'onnxloss' group whose module implements "
            f"onnxloss_register_{'losses' if kind == 'loss' else 'regularizers'}?"
        )
    if entry.cls is not term:
        _fail(
            f"{kind} {term.name!r} is registered to {entry.cls.__module__}."
            f"{entry.cls.__qualname__} by {entry.plugin.describe()}, not to "
            f"{term.__module__}.{term.__qualname__}"
        )
    plugin = entry.plugin
    if distribution == BUILTIN:
        if not plugin.builtin:
            _fail(f"{kind} {term.name!r} comes from {plugin.describe()}, not a built-in plugin")
    elif plugin.builtin or not plugin.distribution:
        _fail(
            f"{kind} {term.name!r} comes from {plugin.describe()}, not from an entry point of "
            f"the installed distribution '{distribution}'"
        )
    elif _normalize(plugin.distribution) != _normalize(distribution):
        _fail(
            f"{kind} {term.name!r} is registered by {plugin.describe()}, expected the "
            f"distribution '{distribution}'"
        )
    elif not plugin.version:
        _fail(f"{plugin.describe()} has no version in its distribution metadata")
    for alias in term.aliases:
        if alias not in entry.aliases:
            _fail(f"alias {alias!r} of {kind} {term.name!r} was not registered")


def assert_untouched(
    before: bytes, model: onnx.ModelProto, what: str = "the caller's model"
) -> None:
    """``model`` still serializes (deterministically) to ``before``."""
    if model.SerializeToString(deterministic=True) != before:
        _fail(f"{what} was modified by the rewrite")
