"""The two trainer backends give the same numbers: loss curves, checkpoints that move from
one to the other (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TRAIN_BACKENDS

import onnxloss
from onnxloss import add_loss_output
from onnxloss.examples import linear_regression, mlp

BOTH = ["onnxruntime-training", "onnxruntime"]
pytestmark = pytest.mark.skipif(
    any(b not in TRAIN_BACKENDS for b in BOTH), reason="needs both backends (the training build)"
)

if TRAIN_BACKENDS:
    from onnxloss.train import OrtGradientOptimizer


def demo_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = X @ np.array([1.5, -2.0, 0.5, 3.0]) + 0.7 + rng.normal(scale=0.1, size=400)
    return add_loss_output(linear_regression(4)), X, y, dict(learning_rate=0.01, batch_size=16)


def mlp_regressor_problem():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.1 * rng.normal(size=300)
    model = onnxloss.rewrite(mlp((5, 16, 8, 1), seed=2, activation="Tanh"), onnxloss.MSELoss())
    return model, X, y, dict(learning_rate=0.02, batch_size=32)


def mlp_classifier_problem():
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = ((X[:, 0] + 0.5 * X[:, 1]) > 0).astype(np.int64) + (X[:, 2] > 1)
    with pytest.warns(ConvergenceWarning):
        sk = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)
    onx = to_onnx(sk, X[:1].astype(np.float32), target_opset=17, options={"zipmap": False})
    model = add_loss_output(
        onx, score_name="log_loss", output_index="probabilities", label_name="y"
    )
    names = [
        t.name for t in onx.graph.initializer if t.name.startswith(("coefficient", "intercepts"))
    ]
    return model, X, y, dict(learning_rate=0.05, batch_size=20, weights_to_train=names)


PROBLEMS = {
    "demo": demo_problem,
    "mlp-regressor": mlp_regressor_problem,
    "skl2onnx-mlp-classifier": mlp_classifier_problem,
}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_loss_curves_of_the_two_backends_agree(problem, optimizer):
    model, X, y, params = PROBLEMS[problem]()
    runs = {
        backend: OrtGradientOptimizer(
            model, max_iter=5, random_state=0, optimizer=optimizer, backend=backend, **params
        ).fit(X, y)
        for backend in BOTH
    }
    a, b = (runs[k] for k in BOTH)
    assert a.backend_ == "onnxruntime-training" and b.backend_ == "onnxruntime"
    np.testing.assert_allclose(b.train_losses_, a.train_losses_, rtol=1e-5)
    assert a.train_losses_[-1] < a.train_losses_[0]
    for name, value in a.get_state().items():
        np.testing.assert_allclose(b.get_state()[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("first, second", [BOTH, BOTH[::-1]])
def test_a_checkpoint_moves_between_backends(tmp_path, first, second, optimizer):
    model, X, y, params = mlp_regressor_problem()
    params = dict(params, random_state=4, optimizer=optimizer)
    straight = OrtGradientOptimizer(model, max_iter=6, backend=first, **params).fit(X, y)
    part = OrtGradientOptimizer(model, max_iter=3, backend=first, **params).fit(X, y)
    part.save_checkpoint(tmp_path / "ckpt")
    resumed = OrtGradientOptimizer(model, max_iter=6, backend=second, **params)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.backend_ == second and resumed.n_iter_ == 3
    resumed.fit(X, y)
    assert resumed.n_iter_ == 6 and resumed.t_ == straight.t_
    assert resumed.train_losses_[:3] == straight.train_losses_[:3]
    np.testing.assert_allclose(resumed.train_losses_, straight.train_losses_, rtol=1e-5)
    for name, value in straight.get_state().items():
        np.testing.assert_allclose(resumed.get_state()[name], value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_three_steps_match_the_training_build(optimizer):
    """Step by step (batch = data set), with clipping: equal to 1e-6 relative."""
    model, X, y, params = demo_problem()
    params = dict(
        learning_rate=0.05, batch_size=len(X), max_iter=3, optimizer=optimizer, max_grad_norm=2.0
    )
    a, b = (OrtGradientOptimizer(model, backend=k, **params).fit(X, y) for k in BOTH)
    np.testing.assert_allclose(b.train_losses_, a.train_losses_, rtol=1e-6)
    for name, value in a.get_state().items():
        np.testing.assert_allclose(b.get_state()[name], value, rtol=1e-6, atol=1e-7)


def _compatibility_rows():
    """(name, loss model, data, parameters) for every compatibility-table row that trains."""
    import importlib.util
    import sys
    from pathlib import Path

    from onnxloss.passes import AddLoss, MakeTrainable, Sequential

    path = Path(__file__).resolve().parents[1] / "scripts" / "compatibility_table.py"
    spec = importlib.util.spec_from_file_location("compatibility_table_backends", path)
    table = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = table
    spec.loader.exec_module(table)
    rows = []
    for case in table.cases():
        X, y = table.data(case.kind, False, 0)
        if case.features is not None:
            X = case.features(X)
        try:
            loss_model = Sequential(MakeTrainable(), AddLoss(case.loss()))(case.make(X, y)).model
        except onnxloss.OnnxLossError:
            continue
        if not onnxloss.check_trainable(loss_model).ok:
            continue  # refused with its reason (the tree ensemble)
        Xf, yf = table.data(case.kind, True, 1)
        if case.features is not None:
            Xf = case.features(Xf)
        params = dict(learning_rate=case.learning_rate, batch_size=32)
        rows.append((case.name, loss_model, Xf, yf, params))
    return rows


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_loss_curves_agree_on_every_compatibility_table_model():
    pytest.importorskip("skl2onnx")
    rows = _compatibility_rows()
    assert len(rows) >= 21
    for name, model, X, y, params in rows:
        for optimizer in ("sgd", "adamw"):
            a, b = (
                OrtGradientOptimizer(
                    model, max_iter=5, random_state=0, optimizer=optimizer, backend=k, **params
                ).fit(X, y)
                for k in BOTH
            )
            np.testing.assert_allclose(
                b.train_losses_, a.train_losses_, rtol=1e-5, err_msg=f"{name}, {optimizer}"
            )
