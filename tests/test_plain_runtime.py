"""Only where the plain onnxruntime is installed and the training build is not (the second
virtual environment of tests/test_plain_runtime_env.py): backend "auto" is the plain runtime,
the demo matches least squares, and models the training build cannot train do train."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import TRAIN_BACKENDS
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss

pytestmark = pytest.mark.skipif(
    TRAIN_BACKENDS != ["onnxruntime"], reason="only without the training build"
)


def test_the_training_build_is_absent_and_auto_is_the_plain_runtime():
    assert importlib.util.find_spec("onnxruntime.training") is None
    from onnxloss.train import OrtGradientOptimizer

    model = onnxloss.add_loss_output(onnxloss.examples.linear_regression(2))
    trainer = OrtGradientOptimizer(model, max_iter=1).fit(np.ones((4, 2)), np.ones(4))
    assert trainer.backend_ == "onnxruntime"
    with pytest.raises(onnxloss.OnnxLossError, match="needs the training build"):
        OrtGradientOptimizer(model, backend="onnxruntime-training").fit(np.ones((4, 2)), np.ones(4))


def test_demo_matches_least_squares():
    from onnxloss.demo import run_demo

    result = run_demo(print_fn=lambda *a: None)
    np.testing.assert_allclose(result["trained"], result["lstsq"], atol=2e-3)


def _conv_transpose_autoencoder() -> onnxloss.rewrite:
    """X [N,1,8,8] → Conv(4, 3x3, stride 2) → Relu → ConvTranspose(1, 4x4, stride 2) → Y."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(scale=0.3, size=(4, 1, 3, 3)).astype(np.float32), "enc_W"),
        nh.from_array(np.zeros(4, np.float32), "enc_b"),
        nh.from_array(rng.normal(scale=0.3, size=(4, 1, 4, 4)).astype(np.float32), "dec_W"),
        nh.from_array(np.zeros(1, np.float32), "dec_b"),
    ]
    nodes = [
        oh.make_node("Conv", ["X", "enc_W", "enc_b"], ["h"], strides=[2, 2], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["h"], ["hr"]),
        oh.make_node(
            "ConvTranspose", ["hr", "dec_W", "dec_b"], ["Y"], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
    ]
    graph = oh.make_graph(
        nodes,
        "autoencoder",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def _upsample_cnn():
    """X [N,2,4,4] → Conv(3, 3x3, pad 1) → Resize(nearest, x2) → Conv(1, 3x3, pad 1) → Y."""
    rng = np.random.default_rng(1)
    inits = [
        nh.from_array(rng.normal(scale=0.3, size=(3, 2, 3, 3)).astype(np.float32), "W1"),
        nh.from_array(rng.normal(scale=0.3, size=(1, 3, 3, 3)).astype(np.float32), "W2"),
        nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        oh.make_node("Conv", ["X", "W1"], ["h"], pads=[1, 1, 1, 1]),
        oh.make_node("Resize", ["h", "", "scales"], ["u"], mode="nearest"),
        oh.make_node("Conv", ["u", "W2"], ["Y"], pads=[1, 1, 1, 1]),
    ]
    graph = oh.make_graph(
        nodes,
        "upsample_cnn",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(
    "build, shape, weights",
    [
        (_conv_transpose_autoencoder, (1, 8, 8), ["enc_W", "enc_b", "dec_W", "dec_b"]),
        (_upsample_cnn, (2, 4, 4), ["W1", "W2"]),
    ],
    ids=["convtranspose-autoencoder", "upsample-cnn"],
)
def test_models_the_training_build_cannot_train_do_train(build, shape, weights):
    from onnxloss.train import OrtGradientOptimizer

    inference = build()
    rng = np.random.default_rng(2)
    X = rng.normal(size=(64, *shape)).astype(np.float32)
    target_model = build()  # targets: the same architecture with other weights
    for t in target_model.graph.initializer:
        if t.name in weights:
            t.CopyFrom(nh.from_array(nh.to_array(t) * 1.5 + 0.1, t.name))
    from onnx.reference import ReferenceEvaluator

    (y,) = ReferenceEvaluator(target_model).run(None, {"X": X})
    loss_model = onnxloss.rewrite(inference, onnxloss.MSELoss())
    trainer = OrtGradientOptimizer(
        loss_model, weights, optimizer="adamw", learning_rate=0.02, max_iter=30, batch_size=16,
        random_state=0,
    )  # fmt: skip
    trainer.fit(X, y)
    assert trainer.backend_ == "onnxruntime"
    assert trainer.train_losses_[-1] < 0.3 * trainer.train_losses_[0]
