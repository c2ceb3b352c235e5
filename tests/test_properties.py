"""Hypothesis: random shapes, batch sizes and combinations of terms against numpy."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import identity_model, run_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import CLASS_LOSSES, loss, penalty, sample_data

import onnxloss
from onnxloss.examples import linear_regression

REGRESSION = [
    "squared_error",
    "absolute_error",
    "elastic",
    "huber",
    "quantile",
    "poisson",
    "bce_with_logits",
]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    names=st.lists(st.sampled_from(REGRESSION), min_size=1, max_size=3),
    coefs=st.lists(st.floats(0.05, 3.0), min_size=3, max_size=3),
    reductions=st.lists(st.sampled_from(["sum", "mean"]), min_size=3, max_size=3),
    batch=st.integers(1, 17),
    cols=st.integers(1, 4),
    opset=st.sampled_from([13, 15, 17, 18, 21]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_combinations_of_regression_losses(
    names, coefs, reductions, batch, cols, opset, weighted, seed
):
    rng = np.random.default_rng(seed)
    model = identity_model(("N", cols), opset=opset)
    p = rng.normal(size=(batch, cols)).astype(np.float32)
    y = rng.normal(size=(batch, cols)).astype(np.float32)
    if "poisson" in names:
        y = np.abs(y)
    w = rng.uniform(0.1, 2.0, size=batch).astype(np.float32) if weighted else None
    spec = onnxloss.Spec(())
    expected = 0.0
    for name, c, r in zip(names, coefs, reductions, strict=False):
        cls = onnxloss.available_losses()[name].cls
        spec = spec + c * cls(target="y", weight="w" if weighted else None, reduction=r)
        expected += c * loss(name, p.astype(np.float64), y, w, r)
    result = onnxloss.rewrite(model, spec)
    onnx.checker.check_model(result, full_check=True)
    feeds = {"P": p, "y": y}
    if weighted:
        feeds["w"] = w
    got, _ = run_model(result, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(
    name=st.sampled_from(sorted(CLASS_LOSSES)),
    batch=st.integers(1, 12),
    classes=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_random_classification_batches(name, batch, classes, seed):
    rng = np.random.default_rng(seed)
    p, y = sample_data(name, batch, classes, rng)
    model = identity_model(("N", p.shape[1]))
    result = onnxloss.rewrite(model, onnxloss.available_losses()[name].cls())
    got, _ = run_model(result, {"P": p, "label": y})
    np.testing.assert_allclose(got, loss(name, p.astype(np.float64), y), rtol=1e-4, atol=1e-6)


@SETTINGS
@given(
    n_features=st.integers(1, 6),
    n_targets=st.integers(1, 3),
    alphas=st.tuples(st.floats(0.001, 2.0), st.floats(0.001, 2.0)),
    which=st.sampled_from(["l1", "l2", "elastic_net"]),
    on=st.sampled_from([["coef"], ["intercept"], ["coef", "intercept"], ["*"]]),
    seed=st.integers(0, 2**16),
)
def test_random_penalties(n_features, n_targets, alphas, which, on, seed):
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_features, n_targets)).astype(np.float32)
    intercept = rng.normal(size=n_targets).astype(np.float32)
    model = linear_regression(n_features, n_targets, coef=coef, intercept=intercept)
    if which == "elastic_net":
        term = onnxloss.ElasticNetPenalty(on, l1=alphas[0], l2=alphas[1])
        options = {"l1": alphas[0], "l2": alphas[1]}
    else:
        term = onnxloss.available_regularizers()[which].cls(on, alphas[0])
        options = {"alpha": alphas[0]}
    result = onnxloss.rewrite(model, onnxloss.MSELoss() + term)
    X = rng.normal(size=(3, n_features)).astype(np.float32)
    y = rng.normal(size=(3, n_targets)).astype(np.float32)
    got, pred = run_model(result, {"X": X, "label": y})
    tensors = {"coef": coef, "intercept": intercept}
    chosen = [coef, intercept] if on == ["*"] else [tensors[n] for n in on]
    expected = loss("squared_error", pred.astype(np.float64), y) + penalty(which, chosen, **options)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
