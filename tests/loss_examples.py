"""One worked example per built-in loss: the outputs it binds, the term and valid targets.

Tests that go over every registered loss (graph rules, training) build each one from here,
whatever it compares: class scores, probabilities, several predictions, no target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.examples import mlp


@dataclass(frozen=True)
class Head:
    """A model output: columns ``[start, stop)`` of the scores, through ``activation``;
    ``vector=False`` drops the column axis of a one-column head (an ``[N]`` output)."""

    name: str
    start: int
    stop: int
    activation: str | None = None
    vector: bool = True


@dataclass(frozen=True)
class Example:
    #: keyword arguments (reduction, weight...) → the term, bound to the heads' outputs.
    make: Callable[..., onnxloss.Loss]
    heads: tuple[Head, ...]
    #: (true scores [N, width], rng) → the target, or None for a loss without one.
    target: Callable[[np.ndarray, np.random.Generator], np.ndarray | None]

    @property
    def width(self) -> int:
        return max(h.stop for h in self.heads)


def _regression(cls, **options) -> Example:
    return Example(lambda **kw: cls(**options, **kw), (Head("pred", 0, 3),), lambda s, r: s[:, :3])


def _labels(s, r):
    return s[:, :3].argmax(axis=1)


def _signs(s, r):
    return np.where(s[:, :3] > 0, 1.0, -1.0)


def _multilabel_rows(s, r):
    rows = np.full((len(s), 3), -1, np.int64)
    for i, row in enumerate(s[:, :3]):
        listed = np.flatnonzero(row > 0)
        rows[i, : len(listed)] = listed
    return rows


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


L = onnxloss
EXAMPLES: dict[str, Example] = {
    "squared_error": _regression(L.MSELoss),
    "absolute_error": _regression(L.L1Loss),
    "elastic": _regression(L.ElasticLoss),
    "huber": _regression(L.HuberLoss),
    "smooth_l1": _regression(L.SmoothL1Loss),
    "quantile": _regression(L.QuantileLoss),
    "poisson": Example(
        lambda **kw: L.PoissonNLLLoss(**kw),
        (Head("pred", 0, 3),),
        lambda s, r: r.poisson(np.exp(0.3 * s[:, :3])).astype(float),
    ),
    "gaussian_nll": Example(
        lambda **kw: L.GaussianNLLLoss("mean", var="var", **kw),
        (Head("mean", 0, 3), Head("var", 3, 6, "Exp")),
        lambda s, r: s[:, :3] + r.normal(scale=0.3, size=(len(s), 3)),
    ),
    "bce": Example(
        lambda **kw: L.BCELoss(**kw), (Head("pred", 0, 3, "Sigmoid"),), lambda s, r: 1.0 * (s > 0)
    ),
    "bce_with_logits": Example(
        lambda **kw: L.BCEWithLogitsLoss(**kw), (Head("pred", 0, 3),), lambda s, r: 1.0 * (s > 0)
    ),
    "multilabel_soft_margin": Example(
        lambda **kw: L.MultiLabelSoftMarginLoss(**kw),
        (Head("pred", 0, 3),),
        lambda s, r: 1.0 * (s > 0),
    ),
    "soft_margin": Example(lambda **kw: L.SoftMarginLoss(**kw), (Head("pred", 0, 3),), _signs),
    "hinge_embedding": Example(
        lambda **kw: L.HingeEmbeddingLoss(**kw), (Head("pred", 0, 3, "Exp"),), _signs
    ),
    "cross_entropy": Example(lambda **kw: L.CrossEntropyLoss(**kw), (Head("pred", 0, 3),), _labels),
    "multi_margin": Example(lambda **kw: L.MultiMarginLoss(**kw), (Head("pred", 0, 3),), _labels),
    "nll": Example(lambda **kw: L.NLLLoss(**kw), (Head("pred", 0, 3, "LogSoftmax"),), _labels),
    "log_loss": Example(lambda **kw: L.LogLoss(**kw), (Head("pred", 0, 3, "Softmax"),), _labels),
    "log": Example(
        lambda **kw: L.BinaryLogLoss(**kw),
        (Head("pred", 0, 2, "Softmax"),),
        lambda s, r: s[:, :2].argmax(axis=1),
    ),
    "kl_div": Example(
        lambda **kw: L.KLDivLoss(**kw),
        (Head("pred", 0, 3, "LogSoftmax"),),
        lambda s, r: _softmax(s[:, :3]),
    ),
    "multilabel_margin": Example(
        lambda **kw: L.MultiLabelMarginLoss(**kw), (Head("pred", 0, 3),), _multilabel_rows
    ),
    "margin_ranking": Example(
        lambda **kw: L.MarginRankingLoss("first", output2="second", margin=0.1, **kw),
        (Head("first", 0, 1, vector=False), Head("second", 1, 2, vector=False)),
        lambda s, r: np.where(s[:, 0] > s[:, 1], 1.0, -1.0),
    ),
    "cosine_embedding": Example(
        lambda **kw: L.CosineEmbeddingLoss("left", output2="right", **kw),
        (Head("left", 0, 2), Head("right", 2, 4)),
        lambda s, r: np.where((s[:, :2] * s[:, 2:4]).sum(axis=1) > 0, 1.0, -1.0),
    ),
    "triplet_margin": Example(
        lambda **kw: L.TripletMarginLoss("anchor", positive="positive", negative="negative", **kw),
        (Head("anchor", 0, 2), Head("positive", 2, 4), Head("negative", 4, 6)),
        lambda s, r: None,
    ),
    "triplet_margin_with_distance": Example(
        lambda **kw: L.TripletMarginWithDistanceLoss(
            "anchor", positive="positive", negative="negative", **kw
        ),
        (Head("anchor", 0, 2), Head("positive", 2, 4), Head("negative", 4, 6)),
        lambda s, r: None,
    ),
}


def _head_nodes(example: Example, source: str) -> tuple[list, list]:
    nodes, outputs = [], []
    for head in example.heads:
        starts = nh.from_array(np.array([head.start], np.int64))
        ends = nh.from_array(np.array([head.stop], np.int64))
        axes = nh.from_array(np.array([1], np.int64))
        names = [f"{head.name}_{k}" for k in ("starts", "ends", "axes")]
        for name, tensor in zip(names, (starts, ends, axes), strict=True):
            nodes.append(oh.make_node("Constant", [], [name], value=tensor))
        value = f"{head.name}_cols"
        nodes.append(oh.make_node("Slice", [source, *names], [value]))
        if head.activation:
            extra = {"axis": 1} if "Softmax" in head.activation else {}
            nodes.append(oh.make_node(head.activation, [value], [f"{value}_act"], **extra))
            value = f"{value}_act"
        shape = ["N", head.stop - head.start]
        if not head.vector:
            nodes.append(oh.make_node("Squeeze", [value, names[2]], [f"{value}_vec"]))
            value, shape = f"{value}_vec", ["N"]
        nodes.append(oh.make_node("Identity", [value], [head.name]))
        outputs.append(oh.make_tensor_value_info(head.name, TensorProto.FLOAT, shape))
    return nodes, outputs


def example_model(name: str, *, opset: int = 17, base: str = "identity") -> onnx.ModelProto:
    """The model a loss's example binds: ``P`` (``base="identity"``) or an MLP over ``X``
    (``base="mlp"``) sliced into the example's outputs."""
    example = EXAMPLES[name]
    if base == "mlp":
        model = mlp((3, 6, example.width), seed=1)
        nodes, outputs = _head_nodes(example, "variable")
        model.graph.node.extend(nodes)
        del model.graph.output[:]
        model.graph.output.extend(outputs)
        return model
    nodes, outputs = _head_nodes(example, "P")
    graph = oh.make_graph(
        nodes,
        f"example_{name}",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", example.width])],
        outputs,
    )
    ir = 8 if opset <= 21 else oh.find_min_ir_version_for([oh.make_opsetid("", opset)])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=ir)
