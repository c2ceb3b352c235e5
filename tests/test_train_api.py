"""The trainer's scikit-learn habits: predict, score, partial_fit, pickling, estimator checks;
checkpoint files; the runtime reported at construction."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import TRAIN_BACKENDS

import onnxloss
from onnxloss import add_loss_output
from onnxloss.examples import linear_regression, mlp

pytestmark = [
    pytest.mark.skipif(not TRAIN_BACKENDS, reason="needs the [train] extra"),
    pytest.mark.usefixtures("backend"),
]

if TRAIN_BACKENDS:
    from onnxloss.train import OrtGradientOptimizer

COEF = np.array([1.5, -2.0, 0.5])


def data(n=120, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ COEF + 0.7 + rng.normal(scale=noise, size=n)


def fitted(**params):
    X, y = data()
    params = {"learning_rate": 0.05, "max_iter": 5, "random_state": 0, **params}
    return OrtGradientOptimizer(add_loss_output(linear_regression(3)), **params).fit(X, y), X, y


def test_predict_uses_the_current_weights():
    trainer, X, _ = fitted()
    state = trainer.get_state()
    expected = X.astype(np.float32) @ state["coef"] + state["intercept"]
    np.testing.assert_allclose(trainer.predict(X), expected, rtol=1e-5, atol=1e-6)
    trainer.set_state({"coef": np.zeros((3, 1)), "intercept": np.array([2.0])})
    np.testing.assert_allclose(trainer.predict(X[:4]), np.full((4, 1), 2.0, np.float32))
    with pytest.raises(onnxloss.ShapeError, match="takes 3"):
        trainer.predict(np.ones((2, 4)))


def test_predict_returns_every_output_of_a_classifier():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    inference = mlp((2, 4, 2), seed=0)
    model = onnxloss.rewrite(inference, onnxloss.CrossEntropyLoss())
    trainer = OrtGradientOptimizer(model, max_iter=2, learning_rate=0.1).fit(X, y)
    scores = trainer.predict(X)
    assert scores.shape == (60, 2)
    from onnx.reference import ReferenceEvaluator

    (expected,) = ReferenceEvaluator(trainer.get_trained_onnx()).run(
        None, {"X": X.astype(np.float32)}
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_score_is_minus_the_mean_per_sample_loss():
    trainer, X, y = fitted()
    state = trainer.get_state()
    r = X @ state["coef"].ravel().astype(np.float64) + state["intercept"][0] - y
    # The sum-reduced model's per-batch loss divided by the batch: the mean of r².
    assert trainer.score(X, y) == pytest.approx(-np.mean(r**2), rel=1e-5)
    assert trainer.score(X, y) > trainer.score(X, y + 1.0)


def test_partial_fit_continues_the_run():
    X, y = data()
    model = add_loss_output(linear_regression(3))
    params = dict(learning_rate=0.02, batch_size=10, random_state=3)
    full = OrtGradientOptimizer(model, max_iter=3, **params).fit(X, y)
    step = OrtGradientOptimizer(model, **params)
    for _ in range(3):
        step.partial_fit(X, y)
    assert step.n_iter_ == 3 and step.t_ == full.t_ == 1 + 3 * len(X)
    np.testing.assert_allclose(step.train_losses_, full.train_losses_, rtol=1e-6)
    for name, value in full.get_state().items():
        np.testing.assert_allclose(step.get_state()[name], value, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_pickle_round_trip_of_a_fitted_trainer(tmp_path, optimizer):
    joblib = pytest.importorskip("joblib")
    X, y = data()
    model = add_loss_output(linear_regression(3))
    params = dict(learning_rate=0.02, random_state=1, optimizer=optimizer, warm_start=True)
    trainer = OrtGradientOptimizer(model, max_iter=2, **params).fit(X, y)
    again = pickle.loads(pickle.dumps(trainer))
    joblib.dump(trainer, tmp_path / "t.joblib")
    loaded = joblib.load(tmp_path / "t.joblib")
    for other in (again, loaded):
        assert other.train_losses_ == trainer.train_losses_ and other.t_ == trainer.t_
        for name, value in trainer.get_state().items():
            np.testing.assert_array_equal(other.get_state()[name], value)
        np.testing.assert_array_equal(other.predict(X), trainer.predict(X))
    # Both continue the same run (warm start): same weights after two more epochs.
    trainer.fit(X, y)
    loaded.fit(X, y)
    for name, value in trainer.get_state().items():
        np.testing.assert_allclose(loaded.get_state()[name], value, rtol=1e-6)
    unfitted = pickle.loads(pickle.dumps(OrtGradientOptimizer(model)))
    with pytest.raises(onnxloss.OnnxLossError, match="not fitted yet"):
        unfitted.get_state()


def test_sklearn_estimator_checks_that_apply():
    """The checks of sklearn.utils.estimator_checks that fit an estimator whose first
    parameter is a model (the others build estimators from defaults or random data shapes,
    which a fixed ONNX graph cannot take)."""
    from sklearn.utils import estimator_checks as ec

    model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(model, max_iter=2, random_state=0)
    name = type(trainer).__name__
    ec.check_get_params_invariance(name, trainer)
    ec.check_set_params(name, trainer)
    ec.check_no_attributes_set_in_init(name, trainer)
    ec.check_parameters_default_constructible(name, trainer)


def test_checkpoint_file_is_portable_npz(tmp_path):
    trainer, X, y = fitted(optimizer="adamw")
    trainer.save_checkpoint(tmp_path / "ck.npz")
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as archive:
        assert "header" in archive.files and len(archive.files) == 1 + 2 * 3
    other = OrtGradientOptimizer(add_loss_output(linear_regression(3)), optimizer="adamw")
    other.load_checkpoint(tmp_path / "ck.npz")
    for name, value in trainer.get_state().items():
        np.testing.assert_array_equal(other.get_state()[name], value)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    trainer, X, y = fitted()
    trainer.save_checkpoint(tmp_path / "ok")
    fresh = lambda **kw: OrtGradientOptimizer(add_loss_output(linear_regression(3)), **kw)  # noqa: E731
    (tmp_path / "junk").write_bytes(b"not a checkpoint at all")
    with pytest.raises(onnxloss.OnnxLossError, match="not an onnxloss checkpoint"):
        fresh().load_checkpoint(tmp_path / "junk")
    wider = OrtGradientOptimizer(add_loss_output(linear_regression(4)))
    with pytest.raises(onnxloss.OnnxLossError, match="'coef' has shape \\[3, 1\\].*another model"):
        wider.load_checkpoint(tmp_path / "ok")
    with pytest.raises(onnxloss.OnnxLossError, match="optimizer='sgd'"):
        fresh(optimizer="adamw").load_checkpoint(tmp_path / "ok")
    truncated = (tmp_path / "ok").read_bytes()[:200]
    (tmp_path / "cut").write_bytes(truncated)
    with pytest.raises(onnxloss.OnnxLossError):
        fresh().load_checkpoint(tmp_path / "cut")
