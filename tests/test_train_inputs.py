"""The trainer checks what it is given before the first step: data against the model's
declared inputs, optimizer parameters, seeds, the runtime itself (issue 10)."""

from __future__ import annotations

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


def linear(**kw):
    return OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=2, **kw)


X = np.random.default_rng(0).normal(size=(30, 3))
Y = X.sum(axis=1)


@pytest.mark.parametrize(
    "x, y, error, message",
    [
        (np.ones((30, 4)), Y, onnxloss.ShapeError, r"X has 4 values along axis 1.*takes 3"),
        (X, np.ones((30, 2)), onnxloss.ShapeError, r"y has 2 values along axis 1.*takes 1"),
        (X, Y.astype(str), onnxloss.DtypeError, r"y has dtype <U.*takes numbers"),
        (np.ones((30, 3, 2)), Y, onnxloss.ShapeError, r"X has shape \[30, 3, 2\].*2 dimension"),
        (np.ones(30), Y, onnxloss.ShapeError, r"X has shape \[30\]"),
        (X, Y[:20], onnxloss.ShapeError, "different numbers of samples"),
        (np.float64(1.0), Y, onnxloss.ShapeError, "X is a scalar"),
        ([["a", "b", "c"]] * 30, Y, onnxloss.DtypeError, "X has dtype"),
    ],
    ids=["features", "y-columns", "y-str", "rank-up", "rank-down", "lengths", "scalar", "X-str"],
)
def test_data_that_does_not_fit_the_model_is_refused_before_training(x, y, error, message):
    trainer = linear()
    with pytest.raises(error, match=message):
        trainer.fit(x, y)
    assert getattr(trainer, "train_losses_", []) == []


def test_non_finite_data_is_named_with_its_row(tmp_path):
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(onnxloss.OnnxLossError, match=r"X holds nan at row 7 \(1 row"):
        linear().fit(bad, Y)
    y = Y.copy()
    y[3] = np.inf
    with pytest.raises(onnxloss.OnnxLossError, match="y holds inf at row 3"):
        linear().fit(X, y)
    with pytest.raises(onnxloss.OnnxLossError, match="X_val holds nan at row 7"):
        linear().fit(X, Y, X_val=bad, y_val=Y)
    mm = np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = bad
    mm.flush()
    mapped = np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="r", shape=X.shape)
    with pytest.raises(onnxloss.OnnxLossError, match="X holds nan at row 7"):
        linear(batch_size=4, shuffle=False).fit(mapped, Y)
    batches = [(X[:10], Y[:10]), (bad[:10], Y[:10])]
    with pytest.raises(onnxloss.OnnxLossError, match="X holds nan at row 7"):
        linear().fit(batches)


def test_class_labels_must_be_whole_numbers():
    rng = np.random.default_rng(0)
    Xc = rng.normal(size=(20, 2))
    model = onnxloss.rewrite(mlp((2, 4, 3)), onnxloss.CrossEntropyLoss())
    labels = rng.integers(0, 3, size=20).astype(np.float64)
    OrtGradientOptimizer(model, max_iter=1).fit(Xc, labels)  # whole floats are fine
    with pytest.raises(onnxloss.DtypeError, match="fractional values.*class indices"):
        OrtGradientOptimizer(model, max_iter=1).fit(Xc, labels + 0.5)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"optimizer": "adamw", "optimizer_params": {"eps": -1}}, "adamw eps must be > 0"),
        ({"optimizer": "adamw", "optimizer_params": {"betas": "x"}}, "betas must be two numbers"),
        ({"optimizer": "adamw", "optimizer_params": {"betas": (0.9, 1.5)}}, r"betas\[1\] must"),
        ({"optimizer": "adamw", "optimizer_params": {"weight_decay": -1}}, "weight_decay must"),
        ({"optimizer": "adamw", "optimizer_params": [0.9]}, "optimizer_params must be a dict"),
        ({"optimizer": "adam"}, "optimizer must be 'sgd' or 'adamw'"),
        ({"random_state": -1}, "random_state must be >= 0"),
        ({"random_state": 1.5}, "random_state must be an int"),
        ({"weights_to_train": "coef"}, r"did you mean \['coef'\]"),
        ({"weights_to_train": ["coef", 3]}, "list of tensor names"),
        ({"backend": "torch"}, "backend must be one of"),
        ({"session_config": {"threads": 2}}, "session_config key 'threads'"),
        ({"verbose": -1}, "verbose must be"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"max_grad_norm": 0}, "max_grad_norm must be > 0"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(params, message):
    with pytest.raises(onnxloss.OnnxLossError, match=message):
        linear(**params).fit(X, Y)


def test_missing_or_clashing_runtime_is_reported_at_construction(monkeypatch):
    from onnxloss.train import _runtime

    model = add_loss_output(linear_regression(3))
    monkeypatch.setattr(
        _runtime,
        "installed_runtimes",
        lambda: (("onnxruntime-training-cpu 1.19.2",), ("onnxruntime 1.32.0",)),
    )
    with pytest.raises(onnxloss.OnnxLossError, match="both onnxruntime-training-cpu.*uninstall"):
        OrtGradientOptimizer(model)
    monkeypatch.setattr(_runtime, "installed_runtimes", lambda: ((), ()))
    monkeypatch.setattr(_runtime.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(onnxloss.OnnxLossError, match=r"none is installed.*onnxloss\[train\]"):
        OrtGradientOptimizer(model)


def test_a_value_spoiled_after_the_check_is_still_named_at_its_step():
    """The same array object is scanned once per run; a NaN written into it later makes the
    loss non-finite, and the trainer then names the array and row, not divergence."""
    data = X.copy()
    trainer = linear(warm_start=True, random_state=0)
    trainer.fit(data, Y)
    data[11, 0] = np.nan  # in place: same object, same memory
    with pytest.raises(onnxloss.OnnxLossError, match="X holds nan at row 11") as info:
        trainer.fit(data, Y)
    assert not isinstance(info.value, onnxloss.ConvergenceError)
    assert all(np.isfinite(v).all() for v in trainer.get_state().values())


def test_labels_outside_the_classes_are_refused_before_training():
    """The rewriter records the class count (and ignore_index): the trainer checks labels."""
    rng = np.random.default_rng(0)
    Xc = rng.normal(size=(20, 2))
    model = onnxloss.rewrite(mlp((2, 4, 3)), onnxloss.CrossEntropyLoss(ignore_index=-100))
    labels = rng.integers(0, 3, size=20)
    labels[4] = -100  # ignored: fine
    OrtGradientOptimizer(model, max_iter=1).fit(Xc, labels)
    for bad in (3, -1):
        labels[9] = bad
        with pytest.raises(onnxloss.OnnxLossError, match=f"label {bad} .*classes 0..2"):
            OrtGradientOptimizer(model, max_iter=1).fit(Xc, labels)
