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
    invalid_options = [{"label_smoothing": 1.0}, {"target_rank": 3}, {"ignore_index": 1.5}]
    invalid_prediction_shapes = [()]


class TestLogLoss(BuiltinLoss):
    term = onnxloss.LogLoss
    options = [{}, {"eps": 1e-3}]
    invalid_options = [{"eps": 0.0}]
    invalid_prediction_shapes = [(), (2, 3)]


class TestBinaryLogLoss(BuiltinLoss):
    term = onnxloss.BinaryLogLoss
    prediction_shape = (2,)
    invalid_prediction_shapes = [(3,)]


# -- the PyTorch losses added with their options (numpy references from their formulas) -----
def _softplus(x):
    return np.logaddexp(0.0, x)


def _log_softmax(x, axis=1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _class_labels(rng, n, classes, ignore=None, shape=()):
    y = rng.integers(0, classes, size=(n, *shape))
    if ignore is not None:
        y.reshape(-1)[::3] = ignore  # every third label is ignored
    return y


class TorchLoss(LossConformance):
    """A PyTorch loss of the built-in plugins, with its own numpy reference."""

    distribution = BUILTIN


class TestSmoothL1Loss(TorchLoss):
    term = onnxloss.SmoothL1Loss
    options = [{}, {"beta": 0.4}, {"beta": 0.0}]
    invalid_options = [{"beta": -1.0}]

    def reference(self, prediction, target, beta=1.0):
        a = np.abs(prediction - target)
        return a if beta == 0 else np.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta)


class TestPoissonNLLLossFull(TorchLoss):
    term = onnxloss.PoissonNLLLoss
    options = [{"full": True}, {"full": True, "log_input": False}]
    invalid_options = [{"full": 1}]

    def sample(self, rng, shape, log_input=True, **options):
        p = rng.normal(size=shape) if log_input else rng.uniform(0.1, 4.0, size=shape)
        return p, rng.poisson(2.0, size=shape).astype(float)

    def reference(self, prediction, target, log_input=True, full=False, eps=1e-8):
        if log_input:
            e = np.exp(prediction) - target * prediction
        else:
            e = prediction - target * np.log(prediction + eps)
        y = np.maximum(target, 1.0)
        stirling = y * np.log(y) - y + 0.5 * np.log(2 * np.pi * y)
        return e + np.where(target > 1, stirling, 0.0)


class TestGaussianNLLLoss(TorchLoss):
    term = onnxloss.GaussianNLLLoss
    options = [{}, {"full": True, "eps": 1e-3}, {"var": 0.5}]
    invalid_options = [{"eps": 0.0}, {"var": -1.0}, {"full": "yes"}]

    def sample(self, rng, shape, **options):
        others = {} if "var" in options else {"var": rng.uniform(0.2, 2.0, size=shape)}
        return rng.normal(size=shape), rng.normal(size=shape), others

    def reference(self, prediction, target, var=None, full=False, eps=1e-6):
        v = np.maximum(var, eps)
        e = 0.5 * (np.log(v) + (prediction - target) ** 2 / v)
        return e + (0.5 * np.log(2 * np.pi) if full else 0.0)


class TestKLDivLoss(TorchLoss):
    term = onnxloss.KLDivLoss
    options = [{}, {"log_target": True}]
    invalid_options = [{"log_target": 0}]

    def sample(self, rng, shape, log_target=False):
        t = rng.dirichlet(np.ones(shape[1]), size=shape[0])
        t[0, 0] = 0.0  # xlogy: 0 where the target is 0
        t = t / t.sum(axis=1, keepdims=True)
        return _log_softmax(rng.normal(size=shape)), (np.log(t + 0.01) if log_target else t)

    def reference(self, prediction, target, log_target=False):
        if log_target:
            return np.exp(target) * (target - prediction)
        with np.errstate(divide="ignore", invalid="ignore"):
            xlogx = np.where(target > 0, target * np.log(target), 0.0)
        return xlogx - target * prediction


class _ClassWeighted(TorchLoss):
    """CrossEntropyLoss and NLLLoss: class weights, ignore_index, label smoothing."""

    classes = 3

    def sample(self, rng, shape, ignore_index=-100, **options):
        scores = rng.normal(scale=2.0, size=shape)
        labels = _class_labels(rng, shape[0], shape[1], ignore_index, shape[2:])
        return (scores if self.term is onnxloss.CrossEntropyLoss else _log_softmax(scores)), labels

    def _labels(self, prediction, target, ignore_index=-100, weight=None, **options):
        y = np.asarray(target).reshape(len(prediction), *prediction.shape[2:])
        kept = y != ignore_index
        w = np.ones(prediction.shape[1]) if weight is None else np.asarray(weight)
        safe = np.where(kept, y, 0)
        return safe, kept, w[safe] * kept, w

    def reference(self, prediction, target, label_smoothing=0.0, **options):
        safe, kept, w_y, w = self._labels(prediction, target, **options)
        log_p = _log_softmax(prediction) if self.term is onnxloss.CrossEntropyLoss else prediction
        picked = -np.take_along_axis(log_p, safe[:, None], axis=1)[:, 0]
        shape = [1, -1] + [1] * (prediction.ndim - 2)
        smooth = -(log_p * w.reshape(shape)).sum(axis=1) * kept
        s, c = label_smoothing, prediction.shape[1]
        return (1 - s) * picked * w_y + (s / c) * smooth

    def reference_counts(self, prediction, target, **options):
        _, kept, w_y, _ = self._labels(prediction, target, **options)
        n = len(prediction)
        return kept.reshape(n, -1).any(axis=1), w_y.reshape(n, -1).sum(axis=1)


class TestCrossEntropyLossWithOptions(_ClassWeighted):
    term = onnxloss.CrossEntropyLoss
    options = [
        {"weight": [0.5, 2.0, 1.0], "label_smoothing": 0.2},
        {"ignore_index": 1},
    ]
    invalid_options = [{"weight": [1.0, -1.0, 1.0]}, {"weight": "w", "sample_weight": "v"}]
    invalid_prediction_shapes = [(2,)]  # 3 class weights, 2 classes


class TestCrossEntropyLossSpatial(_ClassWeighted):
    term = onnxloss.CrossEntropyLoss
    prediction_shape = (3, 2, 2)
    options = [{}, {"weight": [0.5, 2.0, 1.0], "label_smoothing": 0.1}]
    extra_dtypes = ()


class TestNLLLoss(_ClassWeighted):
    term = onnxloss.NLLLoss
    options = [{}, {"weight": [0.5, 2.0, 1.0]}]
    invalid_options = [{"ignore_index": "all"}, {"target_rank": 0}]
    invalid_prediction_shapes = [()]


class TestBCEWithLogitsLossWeights(TorchLoss):
    term = onnxloss.BCEWithLogitsLoss
    options = [{"pos_weight": [2.0, 0.5, 1.0]}, {"weight": [0.5, 1.0, 2.0], "pos_weight": [3.0]}]
    invalid_options = [{"pos_weight": [-1.0]}, {"pos_weight": "many"}]
    invalid_prediction_shapes = [(2,)]

    def sample(self, rng, shape, **options):
        return rng.normal(scale=2.0, size=shape), rng.uniform(0, 1, size=shape)

    def reference(self, prediction, target, weight=None, pos_weight=None):
        pw = 1.0 if pos_weight is None else np.asarray(pos_weight)
        e = (1 - target) * prediction + (1 + (pw - 1) * target) * _softplus(-prediction)
        return e * (1.0 if weight is None else np.asarray(weight))


class TestBCELossWeight(TorchLoss):
    term = onnxloss.BCELoss
    options = [{"weight": [0.5, 1.0, 2.0]}]
    invalid_prediction_shapes = [(2,)]

    def sample(self, rng, shape, **options):
        return rng.uniform(0.02, 0.98, size=shape), rng.integers(0, 2, size=shape).astype(float)

    def reference(self, prediction, target, weight=None):
        e = -(target * np.log(prediction) + (1 - target) * np.log(1 - prediction))
        return e * np.asarray(weight)


def _signs(rng, shape):
    return np.where(rng.normal(size=shape) > 0, 1.0, -1.0)


class TestSoftMarginLoss(TorchLoss):
    term = onnxloss.SoftMarginLoss

    def sample(self, rng, shape, **options):
        return rng.normal(scale=2.0, size=shape), _signs(rng, shape)

    def reference(self, prediction, target):
        return _softplus(-target * prediction)


class TestMultiLabelSoftMarginLoss(TorchLoss):
    term = onnxloss.MultiLabelSoftMarginLoss
    options = [{}, {"weight": [0.5, 1.0, 2.0]}]
    invalid_options = [{"weight": []}]
    invalid_prediction_shapes = [(), (3, 2)]

    def sample(self, rng, shape, **options):
        return rng.normal(scale=2.0, size=shape), rng.integers(0, 2, size=shape).astype(float)

    def reference(self, prediction, target, weight=None):
        w = 1.0 if weight is None else np.asarray(weight)
        return (w * (_softplus(prediction) - target * prediction)).mean(axis=1)


class TestMultiMarginLoss(TorchLoss):
    term = onnxloss.MultiMarginLoss
    options = [{}, {"p": 2, "margin": 0.5, "weight": [0.5, 1.0, 2.0]}, {"target_rank": 2}]
    invalid_options = [{"p": 3}, {"margin": float("inf")}]
    invalid_prediction_shapes = [(), (3, 2)]

    def sample(self, rng, shape, target_rank=1, **options):
        y = rng.integers(0, shape[1], size=shape[0])
        return rng.normal(size=shape), (y.reshape(-1, 1) if target_rank == 2 else y)

    def reference(self, prediction, target, p=1, margin=1.0, weight=None, target_rank=1):
        y = np.asarray(target).reshape(-1)
        x_y = np.take_along_axis(prediction, y[:, None], axis=1)
        z = np.maximum(margin - x_y + prediction, 0.0) ** p
        z[np.arange(len(y)), y] = 0.0
        w = 1.0 if weight is None else np.asarray(weight)[y]
        return w * z.sum(axis=1) / prediction.shape[1]


class TestMultiLabelMarginLoss(TorchLoss):
    term = onnxloss.MultiLabelMarginLoss
    invalid_prediction_shapes = [()]

    def sample(self, rng, shape, **options):
        rows = rng.integers(-1, shape[1], size=shape)
        return rng.normal(size=shape), rows

    def reference(self, prediction, target):
        out = np.zeros(len(prediction))
        for i, (x, row) in enumerate(zip(prediction, np.asarray(target), strict=True)):
            listed = []
            for j in row:
                if j < 0:
                    break
                listed.append(int(j))
            others = [c for c in range(len(x)) if c not in listed]
            out[i] = sum(max(0.0, 1 - (x[j] - x[c])) for j in listed for c in others) / len(x)
        return out


class TestHingeEmbeddingLoss(TorchLoss):
    term = onnxloss.HingeEmbeddingLoss
    options = [{}, {"margin": 0.5}]
    invalid_options = [{"margin": "wide"}]

    def sample(self, rng, shape, **options):
        return np.abs(rng.normal(size=shape)), _signs(rng, shape)

    def reference(self, prediction, target, margin=1.0):
        return np.where(target == 1, prediction, np.maximum(margin - prediction, 0.0))


class TestMarginRankingLoss(TorchLoss):
    term = onnxloss.MarginRankingLoss
    options = [{}, {"margin": 0.3}]
    invalid_options = [{"margin": float("nan")}, {"output2": 3.5}]

    def sample(self, rng, shape, **options):
        return rng.normal(size=shape), _signs(rng, shape), {"output2": rng.normal(size=shape)}

    def reference(self, prediction, target, output2, margin=0.0):
        return np.maximum(-target * (prediction - output2) + margin, 0.0)


class TestCosineEmbeddingLoss(TorchLoss):
    term = onnxloss.CosineEmbeddingLoss
    prediction_shape = (4,)
    options = [{}, {"margin": 0.25}]
    invalid_options = [{"margin": 2.0}]
    invalid_prediction_shapes = [(), (2, 2)]

    def sample(self, rng, shape, **options):
        return rng.normal(size=shape), _signs(rng, shape[:1]), {"output2": rng.normal(size=shape)}

    def reference(self, prediction, target, output2, margin=0.0):
        eps = float(np.float32(1e-12))
        dot = (prediction * output2).sum(axis=1)
        norms = np.sqrt(((prediction**2).sum(axis=1) + eps) * ((output2**2).sum(axis=1) + eps))
        cos = dot / norms
        return np.where(
            target == 1, 1 - cos, np.where(target == -1, np.maximum(cos - margin, 0), 0)
        )


class _Triplets(TorchLoss):
    prediction_shape = (4,)
    invalid_prediction_shapes = [(), (2, 2)]

    def sample(self, rng, shape, **options):
        others = {"positive": rng.normal(size=shape), "negative": rng.normal(size=shape)}
        return rng.normal(size=shape), None, others

    @staticmethod
    def distance(a, b, p=2.0, eps=1e-6):
        return (np.abs(a - b + eps) ** p).sum(axis=1) ** (1.0 / p)

    def reference(self, prediction, target, positive, negative, margin=1.0, swap=False, **kw):
        kw.pop("distance_function", None)
        d_pos = self.distance(prediction, positive, **kw)
        d_neg = self.distance(prediction, negative, **kw)
        if swap:
            d_neg = np.minimum(d_neg, self.distance(positive, negative, **kw))
        return np.maximum(margin + d_pos - d_neg, 0.0)


class TestTripletMarginLoss(_Triplets):
    term = onnxloss.TripletMarginLoss
    options = [{}, {"p": 1.0}, {"swap": True, "margin": 0.5, "p": 3.0, "eps": 1e-3}]
    invalid_options = [{"p": 0.5}, {"swap": "yes"}, {"target": "label"}]


class TestTripletMarginWithDistanceLoss(_Triplets):
    term = onnxloss.TripletMarginWithDistanceLoss
    options = [{}, {"swap": True, "margin": 0.5}]
    invalid_options = [{"margin": 0.0}, {"distance_function": "cosine"}]


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
