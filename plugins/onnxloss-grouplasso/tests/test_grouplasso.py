"""onnxloss-grouplasso: the conformance suite, then what is particular to group lasso."""

from __future__ import annotations

import numpy as np
import pytest
from onnxloss_grouplasso import GroupLassoPenalty

import onnxloss
from onnxloss.examples import linear_regression
from onnxloss.testing import RegularizerConformance, run_model, toy_model, training_runtime_problem

pytest_plugins = ["onnxloss.testing"]


def group_lasso_reference(weights, alpha=1.0, groups="rows", eps=1e-8):
    """``alpha · Σ_t Σ_g sqrt(Σ_{w ∈ g} w² + eps)`` in numpy, float64."""
    total = 0.0
    for w in weights:
        w = np.asarray(w, np.float64)
        if groups == "rows":
            sums = (w.reshape(w.shape[0], -1) ** 2).sum(axis=1)
        else:
            sums = (w.reshape(-1, w.shape[-1]) ** 2).sum(axis=0)
        total += np.sqrt(sums + eps).sum()
    return alpha * total


class TestGroupLassoConformance(RegularizerConformance):
    term = GroupLassoPenalty
    distribution = "onnxloss-grouplasso"
    options = [{"alpha": 0.1}, {"alpha": 0.5, "groups": "columns"}, {"alpha": 1.0, "eps": 1e-3}]
    invalid_options = [
        {"alpha": 0.0},
        {"alpha": -1.0},
        {"groups": "diagonal"},
        {"eps": 0.0},
        {"eps": float("nan")},
    ]

    def reference(self, weights, **options):
        return group_lasso_reference(weights, **options)


def _penalty_of(weights: dict[str, np.ndarray], term) -> float:
    model = onnxloss.rewrite(
        toy_model("single", 17, weights=weights), onnxloss.MSELoss(reduction="sum") + term
    )
    p = np.zeros((5, 3), np.float32)
    return float(run_model(model, {"P": p, "label": p})[0])  # data term exactly 0


def test_worked_example():
    """W = [[3, 4], [0, 0]]: rows cost 5 + sqrt(eps) and sqrt(eps); columns 3 and 4."""
    weights = {"W": np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)}
    rows = _penalty_of(weights, GroupLassoPenalty("W", 2.0, eps=1e-6))
    assert rows == pytest.approx(2.0 * (np.sqrt(25 + 1e-6) + 1e-3), rel=1e-6)
    columns = _penalty_of(weights, GroupLassoPenalty("W", 2.0, groups="columns", eps=1e-6))
    assert columns == pytest.approx(2.0 * (np.sqrt(9 + 1e-6) + np.sqrt(16 + 1e-6)), rel=1e-6)


def test_single_element_groups_approach_l1():
    """On a vector every element is its own group: sqrt(w² + eps) ≈ |w|."""
    w = np.array([0.5, -2.0, 3.0, -0.25], np.float32)
    got = _penalty_of({"v": w}, GroupLassoPenalty("v", 0.3, eps=1e-12))
    assert got == pytest.approx(0.3 * np.abs(w).sum(), rel=1e-6)


def test_scalar_tensor_is_refused_naming_it():
    weights = {"scale": np.array(2.0, np.float32)}
    with pytest.raises(onnxloss.PenaltyError, match="'scale' is a scalar"):
        _penalty_of(weights, GroupLassoPenalty("scale"))


def test_through_add_loss_output_style_names():
    """Users reach the plugin through the registry, like a built-in penalty."""
    reg = onnxloss.available_regularizers()["group_lasso"]
    assert reg.cls is GroupLassoPenalty
    assert reg.plugin.distribution == "onnxloss-grouplasso"


def test_training_shrinks_irrelevant_feature_rows():
    """Fit y = X[:, :2] @ B (3 targets) from 6 noisy features: with group lasso on the rows
    of coef, the 4 rows of irrelevant features shrink far more than without it, while the
    2 relevant rows keep most of their size."""
    if training_runtime_problem():
        pytest.skip(training_runtime_problem())
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    B = rng.normal(size=(2, 3)) * 2.0
    y = (X[:, :2] @ B + 0.5 * rng.normal(size=(400, 3))).astype(np.float32)

    def fit(penalty):
        spec = onnxloss.MSELoss(reduction="mean")
        if penalty is not None:
            spec = spec + penalty
        model = onnxloss.rewrite(linear_regression(6, 3), spec)
        trainer = OrtGradientOptimizer(
            model,
            ["coef", "intercept"],
            learning_rate=0.02,
            optimizer="adamw",
            batch_size=50,
            max_iter=60,
            random_state=0,
        )
        trainer.fit(X, y)
        return np.linalg.norm(trainer.get_state()["coef"], axis=1)

    plain = fit(None)
    grouped = fit(GroupLassoPenalty("coef", 0.5, eps=1e-6))
    assert grouped[2:].max() < 0.25 * plain[2:].max(), (plain, grouped)
    assert grouped[:2].min() > 0.5 * plain[:2].min(), (plain, grouped)
