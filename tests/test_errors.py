"""Every error a user can cause: its type, and a message that names the culprit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import identity_model
from onnx import TensorProto
from onnx import helper as oh

import onnxloss
from onnxloss import add_loss_output
from onnxloss.examples import linear_regression


def two_outputs():
    graph = oh.make_graph(
        [oh.make_node("Identity", ["P"], ["first"]), oh.make_node("Neg", ["P"], ["second"])],
        "two",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 1])],
        [
            oh.make_tensor_value_info("first", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("second", TensorProto.FLOAT, ["N", 1]),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_all_errors_are_value_errors():
    assert issubclass(onnxloss.OnnxLossError, ValueError)
    for name in dir(onnxloss):
        obj = getattr(onnxloss, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, onnxloss.OnnxLossError), name


def test_unknown_loss_lists_available():
    with pytest.raises(
        onnxloss.UnknownTermError, match="'focal'.*available: absolute_error.*squared_error"
    ):
        add_loss_output(linear_regression(2), score_name="focal")


def test_several_outputs_need_output_index():
    with pytest.raises(
        onnxloss.OutputSelectionError, match=r"2 outputs \['first', 'second'\].*output_index"
    ):
        add_loss_output(two_outputs())


@pytest.mark.parametrize("index", [2, -3, "third"])
def test_unknown_output(index):
    with pytest.raises(
        onnxloss.OutputSelectionError,
        match=r"(out of range|no output or tensor named 'third').*\['first', 'second'\]",
    ):
        add_loss_output(two_outputs(), output_index=index)


def test_unknown_tensor_in_penalty():
    with pytest.raises(
        onnxloss.TensorNotFoundError, match=r"'weights'.*no tensor.*\['coef', 'intercept'\]"
    ):
        add_loss_output(linear_regression(2), penalty={"weights": 0.1})


def test_glob_matching_nothing():
    with pytest.raises(onnxloss.TensorNotFoundError, match=r"'W\*'.*no initializer matches"):
        add_loss_output(linear_regression(2), penalty={"W*": 0.1})


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"label_name": "X"}, "'X'"),
        ({"weight_name": "coef"}, "'coef'"),
        ({"loss_name": "variable"}, "'variable'"),
        ({"loss_name": "xw"}, "'xw'"),
        ({"label_name": "w", "weight_name": "w"}, "'w'"),
    ],
)
def test_name_collisions(kwargs, culprit):
    with pytest.raises(onnxloss.NameCollisionError, match=culprit):
        add_loss_output(linear_regression(2), **kwargs)


def test_non_float_output():
    graph = oh.make_graph(
        [oh.make_node("ArgMax", ["P"], ["label_out"], axis=1, keepdims=0)],
        "clf",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("label_out", TensorProto.INT64, ["N"])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(onnxloss.DtypeError, match=r"'label_out' \(INT64.*not a float tensor"):
        add_loss_output(model)


def test_zipmap_output_gets_a_hint():
    seq = oh.make_tensor_sequence_value_info("proba", TensorProto.FLOAT, None)
    graph = oh.make_graph(
        [oh.make_node("SplitToSequence", ["P"], ["proba"])],
        "seq",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 2])],
        [seq],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(onnxloss.DtypeError, match="'proba' is not a tensor.*zipmap"):
        add_loss_output(model, score_name="log")


@pytest.mark.parametrize("shape", [("N", 3), ("N",), ("N", 2, 1)])
def test_log_loss_needs_two_columns(shape):
    with pytest.raises(onnxloss.ShapeError, match=r"\[N, 2\].*'pred'"):
        add_loss_output(identity_model(shape), score_name="log")


@pytest.mark.parametrize("opset", [9, 12])
def test_opset_too_old(opset):
    model = identity_model(opset=17)
    model.opset_import[0].version = opset
    with pytest.raises(onnxloss.OpsetError, match=f"opset {opset}.*13 to .*convert_version"):
        add_loss_output(model)


def test_opset_too_new():
    model = identity_model(opset=17)
    model.opset_import[0].version = onnxloss.MAX_OPSET + 1
    with pytest.raises(onnxloss.OpsetError, match=f"opset {onnxloss.MAX_OPSET + 1}"):
        add_loss_output(model)


def test_no_default_opset():
    model = identity_model()
    model.opset_import[0].domain = "ai.onnx.ml"
    with pytest.raises(onnxloss.OpsetError, match="imports no ai.onnx opset"):
        add_loss_output(model)


@pytest.mark.parametrize("spec", [{"l1": 0, "l2": 0}, {"l1": 0.0}, {}])
def test_penalty_with_nothing_to_add(spec):
    with pytest.raises(onnxloss.PenaltyError, match="'coef'.*both 0"):
        add_loss_output(linear_regression(2), penalty={"coef": spec})


def test_penalty_of_zero():
    with pytest.raises(onnxloss.PenaltyError, match="'coef'.*alpha is 0"):
        add_loss_output(linear_regression(2), penalty={"coef": 0})


def test_penalty_unknown_key():
    with pytest.raises(onnxloss.PenaltyError, match=r"'coef'.*\['l3'\]"):
        add_loss_output(linear_regression(2), penalty={"coef": {"l3": 1}})


@pytest.mark.parametrize(
    "call",
    [
        lambda m: add_loss_output(m, penalty={"coef": "a lot"}),
        lambda m: add_loss_output(m, penalty={"coef": {"l2": "x"}}),
        lambda m: add_loss_output(m, penalty={"coef": float("nan")}),
        lambda m: add_loss_output(m, penalty={"coef": True}),
        lambda m: add_loss_output(m, score_name="elastic", l1_weight="0.1"),
        lambda m: onnxloss.rewrite(m, "two" * onnxloss.MSELoss()),
        lambda m: onnxloss.rewrite(m, onnxloss.MSELoss() * float("inf")),
        lambda m: onnxloss.rewrite(m, onnxloss.HuberLoss(delta=-1)),
        lambda m: onnxloss.rewrite(m, onnxloss.QuantileLoss(quantile=1.0)),
    ],
    ids=["str", "l2-str", "nan", "bool", "l1_weight", "scale-str", "scale-inf", "delta", "q"],
)
def test_bad_coefficients(call):
    with pytest.raises(onnxloss.CoefficientError, match="(must be|expected a number)"):
        call(linear_regression(2))


def test_unknown_loss_option():
    with pytest.raises(
        onnxloss.CoefficientError, match="'huber' has no option 'gamma'; it accepts delta"
    ):
        add_loss_output(linear_regression(2), score_name="huber", gamma=2)


def test_unknown_reduction():
    with pytest.raises(onnxloss.CoefficientError, match="reduction must be one of"):
        onnxloss.MSELoss(reduction="none")


def test_spec_without_loss():
    with pytest.raises(onnxloss.OutputSelectionError, match="no loss term"):
        onnxloss.rewrite(linear_regression(2), onnxloss.L2Penalty("coef"))


def test_already_a_loss_model():
    once = add_loss_output(linear_regression(2))
    with pytest.raises(onnxloss.NameCollisionError, match="'loss' is already used"):
        add_loss_output(once, output_index="variable")
    with pytest.raises(onnxloss.NameCollisionError, match="already carries an onnxloss loss"):
        add_loss_output(once, output_index="variable", loss_name="loss2", label_name="label2")


def test_label_shared_with_conflicting_types():
    graph = oh.make_graph(
        [oh.make_node("Identity", ["A"], ["a"]), oh.make_node("Identity", ["B"], ["b"])],
        "two",
        [
            oh.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("B", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            oh.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    spec = onnxloss.MSELoss("a", target="y") + onnxloss.MSELoss("b", target="y")
    with pytest.raises(onnxloss.NameCollisionError, match="'y' is used twice"):
        onnxloss.rewrite(model, spec)


def test_missing_file_and_bad_file(tmp_path):
    with pytest.raises(onnxloss.ModelFileError, match="does not exist"):
        add_loss_output(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(onnxloss.ModelFileError, match="cannot read"):
        add_loss_output(bad)


def test_not_a_model():
    with pytest.raises(onnxloss.ModelFileError, match="expected an onnx.ModelProto or a path"):
        add_loss_output(np.zeros(3))


def test_bad_spec_type():
    with pytest.raises(onnxloss.OutputSelectionError, match="loss spec must be"):
        onnxloss.rewrite(linear_regression(2), 3.0)


def test_output_without_rank():
    graph = oh.make_graph(
        [oh.make_node("Identity", ["P"], ["pred"])],
        "g",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 1])],
        [oh.make_tensor_value_info("pred", TensorProto.FLOAT, None)],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    # Shape inference finds [N, 1] from the input, so the label can still be typed (the
    # model itself fails the checker, so validation is left out).
    result = onnxloss.rewrite(model, onnxloss.MSELoss(), validate=False)
    assert len(result.graph.input[1].type.tensor_type.shape.dim) == 2
