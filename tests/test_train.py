"""The trainer: convergence, the update rule, state, checkpoints, faults, data forms."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT, TRAIN_BACKENDS, run_model

import onnxloss
from onnxloss import add_loss_output
from onnxloss.examples import linear_regression, mlp

#: For tests of what only the training build refuses (float64 weights, opsets above 21).
training_build_only = pytest.mark.parametrize(
    "backend", [b for b in TRAIN_BACKENDS if b == "onnxruntime-training"], indirect=True
)

pytestmark = [
    pytest.mark.skipif(not TRAIN_BACKENDS, reason="needs the [train] extra"),
    pytest.mark.usefixtures("backend"),  # every test runs on every backend available here
]

if HAS_ORT:
    from onnxloss.train import ConvergenceError, InvScaling, Optimal, OrtGradientOptimizer

TRUE_COEF = np.array([1.5, -2.0, 0.5])


def regression_data(n=200, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ TRUE_COEF + 0.7 + rng.normal(scale=noise, size=n) if noise else X @ TRUE_COEF + 0.7
    return X, y


def weights_vector(trainer):
    state = trainer.get_state()
    return np.r_[state["coef"].ravel(), state["intercept"]]


def test_squared_error_converges_to_least_squares():
    X, y = regression_data(noise=0.3)
    loss_model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(loss_model, ["coef", "intercept"], learning_rate=0.1,
                                   batch_size=len(X), max_iter=400)  # fmt: skip
    trainer.fit(X, y)
    lstsq = np.linalg.lstsq(np.c_[X, np.ones(len(X))], y, rcond=None)[0]
    np.testing.assert_allclose(weights_vector(trainer), lstsq, atol=1e-4)


def test_weighted_squared_error_converges_to_weighted_least_squares():
    X, y = regression_data(noise=0.5, seed=1)
    w = np.random.default_rng(2).uniform(0.1, 3.0, size=len(X))
    loss_model = add_loss_output(linear_regression(3), weight_name="weight")
    trainer = OrtGradientOptimizer(loss_model, ["coef", "intercept"], learning_rate=0.05,
                                   batch_size=len(X), max_iter=600)  # fmt: skip
    trainer.fit(X, y, w)
    A = np.c_[X, np.ones(len(X))]
    sw = np.sqrt(w)
    wls = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]
    ols = np.linalg.lstsq(A, y, rcond=None)[0]
    assert np.abs(wls - ols).max() > 1e-2  # the weights matter in this data
    np.testing.assert_allclose(weights_vector(trainer), wls, atol=1e-4)


def test_seed_example_runs_and_its_loss_falls():
    X, y = regression_data(noise=0.2)
    w = np.random.default_rng(3).uniform(0.5, 1.5, size=len(X))
    onx_loss = add_loss_output(
        linear_regression(3),
        weight_name="weight",
        score_name="elastic",
        l1_weight=0.1,
        l2_weight=0.9,
        penalty={"coef": {"l2": 0.01}},
    )
    train_session = OrtGradientOptimizer(onx_loss, ["intercept", "coef"], learning_rate=1e-3)
    train_session.fit(X, y, w)
    state_tensors = train_session.get_state()
    losses = train_session.train_losses_
    assert set(state_tensors) == {"intercept", "coef"}
    assert len(losses) == 100 and losses[-1] < 0.1 * losses[0]


def numpy_sgd(X, y, lr_of_t, epochs, batch, seed, sample_weight=None):
    """Reference: W -= η_t · ∇ (1/B) Σ w_i (x_i·W + b - y_i)², with the trainer's documented
    shuffling: epoch e is permuted by default_rng([seed, e])."""
    coef, b, t = np.zeros(X.shape[1]), 0.0, 1
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, epoch]).permutation(len(X))
        Xs, ys, ws = X[perm], y[perm], w[perm]
        for s in range(0, len(X), batch):
            xb, yb, wb = Xs[s : s + batch], ys[s : s + batch], ws[s : s + batch]
            r = xb @ coef + b - yb
            eta = lr_of_t(t)
            coef = coef - eta * 2 * (wb * r) @ xb / len(xb)
            b = b - eta * 2 * (wb * r).sum() / len(xb)
            t += len(xb)
    return np.r_[coef, b]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    "schedule",
    [0.02, InvScaling(eta0=0.05, power_t=0.3), Optimal(alpha=0.5)] if HAS_ORT else [],
    ids=["constant", "invscaling", "optimal"],
)
def test_update_rule_is_eta_times_gradient_of_mean_loss(reduction, schedule):
    """Whatever the reduction, a step is η_t · ∇(mean per-sample loss), with t counting
    samples as scikit-learn does; checked step by step against numpy (batch 7 leaves a
    ragged last batch)."""
    X, y = regression_data(n=50, noise=0.1)
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=len(X))
    model = onnxloss.rewrite(
        linear_regression(3), onnxloss.MSELoss(weight="w", reduction=reduction)
    )
    trainer = OrtGradientOptimizer(model, ["coef", "intercept"], learning_rate=schedule,
                                   batch_size=7, max_iter=3, random_state=11)  # fmt: skip
    trainer.fit(X, y, w)
    rate = schedule.rate if not isinstance(schedule, float) else (lambda t: schedule)
    expected = numpy_sgd(X, y, rate, 3, 7, 11, w)
    np.testing.assert_allclose(weights_vector(trainer), expected, rtol=2e-5, atol=1e-6)
    assert trainer.t_ == 1 + 3 * len(X)


def test_schedule_formulas_match_scikit_learn():
    import math

    inv = InvScaling(eta0=0.1, power_t=0.25)
    assert inv.rate(1) == 0.1 and inv.rate(16) == pytest.approx(0.1 / 2)
    opt = Optimal(alpha=1e-4)
    typw = math.sqrt(1.0 / math.sqrt(1e-4))
    t0 = 1.0 / (typw / max(1.0, 1.0 + typw) * 1e-4)
    assert opt.rate(1) == pytest.approx(1.0 / (1e-4 * t0))
    assert opt.rate(101) == pytest.approx(1.0 / (1e-4 * (t0 + 100)))


def test_named_schedules_and_bad_values():
    X, y = regression_data(n=20)
    model = add_loss_output(linear_regression(3))
    for name in ("constant", "invscaling", "optimal"):
        OrtGradientOptimizer(model, learning_rate=name, eta0=0.01, max_iter=2).fit(X, y)
    with pytest.raises(onnxloss.CoefficientError, match="'adaptive' is not a schedule"):
        OrtGradientOptimizer(model, learning_rate="adaptive").fit(X, y)
    with pytest.raises(onnxloss.CoefficientError, match="learning_rate must be > 0"):
        OrtGradientOptimizer(model, learning_rate=-1.0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_regressor_from_skl2onnx_trains():
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    X, y = regression_data(n=300, noise=0.1)
    y = np.tanh(y)
    sk = MLPRegressor(hidden_layer_sizes=(10,), max_iter=3, random_state=0).fit(X, y)
    onx = to_onnx(sk, X[:1].astype(np.float32), target_opset=17)
    names = [
        t.name for t in onx.graph.initializer if t.name.startswith(("coefficient", "intercepts"))
    ]
    trainer = OrtGradientOptimizer(add_loss_output(onx), names, learning_rate=0.01,
                                   max_iter=60, random_state=0)  # fmt: skip
    trainer.fit(X, y)
    assert trainer.train_losses_[-1] < 0.1 * trainer.train_losses_[0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_binary_classifier_from_skl2onnx_trains_with_log_loss():
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = ((X[:, 0] + 0.5 * X[:, 1]) > 0).astype(np.int64)
    sk = MLPClassifier(hidden_layer_sizes=(6,), max_iter=2, random_state=0).fit(X, y)
    onx = to_onnx(sk, X[:1].astype(np.float32), target_opset=17, options={"zipmap": False})
    loss_model = add_loss_output(
        onx, score_name="log", output_index="probabilities", label_name="y"
    )
    names = [
        t.name for t in onx.graph.initializer if t.name.startswith(("coefficient", "intercepts"))
    ]
    trainer = OrtGradientOptimizer(
        loss_model, names, learning_rate=0.05, max_iter=40, random_state=0
    )
    trainer.fit(X, y)
    assert trainer.train_losses_[-1] < 0.5 * trainer.train_losses_[0]
    trained = trainer.get_trained_onnx()
    assert [o.name for o in trained.graph.output] == ["label", "probabilities"]
    label, proba = run_model(trained, {"X": X.astype(np.float32)})
    assert (label == y).mean() > 0.95


def test_trained_onnx_predicts_with_the_state():
    X, y = regression_data(n=64, noise=0.1)
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=5).fit(X, y)
    inference = trainer.get_trained_onnx()
    assert [i.name for i in inference.graph.input] == ["X"]
    assert [o.name for o in inference.graph.output] == ["variable"]
    state = trainer.get_state()
    (pred,) = run_model(inference, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(
        pred, X.astype(np.float32) @ state["coef"] + state["intercept"], rtol=1e-5
    )
    # Into a caller-supplied inference model: the same weights.
    again = trainer.get_trained_onnx(linear_regression(3))
    assert again.graph.SerializeToString() == inference.graph.SerializeToString()


def test_state_round_trip_and_copies():
    X, y = regression_data(n=30)
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=2).fit(X, y)
    state = trainer.get_state()
    state["coef"][:] = 123.0  # a copy: the trainer's weights do not change
    assert not np.any(trainer.get_state()["coef"] == 123.0)
    new = {"coef": np.arange(3.0).reshape(3, 1), "intercept": np.array([-1.0])}
    trainer.set_state(new)
    got = trainer.get_state()
    np.testing.assert_array_equal(got["coef"], new["coef"].astype(np.float32))
    assert got["intercept"].dtype == np.float32
    with pytest.raises(onnxloss.ShapeError, match="'coef' has shape"):
        trainer.set_state({"coef": np.zeros(3)})
    with pytest.raises(onnxloss.OnnxLossError, match="not trained tensors"):
        trainer.set_state({"W": np.zeros(3)})


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_checkpoint_resume_equals_uninterrupted_run(tmp_path, optimizer):
    X, y = regression_data(n=90, noise=0.2)
    model = add_loss_output(linear_regression(3), penalty={"coef": 0.01})
    params = dict(learning_rate=0.01, batch_size=8, random_state=5, optimizer=optimizer)
    straight = OrtGradientOptimizer(model, max_iter=6, **params).fit(X, y)

    first = OrtGradientOptimizer(model, max_iter=3, **params).fit(X, y)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = OrtGradientOptimizer(model, max_iter=6, **params)
    resumed.load_checkpoint(tmp_path / "ckpt").fit(X, y)

    assert resumed.train_losses_ == straight.train_losses_
    assert resumed.n_iter_ == 6 and resumed.t_ == straight.t_
    for name, value in straight.get_state().items():
        np.testing.assert_array_equal(resumed.get_state()[name], value)


def test_checkpoint_errors(tmp_path):
    X, y = regression_data(n=20)
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=1)
    with pytest.raises(onnxloss.OnnxLossError, match="not fitted yet"):
        trainer.get_state()
    with pytest.raises(onnxloss.OnnxLossError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "none")
    trainer.fit(X, y).save_checkpoint(tmp_path / "c1")
    other = OrtGradientOptimizer(add_loss_output(linear_regression(3)), ["coef"])
    with pytest.raises(onnxloss.OnnxLossError, match="trains \\['coef', 'intercept'\\]"):
        other.load_checkpoint(tmp_path / "c1")


def test_huge_learning_rate_raises_convergence_error():
    X, y = regression_data(n=100)
    trainer = OrtGradientOptimizer(
        add_loss_output(linear_regression(3)), learning_rate=1e9, max_iter=5
    )
    with pytest.raises(ConvergenceError, match=r"(nan|inf) at epoch \d+, batch \d+"):
        trainer.fit(X, y)
    assert all(np.isfinite(v).all() for v in trainer.get_state().values())  # bad step not applied


def test_ctrl_c_leaves_a_usable_trainer():
    X, y = regression_data(n=40)
    batches = [(X[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]

    class InterruptInSecondEpoch:
        calls = 0

        def __iter__(self):
            for item in batches:
                InterruptInSecondEpoch.calls += 1
                if InterruptInSecondEpoch.calls == 6:
                    raise KeyboardInterrupt
                yield item

    trainer = OrtGradientOptimizer(
        add_loss_output(linear_regression(3)), learning_rate=0.05, max_iter=5
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(InterruptInSecondEpoch())
    assert len(trainer.train_losses_) == 1 and trainer.n_iter_ == 1
    state = trainer.get_state()
    assert set(state) == {"coef", "intercept"}
    trainer.warm_start = True
    trainer.fit(batches)  # continues from the interrupted weights
    assert len(trainer.train_losses_) == 6


def test_cuda_without_gpu_build_is_a_clear_error(backend):
    X, y = regression_data(n=10)
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA build is installed")
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), device="cuda")
    extra = "train-gpu" if backend == "onnxruntime-training" else "train-onnxruntime-gpu"
    with pytest.raises(onnxloss.OnnxLossError, match=f"CUDA build.*{extra}"):
        trainer.fit(X, y)
    with pytest.raises(onnxloss.OnnxLossError, match="'cpu', 'cuda' or 'cuda:N'"):
        OrtGradientOptimizer(add_loss_output(linear_regression(3)), device="gpu").fit(X, y)


def test_iterable_of_batches_and_memmap(tmp_path):
    X, y = regression_data(n=60, noise=0.1)
    model = add_loss_output(linear_regression(3))
    params = dict(learning_rate=0.05, batch_size=10, max_iter=4, shuffle=False)
    from_arrays = OrtGradientOptimizer(model, **params).fit(X, y)
    batches = [(X[i : i + 10], y[i : i + 10]) for i in range(0, 60, 10)]
    from_batches = OrtGradientOptimizer(model, **params).fit(batches)
    mm = np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    from_memmap = OrtGradientOptimizer(model, **params).fit(
        np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="r", shape=X.shape), y
    )
    for other in (from_batches, from_memmap):
        np.testing.assert_array_equal(weights_vector(other), weights_vector(from_arrays))
        assert other.train_losses_ == from_arrays.train_losses_
    shuffled = OrtGradientOptimizer(
        model, learning_rate=0.05, batch_size=10, max_iter=30, random_state=0
    )
    shuffled.fit(np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="r", shape=X.shape), y)
    assert shuffled.train_losses_[-1] < 0.05 * shuffled.train_losses_[0]


def test_exhausted_generator_is_reported():
    X, y = regression_data(n=20)
    gen = ((X[i : i + 10], y[i : i + 10]) for i in range(0, 20, 10))
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=2)
    with pytest.raises(onnxloss.OnnxLossError, match="used up by an earlier epoch"):
        trainer.fit(gen)


def test_validation_losses_are_the_mean_loss_on_validation_data():
    X, y = regression_data(n=80, noise=0.3)
    Xv, yv = regression_data(n=30, noise=0.3, seed=9)
    model = add_loss_output(linear_regression(3), penalty={"coef": 0.05})
    trainer = OrtGradientOptimizer(model, learning_rate=0.02, max_iter=6, validation_every=2)
    trainer.fit(X, y, X_val=Xv, y_val=yv)
    assert len(trainer.validation_losses_) == 3
    state = trainer.get_state()
    r = Xv @ state["coef"].ravel().astype(np.float64) + state["intercept"][0] - yv
    # sum-reduced model: the trainer reports (Σ r² + penalty) / N over one batch of 10
    batches = [slice(i, i + 10) for i in range(0, 30, 10)]
    per_batch = [
        ((r[b] ** 2).sum() + 0.05 * (state["coef"].astype(np.float64) ** 2).sum()) / 10
        for b in batches
    ]
    np.testing.assert_allclose(trainer.validation_losses_[-1], np.mean(per_batch), rtol=1e-5)


def test_early_stopping_like_scikit_learn():
    X, y = regression_data(n=40)
    model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(model, max_iter=50, tol=1e9, n_iter_no_change=3)
    trainer.fit(X, y)
    assert trainer.n_iter_ == 4  # the first epoch sets the best loss, 3 more without gain
    never = OrtGradientOptimizer(model, max_iter=7, tol=None).fit(X, y)
    assert never.n_iter_ == 7


def test_warm_start_continues():
    X, y = regression_data(n=40, noise=0.1)
    model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(model, max_iter=3, learning_rate=0.01, warm_start=True).fit(X, y)
    first = trainer.train_losses_[-1]
    trainer.fit(X, y)
    assert trainer.train_losses_[3] < first and len(trainer.train_losses_) == 6
    cold = OrtGradientOptimizer(model, max_iter=3, learning_rate=0.01).fit(X, y)
    cold.fit(X, y)
    assert len(cold.train_losses_) == 3


def test_adamw_with_parameters_and_clipping():
    X, y = regression_data(n=100, noise=0.1)
    model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(model, optimizer="adamw", learning_rate=0.05, max_iter=40,
                                   optimizer_params={"betas": (0.9, 0.99), "weight_decay": 0.0},
                                   max_grad_norm=10.0)  # fmt: skip
    trainer.fit(X, y)
    np.testing.assert_allclose(weights_vector(trainer), np.r_[TRUE_COEF, 0.7], atol=0.05)
    with pytest.raises(onnxloss.OnnxLossError, match="no parameter\\(s\\) \\['momentum'\\]"):
        OrtGradientOptimizer(model, optimizer="adamw", optimizer_params={"momentum": 0.9}).fit(X, y)
    with pytest.raises(onnxloss.OnnxLossError, match="'sgd' takes no optimizer_params"):
        OrtGradientOptimizer(model, optimizer_params={"eps": 1}).fit(X, y)


@pytest.mark.parametrize(
    "backend",
    ["onnxruntime-training"] if "onnxruntime-training" in TRAIN_BACKENDS else [],
    indirect=True,
)
def test_trainables_must_be_float32_initializers():
    """The readiness check runs before the runtime: every problem at once, with its fix."""
    X, y = regression_data(n=10)
    model64 = add_loss_output(linear_regression(3, dtype=np.float64))
    with pytest.raises(onnxloss.NotTrainableError) as info:
        OrtGradientOptimizer(model64).fit(X, y)
    message = str(info.value)
    assert "the loss 'loss' (DOUBLE, []) is not float32" in message
    for name in ("coef", "intercept"):
        assert f"'{name}' is DOUBLE" in message
    assert "onnxloss.passes.ToFloat32()" in message
    model = add_loss_output(linear_regression(3))
    with pytest.raises(
        onnxloss.NotTrainableError, match="'X' is a graph input.*no tensor named 'W'"
    ):
        OrtGradientOptimizer(model, ["X", "W"]).fit(X, y)


def test_loss_must_be_the_first_output():
    X, y = regression_data(n=10)
    model = add_loss_output(linear_regression(3))
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend(outputs[::-1])
    with pytest.raises(onnxloss.OutputSelectionError, match="FIRST output"):
        OrtGradientOptimizer(model).fit(X, y)


def test_newer_ir_version_is_made_loadable():
    X, y = regression_data(n=50)
    model = add_loss_output(linear_regression(3, ir_version=onnx.IR_VERSION))
    assert model.ir_version > 10
    trainer = OrtGradientOptimizer(model, learning_rate=0.05, max_iter=20).fit(X, y)
    assert trainer.train_losses_[-1] < 0.01 * trainer.train_losses_[0]


@pytest.mark.parametrize(
    "backend",
    ["onnxruntime-training"] if "onnxruntime-training" in TRAIN_BACKENDS else [],
    indirect=True,
)
def test_opset_above_runtime_is_refused():
    model = add_loss_output(linear_regression(3, opset=22, ir_version=10))
    with pytest.raises(onnxloss.NotTrainableError, match=r"opset 22.*11 to 21.*ConvertOpset\(21\)"):
        OrtGradientOptimizer(model).fit(*regression_data(n=10))


def test_sample_weight_checks():
    X, y = regression_data(n=10)
    with pytest.raises(onnxloss.OnnxLossError, match="no sample-weight input"):
        OrtGradientOptimizer(add_loss_output(linear_regression(3))).fit(X, y, np.ones(10))
    with pytest.raises(onnxloss.ShapeError, match="different numbers of samples"):
        OrtGradientOptimizer(add_loss_output(linear_regression(3))).fit(X, y[:5])


def test_verbose_shows_a_progress_bar(capsys, monkeypatch):
    X, y = regression_data(n=20)
    model = add_loss_output(linear_regression(3))
    OrtGradientOptimizer(model, max_iter=3, verbose=1).fit(X, y)
    assert capsys.readouterr().err == ""  # not a terminal: quiet unless asked
    monkeypatch.setenv("ONNXLOSS_PROGRESS", "1")
    OrtGradientOptimizer(model, max_iter=3, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "fit" in err and "loss=" in err and "3/3" in err and "batches" not in err
    OrtGradientOptimizer(model, max_iter=2, batch_size=5, verbose=2).fit(X, y)
    err = capsys.readouterr().err
    assert "2/2" in err and "batches" in err and "/4 [" in err  # 20 samples, batch 5


def test_mlp_classifier_with_cross_entropy_on_logits():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    model = onnxloss.rewrite(mlp((2, 8, 3), seed=1), onnxloss.CrossEntropyLoss())
    trainer = OrtGradientOptimizer(model, optimizer="adamw", learning_rate=0.02, max_iter=30,
                                   batch_size=32, random_state=0)  # fmt: skip
    trainer.fit(X, y)
    assert trainer.train_losses_[-1] < 0.4 * trainer.train_losses_[0]


def test_trainer_never_imports_torch():
    code = (
        "import sys, numpy as np, onnxloss\n"
        "from onnxloss.examples import linear_regression\n"
        "assert 'onnxruntime' not in sys.modules\n"
        "from onnxloss.train import OrtGradientOptimizer\n"
        "OrtGradientOptimizer(onnxloss.add_loss_output(linear_regression(2)), max_iter=1)"
        ".fit(np.ones((4, 2)), np.ones(4))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_losses_are_finite_floats():
    X, y = regression_data(n=30)
    trainer = OrtGradientOptimizer(add_loss_output(linear_regression(3)), max_iter=3).fit(X, y)
    assert all(isinstance(v, float) and math.isfinite(v) for v in trainer.train_losses_)


def test_estimator_protocol_get_set_params_and_clone():
    from sklearn.base import clone

    model = add_loss_output(linear_regression(3))
    trainer = OrtGradientOptimizer(model, ["coef"], learning_rate=0.01, max_iter=3)
    params = trainer.get_params()
    assert params["weights_to_train"] == ["coef"] and params["max_iter"] == 3
    assert (
        repr(trainer)
        == "OrtGradientOptimizer(weights_to_train=['coef'], max_iter=3, learning_rate=0.01)"
    )
    copy = clone(trainer)
    assert copy.get_params()["learning_rate"] == 0.01 and copy is not trainer
    assert trainer.set_params(max_iter=5) is trainer and trainer.max_iter == 5
    with pytest.raises(onnxloss.OnnxLossError, match="unknown parameter.*'epochs'"):
        trainer.set_params(epochs=3)


def test_changing_the_optimizer_rebuilds_the_session():
    X, y = regression_data(n=40)
    trainer = OrtGradientOptimizer(
        add_loss_output(linear_regression(3)), max_iter=2, warm_start=True
    )
    trainer.fit(X, y)
    first_session = trainer._session
    trainer.fit(X, y)
    assert trainer._session is first_session and len(trainer.train_losses_) == 4
    trainer.set_params(optimizer="adamw", learning_rate=0.01)
    trainer.fit(X, y)
    assert trainer._session is not first_session
    assert len(trainer.train_losses_) == 2  # a new run, even with warm_start


def test_large_shuffled_batches_keep_the_order():
    """80 KB batches gathered into the batch buffers: the steps are those of the documented
    order (epoch e permuted by default_rng([seed, e]))."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 100))
    coef = rng.normal(size=100)
    y = X @ coef + 0.3 + 0.1 * rng.normal(size=4000)
    model = onnxloss.rewrite(linear_regression(100), onnxloss.MSELoss(reduction="mean"))
    trainer = OrtGradientOptimizer(model, learning_rate=0.01, batch_size=200, max_iter=2,
                                   random_state=5, shuffle=True)  # fmt: skip
    trainer.fit(X.astype(np.float32), y)
    expected = numpy_sgd(X, y, lambda t: 0.01, 2, 200, 5)
    state = trainer.get_state()
    got = np.r_[state["coef"].ravel(), state["intercept"]]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
