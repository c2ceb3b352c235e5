"""The pass infrastructure: results, composition, failures named with what ran before."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_model

from onnxloss import MSELoss, OnnxLossError, OpsetError, read_metadata
from onnxloss.examples import linear_regression
from onnxloss.passes import (
    AddLoss,
    ConvertOpset,
    DecomposeForGradients,
    LowerIRVersion,
    MakeTrainable,
    Pass,
    PassError,
    PassResult,
    Sequential,
    ToFloat32,
)


class Rename(Pass):
    """A pass for the tests: renames the graph."""

    def __init__(self, name: str):
        self.graph_name = name

    def apply(self, model):
        if model.graph.name == self.graph_name:
            return False
        model.graph.name = self.graph_name
        return True


class Broken(Pass):
    def apply(self, model):
        raise KeyError("a bug")


def test_a_pass_works_on_a_copy_and_says_whether_it_changed_anything():
    model = linear_regression(2)
    result = Rename("renamed")(model)
    assert isinstance(result, PassResult)
    assert result.modified and result.applied == ("Rename",)
    assert result.model.graph.name == "renamed" and model.graph.name == "linear_regression"
    again = Rename("renamed")(result.model)
    assert not again.modified and again.applied == ()


def test_sequential_runs_in_order_and_lists_what_acted():
    model = linear_regression(2, dtype=np.float64)
    pipeline = Sequential(
        Rename("a"), DecomposeForGradients(), ToFloat32(), Rename("b"), AddLoss(MSELoss())
    )
    result = pipeline(model)
    assert result.applied == ("Rename", "ToFloat32", "Rename", "AddLoss")
    assert result.model.graph.name == "b"
    assert result.model.graph.output[0].name == "loss"
    assert read_metadata(result.model)["targets"] == {"label": "variable"}
    assert model.graph.initializer[0].data_type == onnx.TensorProto.DOUBLE
    X = np.ones((2, 2), np.float32)
    loss, _ = run_model(result.model, {"X": X, "label": np.ones((2, 1), np.float32)})
    assert loss == pytest.approx(1.0)  # zero weights, targets one: mean of squared errors
    assert "Sequential(Rename(), DecomposeForGradients()" in repr(pipeline)


def test_a_bug_in_a_pass_is_named_with_the_passes_before_it():
    with pytest.raises(PassError, match=r"pass Broken failed \(after \['Rename'\]\): KeyError"):
        Sequential(Rename("x"), Broken(), Rename("y"))(linear_regression(2))


def test_a_bug_in_a_single_pass_is_named_too():
    with pytest.raises(PassError, match=r"pass Broken failed: KeyError: 'a bug'"):
        Broken()(linear_regression(2))


def test_a_user_error_keeps_its_class_and_gains_the_pass_names():
    model = linear_regression(2)
    model.ir_version = 11
    model.graph.node[0].metadata_props.add(key="k", value="v")
    with pytest.raises(OpsetError, match=r"in pass LowerIRVersion\(9\)|in pass LowerIRVersion"):
        Sequential(Rename("x"), LowerIRVersion(9))(model)
    nested = Sequential(Rename("x"), Sequential(Rename("y"), LowerIRVersion(9)))
    with pytest.raises(OpsetError) as info:
        nested(model)
    assert str(info.value).count("(in pass") == 1
    assert "after ['Rename', 'Rename']" in str(info.value)


def test_the_caller_model_survives_a_failing_pipeline():
    model = linear_regression(2)
    before = model.SerializeToString()
    with pytest.raises(PassError):
        Sequential(Rename("x"), Broken())(model)
    assert model.SerializeToString() == before


def test_sequential_takes_passes_only():
    with pytest.raises(PassError, match="Sequential takes passes, got builtin_function"):
        Sequential(Rename("x"), len)


def test_add_loss_is_rewrite():
    model = linear_regression(2)
    result = AddLoss(MSELoss(), loss_name="objective")(model)
    assert result.applied == ("AddLoss",)
    assert result.model.graph.output[0].name == "objective"
    with pytest.raises(OnnxLossError, match="already used"):
        AddLoss(MSELoss(), loss_name="variable")(model)


def test_make_trainable_lists_its_passes_and_leaves_a_ready_model_alone():
    assert [p.name for p in MakeTrainable().passes] == [
        "InitializersNotInputs",
        "ConvertOpset",
        "ZipMapToTensor",
        "MLOpsToStandard",
        "DecomposeForGradients",
        "DeclareGradientOutputs",
        "ExplicitTransposePerm",
        "RedeclareOutputs",
        "ToFloat32",
        "LowerIRVersion",
    ]
    assert "ToFloat32" not in [p.name for p in MakeTrainable(float32=False).passes]
    ready = linear_regression(3)
    result = MakeTrainable()(ready)
    assert not result.modified
    assert result.model.SerializeToString() == ready.SerializeToString()
    assert repr(ConvertOpset(21)) == "ConvertOpset(21)"
