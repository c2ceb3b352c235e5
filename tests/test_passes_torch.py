"""Models exported by torch.onnx (files under tests/data, made by make_torch_models.py with
PyTorch 2.13): make_trainable keeps PyTorch's numbers and makes them trainable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT, run_model

import onnxloss
from onnxloss.passes import AddLoss, MakeTrainable, Sequential

DATA = Path(__file__).parent / "data"


def load(name: str):
    model = onnx.load(str(DATA / f"{name}.onnx"))
    expected = np.load(DATA / f"{name}.npz")
    return model, expected


@pytest.mark.parametrize("name", ["torch_mlp", "torch_zoo"])
def test_make_trainable_keeps_pytorch_numbers(name):
    model, expected = load(name)
    result = MakeTrainable()(model)
    fixed = result.model
    assert "DecomposeForGradients" in result.applied
    onnx.checker.check_model(fixed, full_check=True)
    assert fixed.ir_version == 10
    assert [t.name for t in fixed.graph.initializer] == [t.name for t in model.graph.initializer]
    outputs = [o.name for o in model.graph.output]
    assert [o.name for o in fixed.graph.output] == outputs
    got = run_model(fixed, {"X": expected["X"]})
    for out, value in zip(outputs, got, strict=True):
        np.testing.assert_allclose(value, expected[out], rtol=1e-5, atol=1e-5)


def test_readiness_names_the_pytorch_operators_and_then_passes():
    model, _ = load("torch_zoo")
    report = onnxloss.check_trainable(model, loss_output=None)
    ops = {p.message.split("(")[1].split(")")[0] for p in report.errors}
    assert ops == {
        "HardSwish",
        "LayerNormalization",
        "Selu",
        "Celu",
        "Mish",
        "HardSigmoid",
        "PRelu",
    }
    assert all("make_trainable does" in p.fix for p in report.errors)
    fixed = MakeTrainable()(model).model
    assert onnxloss.check_trainable(fixed).ok


@pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
def test_exported_models_train_after_make_trainable():
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 4)).astype(np.float32)
    mlp, _ = load("torch_mlp")
    y = np.tanh(X @ np.array([1.0, -1.0, 0.5, 0.25]))
    loss_model = Sequential(MakeTrainable(), AddLoss(onnxloss.MSELoss()))(mlp).model
    trainer = OrtGradientOptimizer(
        loss_model,
        optimizer="adamw",
        learning_rate=0.01,
        batch_size=32,
        max_iter=15,
        random_state=0,
    )
    trainer.fit(X, y.reshape(-1, 1))
    assert trainer.train_losses_[-1] < 0.5 * trainer.train_losses_[0]
    zoo, _ = load("torch_zoo")
    labels = (X @ rng.normal(size=(4, 3))).argmax(axis=1)
    loss_model = Sequential(MakeTrainable(), AddLoss(onnxloss.CrossEntropyLoss("logp")))(zoo).model
    trainer = OrtGradientOptimizer(
        loss_model,
        optimizer="adamw",
        learning_rate=0.01,
        batch_size=32,
        max_iter=15,
        random_state=0,
    )
    trainer.fit(X, labels)
    assert trainer.train_losses_[-1] < 0.5 * trainer.train_losses_[0]
    assert "val_4" in trainer.trained_  # the PReLU slope, folded to an initializer by the exporter


@pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
def test_without_the_passes_the_trainer_lists_every_blocking_node():
    from onnxloss.train import OrtGradientOptimizer

    zoo, _ = load("torch_zoo")
    loss_model = onnxloss.rewrite(zoo, onnxloss.CrossEntropyLoss("logp"))
    X = np.zeros((4, 4), np.float32)
    with pytest.raises(onnxloss.NotTrainableError) as info:
        OrtGradientOptimizer(loss_model, max_iter=1).fit(X, np.zeros(4, np.int64))
    message = str(info.value)
    for node in ("'n0' (HardSwish)", "'node_layer_norm' (LayerNormalization)", "(PRelu)"):
        assert node in message
    assert "7 problem(s)" in message


@pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
def test_trained_weights_go_back_into_the_original_export():
    """The decompositions keep the initializer names: the original model takes the trained
    weights and computes what the trained, rewritten one computes."""
    from onnxloss.train import OrtGradientOptimizer

    mlp, expected = load("torch_mlp")
    X = expected["X"]
    y = np.sin(X.sum(axis=1, keepdims=True))
    loss_model = Sequential(MakeTrainable(), AddLoss(onnxloss.MSELoss()))(mlp).model
    trainer = OrtGradientOptimizer(
        loss_model, learning_rate=0.05, max_iter=5, batch_size=8, random_state=0
    )
    trainer.fit(X, y)
    rewritten = trainer.get_trained_onnx()
    original = trainer.get_trained_onnx(mlp)
    assert {n.op_type for n in original.graph.node} >= {"Softplus", "Elu"}
    (from_rewritten,) = run_model(rewritten, {"X": X})
    (from_original,) = run_model(original, {"X": X})
    np.testing.assert_allclose(from_original, from_rewritten, rtol=1e-5, atol=1e-6)
    assert not np.allclose(from_original, expected["variable"], atol=1e-3)  # it did train
