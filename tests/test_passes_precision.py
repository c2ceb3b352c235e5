"""ToFloat32: a float64 model becomes a float32 one computing the same numbers (to float32
precision); integer tensors, names and structure stay as they were."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from conftest import run_model
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from onnx.reference import ReferenceEvaluator

from onnxloss import DtypeError, MSELoss
from onnxloss.examples import linear_regression
from onnxloss.passes import AddLoss, Sequential, ToFloat32

D, F = TensorProto.DOUBLE, TensorProto.FLOAT


def double_model() -> onnx.ModelProto:
    """float64 everywhere it can be: weights, input, output, a Cast to double of an integer
    input, a Constant, a ConstantOfShape fill, an If with a float64 branch, value_info."""
    then = oh.make_graph(
        [oh.make_node("Mul", ["h", "two"], ["t"])],
        "then",
        [],
        [oh.make_tensor_value_info("t", D, ["N", 2])],
    )
    other = oh.make_graph(
        [oh.make_node("Neg", ["h"], ["e"])],
        "else",
        [],
        [oh.make_tensor_value_info("e", D, ["N", 2])],
    )
    nodes = [
        oh.make_node("Cast", ["k"], ["kd"], to=D, name="cast_k"),
        oh.make_node("MatMul", ["X", "W"], ["xw"]),
        oh.make_node("Add", ["xw", "b"], ["z"]),
        oh.make_node("Mul", ["z", "kd"], ["zk"]),
        oh.make_node("Constant", [], ["two"], value=nh.from_array(np.array(2.0), "two_value")),
        oh.make_node("Shape", ["z"], ["shape"]),
        oh.make_node(
            "ConstantOfShape",
            ["shape"],
            ["half"],
            value=nh.from_array(np.array([0.5]), "half_value"),
        ),
        oh.make_node("Add", ["zk", "half"], ["h"]),
        oh.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other),
        oh.make_node("Cast", ["y"], ["y32"], to=F, name="cast_y"),
        oh.make_node("ArgMax", ["y"], ["label"], axis=1),
    ]
    graph = oh.make_graph(
        nodes,
        "double",
        [
            oh.make_tensor_value_info("X", D, ["N", 3]),
            oh.make_tensor_value_info("k", TensorProto.INT64, []),
            oh.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            oh.make_tensor_value_info("y", D, ["N", 2]),
            oh.make_tensor_value_info("y32", F, ["N", 2]),
            oh.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]),
        ],
        [
            nh.from_array(np.linspace(-1, 1, 6).reshape(3, 2) / 3, "W"),
            nh.from_array(np.array([0.1, -0.2]), "b"),
        ],
        value_info=[oh.make_tensor_value_info("z", D, ["N", 2])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    model.doc_string = "a float64 model"
    oh.set_model_props(model, {"author": "tests"})
    onnx.checker.check_model(model, full_check=True)
    return model


def test_every_float64_tensor_becomes_float32_and_numbers_agree():
    model = double_model()
    result = ToFloat32()(model)
    converted = result.model
    assert result.applied == ("ToFloat32",)
    onnx.checker.check_model(converted, full_check=True)
    assert {t.data_type for t in converted.graph.initializer} == {F}
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*converted.graph.input, *converted.graph.output, *converted.graph.value_info]
    }
    assert types == {
        "X": F,
        "k": TensorProto.INT64,
        "flag": TensorProto.BOOL,
        "y": F,
        "y32": F,
        "label": TensorProto.INT64,
        "z": F,
    }
    casts = {n.name: n.attribute[0].i for n in converted.graph.node if n.op_type == "Cast"}
    assert casts == {"cast_k": F, "cast_y": F}
    branch = converted.graph.node[8].attribute[0].g
    assert branch.output[0].type.tensor_type.elem_type == F
    assert converted.doc_string == "a float64 model" and converted.metadata_props[0].key == "author"
    assert converted.ir_version == model.ir_version
    assert [n.name for n in converted.graph.node] == [n.name for n in model.graph.node]

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    for flag in (True, False):
        feeds = {"X": X, "k": np.array(3, np.int64), "flag": np.array(flag)}
        expected = ReferenceEvaluator(model).run(None, feeds)
        got = run_model(converted, {**feeds, "X": X.astype(np.float32)})
        for e, g in zip(expected, got, strict=True):
            assert g.dtype == (np.int64 if e.dtype == np.int64 else np.float32)
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_caller_model_untouched_and_float32_model_unchanged():
    model = double_model()
    before = model.SerializeToString()
    ToFloat32()(model)
    assert model.SerializeToString() == before
    already = linear_regression(3)
    result = ToFloat32()(already)
    assert not result.modified and result.model.SerializeToString() == already.SerializeToString()


def test_skl2onnx_float64_model_trains_after_conversion():
    """skl2onnx writes standard operators over float64 initializers for float64 data."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(LinearRegression().fit(X, y), X[:1], target_opset=17)
    assert {t.data_type for t in model.graph.initializer if t.name in ("coef", "intercept")} == {D}
    loss_model = Sequential(ToFloat32(), AddLoss(MSELoss()))(model).model
    assert loss_model.graph.output[0].type.tensor_type.elem_type == F
    (prediction,) = run_model(ToFloat32()(model).model, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(prediction.ravel(), y, rtol=1e-5, atol=1e-5)


def test_half_precision_on_request():
    graph = oh.make_graph(
        [oh.make_node("Mul", ["x", "w"], ["y"])],
        "half",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT16, [2])],
        [nh.from_array(np.array([1.5, -2.0], np.float16), "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    assert not ToFloat32()(model).modified  # float64 only by default
    converted = ToFloat32(types=[TensorProto.FLOAT16])(model).model
    (y,) = run_model(converted, {"x": np.array([2.0, 3.0], np.float32)})
    np.testing.assert_array_equal(y, [3.0, -6.0])
    with pytest.raises(DtypeError, match="FLOAT is not a source"):
        ToFloat32(types=[TensorProto.FLOAT])


def test_external_data_must_be_loaded(tmp_path):
    model = linear_regression(3, dtype=np.float64)
    path = tmp_path / "m.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=0,
    )
    lazy = onnx.load(str(path), load_external_data=False)
    with pytest.raises(DtypeError, match="'coef' keeps its data in an external file"):
        ToFloat32()(lazy)
    assert ToFloat32()(onnx.load(str(path))).modified
