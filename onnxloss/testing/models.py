"""Toy models the conformance suite rewrites.

Every toy model computes ``pred = P + offset`` with ``offset`` an all-zero initializer, so
the prediction a loss sees is exactly the array fed as ``P`` (adding zero is exact), while
the graph still has real nodes, real weights and the usual trimmings (metadata, doc
strings, producer) that a rewrite must carry over untouched. Extra initializers, which
regularizer tests penalise, can be added: those of the model's float type feed the
prediction through a product by zero (see :func:`_consume`), others are left unused.

Kinds:

``single``
    one output ``pred`` with a static batch dimension.
``multi``
    outputs ``[aux, pred]``: ``aux = Twice(P)`` through a model-local function in its own
    domain, and the output under test comes second, so a loss must bind it by name.
``dynamic``
    one output ``pred`` whose batch dimension is the symbol ``batch``.

Losses that compare several predictions get one more output per extra prediction
(``extra_outputs``): ``<name> = P_<name> + offset_<name>``, built like ``pred``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper as oh
from onnx import numpy_helper as nh

KINDS = ("single", "multi", "dynamic")
#: Batch size of the static-batch models.
STATIC_BATCH = 5
#: The symbolic batch dimension of the ``dynamic`` model.
BATCH_SYMBOL = "batch"
#: Highest ``ai.onnx`` opset onnxruntime 1.19.2 runs (and newest IR version it loads).
RUNTIME_MAX_OPSET = 21
RUNTIME_MAX_IR = 10
FUNCTION_DOMAIN = "onnxloss.testing.toy"


def ir_version_for(opset: int) -> int:
    """IR 8 where onnxruntime can run the model, else the lowest IR the opset allows."""
    if opset <= RUNTIME_MAX_OPSET:
        return 8
    return oh.find_min_ir_version_for([oh.make_opsetid("", opset)])


def toy_model(
    kind: str,
    opset: int,
    prediction_shape: Sequence[int] = (3,),
    *,
    dtype: np.dtype | type = np.float32,
    batch: int = STATIC_BATCH,
    weights: Mapping[str, np.ndarray] | None = None,
    full_batch_offset: bool = False,
    extra_outputs: Mapping[str, Sequence[int]] | None = None,
) -> onnx.ModelProto:
    """A toy model of ``kind`` (see the module docstring) for an ``ai.onnx`` ``opset``.

    Args:
        kind: ``"single"``, ``"multi"`` or ``"dynamic"``.
        opset: the model's ``ai.onnx`` opset.
        prediction_shape: shape of one sample of ``pred`` (the dimensions after the batch).
        dtype: float type of ``P``, ``pred`` and ``offset``.
        batch: batch size of the static-batch kinds.
        weights: extra initializers (name → array), for regularizers to penalise.
        full_batch_offset: ``offset`` of shape ``[batch, *prediction_shape]`` instead of
            ``prediction_shape`` (static kinds only): then the gradient with respect to
            ``offset`` is the gradient with respect to every element of the prediction.
        extra_outputs: further predictions (output name → shape of one sample), each
            ``<name> = P_<name> + offset_<name>`` from its own input, after ``pred``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown toy model kind {kind!r}; expected one of {KINDS}")
    dtype = np.dtype(dtype)
    elem = oh.np_dtype_to_tensor_dtype(dtype)
    per_sample = [int(d) for d in prediction_shape]
    batch_dim: int | str = BATCH_SYMBOL if kind == "dynamic" else batch
    shape = [batch_dim, *per_sample]
    if full_batch_offset and kind == "dynamic":
        raise ValueError("a full-batch offset needs a static batch dimension")
    offset_shape = [batch, *per_sample] if full_batch_offset else per_sample
    initializers = [nh.from_array(np.zeros(offset_shape, dtype), "offset")]
    for name, value in (weights or {}).items():
        initializers.append(nh.from_array(np.asarray(value), name))
    nodes = [oh.make_node("Add", ["P", "offset"], ["pred"], name="add_offset")]
    used = [name for name, value in (weights or {}).items() if np.asarray(value).dtype == dtype]
    if used:
        nodes = _consume(used, dtype) + [
            oh.make_node("Add", ["P", "offset"], ["shifted"], name="add_offset"),
            oh.make_node("Add", ["shifted", "weights_times_zero"], ["pred"], name="add_weights"),
        ]
    outputs = [oh.make_tensor_value_info("pred", elem, shape)]
    inputs = [oh.make_tensor_value_info("P", elem, shape)]
    for name, sample_shape in (extra_outputs or {}).items():
        extra_shape = [batch_dim, *(int(d) for d in sample_shape)]
        offset = [batch, *extra_shape[1:]] if full_batch_offset else extra_shape[1:]
        initializers.append(nh.from_array(np.zeros(offset, dtype), f"offset_{name}"))
        nodes.append(
            oh.make_node("Add", [f"P_{name}", f"offset_{name}"], [name], name=f"add_{name}")
        )
        inputs.append(oh.make_tensor_value_info(f"P_{name}", elem, extra_shape))
        outputs.append(oh.make_tensor_value_info(name, elem, extra_shape))
    functions = []
    opsets = [oh.make_opsetid("", opset)]
    if kind == "multi":
        functions.append(_twice_function(opset))
        opsets.append(oh.make_opsetid(FUNCTION_DOMAIN, 1))
        nodes.insert(0, oh.make_node("Twice", ["P"], ["aux"], domain=FUNCTION_DOMAIN, name="twice"))
        outputs.insert(0, oh.make_tensor_value_info("aux", elem, shape))
    graph = oh.make_graph(
        nodes,
        f"toy_{kind}",
        inputs,
        outputs,
        initializers,
        doc_string=f"onnxloss.testing toy model ({kind})",
    )
    model = oh.make_model(
        graph,
        opset_imports=opsets,
        ir_version=ir_version_for(opset),
        functions=functions,
        producer_name="onnxloss.testing",
        producer_version="1",
        doc_string="a toy model for conformance tests",
    )
    oh.set_model_props(model, {"toy_kind": kind})
    return model


def _consume(names: Sequence[str], dtype: np.dtype) -> list[onnx.NodeProto]:
    """Nodes computing ``weights_times_zero = 0 · Σ_k ReduceSum(w_k)``.

    Real weights feed the inference graph, and onnxruntime-training 1.19.2 relies on it: a
    weight whose only consumer is ``Mul(w, w)`` gets its gradient defined twice
    ("Duplicate definition of name (w_grad)"). Multiplying by zero keeps the prediction
    exactly ``P`` and the data term's gradient with respect to the weights exactly zero.
    """
    nodes = [
        oh.make_node("ReduceSum", [n], [f"{n}_sum"], keepdims=0, name=f"{n}_sum") for n in names
    ]
    total = f"{names[0]}_sum"
    for i, name in enumerate(names[1:]):
        nodes.append(
            oh.make_node(
                "Add", [total, f"{name}_sum"], [f"weights_sum_{i}"], name=f"weights_sum_{i}"
            )
        )
        total = f"weights_sum_{i}"
    zero = nh.from_array(np.zeros((), dtype), "zero")
    nodes.append(oh.make_node("Constant", [], ["zero"], value=zero, name="zero"))
    nodes.append(oh.make_node("Mul", [total, "zero"], ["weights_times_zero"], name="times_zero"))
    return nodes


def _twice_function(opset: int) -> onnx.FunctionProto:
    return oh.make_function(
        FUNCTION_DOMAIN,
        "Twice",
        ["x"],
        ["y"],
        [oh.make_node("Add", ["x", "x"], ["y"])],
        opset_imports=[oh.make_opsetid("", opset)],
    )


def crowded_copy(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which every name of ``names`` is already taken, by a node of
    that name producing a tensor of that name (``Identity`` of the first graph input).

    Rewriting it again shows that a term's names avoid whatever the model already holds.
    """
    crowded = onnx.ModelProto()
    crowded.CopyFrom(model)
    source = crowded.graph.input[0].name
    for name in names:
        crowded.graph.node.append(oh.make_node("Identity", [source], [name], name=name))
    return crowded
