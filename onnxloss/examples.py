"""Small models built with onnx.helper, used by the demo, the docs and the tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh


def linear_regression(
    n_features: int,
    n_targets: int = 1,
    *,
    opset: int = 17,
    ir_version: int = 8,
    coef: np.ndarray | None = None,
    intercept: np.ndarray | None = None,
    dtype=np.float32,
) -> onnx.ModelProto:
    """``variable = X @ coef + intercept``: input ``X [N, n_features]``, output
    ``variable [N, n_targets]``, initializers ``coef`` and ``intercept`` (zeros unless given).
    """
    dtype = np.dtype(dtype)
    elem = oh.np_dtype_to_tensor_dtype(dtype)
    if coef is None:
        coef = np.zeros((n_features, n_targets), dtype)
    if intercept is None:
        intercept = np.zeros(n_targets, dtype)
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["X", "coef"], ["xw"], name="matmul"),
            oh.make_node("Add", ["xw", "intercept"], ["variable"], name="add"),
        ],
        "linear_regression",
        [oh.make_tensor_value_info("X", elem, ["N", n_features])],
        [oh.make_tensor_value_info("variable", elem, ["N", n_targets])],
        [
            nh.from_array(np.asarray(coef, dtype).reshape(n_features, n_targets), "coef"),
            nh.from_array(np.asarray(intercept, dtype).reshape(n_targets), "intercept"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=ir_version)


def mlp(
    layer_sizes: tuple[int, ...],
    *,
    opset: int = 17,
    ir_version: int = 8,
    seed: int = 0,
    activation: str = "Relu",
) -> onnx.ModelProto:
    """A multi-layer perceptron ``[N, sizes[0]] → ... → [N, sizes[-1]]`` with ``activation``
    between layers and Glorot-uniform weights ``W0, b0, W1, b1, ...``; output ``variable``.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "X"
    last = len(layer_sizes) - 2
    for i, (a, b) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:], strict=True)):
        bound = np.sqrt(6.0 / (a + b))
        inits.append(nh.from_array(rng.uniform(-bound, bound, (a, b)).astype(np.float32), f"W{i}"))
        inits.append(nh.from_array(np.zeros(b, np.float32), f"b{i}"))
        out = "variable" if i == last else f"h{i}"
        pre = f"z{i}" if i != last else out
        nodes.append(oh.make_node("MatMul", [prev, f"W{i}"], [f"xw{i}"], name=f"matmul{i}"))
        nodes.append(oh.make_node("Add", [f"xw{i}", f"b{i}"], [pre], name=f"add{i}"))
        if i != last:
            nodes.append(oh.make_node(activation, [pre], [out], name=f"act{i}"))
        prev = out
    graph = oh.make_graph(
        nodes,
        "mlp",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", layer_sizes[0]])],
        [oh.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", layer_sizes[-1]])],
        inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=ir_version)
