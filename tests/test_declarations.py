"""Output declarations that contradict what the graph computes: found by the readiness
check (which then never says "ready"), fixed by RedeclareOutputs, and never answered with
advice that fails later (AddLoss's validate=False)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from conftest import requires_ort, run_model
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.passes import AddLoss, LowerIRVersion, MakeTrainable, RedeclareOutputs, Sequential
from onnxloss.passes.structure import declaration_conflicts

F = TensorProto.FLOAT


def affine(declared_shape=("N", 4), declared_elem=F, value_info=None):
    """``Y = X @ W + B`` computing ``[N, 1]``, its output declared ``declared_shape``."""
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["X", "W"], ["h"]), oh.make_node("Add", ["h", "B"], ["Y"])],
        "affine",
        [oh.make_tensor_value_info("X", F, ["N", 3])],
        [oh.make_tensor_value_info("Y", declared_elem, declared_shape)],
        initializer=[
            nh.from_array(np.arange(3, dtype=np.float32).reshape(3, 1), "W"),
            nh.from_array(np.ones(1, np.float32), "B"),
        ],
        value_info=value_info or [],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def test_a_wrong_fixed_dimension_is_a_conflict_and_is_redeclared():
    model = affine(("N", 4))
    [conflict] = declaration_conflicts(model)
    assert conflict.describe() == "'Y' is declared (FLOAT, [N, 4]) but computed (FLOAT, [N, 1])"
    before = model.SerializeToString()
    result = RedeclareOutputs()(model)
    assert model.SerializeToString() == before
    assert result.applied == ("RedeclareOutputs",)
    fixed = result.model
    dims = fixed.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1]  # the symbol is kept
    onnx.checker.check_model(fixed, full_check=True)
    assert declaration_conflicts(fixed) == []
    np.testing.assert_allclose(run_model(fixed, {"X": X})[0], X @ np.arange(3.0)[:, None] + 1)
    assert not RedeclareOutputs()(fixed).modified


@pytest.mark.parametrize(
    "shape,elem",
    [(("N", 1, 1), F), ((7,), F), (("N", 1), TensorProto.DOUBLE)],
    ids=["rank", "rank-1", "type"],
)
def test_rank_and_type_contradictions(shape, elem):
    fixed = RedeclareOutputs()(affine(shape, elem)).model
    info = onnxloss.TensorInfo.from_value_info(fixed.graph.output[0])
    assert info.elem_type == F and info.rank == 2 and info.shape[1] == 1
    onnx.checker.check_model(fixed, full_check=True)


@pytest.mark.parametrize("shape", [("N", 1), (5, 1), ("batch", "k"), None])
def test_agreeing_or_vaguer_declarations_are_no_conflict(shape):
    """A declared fixed batch or symbolic dims say more than inference, never the opposite."""
    model = affine(shape)
    assert declaration_conflicts(model) == []
    assert not RedeclareOutputs()(model).modified


def test_a_wrong_value_info_entry_is_redeclared_too():
    model = affine(("N", 1), value_info=[oh.make_tensor_value_info("h", F, ["N", 9])])
    [conflict] = declaration_conflicts(model)
    assert conflict.name == "h"
    fixed = RedeclareOutputs()(model).model
    onnx.checker.check_model(fixed, full_check=True)
    assert declaration_conflicts(fixed) == []


def test_the_check_refuses_a_contradicting_model_and_names_the_pass():
    report = onnxloss.check_trainable(affine(("N", 4)), ["W", "B"])
    assert not report.ok
    [problem] = report.errors
    assert problem.kind == "output-shape" and problem.subject == "Y"
    assert "RedeclareOutputs()" in problem.fix and "make_trainable does" in problem.fix


def pls_model():
    pytest.importorskip("sklearn")
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.cross_decomposition import PLSRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = (X @ [1.5, -2.0, 0.5, 1.0]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pls = PLSRegression(2).fit(X, y)
        return skl2onnx.to_onnx(pls, X[:1]), pls, X


def test_pls_regression_declares_n_features_and_computes_one_target():
    model, pls, X = pls_model()
    [conflict] = declaration_conflicts(model)
    assert conflict.declared.shape[1] == 4 and conflict.inferred.shape[1] == 1
    # AddLoss refuses it and says what to do, not validate=False (which fails later)
    with pytest.raises(onnxloss.OnnxLossError) as info:
        AddLoss(onnxloss.MSELoss())(model)
    message = str(info.value)
    assert "RedeclareOutputs()" in message and "validate=False" not in message
    # the fix
    loss_model = Sequential(MakeTrainable(), AddLoss(onnxloss.MSELoss()))(model).model
    assert [d.dim_value for d in loss_model.graph.input[1].type.tensor_type.shape.dim][1:] == [1]
    assert onnxloss.check_trainable(loss_model).ok
    prediction = run_model(loss_model, {"X": X, "label": np.zeros((len(X), 1), np.float32)})[1]
    np.testing.assert_allclose(prediction, pls.predict(X).reshape(-1, 1), rtol=1e-4, atol=1e-4)


def test_a_loss_model_built_past_the_refusal_is_refused_with_the_right_fix():
    model, _, _ = pls_model()
    loss_model = AddLoss(onnxloss.MSELoss(), validate=False)(model).model
    report = onnxloss.check_trainable(loss_model)
    assert [p.kind for p in report.errors] == ["output-shape"]
    assert "add the loss again" in report.errors[0].fix


@requires_ort
def test_the_refusal_is_what_the_runtime_does():
    """onnxruntime-training fails on the contradicting loss model (the check's "no"), and
    trains the redeclared one (the check's "yes")."""
    from onnxloss.train import OrtGradientOptimizer

    model, _, X = pls_model()
    y = np.ones((len(X), 1), np.float32)
    refused = AddLoss(onnxloss.MSELoss(), validate=False)(model).model
    trainer = OrtGradientOptimizer(refused, weights_to_train=["Ma_MatMulcst"], max_iter=1)
    with pytest.raises(onnxloss.NotTrainableError, match="output-shape|declared"):
        trainer.fit(X, y)
    # the runtime itself, without the check in front of it
    from test_readiness_runtime import generate

    error = generate(LowerIRVersion()(refused).model, ["Ma_MatMulcst"])
    assert "Inferred shape and existing shape differ" in error
    fixed = Sequential(MakeTrainable(), AddLoss(onnxloss.MSELoss()))(model).model
    trainer = OrtGradientOptimizer(fixed, max_iter=3, learning_rate=0.05)
    trainer.fit(X, y)
    assert trainer.train_losses_[-1] < trainer.train_losses_[0]


def test_validate_false_is_suggested_only_for_operators_the_checker_does_not_know():
    """An operator the installed onnx has no schema for (a newer opset's): the check cannot
    judge it, a runtime may still run it."""
    graph = oh.make_graph(
        [oh.make_node("FutureOp", ["X"], ["Y"])],
        "future",
        [oh.make_tensor_value_info("X", F, ["N", 1])],
        [oh.make_tensor_value_info("Y", F, ["N", 1])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(onnxloss.OnnxLossError, match="pass validate=False if the runtime"):
        onnxloss.rewrite(model, onnxloss.MSELoss())
