"""Regularizers run as graphs and compared with numpy, alone and beside a loss."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_model
from reference import loss, penalty

import onnxloss
from onnxloss.examples import linear_regression, mlp

OPSETS = [13, 17, 21, onnxloss.MAX_OPSET]


def _ir(opset):
    return 8 if opset <= 21 else 10


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(
    ("term", "name", "options"),
    [
        (onnxloss.L1Penalty("coef", 0.3), "l1", {"alpha": 0.3}),
        (onnxloss.L2Penalty("coef", 0.01), "l2", {"alpha": 0.01}),
        (
            onnxloss.ElasticNetPenalty("coef", l1=0.2, l2=0.05),
            "elastic_net",
            {"l1": 0.2, "l2": 0.05},
        ),
        (onnxloss.ElasticNetPenalty("coef", l2=0.05), "elastic_net", {"l2": 0.05}),
    ],
    ids=["l1", "l2", "elastic_net", "elastic_net_l2_only"],
)
def test_penalty_adds_to_loss(term, name, options, opset):
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(3, 2)).astype(np.float32)
    intercept = rng.normal(size=2).astype(np.float32)
    model = linear_regression(
        3, 2, opset=opset, ir_version=_ir(opset), coef=coef, intercept=intercept
    )
    result = onnxloss.rewrite(model, onnxloss.MSELoss(reduction="sum") + term)
    X = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    got, pred = run_model(result, {"X": X, "label": y})
    expected = loss("squared_error", pred.astype(np.float64), y, reduction="sum")
    expected += penalty(name, [coef], **options)
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_glob_matches_every_weight_matrix():
    model = mlp((4, 5, 3, 1), seed=2)
    weights = {t.name: onnx_array(t) for t in model.graph.initializer}
    result = onnxloss.rewrite(model, onnxloss.MSELoss() + onnxloss.L2Penalty("W*", 0.1))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    got, pred = run_model(result, {"X": X, "label": y})
    matrices = [weights[n] for n in ("W0", "W1", "W2")]
    expected = loss("squared_error", pred.astype(np.float64), y) + penalty(
        "l2", matrices, alpha=0.1
    )
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_penalty_on_several_names_and_scaling():
    model = mlp((2, 3, 1), seed=3)
    w = {t.name: onnx_array(t) for t in model.graph.initializer}
    spec = onnxloss.MSELoss() + 2.0 * onnxloss.L1Penalty(["W0", "W1"], 0.5)
    result = onnxloss.rewrite(model, spec)
    X = np.ones((2, 2), np.float32)
    y = np.zeros((2, 1), np.float32)
    got, pred = run_model(result, {"X": X, "label": y})
    expected = loss("squared_error", pred.astype(np.float64), y)
    expected += 2.0 * penalty("l1", [w["W0"], w["W1"]], alpha=0.5)
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_float64_weight_penalty_cast_to_float_loss():
    """A double tensor penalised beside a float loss is cast, so the loss stays float."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    coef = np.array([[1.5], [-2.0]])
    graph = oh.make_graph(
        [
            oh.make_node("Cast", ["coef64"], ["coef"], to=TensorProto.FLOAT),
            oh.make_node("MatMul", ["X", "coef"], ["y"]),
        ],
        "g",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [nh.from_array(coef, "coef64")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    result = onnxloss.rewrite(model, onnxloss.MSELoss() + onnxloss.L2Penalty("coef64", 0.1))
    X = np.ones((3, 2), np.float32)
    y = np.zeros((3, 1), np.float32)
    got, pred = run_model(result, {"X": X, "label": y})
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, loss("squared_error", pred, y) + 0.1 * (coef**2).sum(), rtol=1e-6
    )


def onnx_array(tensor):
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)
