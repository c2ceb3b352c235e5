"""The built-in losses and regularizers run the conformance suite third-party plugins run.

Each class states a term, its option sets and a numpy reference (from tests/reference.py);
the checks themselves come from :mod:`onnxloss.testing`.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import elementwise, penalty, sample_data

import onnxloss
from onnxloss.testing import BUILTIN, LossConformance, RegularizerConformance

pytest_plugins = ["onnxloss.testing"]


class BuiltinLoss(LossConformance):
    """A built-in loss, checked against ``reference.elementwise``."""

    distribution = BUILTIN

    def reference(self, prediction, target, **options):
        return elementwise(self.term.name, prediction, target, **options)

    def sample(self, rng, shape, **options):
        p, y = sample_data(self.term.name, shape[0], shape[1], rng, np.float64, **options)
        if options.get("target_rank") == 2:
            y = y.reshape(-1, 1)
        return p, y


class BuiltinPenalty(RegularizerConformance):
    distribution = BUILTIN

    def reference(self, weights, **options):
        return penalty(self.term.name, weights, **options)


class TestMSELoss(BuiltinLoss):
    term = onnxloss.MSELoss


class TestL1Loss(BuiltinLoss):
    term = onnxloss.L1Loss


class TestElasticLoss(BuiltinLoss):
    term = onnxloss.ElasticLoss
    options = [{}, {"l1_weight": 0.2, "l2_weight": 1.5}]
    invalid_options = [{"l1_weight": 0.0, "l2_weight": 0.0}, {"l1_weight": -1.0}]


class TestHuberLoss(BuiltinLoss):
    term = onnxloss.HuberLoss
    options = [{}, {"delta": 0.3}]
    invalid_options = [{"delta": 0.0}, {"delta": float("nan")}]


class TestPoissonNLLLoss(BuiltinLoss):
    term = onnxloss.PoissonNLLLoss
    options = [{}, {"log_input": False, "eps": 1e-6}]
    invalid_options = [{"log_input": "yes"}, {"eps": 0.0}]


class TestQuantileLoss(BuiltinLoss):
    term = onnxloss.QuantileLoss
    options = [{}, {"quantile": 0.9}]
    invalid_options = [{"quantile": 1.0}, {"quantile": 0.0}]


class TestBCEWithLogitsLoss(BuiltinLoss):
    term = onnxloss.BCEWithLogitsLoss


class TestBCELoss(BuiltinLoss):
    term = onnxloss.BCELoss
    options = [{}, {"eps": 1e-3}]
    invalid_options = [{"eps": 0.5}]


class TestCrossEntropyLoss(BuiltinLoss):
    term = onnxloss.CrossEntropyLoss
    options = [{}, {"label_smoothing": 0.1}, {"target_rank": 2}]
    invalid_options = [{"label_smoothing": 1.0}, {"target_rank": 3}]
    invalid_prediction_shapes = [(), (2, 3)]


class TestLogLoss(BuiltinLoss):
    term = onnxloss.LogLoss
    options = [{}, {"eps": 1e-3}]
    invalid_options = [{"eps": 0.0}]
    invalid_prediction_shapes = [(), (2, 3)]


class TestBinaryLogLoss(BuiltinLoss):
    term = onnxloss.BinaryLogLoss
    prediction_shape = (2,)
    invalid_prediction_shapes = [(3,)]


class TestL1Penalty(BuiltinPenalty):
    term = onnxloss.L1Penalty
    options = [{"alpha": 0.5}]
    invalid_options = [{"alpha": 0.0}, {"alpha": -1.0}]


class TestL2Penalty(BuiltinPenalty):
    term = onnxloss.L2Penalty
    options = [{"alpha": 0.5}]
    invalid_options = [{"alpha": 0.0}]


class TestElasticNetPenalty(BuiltinPenalty):
    term = onnxloss.ElasticNetPenalty
    options = [{"l1": 0.3, "l2": 0.7}, {"l1": 0.0, "l2": 0.5}]
    invalid_options = [{"l1": 0.0, "l2": 0.0}, {"l1": -1.0, "l2": 1.0}]


def test_every_builtin_term_runs_the_suite(fresh_registry):
    """No built-in loss or regularizer escapes the suite."""
    covered = {
        cls.term
        for cls in globals().values()
        if isinstance(cls, type) and cls.__name__.startswith("Test") and hasattr(cls, "term")
    }
    registered = {
        reg.cls
        for kind in ("loss", "regularizer")
        for reg in fresh_registry.registrations(kind).values()
        if reg.plugin.builtin
    }
    assert registered <= covered, sorted(c.__name__ for c in registered - covered)


@pytest.mark.parametrize("name", ["squared_error", "l2"])
def test_registry_check_accepts_an_alias_lookup(onnxloss_registry, name):
    """The fixture's registry is the process-wide one during the test."""
    assert onnxloss.get_registry() is onnxloss_registry
    assert onnxloss_registry.lookup("loss", name).cls is onnxloss.MSELoss
