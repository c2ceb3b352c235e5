"""The default weights: float initializers of rank >= 1 on a differentiable path to an
output. Initializers that only feed shape, bound or statistics inputs are left out, the
report says which and why, and the runtime agrees that they cannot be trained."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import requires_ort
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.readiness import default_trainables
from onnxloss.trainables import default_weights

F = TensorProto.FLOAT


def c(name, value, dtype=np.float32):
    return nh.from_array(np.asarray(value, dtype), name)


def upsample_conv_bn():
    """``X [N,1,2,2] → Resize(scales) → Conv(W, B) → BatchNormalization(s, b, mean, var)
    → Reshape(Cast(shape_f)) → Y``, with every constant a float initializer, as torch.onnx's
    dynamo exporter writes them (plus a scalar and an unused one)."""
    nodes = [
        oh.make_node("Resize", ["X", "", "scales"], ["up"], mode="nearest", name="resize"),
        oh.make_node("Conv", ["up", "W", "B"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        oh.make_node("BatchNormalization", ["conv", "s", "b", "mean", "var"], ["bn"], name="bn"),
        oh.make_node("Mul", ["bn", "half"], ["scaled"], name="mul"),
        oh.make_node("Cast", ["shape_f"], ["shape"], to=TensorProto.INT64, name="cast"),
        oh.make_node("Reshape", ["scaled", "shape"], ["Y"], name="reshape"),
    ]
    inits = [
        c("scales", [1, 1, 2, 2]),
        c("W", np.random.default_rng(0).normal(size=(2, 1, 3, 3))),
        c("B", [0.1, -0.1]),
        c("s", [1.0, 2.0]),
        c("b", [0.0, 0.5]),
        c("mean", [0.2, -0.3]),
        c("var", [1.5, 0.5]),
        c("half", 0.5),
        c("shape_f", [-1, 32]),
        c("unused", [1.0, 2.0]),
    ]
    graph = oh.make_graph(
        nodes,
        "upsample",
        [oh.make_tensor_value_info("X", F, ["N", 1, 2, 2])],
        [oh.make_tensor_value_info("Y", F, ["N", 32])],
        initializer=inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_only_weights_are_default_trainables_and_the_rest_is_explained():
    model = upsample_conv_bn()
    before = model.SerializeToString()
    found = default_weights(model)
    assert model.SerializeToString() == before
    assert found.names == default_trainables(model) == ["W", "B", "s", "b"]
    why = found.left_out
    assert set(why) == {"scales", "mean", "var", "half", "shape_f", "unused"}
    assert why["scales"] == "only feeds inputs that take no gradient: scales of Resize 'resize'"
    assert "running mean of BatchNormalization 'bn'" in why["mean"]
    assert "running variance" in why["var"]
    assert why["half"].startswith("a scalar")
    assert why["unused"] == "unused"
    assert "Cast 'cast'" in why["shape_f"] and "integer or bool" in why["shape_f"]


def test_clip_bounds_and_stopped_paths_are_left_out():
    graph = oh.make_graph(
        [
            oh.make_node("Clip", ["X", "low", "high"], ["clipped"]),
            oh.make_node("Add", ["clipped", "bias"], ["Y"]),
            oh.make_node("Add", ["X", "noise_scale"], ["x2"]),
            oh.make_node("RandomNormalLike", ["x2"], ["Z"]),
        ],
        "clip",
        [oh.make_tensor_value_info("X", F, ["N", 2])],
        [oh.make_tensor_value_info("Y", F, ["N", 2]), oh.make_tensor_value_info("Z", F, None)],
        initializer=[
            c("low", [-1.0]),
            c("high", [1.0]),
            c("bias", [0.5, 0.5]),
            c("noise_scale", [1.0]),
        ],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    found = default_weights(model)
    assert found.names == ["bias"]
    assert "min of Clip" in found.left_out["low"] and "max of Clip" in found.left_out["high"]
    assert "RandomNormalLike" not in found.names and "noise_scale" in found.left_out


def test_the_report_lists_what_was_left_out():
    report = onnxloss.check_trainable(upsample_conv_bn(), device=None)
    assert report.trainables == ["W", "B", "s", "b"]
    assert report.left_out == default_weights(upsample_conv_bn()).left_out
    text = report.format()
    assert "left out of the default weights: 'scales' (only feeds inputs" in text
    # Resize's input is data, not a weight: nothing trained goes through it
    assert "resize" not in report.path_nodes
    named = onnxloss.check_trainable(upsample_conv_bn(), ["W"], device=None)
    assert named.left_out == {} and "left out" not in named.format()


def test_naming_a_non_weight_is_refused_as_unreachable():
    report = onnxloss.check_trainable(upsample_conv_bn(), ["W", "scales", "mean"], device=None)
    assert sorted(p.subject for p in report.errors if p.kind == "trainable-unreachable") == [
        "mean",
        "scales",
    ]


def test_no_weight_at_all_says_what_was_left_out():
    graph = oh.make_graph(
        [oh.make_node("Resize", ["X", "", "scales"], ["Y"], mode="nearest")],
        "resize",
        [oh.make_tensor_value_info("X", F, [1, 1, 2, 2])],
        [oh.make_tensor_value_info("Y", F, [1, 1, 4, 4])],
        initializer=[c("scales", [1, 1, 2, 2])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    [problem] = onnxloss.check_trainable(model).errors
    assert problem.kind == "no-trainables"
    assert "no weight to train" in problem.message and "'scales' (only feeds" in problem.message


def test_cli_check_prints_and_serialises_left_out(tmp_path, capsys):
    from onnxloss.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(upsample_conv_bn(), path)
    main(["check", str(path), "--device", "cuda", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["weights"] == ["W", "B", "s", "b"]
    assert set(data["left_out"]) == {"scales", "mean", "var", "half", "shape_f", "unused"}
    main(["check", str(path), "--device", "cuda"])
    assert "left out of the default weights: 'mean'" in capsys.readouterr().out


@requires_ort
@pytest.mark.parametrize("name", ["scales", "mean", "var"])
def test_the_runtime_cannot_train_what_is_left_out(name):
    """Measured: generate_artifacts fails on each left-out initializer ("failed to find
    NodeArg by name: scales_grad"), and trains the default weights."""
    from test_readiness_runtime import generate

    model = upsample_conv_bn()
    loss = oh.make_node("ReduceSum", ["Y"], ["loss"], keepdims=0)
    model.graph.node.append(loss)
    model.graph.output.insert(0, oh.make_tensor_value_info("loss", F, []))
    assert f"{name}_grad" in generate(model, ["W", name])
    if name == "scales":
        assert generate(model, default_trainables(model), session=True) is None


@requires_ort
def test_default_weights_train_on_cpu():
    """Before, the defaults held Resize's scales and the running statistics: the gradient
    build failed. Now the model trains on CPU (Resize is not on the gradient path)."""
    from onnxloss.train import OrtGradientOptimizer

    loss_model = onnxloss.rewrite(upsample_conv_bn(), onnxloss.MSELoss())
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 1, 2, 2)).astype(np.float32)
    y = rng.normal(size=(64, 32)).astype(np.float32)
    trainer = OrtGradientOptimizer(loss_model, learning_rate=0.01, max_iter=5, batch_size=16)
    trainer.fit(X, y)
    assert sorted(trainer.get_state()) == ["B", "W", "b", "s"]
    assert trainer.train_losses_[-1] < trainer.train_losses_[0]
