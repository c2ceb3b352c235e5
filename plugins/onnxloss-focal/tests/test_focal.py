"""onnxloss-focal: the conformance suite, then what is particular to the focal loss."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnxloss_focal import SigmoidFocalLoss

import onnxloss
from onnxloss.testing import (
    LossConformance,
    onnxruntime_gradients,
    run_model,
    toy_model,
    training_runtime_problem,
)

pytest_plugins = ["onnxloss.testing"]


def focal_reference(z, y, alpha=0.25, gamma=2.0):
    """torchvision's ``sigmoid_focal_loss(z, y, alpha, gamma, reduction="none")`` in numpy,
    float64, with ``alpha=None`` for its ``alpha=-1``."""
    p = 1.0 / (1.0 + np.exp(-z))
    ce = np.logaddexp(0.0, z) - y * z
    p_t = p * y + (1.0 - p) * (1.0 - y)
    loss = ce * (1.0 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * y + (1.0 - alpha) * (1.0 - y))
    return loss


class TestFocalConformance(LossConformance):
    term = SigmoidFocalLoss
    distribution = "onnxloss-focal"
    options = [{}, {"alpha": None, "gamma": 0.0}, {"alpha": 0.75, "gamma": 0.5}]
    invalid_options = [
        {"gamma": -1.0},
        {"alpha": 1.5},
        {"alpha": -1},
        {"alpha": "0.25"},
        {"gamma": float("inf")},
    ]

    def reference(self, prediction, target, **options):
        return focal_reference(prediction, target, **options)

    def sample(self, rng, shape, **options):
        logits = rng.normal(scale=2.0, size=shape)
        labels = rng.integers(0, 2, size=shape).astype(np.float64)
        return logits, labels


def _loss_model(term, shape=("N", 1), elem=TensorProto.FLOAT):
    graph = oh.make_graph(
        [oh.make_node("Identity", ["z"], ["logits"])],
        "logits",
        [oh.make_tensor_value_info("z", elem, list(shape))],
        [oh.make_tensor_value_info("logits", elem, list(shape))],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    return onnxloss.rewrite(model, term)


def test_worked_example():
    """z = 0, y = 1: p = 1/2, BCE = log 2, (1 - p_t)² = 1/4, α_t = 1/4."""
    model = _loss_model(SigmoidFocalLoss(reduction="sum"))
    got = run_model(
        model, {"z": np.zeros((1, 1), np.float32), "label": np.ones((1, 1), np.float32)}
    )
    assert got[0] == pytest.approx(0.25 * 0.25 * np.log(2.0), rel=1e-6)


def test_gamma_zero_without_alpha_is_bce_with_logits():
    rng = np.random.default_rng(1)
    feeds = {
        "z": rng.normal(scale=3.0, size=(64, 1)).astype(np.float32),
        "label": rng.uniform(0.0, 1.0, size=(64, 1)).astype(np.float32),
    }
    focal = run_model(_loss_model(SigmoidFocalLoss(alpha=None, gamma=0.0)), feeds)[0]
    bce = run_model(_loss_model(onnxloss.BCEWithLogitsLoss()), feeds)[0]
    np.testing.assert_allclose(focal, bce, rtol=1e-6)


def test_soft_labels_match_reference():
    rng = np.random.default_rng(2)
    z = rng.normal(scale=2.0, size=(32, 3)).astype(np.float32)
    y = rng.uniform(0.0, 1.0, size=(32, 3)).astype(np.float32)
    got = run_model(_loss_model(SigmoidFocalLoss(gamma=1.5), ("N", 3)), {"z": z, "label": y})[0]
    expected = focal_reference(z.astype(np.float64), y.astype(np.float64), gamma=1.5)
    assert got == pytest.approx(expected.sum(axis=1).mean(), rel=1e-5)


# onnx.reference's Sigmoid evaluates both branches of a np.where: overflow warnings only.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_extreme_logits_stay_finite_and_exact(gamma):
    """Confident predictions: right ones cost ~0, wrong ones ~α_t·|z| (BCE ≈ |z|,
    1 - p_t ≈ 1). A naive log(sigmoid(z)) would give inf here, 1 - p would give 0^γ."""
    z = np.array([[100.0], [-100.0], [100.0], [-100.0], [1e4], [-1e4]], np.float32)
    y = np.array([[1.0], [0.0], [0.0], [1.0], [1.0], [1.0]], np.float32)
    model = _loss_model(SigmoidFocalLoss(alpha=0.25, gamma=gamma, reduction="sum"))
    per_sample = np.zeros(6)
    for i in range(6):
        per_sample[i] = run_model(model, {"z": z[i : i + 1], "label": y[i : i + 1]})[0]
    expected = [0.0, 0.0, 0.75 * 100.0, 0.25 * 100.0, 0.0, 0.25 * 1e4]
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6, atol=1e-30)


def test_gradients_finite_at_extreme_logits():
    """onnxruntime-training's gradient stays finite where p_t rounds to 1 (γ < 1 included)."""
    problem = training_runtime_problem()
    if problem:
        pytest.skip(problem)
    model = toy_model("single", 17, (2,), full_batch_offset=True)
    loss_model = onnxloss.rewrite(model, SigmoidFocalLoss(gamma=0.5))
    z = np.array([[100, -100], [100, -100], [1e4, 3], [-1e4, -3], [30, -30]], np.float32)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], np.float32)
    loss, grads = onnxruntime_gradients(loss_model, {"P": z, "label": y}, ["offset"])
    assert np.isfinite(loss) and np.isfinite(grads["offset"]).all()
    # Wrong and confident: the loss is ~α_t·|z| / N, so the gradient is ±α_t / N (z = 100,
    # y = 0: +0.75/5; z = -100, y = 1: -0.25/5); right and confident: ~0.
    assert grads["offset"][1, 0] == pytest.approx(0.75 / 5, rel=1e-5)
    assert grads["offset"][1, 1] == pytest.approx(-0.25 / 5, rel=1e-5)
    assert abs(grads["offset"][0, 0]) < 1e-20


def test_registered_name_and_options_from_add_loss_output():
    """Users reach the plugin by name, as with any built-in loss."""
    base = toy_model("dynamic", 17, (1,))
    model = onnxloss.add_loss_output(base, score_name="sigmoid_focal", gamma=1.0, alpha=None)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=(7, 1)).astype(np.float32)
    got = run_model(model, {"P": z, "label": y})[0]
    expected = focal_reference(z.astype(np.float64), y, alpha=None, gamma=1.0).mean()
    assert got == pytest.approx(expected, rel=1e-5)
    assert onnxloss.read_metadata(model)["terms"] == [
        "SigmoidFocalLoss(output=None, target='label', reduction='mean', alpha=None, gamma=1.0)"
    ]


def test_float64_and_float16_outputs():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(8, 2))
    y = rng.integers(0, 2, size=(8, 2)).astype(float)
    expected = focal_reference(z, y).sum(axis=1).mean()
    for elem, dtype, rtol in (
        (TensorProto.DOUBLE, np.float64, 1e-12),
        (TensorProto.FLOAT16, np.float16, 3e-3),
    ):
        model = _loss_model(SigmoidFocalLoss(), ("N", 2), elem)
        onnx.checker.check_model(model, full_check=True)
        feeds = {"z": z.astype(dtype), "label": y.astype(dtype)}
        got = run_model(model, feeds)[0]
        assert got.dtype == dtype
        exact = focal_reference(z.astype(dtype).astype(float), y).sum(axis=1).mean()
        assert float(got) == pytest.approx(exact if dtype == np.float16 else expected, rel=rtol)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_gradient_at_a_zero_logit_is_exact(gamma):
    """At z = 0 the loss's gradient is torchvision's: with p = 1/2 and γ = 0 it is
    α_t·(1/2 - y); a softplus written as Relu(z) + log(1 + exp(-|z|)) would give α_t·(-y),
    the runtime's Relu and Abs having a gradient of 0 at 0."""
    problem = training_runtime_problem()
    if problem:
        pytest.skip(problem)
    model = toy_model("single", 17, (2,), full_batch_offset=True)
    loss_model = onnxloss.rewrite(model, SigmoidFocalLoss(alpha=0.25, gamma=gamma))
    z = np.zeros((5, 2), np.float32)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], np.float32)
    _, grads = onnxruntime_gradients(loss_model, {"P": z, "label": y}, ["offset"])
    alpha_t = np.where(y == 1, 0.25, 0.75)
    # At p = 1/2: d/dz [(1 - p_t)^γ BCE] = (1/2)^γ (1/2 - y) + BCE·γ(1/2)^(γ-1)·d(1-p_t)/dz,
    # with BCE = log 2 and d(1 - p_t)/dz = (1 - 2y)/4.
    bce = np.log(2.0)
    d = 0.5**gamma * (0.5 - y)
    if gamma:
        d = d + bce * gamma * 0.5 ** (gamma - 1) * (1 - 2 * y) / 4
    np.testing.assert_allclose(grads["offset"], alpha_t * d / 5, rtol=1e-5, atol=1e-7)
