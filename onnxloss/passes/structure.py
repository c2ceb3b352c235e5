"""Structural fixes the runtime needs: initializers that are not also graph inputs, the
optional outputs some gradient builders read, Transpose permutations written out, and
output declarations that agree with what the graph computes."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..model_index import DEFAULT_DOMAINS, all_names, model_graphs
from ..naming import NameAllocator
from ..tensor_info import TensorInfo
from .base import Pass


class InitializersNotInputs(Pass):
    """Remove from ``graph.input`` every name that is also an initializer.

    Older exporters (``torch.onnx.export(..., keep_initializers_as_inputs=True)``, IR < 4)
    list weights as inputs with a default value; onnxruntime-training then refuses to
    generate artifacts ("Duplicate definition-site"). The weights keep their values; they
    just can no longer be overridden by a feed.
    """

    def apply(self, model: onnx.ModelProto) -> bool:
        graph = model.graph
        weights = {t.name for t in graph.initializer}
        weights |= {t.values.name for t in graph.sparse_initializer}
        kept = [vi for vi in graph.input if vi.name not in weights]
        if len(kept) == len(graph.input):
            return False
        del graph.input[:]
        graph.input.extend(kept)
        if model.ir_version < 4:  # initializers outside the inputs need IR 4
            model.ir_version = 4
        return True


#: Optional outputs (by position) that the runtime's gradient builders read.
GRADIENT_OUTPUTS = {
    "LayerNormalization": (1, 2),  # Mean, InvStdDev
    "Dropout": (1,),  # mask
    "SoftmaxCrossEntropyLoss": (1,),  # log_prob
}


class DeclareGradientOutputs(Pass):
    """Give ``LayerNormalization``, ``Dropout`` and ``SoftmaxCrossEntropyLoss`` nodes the
    optional outputs their gradient builders read (``Mean``/``InvStdDev``, ``mask``,
    ``log_prob``), under fresh names (``<output>_mean``...). Nothing else changes: the
    outputs are computed anyway and nobody consumes them."""

    _SUFFIXES = {
        "LayerNormalization": ("", "mean", "inv_std_dev"),
        "Dropout": ("", "mask"),
        "SoftmaxCrossEntropyLoss": ("", "log_prob"),
    }

    def apply(self, model: onnx.ModelProto) -> bool:
        names = None
        changed = False
        for graph in model_graphs(model):
            for node in graph.node:
                wanted = GRADIENT_OUTPUTS.get(node.op_type)
                if wanted is None or node.domain not in DEFAULT_DOMAINS:
                    continue
                for position in wanted:
                    if len(node.output) > position and node.output[position]:
                        continue
                    if names is None:
                        names = NameAllocator(all_names(model))
                    while len(node.output) <= position:
                        node.output.append("")
                    suffix = self._SUFFIXES[node.op_type][position]
                    node.output[position] = names.fresh(f"{node.output[0]}_{suffix}")
                    changed = True
        return changed


class ExplicitTransposePerm(Pass):
    """Write out the default ``perm`` (the reversed axes) of ``Transpose`` nodes that have
    none, when the input rank is known: the runtime's gradient builder fails on the
    implicit form ("unordered_map::at")."""

    def apply(self, model: onnx.ModelProto) -> bool:
        pending = [
            node
            for graph in model_graphs(model)
            for node in graph.node
            if node.op_type == "Transpose"
            and node.domain in DEFAULT_DOMAINS
            and not any(a.name == "perm" for a in node.attribute)
        ]
        if not pending:
            return False
        from .node_rules import tensor_infos

        infos = tensor_infos(model)
        changed = False
        for node in pending:
            info = infos.get(node.input[0])
            if info is None or info.rank is None:
                continue
            node.attribute.append(onnx.helper.make_attribute("perm", list(range(info.rank))[::-1]))
            changed = True
        return changed


@dataclass(frozen=True)
class DeclarationConflict:
    """A graph output (or ``value_info`` entry) declared with a type or shape that
    contradicts what its node computes, as shape inference sees it."""

    declared: TensorInfo
    inferred: TensorInfo

    @property
    def name(self) -> str:
        return self.declared.name

    def redeclared(self) -> TensorInfo:
        """The inferred type and shape, keeping the declared dimensions that inference
        cannot tell (unknown or symbolic there)."""
        shape = self.inferred.shape
        if shape is not None and self.declared.rank == len(shape):
            shape = tuple(
                i if isinstance(i, int) and i else d
                for d, i in zip(self.declared.shape, shape, strict=True)
            )
        elif shape is None:
            shape = self.declared.shape
        return TensorInfo(self.name, self.inferred.elem_type or self.declared.elem_type, shape)

    def describe(self) -> str:
        return (
            f"'{self.name}' is declared {_type_text(self.declared)} but computed "
            f"{_type_text(self.inferred)}"
        )


def _type_text(info: TensorInfo) -> str:
    return info.describe().split(" ", 1)[1]  # "(FLOAT, [?, 4])" without the name


def _contradicts(declared: TensorInfo, inferred: TensorInfo) -> bool:
    if declared.elem_type and inferred.elem_type and declared.elem_type != inferred.elem_type:
        return True
    if declared.shape is None or inferred.shape is None:
        return False
    if len(declared.shape) != len(inferred.shape):
        return True
    # An inferred 0 is not trusted: onnx infers [N, 0] for a LinearClassifier without
    # intercepts. Symbolic or unknown dimensions never contradict anything.
    return any(
        isinstance(d, int) and isinstance(i, int) and i and d != i
        for d, i in zip(declared.shape, inferred.shape, strict=True)
    )


def _without_generated_dims(info: TensorInfo | None) -> TensorInfo | None:
    """The names onnx invents for unknown dimensions (``unk__0``) mean "unknown"."""
    if info is None or info.shape is None:
        return info
    shape = [None if isinstance(d, str) and d.startswith("unk__") else d for d in info.shape]
    return info.with_type(info.elem_type, shape)


def declaration_conflicts(model: onnx.ModelProto) -> list[DeclarationConflict]:
    """Main-graph outputs and ``value_info`` entries whose declared element type, rank or
    fixed dimensions contradict shape inference run without those declarations (through the
    ai.onnx.ml operators too). Empty when inference fails: then nothing can be told."""
    from .ml_shapes import infer_shapes

    graph = model.graph
    declared = {}
    for vi in [*graph.output, *graph.value_info]:
        info = TensorInfo.from_value_info(vi)
        if info is not None and (info.elem_type or info.shape is not None):
            declared[vi.name] = info
    if not declared:
        return []
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.ClearField("type")
    try:
        inferred = infer_shapes(bare).graph
    except Exception:  # inference cannot run: nothing to compare with
        return []
    found = {}
    for vi in [*inferred.output, *inferred.value_info]:
        info = _without_generated_dims(TensorInfo.from_value_info(vi))
        was = declared.get(vi.name)
        if info is not None and was is not None and _contradicts(was, info):
            found[vi.name] = DeclarationConflict(was, info)
    return [found[name] for name in declared if name in found]


class RedeclareOutputs(Pass):
    """Re-declare the graph outputs (and ``value_info`` entries) whose declared type or
    shape contradicts what their nodes compute, from shape inference.

    Converters sometimes declare an output wrongly (skl2onnx 1.20 declares
    ``PLSRegression``'s prediction ``[N, n_features]`` where it computes ``[N, targets]``).
    Inference runtimes let it pass; onnxruntime-training's gradient build and
    ``onnx.checker.check_model(full_check=True)`` stop on the contradiction, and a loss bound
    to such an output would take its target's shape from the wrong declaration. Dimensions
    inference cannot tell keep their declared value.
    """

    def apply(self, model: onnx.ModelProto) -> bool:
        conflicts = {c.name: c for c in declaration_conflicts(model)}
        if not conflicts:
            return False
        for vi in [*model.graph.output, *model.graph.value_info]:
            conflict = conflicts.get(vi.name)
            if conflict is not None:
                fixed = conflict.redeclared().value_info()
                fixed.doc_string = vi.doc_string
                vi.CopyFrom(fixed)
        return True
