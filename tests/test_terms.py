"""The term algebra: +, scalar * and /, and what a Spec holds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_model

import onnxloss
from onnxloss import L1Loss, L2Penalty, MSELoss, Spec
from onnxloss.examples import linear_regression


def test_issue_example_composes():
    spec = 0.1 * L1Loss() + 0.9 * MSELoss() + L2Penalty("coef", 0.01)
    assert isinstance(spec, Spec)
    assert [c for c, _ in spec] == [0.1, 0.9, 1.0]
    assert [type(t).__name__ for _, t in spec] == ["L1Loss", "MSELoss", "L2Penalty"]
    assert len(spec.losses) == 2 and len(spec.regularizers) == 1


def test_scaling_distributes_and_division():
    spec = 2 * (MSELoss() + 0.5 * L1Loss()) / 4
    assert [c for c, _ in spec] == [0.5, 0.25]
    assert [c for c, _ in -MSELoss()] == [-1.0]


def test_python_sum_of_terms():
    spec = sum([MSELoss(), L1Loss()])
    assert [type(t).__name__ for _, t in spec] == ["MSELoss", "L1Loss"]


def test_terms_cannot_multiply_each_other():
    with pytest.raises(onnxloss.CoefficientError, match="scaled by numbers"):
        MSELoss() * L1Loss()
    with pytest.raises(onnxloss.CoefficientError, match="divide a term by zero"):
        MSELoss() / 0


def test_repr_and_equality():
    assert repr(MSELoss(reduction="sum")) == "MSELoss(output=None, reduction='sum')"
    assert MSELoss() == MSELoss() and MSELoss() != MSELoss(reduction="sum")
    assert repr(0.5 * MSELoss() + L2Penalty("w")) == (
        "0.5 * MSELoss(output=None, reduction='mean') + L2Penalty(tensors='w', alpha=1.0)"
    )


def test_composed_spec_evaluates_to_the_weighted_sum():
    coef = np.array([[1.0], [-1.0]], np.float32)
    model = linear_regression(2, coef=coef)
    spec = 0.1 * L1Loss(reduction="sum") + 0.9 * MSELoss(reduction="sum") + L2Penalty("coef", 0.01)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2)).astype(np.float32)
    y = rng.normal(size=(5, 1)).astype(np.float32)
    got, pred = run_model(onnxloss.rewrite(model, spec), {"X": X, "label": y})
    d = pred.astype(np.float64) - y
    expected = 0.1 * np.abs(d).sum() + 0.9 * (d**2).sum() + 0.01 * (coef**2).sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_spec_by_name_and_by_list():
    model = linear_regression(2)
    by_name = onnxloss.rewrite(model, "mse")
    by_term = onnxloss.rewrite(model, MSELoss())
    assert by_name.graph.SerializeToString() == by_term.graph.SerializeToString()
    by_list = onnxloss.rewrite(model, [MSELoss(), L2Penalty("coef")])
    by_sum = onnxloss.rewrite(model, MSELoss() + L2Penalty("coef"))
    assert by_list.SerializeToString() == by_sum.SerializeToString()


@pytest.mark.parametrize(
    "make",
    [
        lambda: MSELoss(output=1.5),
        lambda: MSELoss(target=""),
        lambda: MSELoss(weight=3),
        lambda: L2Penalty([]),
        lambda: L2Penalty(["ok", ""]),
    ],
)
def test_constructor_arguments_are_checked(make):
    with pytest.raises(onnxloss.OnnxLossError):
        make()
