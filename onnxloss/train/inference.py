"""Inference with the weights being trained, without writing a file: ``predict``.

The loss model is cut down to the nodes its original outputs need (the loss, the targets
and the sample weights fall away), and its trained initializers become graph inputs, so one
session serves every call and the current weights are fed alongside the features.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import OnnxLossError
from ..model_index import subgraphs
from .backend import RunConfig, session_options


def inference_model(
    model: onnx.ModelProto, outputs: list[str], as_inputs: list[str]
) -> onnx.ModelProto:
    """The nodes of ``model`` needed for ``outputs``; the initializers ``as_inputs`` become
    graph inputs (their types from the initializers)."""
    graph = model.graph
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_outer_names(node))
    kept.reverse()
    inits = {t.name: t for t in graph.initializer}
    missing = [n for n in as_inputs if n not in inits]
    if missing:
        raise OnnxLossError(f"the model has no initializer(s) {missing}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(kept)
    inputs = [i for i in graph.input if i.name in needed and i.name not in as_inputs]
    inputs += [
        onnx.helper.make_tensor_value_info(n, inits[n].data_type, list(inits[n].dims))
        for n in as_inputs
    ]
    del g.input[:]
    g.input.extend(inputs)
    keep_inits = [t for t in graph.initializer if t.name in needed and t.name not in as_inputs]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    by_name = {o.name: o for o in graph.output}
    del g.output[:]
    g.output.extend(by_name[n] for n in outputs)
    return out


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from enclosing scopes (a superset is harmless)."""
    names: set[str] = set()
    for sub in subgraphs(node):
        for inner in sub.node:
            names.update(i for i in inner.input if i)
            names.update(_outer_names(inner))
    return names


class InferenceRunner:
    """A session over :func:`inference_model` of the loss model, fed the current weights."""

    def __init__(self, ort, config: RunConfig, source: onnx.ModelProto):
        layout = config.layout
        outputs = [o for o in layout.outputs if o != layout.loss_name]
        if not outputs:
            raise OnnxLossError("the loss model has no output besides the loss: nothing to predict")
        model = inference_model(source, outputs, list(config.trainables))
        needed = {i.name for i in model.graph.input} - set(config.trainables)
        stray = sorted(needed - {f.name for f in layout.features})
        if stray:
            raise OnnxLossError(
                f"the model's outputs {outputs} need the inputs {stray}, which are not features"
            )
        self.outputs = outputs
        self.feature_names = [f.name for f in layout.features if f.name in needed]
        self._session = ort.InferenceSession(
            model.SerializeToString(),
            sess_options=session_options(ort, config),
            providers=config.providers,
        )

    def run(self, features: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> dict:
        """Output name → array, in the model's output order."""
        feeds = {name: features[name] for name in self.feature_names}
        feeds.update(weights)
        return dict(zip(self.outputs, self._session.run(self.outputs, feeds), strict=True))
