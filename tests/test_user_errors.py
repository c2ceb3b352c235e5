"""One error type, always: the issue's cases outside the trainer each raise an
OnnxLossError subclass naming the culprit, and the CLI prints one line and exits 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import identity_model, run_model
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss import draw, metadata
from onnxloss.cli import main
from onnxloss.examples import linear_regression


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxloss: error: "), captured.err
    return lines[0]


@pytest.fixture(scope="module")
def loss_model():
    return onnxloss.add_loss_output(linear_regression(2), weight_name="w")


def with_metadata(model: onnx.ModelProto, value: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for prop in out.metadata_props:
        if prop.key == metadata.METADATA_KEY:
            prop.value = value
    return out


def edited(model: onnx.ModelProto, **fields) -> str:
    meta = onnxloss.read_metadata(model)
    meta.update(fields)
    return json.dumps({k: v for k, v in meta.items() if v is not ...})


BAD_METADATA = {
    "not-json": ("{nodes: 3", "it is not JSON"),
    "list": ("[1, 2]", "it holds a JSON list, not an object"),
    "string": ('"loss"', "it holds a JSON string"),
    "null": ("null", "it holds a JSON null"),
    "missing": ('{"loss": "loss"}', r"lacks the field\(s\) \['format', 'nodes'"),
    "nodes-str": (dict(nodes="x"), "'nodes' must be .*got 'x'"),
    "nodes-float": (dict(nodes=2.5), "'nodes' must be .*got 2.5"),
    "nodes-negative": (dict(nodes=-1), "'nodes' must be .*from 0 to 8"),
    "nodes-too-many": (dict(nodes=99), "'nodes' must be .*got 99"),
    "nodes-bool": (dict(nodes=True), "'nodes' must be"),
    "loss-number": (dict(loss=3), "'loss' must be the loss output's name, got 3"),
    "loss-empty": (dict(loss=""), "'loss' must be"),
    "targets-list": (dict(targets=["label"]), "'targets' must map"),
    "targets-values": (dict(targets={"label": 1}), "'targets' must map"),
    "targets-absent": (dict(targets={"y": "variable"}), r"input\(s\) \['y'\]"),
    "weights-str": (dict(weights="w"), "'weights' must be a list"),
    "weights-absent": (dict(weights=["nope"]), r"input\(s\) \['nope'\]"),
    "reduction": (dict(reduction="median"), "'reduction' must be one of"),
    "format-str": (dict(format="1"), "'format' must be a positive integer"),
    "format-newer": (dict(format=7), "format 7, newer than this onnxloss reads"),
    "terms": (dict(terms="MSELoss()"), "'terms' must be a list of strings"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_malformed_metadata_is_a_metadata_error_everywhere(loss_model, case, tmp_path, capsys):
    value, why = BAD_METADATA[case]
    text = edited(loss_model, **value) if isinstance(value, dict) else value
    model = with_metadata(loss_model, text)
    calls = {
        "read_metadata": lambda: onnxloss.read_metadata(model),
        "strip_loss": lambda: onnxloss.strip_loss(model),
        "check_trainable": lambda: onnxloss.check_trainable(model),
        "to_dot": lambda: draw.to_dot(model),
    }
    for name, call in calls.items():
        with pytest.raises(onnxloss.MetadataError, match=f"'onnxloss' metadata entry.*{why}"):
            call()
        assert issubclass(onnxloss.MetadataError, onnxloss.OnnxLossError), name
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for argv in (["check", str(path)], ["draw", str(path), "-o", str(tmp_path / "m.dot")]):
        assert main(argv) == 2
        assert "'onnxloss' metadata entry is malformed" in one_error_line(capsys)
    assert not (tmp_path / "m.dot").exists()


@pytest.mark.parametrize("value", ["[1]", "not json", '{"format": 1}'])
def test_fit_reads_metadata_through_the_same_check(loss_model, value):
    pytest.importorskip("onnxruntime")
    from onnxloss.train import OrtGradientOptimizer

    trainer = OrtGradientOptimizer(with_metadata(loss_model, value), ["coef"], max_iter=1)
    x, y = np.ones((4, 2), np.float32), np.ones(4, np.float32)
    with pytest.raises(onnxloss.MetadataError, match="'onnxloss' metadata entry is malformed"):
        trainer.fit(x, y, np.ones(4, np.float32))


def test_well_formed_metadata_still_reads_and_strips(loss_model):
    meta = onnxloss.read_metadata(loss_model)
    assert meta["targets"] == {"label": "variable"} and meta["weights"] == ["w"]
    stripped = onnxloss.strip_loss(loss_model)
    x = np.array([[1.0, 2.0]], np.float32)
    (pred,) = run_model(stripped, {"X": x})
    (expected,) = run_model(linear_regression(2), {"X": x})
    np.testing.assert_array_equal(pred, expected)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--samples", "-1"], "--samples must be an integer from 5 to 1000000, got -1"),
        (["--samples", "0"], "--samples must be"),
        (["--samples", str(10**13)], f"got {10**13}"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
        (["--seed", str(2**40)], "--seed must be"),
        (["--epochs", "0"], "--epochs must be an integer from 1"),
        (["--samples", "many"], "invalid int value: 'many'"),
    ],
)
def test_demo_arguments_are_checked_before_anything_runs(argv, why, capsys):
    assert main(["demo", *argv]) == 2
    assert why in one_error_line(capsys)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"target": "y"}, "target='y' is not an option .*pass label_name='y' instead"),
        ({"weight": "w"}, "weight='w' is not an option .*pass weight_name='w' instead"),
        ({"output": "variable"}, "pass output_index='variable' instead"),
        ({"reduction": np.array(["sum", "mean"])}, "reduction must be one of"),
        ({"reduction": ["sum"]}, "reduction must be one of"),
        ({"score_name": "cross_entropy", "target_rank": np.array([1, 2])}, "target_rank must"),
    ],
    ids=["target", "weight", "output", "array-reduction", "list-reduction", "array-rank"],
)
def test_add_loss_output_argument_errors(kwargs, why):
    model = linear_regression(2, 2)
    with pytest.raises(onnxloss.CoefficientError, match=why):
        onnxloss.add_loss_output(model, **kwargs)


def model_without_float_output() -> onnx.ModelProto:
    """Trainable weights, but only predicted labels come out."""
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["X", "W"], ["s"]),
            oh.make_node("ArgMax", ["s"], ["label"], axis=1),
        ],
        "clf",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("label", TensorProto.INT64, ["N", 1])],
        [nh.from_array(np.ones((2, 3), np.float32), "W")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_check_without_a_float_output_is_not_ready(tmp_path, capsys):
    report = onnxloss.check_trainable(model_without_float_output())
    assert not report.ok and report.loss_outputs == []
    # No loss to put anywhere; and W, which reaches only an integer output, is no weight.
    assert [p.kind for p in report.errors] == ["no-loss", "no-trainables"]
    assert "no float tensor output" in report.errors[0].message
    assert "'label' (INT64 tensor)" in report.errors[0].message
    path = tmp_path / "clf.onnx"
    onnx.save(model_without_float_output(), path)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "not trainable" in out and "towards []" not in out and "ready" not in out


def broken_output(kind: str) -> onnx.ModelProto:
    if kind == "0-d":
        return identity_model(())
    if kind == "empty-name":
        return identity_model(name="")
    model = identity_model()
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.elem_type = 999
    return model


@pytest.mark.parametrize(
    ("kind", "error", "why"),
    [
        ("0-d", onnxloss.ShapeError, r"'pred' \(FLOAT, \[\]\) is a scalar; a loss needs a batch"),
        ("empty-name", onnxloss.OutputSelectionError, r"empty name \(''\)"),
        ("unknown-type", onnxloss.DtypeError, "element type 999.*ONNX does not define"),
    ],
)
def test_broken_outputs_are_blamed_on_the_model(kind, error, why):
    for name in ("squared_error", "huber", "bce_with_logits"):
        with pytest.raises(error, match=why) as err:
            onnxloss.add_loss_output(broken_output(kind), score_name=name)
        assert "plugin" not in str(err.value)  # not the built-in plugin's fault


class ScaledLoss(onnxloss.Loss):
    """A third party's loss that checks nothing itself: ``scale · d²``, class weights."""

    name = "scaled_test_loss"

    def __init__(self, output=None, *, scale=1.0, weights=(1.0,), **kwargs):
        super().__init__(output, **kwargs)
        self.scale, self.weights = scale, weights

    def hyperparameters(self):
        return {"scale": self.scale, "weights": self.weights, "flag": True, "mode": "x"}

    def elementwise(self, g, p, y):
        d = g.Sub(p, y)
        return g.Mul(g.Mul(d, d), self.scale)


def on(elem, spec):
    return lambda: (identity_model(elem=elem), spec())


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (on(TensorProto.FLOAT, lambda: onnxloss.ElasticLoss(l1_weight=1e39)), "'elastic' option"),
        (on(TensorProto.FLOAT, lambda: onnxloss.HuberLoss(delta=1e300)), "'huber' option 'delta'"),
        (
            lambda: (linear_regression(1), onnxloss.MSELoss() + onnxloss.L2Penalty("coef", 1e39)),
            "regularizer 'l2' option 'alpha'",
        ),
        (on(TensorProto.FLOAT, lambda: 1e20 * (1e20 * onnxloss.MSELoss())), "coefficient of loss"),
        (on(TensorProto.FLOAT16, lambda: onnxloss.HuberLoss(delta=7e4)), "range of FLOAT16"),
        (on(TensorProto.FLOAT, lambda: ScaledLoss(scale=1e39)), "'scaled_test_loss' option 'sca"),
        (on(TensorProto.FLOAT, lambda: ScaledLoss(weights=[1, 1e40])), "option 'weights'"),
        (on(TensorProto.DOUBLE, lambda: ScaledLoss(scale=float("inf"))), "is inf, beyond"),
        (on(TensorProto.FLOAT, lambda: ScaledLoss(scale=1e-50)), "below the smallest FLOAT"),
    ],
    ids=["l1_weight", "huber", "penalty", "coefficient", "fp16", "plugin", "list", "inf", "tiny"],
)
def test_coefficients_beyond_the_element_type(build, why):
    model, spec = build()
    with pytest.raises(onnxloss.CoefficientError, match=why):
        onnxloss.rewrite(model, spec)


def test_coefficients_within_range_still_compute():
    """1e39 is fine in float64, and the largest float32 itself is kept exactly."""
    p = np.array([[1.0], [3.0]])
    result = onnxloss.rewrite(identity_model(elem=TensorProto.DOUBLE), ScaledLoss(scale=1e39))
    (loss, _) = run_model(result, {"P": p, "label": np.zeros_like(p)})
    np.testing.assert_allclose(loss, 1e39 * (1 + 9) / 2)
    big = float(np.finfo(np.float32).max)
    result = onnxloss.rewrite(identity_model(), big * onnxloss.L1Loss(reduction="sum"))
    p32 = np.array([[0.5]], np.float32)
    (loss, _) = run_model(result, {"P": p32, "label": np.zeros_like(p32)})
    assert np.isfinite(loss) and loss == np.float32(big * 0.5)
