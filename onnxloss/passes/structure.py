"""Structural fixes the runtime needs: initializers that are not also graph inputs, the
optional outputs some gradient builders read, and Transpose permutations written out."""

from __future__ import annotations

import onnx

from ..model_index import DEFAULT_DOMAINS, all_names, model_graphs
from ..naming import NameAllocator
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
