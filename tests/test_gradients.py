"""Every built-in term gets a gradient from onnxruntime-training and trains a small MLP."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import BUILTIN_LOSSES, HAS_ORT
from onnx import helper as oh
from reference import CLASS_LOSSES

import onnxloss
from onnxloss.examples import mlp

pytestmark = pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")

PROBABILITY_OUTPUT = {"bce": "Sigmoid", "log_loss": "Softmax", "log": "Softmax"}


def model_for(name: str, outputs: int) -> onnx.ModelProto:
    """An MLP whose output suits the loss: raw scores, or probabilities through an activation."""
    model = mlp((3, 6, outputs), seed=1)
    activation = PROBABILITY_OUTPUT.get(name)
    if activation:
        model.graph.node[-1].output[0] = "scores"
        extra = {"axis": 1} if activation == "Softmax" else {}
        model.graph.node.append(oh.make_node(activation, ["scores"], ["variable"], **extra))
    return model


def data_for(name: str, outputs: int, rng):
    X = rng.normal(size=(256, 3))
    score = X @ rng.normal(size=(3, outputs))
    if name in CLASS_LOSSES:
        return X, score.argmax(axis=1)
    if name in ("bce", "bce_with_logits"):
        return X, (score > 0).astype(float)
    if name == "poisson":
        return X, rng.poisson(np.exp(0.3 * score))
    return X, score


@pytest.mark.parametrize("penalty", [None, "l1", "l2", "elastic_net"])
@pytest.mark.parametrize("name", sorted(BUILTIN_LOSSES))
def test_builtin_term_trains(name, penalty):
    from onnxloss.train import OrtGradientOptimizer

    outputs = 2 if name == "log" else 3
    rng = np.random.default_rng(0)
    X, y = data_for(name, outputs, rng)
    spec = BUILTIN_LOSSES[name].cls()
    if penalty:
        options = {"l1": 1e-3, "l2": 1e-3} if penalty == "elastic_net" else {"alpha": 1e-3}
        spec = spec + onnxloss.available_regularizers()[penalty].cls("W*", **options)
    model = onnxloss.rewrite(model_for(name, outputs), spec)
    trainer = OrtGradientOptimizer(model, optimizer="adamw", learning_rate=0.02, batch_size=32,
                                   max_iter=15, random_state=0)  # fmt: skip
    trainer.fit(X, y)
    first, last = trainer.train_losses_[0], trainer.train_losses_[-1]
    assert np.isfinite(last) and last < 0.8 * first, (first, last)
