"""The original library's add_loss_output, reproduced on a linear regression graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import identity_model, run_model
from reference import loss

import onnxloss
from onnxloss import add_loss_output
from onnxloss.examples import linear_regression

COEF = np.array([[0.5], [-1.0], [2.0]], np.float32)
INTERCEPT = np.array([0.25], np.float32)


@pytest.fixture
def lr_model():
    return linear_regression(3, coef=COEF, intercept=INTERCEPT)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.normal(size=(10, 1)).astype(np.float32)
    w = rng.uniform(0.2, 2.0, size=10).astype(np.float32)
    return X, y, w


def test_seed_call_as_written(lr_model, data):
    """add_loss_output(onx, weight_name='weight', score_name='elastic', l1_weight=0.1,
    l2_weight=0.9, penalty={'coef': {'l2': 0.01}})."""
    X, y, w = data
    onx = add_loss_output(
        lr_model,
        weight_name="weight",
        score_name="elastic",
        l1_weight=0.1,
        l2_weight=0.9,
        penalty={"coef": {"l2": 0.01}},
    )
    assert [i.name for i in onx.graph.input] == ["X", "label", "weight"]
    assert [o.name for o in onx.graph.output] == ["loss", "variable"]
    assert onx.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(onx.graph.output[0].type.tensor_type.shape.dim) == 0
    got, pred = run_model(onx, {"X": X, "label": y, "weight": w})
    d = (X.astype(np.float64) @ COEF + INTERCEPT) - y
    expected = (w * (0.1 * np.abs(d) + 0.9 * d**2).sum(axis=1)).sum() + 0.01 * (COEF**2).sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(pred, X @ COEF + INTERCEPT, rtol=1e-6)


@pytest.mark.parametrize(
    ("score", "name", "options"),
    [
        ("squared_error", "squared_error", {}),
        ("l2", "squared_error", {}),
        ("absolute_error", "absolute_error", {}),
        ("l1", "absolute_error", {}),
        ("elastic", "elastic", {}),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_seed_regression_scores_are_sums(lr_model, data, score, name, options, weighted):
    X, y, w = data
    onx = add_loss_output(lr_model, score_name=score, weight_name="weight" if weighted else None)
    feeds = {"X": X, "label": y}
    if weighted:
        feeds["weight"] = w
    got, pred = run_model(onx, feeds)
    expected = loss(name, pred.astype(np.float64), y, w if weighted else None, "sum", **options)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("label_shape", [(8,), (8, 1)])
@pytest.mark.parametrize("weighted", [False, True])
def test_seed_log_loss_is_a_weighted_mean(label_shape, weighted):
    rng = np.random.default_rng(1)
    p = rng.dirichlet([1.0, 1.0], size=8).astype(np.float32)
    p[0] = [1.0, 0.0]  # clipping at eps keeps log finite
    y = rng.integers(0, 2, size=label_shape).astype(np.int64)
    w = rng.uniform(0.5, 1.5, size=8).astype(np.float32)
    options = {"target_rank": len(label_shape)}
    onx = add_loss_output(
        identity_model(("N", 2)),
        score_name="log",
        weight_name="weight" if weighted else None,
        eps=1e-6,
        **options,
    )
    feeds = {"P": p, "label": y}
    if weighted:
        feeds["weight"] = w
    got, _ = run_model(onx, feeds)
    c = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    c /= c.sum(axis=1, keepdims=True)
    ll = np.log(c[np.arange(8), y.ravel()])
    expected = -(ll * (w if weighted else 1)).sum() / 8
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_scalar_penalty_is_l2(lr_model, data):
    X, y, _ = data
    onx = add_loss_output(lr_model, penalty={"coef": 0.1, "intercept": {"l1": 0.5}})
    got, pred = run_model(onx, {"X": X, "label": y})
    expected = ((pred.astype(np.float64) - y) ** 2).sum() + 0.1 * (COEF**2).sum()
    expected += 0.5 * np.abs(INTERCEPT).sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_output_index_by_position_and_name():
    from onnx import TensorProto
    from onnx import helper as oh

    graph = oh.make_graph(
        [oh.make_node("Identity", ["P"], ["a"]), oh.make_node("Neg", ["P"], ["b"])],
        "two",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 1])],
        [
            oh.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 1]),
        ],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    p = np.array([[1.0], [2.0]], np.float32)
    y = np.zeros((2, 1), np.float32)
    by_pos = add_loss_output(model, output_index=1)
    by_name = add_loss_output(model, output_index="b")
    assert by_pos.graph.SerializeToString() == by_name.graph.SerializeToString()
    got, a, b = run_model(by_pos, {"P": p, "label": y})
    assert got == pytest.approx(5.0)
    assert [o.name for o in by_pos.graph.output] == ["loss", "a", "b"]


def test_other_registered_loss_with_options(lr_model, data):
    X, y, w = data
    onx = add_loss_output(lr_model, score_name="huber", delta=0.5, weight_name="weight")
    got, pred = run_model(onx, {"X": X, "label": y, "weight": w})
    expected = loss("huber", pred.astype(np.float64), y, w, "mean", delta=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_custom_names(lr_model, data):
    X, y, _ = data
    onx = add_loss_output(lr_model, loss_name="objective", label_name="target")
    assert onx.graph.output[0].name == "objective"
    assert onx.graph.input[1].name == "target"
    got, pred = run_model(onx, {"X": X, "target": y})
    np.testing.assert_allclose(got, ((pred - y) ** 2).sum(), rtol=1e-5)


def test_accepts_a_path(tmp_path, lr_model, data):
    path = tmp_path / "lr.onnx"
    onnx.save(lr_model, path)
    assert (
        add_loss_output(str(path)).SerializeToString()
        == add_loss_output(lr_model).SerializeToString()
    )


def test_path_to_path(tmp_path, lr_model, data):
    src, dst = tmp_path / "lr.onnx", tmp_path / "lr_loss.onnx"
    onnx.save(lr_model, src)
    onnxloss.compat.add_loss_output_file(src, dst, score_name="elastic", penalty={"coef": 0.1})
    expected = add_loss_output(lr_model, score_name="elastic", penalty={"coef": 0.1})
    assert onnx.load(dst).SerializeToString() == expected.SerializeToString()
