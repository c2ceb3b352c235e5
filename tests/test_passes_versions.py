"""LowerIRVersion and ConvertOpset: within what onnxruntime 1.19.2 loads and trains."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_model
from onnx import TensorProto
from onnx import helper as oh

from onnxloss import OpsetError
from onnxloss.examples import linear_regression
from onnxloss.passes import ConvertOpset, LowerIRVersion, make_trainable, required_ir_version


def test_newer_ir_version_is_lowered_when_nothing_needs_it():
    model = linear_regression(3, opset=17, ir_version=onnx.IR_VERSION)
    assert model.ir_version > 10
    result = LowerIRVersion()(model)
    assert result.modified and result.model.ir_version == 10
    assert model.ir_version == onnx.IR_VERSION  # the caller's model is untouched
    onnx.checker.check_model(result.model, full_check=True)
    assert not LowerIRVersion()(result.model).modified
    assert LowerIRVersion(9)(result.model).model.ir_version == 9


def float4_model() -> onnx.ModelProto:
    graph = oh.make_graph(
        [
            oh.make_node("Cast", ["x"], ["q"], to=TensorProto.FLOAT4E2M1),
            oh.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT),
        ],
        "f4",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 23)], ir_version=11)


def test_what_needs_a_newer_ir_version_is_named():
    with pytest.raises(OpsetError, match=r"opset imports \[\('', 23\)\] needs IR version 11"):
        LowerIRVersion()(float4_model())
    need, why = required_ir_version(float4_model())
    assert need == 11
    model = linear_regression(3, opset=17, ir_version=11)
    model.graph.node[0].metadata_props.add(key="k", value="v")  # introduced by IR 10
    assert required_ir_version(model) == (10, "metadata_props on node 'matmul'")
    with pytest.raises(OpsetError, match="metadata_props on node 'matmul' needs IR version 10"):
        LowerIRVersion(9)(model)


def test_element_types_count():
    model = float4_model()
    model.opset_import[0].version = 21  # FLOAT4E2M1 is still there, in a Cast target
    assert required_ir_version(model)[0] == 11
    assert "FLOAT4E2M1" in required_ir_version(model)[1]


def test_trainer_lowers_only_what_can_be_lowered():
    from onnxloss.train.artifacts import runtime_compatible

    model = float4_model()
    model.opset_import[0].version = 21
    with pytest.raises(OpsetError, match="FLOAT4E2M1"):
        runtime_compatible(model)
    assert runtime_compatible(linear_regression(3, ir_version=11)).ir_version == 10


@pytest.mark.parametrize("source,target", [(22, 21), (23, 21), (11, 13), (17, 17)])
def test_convert_opset_into_the_trainable_range(source, target):
    ir = oh.find_min_ir_version_for([oh.make_opsetid("", source)])
    model = linear_regression(
        3,
        opset=source,
        ir_version=max(ir, 8),
        coef=np.array([1.0, 2.0, 3.0]),
        intercept=np.array([0.5]),
    )
    model.graph.node.insert(2, oh.make_node("Softplus", ["variable"], ["soft"], name="softplus"))
    model.graph.output.append(oh.make_tensor_value_info("soft", TensorProto.FLOAT, ["N", 1]))
    model.doc_string = "keep me"
    oh.set_model_props(model, {"source": "test"})
    result = ConvertOpset()(model)
    converted = result.model
    assert result.modified == (source != target)
    opset = next(o.version for o in converted.opset_import if o.domain == "")
    assert opset == target
    assert converted.doc_string == "keep me"
    assert {p.key: p.value for p in converted.metadata_props} == {"source": "test"}
    assert converted.ir_version == max(
        model.ir_version, oh.find_min_ir_version_for([oh.make_opsetid("", target)])
    )
    X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    expected = X @ [1.0, 2.0, 3.0] + 0.5
    variable, soft = run_model(LowerIRVersion()(converted).model, {"X": X})
    np.testing.assert_allclose(variable.ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(soft.ravel(), np.logaddexp(0, expected), rtol=1e-6)


def test_convert_opset_to_an_explicit_target_and_failures():
    model = linear_regression(3, opset=17)
    assert next(o.version for o in ConvertOpset(19)(model).model.opset_import) == 19
    no_default = linear_regression(3)
    del no_default.opset_import[:]
    no_default.opset_import.append(oh.make_opsetid("ai.onnx.ml", 3))
    with pytest.raises(OpsetError, match="imports no ai.onnx opset"):
        ConvertOpset()(no_default)


def test_make_trainable_brings_a_new_export_within_range():
    model = linear_regression(3, opset=23, ir_version=11)
    fixed = make_trainable(model)
    assert next(o.version for o in fixed.opset_import if o.domain == "") == 21
    assert fixed.ir_version == 10
