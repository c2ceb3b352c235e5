"""Every built-in term gets a gradient from onnxruntime-training and trains a small MLP."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BUILTIN_LOSSES, HAS_ORT
from loss_examples import EXAMPLES, example_model

import onnxloss

pytestmark = pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")


def data_for(name: str, rng):
    """Features and the example's targets from a hidden linear score of them."""
    example = EXAMPLES[name]
    X = rng.normal(size=(256, 3))
    score = X @ rng.normal(size=(3, example.width))
    return X, example.target(score, rng)


@pytest.mark.parametrize("penalty", [None, "l1", "l2", "elastic_net"])
@pytest.mark.parametrize("name", sorted(BUILTIN_LOSSES))
def test_builtin_term_trains(name, penalty):
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(0)
    X, y = data_for(name, rng)
    spec = EXAMPLES[name].make()
    if penalty:
        options = {"l1": 1e-3, "l2": 1e-3} if penalty == "elastic_net" else {"alpha": 1e-3}
        spec = spec + onnxloss.available_regularizers()[penalty].cls("W*", **options)
    model = onnxloss.rewrite(example_model(name, base="mlp"), spec)
    trainer = OrtGradientOptimizer(model, optimizer="adamw", learning_rate=0.02, batch_size=32,
                                   max_iter=15, random_state=0)  # fmt: skip
    trainer.fit(X, y)
    first, last = trainer.train_losses_[0], trainer.train_losses_[-1]
    assert np.isfinite(last) and last < 0.8 * first, (first, last)
