"""Shape inference through the ``ai.onnx.ml`` operators that onnx's own inference leaves
untyped.

onnx infers ``ArrayFeatureExtractor``, ``Binarizer``, ``OneHotEncoder``, ``LabelEncoder``,
``CategoryMapper``, ``LinearClassifier``... but not ``Scaler``, ``Normalizer``,
``Imputer`` or ``LinearRegressor``: every tensor after such a node loses its type and
shape, and the rules that need the number of features (``LinearClassifierToMatMul`` after
a ``StandardScaler``) would leave their node alone. :func:`infer_shapes` runs onnx's
inference, declares what these operators give (below), and runs it again, until nothing
new is learnt.

==================== ===========================================================
operator             output
==================== ===========================================================
Scaler, Normalizer   float32, the input's shape (both compute in float32)
Imputer              the input's type and shape
LinearRegressor      float32 ``[N, targets]`` (``[1, targets]`` for a 1-D input)
==================== ===========================================================

Only the main graph is completed (scikit-learn converters put these operators there).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ..gradient_ops import ML_DOMAIN
from ..tensor_info import TensorInfo


def _same_shape_float(node: onnx.NodeProto, x: TensorInfo) -> list[TensorInfo]:
    return [TensorInfo(node.output[0], TensorProto.FLOAT, x.shape)]


def _same_type(node: onnx.NodeProto, x: TensorInfo) -> list[TensorInfo]:
    return [x.renamed(node.output[0])]


def _linear_regressor(node: onnx.NodeProto, x: TensorInfo) -> list[TensorInfo]:
    targets = next((a.i for a in node.attribute if a.name == "targets"), 1)
    if x.rank == 1:
        return [TensorInfo(node.output[0], TensorProto.FLOAT, (1, targets))]
    if x.rank == 2:
        return [TensorInfo(node.output[0], TensorProto.FLOAT, (x.shape[0], targets))]
    return []


#: op_type -> the infos of its outputs, from the info of its first input.
ML_OUTPUT_RULES = {
    "Scaler": _same_shape_float,
    "Normalizer": _same_shape_float,
    "Imputer": _same_type,
    "LinearRegressor": _linear_regressor,
}


def _known(graph: onnx.GraphProto) -> dict[str, TensorInfo]:
    infos = {}
    for group in (graph.input, graph.value_info, graph.output):
        for vi in group:
            info = TensorInfo.from_value_info(vi)
            if info is not None and info.elem_type and info.shape is not None:
                infos[vi.name] = info
    for t in graph.initializer:
        infos[t.name] = TensorInfo.from_initializer(t)
    return infos


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model)`` completed through the ML operators of
    :data:`ML_OUTPUT_RULES`; returns a new model (raises what onnx's inference raises)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    pending = [
        n
        for n in inferred.graph.node
        if n.domain == ML_DOMAIN and n.op_type in ML_OUTPUT_RULES and n.input and n.output
    ]
    # Each round can only unblock nodes further down: at most one round per ML node.
    for _ in range(len(pending)):
        known = _known(inferred.graph)
        learnt = []
        for node in pending:
            x = known.get(node.input[0])
            if x is None or any(o in known for o in node.output if o):
                continue
            learnt += [i.value_info() for i in ML_OUTPUT_RULES[node.op_type](node, x)]
        if not learnt:
            break
        untyped = {vi.name for vi in learnt}
        kept = [vi for vi in inferred.graph.value_info if vi.name not in untyped]
        del inferred.graph.value_info[:]
        inferred.graph.value_info.extend(kept + learnt)
        inferred = onnx.shape_inference.infer_shapes(inferred)
    return inferred
