"""The loss rewriter: inference model + loss spec → training model whose first output is
the scalar loss.

``rewrite`` compiles the spec into a pipeline of small passes over a :class:`LossRewrite`
state:

``bind``
    resolve every term's output, target, weight and tensors; check types and names.
``attach:<term>``
    one per term: emit the term's nodes into the fragment, scaled by its coefficient, and
    check that fragment alone (so a faulty plugin is named).
``combine``
    add the scaled terms into the loss.
``assemble``
    copy the caller's model, append the new inputs and nodes, put the loss first among the
    outputs, record what was done in the metadata.
``validate``
    ``onnx.checker.check_model(full_check=True)`` on the result.

The caller's model is only read. The original graph, IR version, opset imports, functions,
metadata and doc strings are carried over untouched; nodes are only appended.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .builder import GraphBuilder, Value
from .errors import (
    DtypeError,
    NameCollisionError,
    OnnxLossError,
    OutputSelectionError,
    PluginError,
    ShapeError,
    TensorNotFoundError,
)
from .metadata import METADATA_FORMAT, METADATA_KEY, read_metadata
from .model_index import ModelIndex, iter_graphs, subgraphs
from .model_io import ModelLike, load_model, model_folder, save_model_atomic
from .naming import NameAllocator
from .registry import get_registry
from .tensor_info import TensorInfo
from .terms import Loss, Regularizer, Spec, Term, check_representable

SpecLike = Spec | Term | str | Sequence[Term | Spec]


@dataclass
class BoundLoss:
    coef: float
    term: Loss
    prediction: TensorInfo
    target: TensorInfo | None
    weight: TensorInfo | None
    #: The tensor each of the term's ``extra_predictions`` binds, by keyword name.
    others: dict[str, TensorInfo] = field(default_factory=dict)


@dataclass
class BoundRegularizer:
    coef: float
    term: Regularizer
    tensors: list[TensorInfo]


@dataclass
class LossRewrite:
    """Working state of one rewrite; the passes read and fill it in order."""

    model: onnx.ModelProto
    spec: Spec
    loss_name: str
    index: ModelIndex
    names: NameAllocator
    builder: GraphBuilder
    losses: list[BoundLoss] = field(default_factory=list)
    regularizers: list[BoundRegularizer] = field(default_factory=list)
    new_inputs: list[TensorInfo] = field(default_factory=list)
    loss_elem_type: int = onnx.TensorProto.FLOAT
    terms: list[tuple[Term, Value]] = field(default_factory=list)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    loss_value: Value | None = None
    result: onnx.ModelProto | None = None


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[LossRewrite], None]
    term: Term | None = None


def compile_spec(spec: SpecLike) -> Spec:
    """A :class:`Spec` from a spec, a term, a registered loss name or a list of terms."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Term):
        return spec.as_spec()
    if isinstance(spec, str):
        return get_registry().lookup("loss", spec).cls().as_spec()
    if isinstance(spec, Sequence) and all(isinstance(t, Term | Spec) for t in spec):
        return Spec(item for t in spec for item in t.as_spec().items)
    raise OutputSelectionError(
        "the loss spec must be a term (e.g. MSELoss()), a sum of terms, a registered loss "
        f"name or a list of terms; got {type(spec).__name__}"
    )


def rewrite(
    model: ModelLike, spec: SpecLike, *, loss_name: str = "loss", validate: bool = True
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose first output is the scalar loss ``spec``.

    Args:
        model: an ``onnx.ModelProto`` (never modified) or a path to one.
        spec: what to minimise: a term, a sum of scaled terms, a registered loss name or a
            list of terms. See :mod:`onnxloss.terms` for the reductions.
        loss_name: name of the new scalar output.
        validate: run ``onnx.checker.check_model(full_check=True)`` on the result.

    Returns:
        A new model with inputs ``original inputs + targets (+ weights)`` and outputs
        ``[loss_name, original outputs...]``.
    """
    return _run(load_model(model), compile_spec(spec), loss_name, validate)


def rewrite_file(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    spec: SpecLike,
    *,
    loss_name: str = "loss",
    validate: bool = True,
) -> None:
    """:func:`rewrite` a model file into another, atomically.

    Weights stored as external data are never loaded: the output refers to the same data
    files (copied next to it, streamed, when written to another folder). Every data file
    read or written stays inside the source's or the destination's folder
    (:func:`onnxloss.model_io.confine_external_data`).
    """
    src = Path(source)
    model = load_model(src, load_external_data=False)
    result = _run(model, compile_spec(spec), loss_name, validate=False)
    # The checker resolves external data against the model file's folder, so it checks the
    # finished temporary file (it reads no weights) before that file takes the final name.
    save_model_atomic(result, destination, model_folder(src), _validate_model if validate else None)


def _run(model: onnx.ModelProto, spec: Spec, loss_name: str, validate: bool) -> onnx.ModelProto:
    if not isinstance(loss_name, str) or not loss_name:
        raise NameCollisionError(f"loss_name must be a non-empty string, got {loss_name!r}")
    index = ModelIndex(model)
    names = NameAllocator(index.taken_names)
    state = LossRewrite(model, spec, loss_name, index, names, GraphBuilder(index.opset, names))
    steps = [Step("bind", _bind)]
    steps += [Step(f"attach:{t!r}", _attach_step(t), term=t) for _, t in spec.items]
    steps += [Step("combine", _combine), Step("assemble", _assemble)]
    if validate:
        steps.append(Step("validate", lambda s: _validate_model(s.result)))
    done: list[str] = []
    for step in steps:
        try:
            step.run(state)
        except (OnnxLossError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # a bug in a plugin's code (sys.exit too): name it
            raise PluginError(
                f"{_culprit(step.term) if step.term else 'onnxloss'} failed in pass "
                f"'{step.name}' (after {done or 'no pass'}): {type(exc).__name__}: {exc}"
            ) from exc
        done.append(step.name)
    assert state.result is not None
    return state.result


def _culprit(term: Term) -> str:
    cls = type(term)
    for reg in get_registry().registrations(term.kind).values():
        if reg.cls is cls:
            return f"{term.kind} '{reg.name}' from {reg.plugin.describe()}"
    return f"{term.kind} {cls.__module__}.{cls.__qualname__} (not registered by a plugin)"


# -- bind --------------------------------------------------------------------------------
def _bind(state: LossRewrite) -> None:
    index, spec = state.index, state.spec
    if not spec.losses:
        raise OutputSelectionError(
            f"the loss spec {spec!r} has no loss term; add one that binds an output "
            "(e.g. MSELoss()) — regularizers alone have nothing to fit"
        )
    _claim(state, state.loss_name, "loss output")
    new_inputs: dict[str, TensorInfo] = {}
    outputs = [index.resolve_output(t.output, f"loss {t!r}") for _, t in spec.losses]
    single = len(set(outputs)) == 1  # losses on one output share the default "label"
    for (coef, term), output in zip(spec.losses, outputs, strict=True):
        what = f"loss {term!r}"
        prediction = _float_tensor(index, output, what, "output")
        term.check_prediction(prediction)
        others = {role: _bind_other(index, term, role, prediction) for role in term.predictions}
        term.check_predictions(prediction, others)
        target = None
        if term.has_target:
            target_name = term.target or ("label" if single else f"{output}_label")
            target = term.target_info(prediction).renamed(target_name)
            _add_input(state, new_inputs, target, f"target of {what}")
        weight = None
        if term.weight is not None:
            weight = TensorInfo(term.weight, prediction.elem_type, (prediction.batch_dim,))
            _add_input(state, new_inputs, weight, f"sample weight of {what}")
        state.losses.append(BoundLoss(coef, term, prediction, target, weight, others))
    elem_types = {b.prediction.elem_type for b in state.losses}
    if len(elem_types) > 1:
        described = ", ".join(b.prediction.describe() for b in state.losses)
        raise DtypeError(
            f"the losses bind outputs of different float types ({described}); the loss is a "
            "single scalar, so bind outputs of one type"
        )
    state.loss_elem_type = elem_types.pop()
    for coef, term in spec.regularizers:
        tensors = [index.require_tensor(n, f"penalty {term!r}") for n in _match(index, term)]
        for info in tensors:
            if not info.is_float:
                raise DtypeError(
                    f"penalty {term!r}: tensor {info.describe()} is not a float tensor"
                )
        state.regularizers.append(BoundRegularizer(coef, term, tensors))
    state.new_inputs = list(new_inputs.values())
    _check_ranges(spec, state.loss_elem_type)


def _check_ranges(spec: Spec, elem_type: int) -> None:
    """Every coefficient and numeric hyper-parameter must be a finite ``elem_type``
    constant: 1e39 is inf in float32 and would give an infinite or NaN loss."""
    for coef, term in spec.items:
        check_representable(f"the coefficient of {term.kind} '{term.name}'", coef, elem_type)
        for option, value in term.hyperparameters().items():
            check_representable(f"{term.kind} '{term.name}' option {option!r}", value, elem_type)


def _float_tensor(index: ModelIndex, name: str, what: str, kind: str) -> TensorInfo:
    """The info of the float tensor ``name`` a loss binds, with a ranked shape."""
    if not name:
        raise OutputSelectionError(
            f"{what}: the {kind} it binds has an empty name (''), which ONNX does not "
            "allow for a graph output; name the output in the model"
        )
    info = index.tensor_info(name)
    if info is None:
        value_kind = index.value_kind(name)
        hint = (
            " (for a scikit-learn classifier converted by skl2onnx, convert with "
            "options={'zipmap': False} to get a probability tensor)"
            if value_kind in ("sequence_type", "map_type")
            else ""
        )
        raise DtypeError(
            f"{what}: {kind} '{name}' is not a tensor (it is a {value_kind}); a loss needs a "
            f"float tensor{hint}"
        )
    if not info.has_known_type:
        raise DtypeError(
            f"{what}: {kind} {info.describe()} has an element type ONNX does not "
            "define, so the model is malformed; declare the output's real type"
        )
    if not info.is_float:
        raise DtypeError(
            f"{what}: {kind} {info.describe()} is not a float tensor; bind the loss "
            "to a FLOAT/DOUBLE/FLOAT16/BFLOAT16 output (e.g. probabilities or scores, not "
            "predicted labels)"
        )
    if info.shape is None:
        raise ShapeError(
            f"{what}: {kind} '{name}' has no declared rank, so the target input cannot be "
            "typed; declare its shape (onnx.shape_inference.infer_shapes can fill it in)"
        )
    if info.rank == 0:
        raise ShapeError(
            f"{what}: {kind} {info.describe()} is a scalar; a loss needs a batch "
            "axis first (shape [N] or [N, ...]), one row per sample"
        )
    return info


def _bind_other(index: ModelIndex, term: Loss, role: str, prediction: TensorInfo) -> TensorInfo:
    """The tensor one of a loss's further predictions binds: an output by name or position,
    or any typed tensor of the main graph by name, of the prediction's float type."""
    what = f"loss {term!r}"
    ref = term.predictions[role]
    if ref is None:
        raise OutputSelectionError(
            f"{what}: say which output or tensor is the {role}: "
            f"{type(term).__name__}(..., {role}=<name>)"
        )
    if isinstance(ref, str) and index.has_tensor(ref) and ref not in index.output_names:
        name = ref
    else:
        name = index.resolve_output(ref, f"{what}, {role}")
    info = _float_tensor(index, name, what, role)
    if info.elem_type != prediction.elem_type:
        raise DtypeError(
            f"{what}: {role} {info.describe()} and output {prediction.describe()} must have "
            "the same float type"
        )
    return info


def _claim(state: LossRewrite, name: str, what: str) -> None:
    if name in state.names:
        raise NameCollisionError(
            f"the {what} name '{name}' is already used in the model; choose another name"
        )
    state.names.reserve(name)


def _add_input(
    state: LossRewrite, new_inputs: dict[str, TensorInfo], info: TensorInfo, what: str
) -> None:
    seen = new_inputs.get(info.name)
    if seen is None:
        _claim(state, info.name, f"{what} input")
        new_inputs[info.name] = info
    elif seen != info:
        raise NameCollisionError(
            f"input '{info.name}' is used twice with different types: "
            f"{seen.describe()} and, as {what}, {info.describe()}; give each its own name"
        )


def _match(index: ModelIndex, term: Regularizer) -> list[str]:
    """Tensor names a regularizer applies to: exact names, and globs over initializers."""
    matched: dict[str, None] = {}
    for pattern in term.tensors:
        if any(ch in pattern for ch in "*?["):
            hits = [n for n in index.initializer_names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise _no_match(index, term, pattern, "no initializer matches the glob")
        elif index.has_tensor(pattern):
            hits = [pattern]
        else:
            raise _no_match(index, term, pattern, "no tensor has this name")
        matched.update(dict.fromkeys(hits))
    return list(matched)


def _no_match(index: ModelIndex, term: Regularizer, pattern: str, why: str) -> OnnxLossError:
    names = index.initializer_names
    shown = ", ".join(repr(n) for n in names[:12]) + (" ..." if len(names) > 12 else "")
    return TensorNotFoundError(
        f"penalty {term!r}: '{pattern}': {why}; the model's initializers are [{shown}]"
    )


# -- attach ------------------------------------------------------------------------------
def _attach_step(term: Term) -> Callable[[LossRewrite], None]:
    def run(state: LossRewrite) -> None:
        start = state.builder.mark()
        if isinstance(term, Loss):
            bound = next(b for b in state.losses if b.term is term)
            value = _attach_loss(state.builder, bound)
        else:
            bound = next(b for b in state.regularizers if b.term is term)
            value = _attach_regularizer(state.builder, bound, state.loss_elem_type)
        nodes = state.builder.export_nodes([value], start)
        _check_term(state, term, value, nodes)
        state.terms.append((term, value))
        state.nodes.extend(nodes)

    return run


def _attach_loss(g: GraphBuilder, b: BoundLoss) -> Value:
    with g.scope(b.term.name, dtype=b.prediction.dtype):
        target = None if b.target is None else g.input(b.target)
        weight = None if b.weight is None else g.input(b.weight)
        others = {role: g.input(info) for role, info in b.others.items()}
        reduced = b.term.reduced(g, g.input(b.prediction), target, b.prediction, weight, **others)
        return reduced if b.coef == 1.0 else g.Mul(reduced, b.coef)


def _attach_regularizer(g: GraphBuilder, b: BoundRegularizer, elem_type: int) -> Value:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    with g.scope(f"{b.term.name}_penalty", dtype=dtype):
        tensors = []
        for info in b.tensors:
            value = g.input(info)
            tensors.append(value if info.elem_type == elem_type else g.cast(value, dtype))
        total = b.term.penalty(g, tensors)
        return total if b.coef == 1.0 else g.Mul(total, b.coef)


def _check_term(state: LossRewrite, term: Term, value: Value, nodes: list) -> None:
    """Type-check the nodes of one term alone, so a faulty plugin is named precisely."""
    fragment = _fragment_model(state, nodes, [value], f"{term.name}_check")
    try:
        inferred = onnx.shape_inference.infer_shapes(fragment, check_type=True, strict_mode=True)
        onnx.checker.check_model(inferred, full_check=True)
    except Exception as exc:
        raise PluginError(
            f"{_culprit(term)} emitted an invalid graph for {term!r}: {_first_line(exc)}"
        ) from exc
    out = inferred.graph.output[0]
    info = TensorInfo.from_value_info(out)
    if info is None or (info.shape is not None and info.shape != ()):
        raise PluginError(
            f"{_culprit(term)} produced {info.describe() if info else 'a non-tensor'} for "
            f"{term!r} instead of a scalar; per_sample() must return shape [N] and penalty() "
            "a scalar"
        )


def _fragment_model(
    state: LossRewrite, nodes: list[onnx.NodeProto], outputs: list[Value], name: str
) -> onnx.ModelProto:
    produced = {o for n in nodes for o in n.output}
    used = {i for n in nodes for i in n.input if i and i not in produced}
    inputs = [_outer_info(state, n).value_info() for n in sorted(used)]
    outs = [onnx.helper.make_tensor_value_info(v.name, state.loss_elem_type, []) for v in outputs]
    graph = onnx.helper.make_graph(nodes, name, inputs, outs)
    opset = [onnx.helper.make_opsetid("", state.index.opset)]
    return onnx.helper.make_model(
        graph, opset_imports=opset, ir_version=onnx.helper.find_min_ir_version_for(opset)
    )


def _outer_info(state: LossRewrite, name: str) -> TensorInfo:
    for info in state.new_inputs:
        if info.name == name:
            return info
    info = state.index.tensor_info(name)
    assert info is not None, name
    return info


# -- combine, assemble, validate -----------------------------------------------------------
def _combine(state: LossRewrite) -> None:
    g = state.builder
    start = g.mark()
    dtype = onnx.helper.tensor_dtype_to_np_dtype(state.loss_elem_type)
    with g.scope(state.loss_name, dtype=dtype):
        total = g.add_all([value for _, value in state.terms])
        if total.name in state.index.taken_names:  # never rename a tensor of the model
            total = g.Identity(total)
    if g.mark() == start:
        # A single term and nothing to add: its last node, already exported, gets the name.
        last = state.nodes[-1]
        assert list(last.output) == [total.name], "a term's value comes from its last node"
        last.output[0] = state.loss_name
    total.name = state.loss_name
    state.loss_value = total
    state.nodes.extend(g.export_nodes([total], start))


def _assemble(state: LossRewrite) -> None:
    nodes = state.nodes
    out = onnx.ModelProto()
    out.CopyFrom(state.model)
    graph = out.graph
    graph.input.extend(info.value_info() for info in state.new_inputs)
    graph.node.extend(nodes)
    outputs = [onnx.helper.make_tensor_value_info(state.loss_name, state.loss_elem_type, [])]
    outputs += list(graph.output)
    del graph.output[:]
    graph.output.extend(outputs)
    entry = out.metadata_props.add()
    meta = {**_metadata(state), "nodes": len(nodes)}
    entry.key, entry.value = _metadata_key(out), json.dumps(meta, sort_keys=True)
    state.result = out


def _metadata_key(model: onnx.ModelProto) -> str:
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        raise NameCollisionError(
            f"the model already carries an onnxloss loss (metadata '{METADATA_KEY}'); rewrite "
            "the original inference model, with every term in one spec"
        )
    return METADATA_KEY


def _metadata(state: LossRewrite) -> dict:
    """What a trainer needs to feed the model: targets, weights, reductions, and (keys added
    later, so older readers keep working) each loss's bindings and the class-index label
    ranges to check before training."""
    reductions = sorted({b.term.reduction for b in state.losses})
    labels = {}
    for b in state.losses:
        info = b.term.label_info(b.prediction) if b.target is not None else None
        if info is not None:
            labels[b.target.name] = info
    return {
        "format": METADATA_FORMAT,
        "loss": state.loss_name,
        "reduction": reductions[0] if len(reductions) == 1 else "mixed",
        "reductions": reductions,
        "targets": {b.target.name: b.prediction.name for b in state.losses if b.target},
        "weights": sorted({b.weight.name for b in state.losses if b.weight is not None}),
        "labels": labels,
        "losses": [
            {
                "predictions": {
                    "output": b.prediction.name,
                    **{role: info.name for role, info in b.others.items()},
                },
                "target": None if b.target is None else b.target.name,
                "weight": None if b.weight is None else b.weight.name,
                "reduction": b.term.reduction,
            }
            for b in state.losses
        ],
        "terms": [f"{c!r} * {t!r}" if c != 1.0 else repr(t) for c, t in state.spec.items],
    }


def _validate_model(model: onnx.ModelProto | str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        # The original graph passed through untouched, so report it with that in mind.
        raise OnnxLossError(
            f"the rewritten model fails onnx.checker.check_model(full_check=True): "
            f"{_first_line(exc)}. {_validation_advice(model, exc)}"
        ) from exc


def _validation_advice(model: onnx.ModelProto | str, exc: Exception) -> str:
    """What to do about a failed check. validate=False is suggested only where it helps:
    for operators the checker does not know (a runtime may still run them); a model that
    contradicts itself fails again in the gradient build."""
    from .passes.structure import declaration_conflicts

    if isinstance(model, onnx.ModelProto):
        conflicts = declaration_conflicts(model)
        if conflicts:
            return (
                f"The input model's declarations contradict its nodes: "
                f"{'; '.join(c.describe() for c in conflicts)}. Apply "
                "onnxloss.passes.RedeclareOutputs() (make_trainable does) to it, then add the "
                "loss (its targets take the outputs' shapes)"
            )
    if "No Op registered" in str(exc) or "No opset import for domain" in str(exc):
        return (
            "The checker does not know one of the model's operators (one from a newer onnx?): "
            "pass validate=False if the runtime you use implements it"
        )
    return "The input model itself fails the checker: fix it first (onnxloss check lists why)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def strip_loss(model: onnx.ModelProto) -> onnx.ModelProto:
    """The inference model a loss model was made from: :func:`rewrite` undone.

    Removes the loss output, the nodes the rewriter appended, its target and weight inputs
    and its metadata entry; everything else (trained weights included) is kept.
    """
    meta = read_metadata(model)
    if meta is None:
        raise OnnxLossError(
            f"the model has no '{METADATA_KEY}' metadata: it was not made by onnxloss.rewrite"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    k = int(meta["nodes"])
    kept, added = graph.node[: len(graph.node) - k], graph.node[len(graph.node) - k :]
    produced = {o for n in added for o in n.output}
    added_inputs = {*meta["targets"], *meta["weights"]}
    # What the inference part still reads, subgraphs of its nodes included: none of it
    # may be a loss node's output or a target/weight input that is about to go.
    inner = [
        n for node in kept for sub in subgraphs(node) for g in iter_graphs(sub) for n in g.node
    ]
    still_used = {i for n in [*kept, *inner] for i in n.input} | {o.name for o in graph.output[1:]}
    if (
        not graph.output
        or graph.output[0].name != meta["loss"]
        or (produced | added_inputs) & still_used
    ):
        raise OnnxLossError(
            "the loss model was edited after onnxloss wrote it (its loss part is no longer the "
            "last nodes and first output); strip it by hand or pass the inference model"
        )
    del graph.node[len(graph.node) - k :]
    del graph.output[0]
    inputs = [i for i in graph.input if i.name not in added_inputs]
    del graph.input[:]
    graph.input.extend(inputs)
    props = [p for p in out.metadata_props if p.key != METADATA_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(props)
    return out
