"""scikit-learn's ai.onnx.ml preprocessing operators (Scaler, Imputer, Binarizer,
ArrayFeatureExtractor) rewritten as standard operators, and shape inference through them.

Every rewrite is run beside the original: onnxruntime and onnx.reference run the model
skl2onnx (or the test) wrote and the rewritten one on the same data, and the numbers must
agree, with numpy's formula where the two runtimes disagree with each other.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT, requires_ort
from onnx import TensorProto
from onnx import helper as oh
from onnx.reference import ReferenceEvaluator

from onnxloss.passes import (
    ArrayFeatureExtractorToGather,
    BinarizerToStandard,
    ImputerToStandard,
    MLOpsToStandard,
    ScalerToStandard,
    make_trainable,
)
from onnxloss.passes.ml_shapes import infer_shapes
from onnxloss.passes.node_rules import NodeView, RewriteContext, tensor_infos
from onnxloss.readiness import default_trainables

skl2onnx = pytest.importorskip("skl2onnx")
pytest.importorskip("sklearn")

ML = "ai.onnx.ml"
F = TensorProto.FLOAT


def one_node(op, attrs=None, elem=F, shape=("N", 3), out_elem=None, indices=None, out_shape=None):
    """``Y = op(X[, I])`` with an optional constant ``I`` (an initializer); ``Y`` is declared
    with the input's shape unless ``out_shape`` is given."""
    inputs, inits = ["X"], []
    if indices is not None:
        inputs.append("I")
        inits.append(onnx.numpy_helper.from_array(np.asarray(indices, np.int64), "I"))
    graph = oh.make_graph(
        [oh.make_node(op, inputs, ["Y"], domain=ML, name=op.lower(), **(attrs or {}))],
        op,
        [oh.make_tensor_value_info("X", elem, list(shape))],
        [oh.make_tensor_value_info("Y", out_elem or elem, list(out_shape or shape))],
        initializer=inits,
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid(ML, 1)]
    return oh.make_model(graph, opset_imports=opsets, ir_version=8)


def ort_run(model, X):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X})


def reference_run(model, X):
    return ReferenceEvaluator(model).run(None, {"X": X})


def assert_rewritten(model, rule, X, expected=None, runtimes=("ort", "reference")):
    """The rule rewrites every ML node; the rewritten model gives ``expected`` (default:
    what the original gives in onnxruntime) in both runtimes."""
    result = rule(model)
    assert result.modified
    rewritten = result.model
    assert not [n.op_type for n in rewritten.graph.node if n.domain == ML]
    onnx.checker.check_model(rewritten, full_check=True)
    if expected is None:
        expected = ort_run(model, X)[0] if HAS_ORT else reference_run(model, X)[0]
    runs = [reference_run(rewritten, X)[0]]
    if HAS_ORT and "ort" in runtimes:
        runs.append(ort_run(rewritten, X)[0])
    for got in runs:
        assert got.dtype == np.asarray(expected).dtype and got.shape == np.shape(expected)
        if got.dtype == object:
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    return rewritten


def reason(rule, model):
    return rule.explain(NodeView(model.graph.node[0], RewriteContext(model)))


X3 = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32) * 3


# -- Scaler --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "offset,scale", [([1.0, -2.0, 0.5], [0.5, 2.0, -1.0]), ([1.5], [0.25])], ids=["3", "1"]
)
@pytest.mark.parametrize("elem", [F, TensorProto.DOUBLE, TensorProto.INT64])
def test_scaler_is_sub_mul_in_float32(offset, scale, elem):
    model = one_node("Scaler", {"offset": offset, "scale": scale}, elem, out_elem=F)
    X = (X3 * 10).astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    expected = ((X.astype(np.float32) - np.float32(offset)) * np.float32(scale)).astype(np.float32)
    if HAS_ORT:  # onnxruntime computes in float32 whatever the input type, as the spec says
        np.testing.assert_allclose(ort_run(model, X)[0], expected, rtol=1e-6)
    rewritten = assert_rewritten(model, ScalerToStandard(), X, expected)
    # frozen by default: constants, nothing new to train
    assert not rewritten.graph.initializer
    assert {"Sub", "Mul"} <= {n.op_type for n in rewritten.graph.node}


def test_trainable_scaler_writes_initializers_that_are_trained_by_default():
    model = one_node("Scaler", {"offset": [1.0, 2.0, 3.0], "scale": [2.0, 1.0, 0.5]})
    rewritten = assert_rewritten(model, ScalerToStandard(trainable=True), X3)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    np.testing.assert_array_equal(inits["offset"], np.float32([1, 2, 3]))
    np.testing.assert_array_equal(inits["scale"], np.float32([2, 1, 0.5]))
    assert default_trainables(rewritten) == ["offset", "scale"]
    swept = MLOpsToStandard(trainable_scalers=True)(model).model
    assert default_trainables(swept) == ["offset", "scale"]
    assert default_trainables(MLOpsToStandard()(model).model) == []
    assert repr(ScalerToStandard(trainable=True)) == "ScalerToStandard(trainable=True)"


@pytest.mark.parametrize(
    "attrs,shape,why",
    [
        ({"offset": [1.0], "scale": [1.0, 2.0, 3.0]}, ("N", 3), "same non-zero length"),
        ({"offset": [1.0, 2.0], "scale": [1.0, 2.0]}, ("N", 3), "2 values per feature for an"),
        ({"offset": [1.0, 2.0, 3.0], "scale": [1, 2, 3]}, (1, "N", 3), "not a known 1-D or 2-D"),
    ],
)
def test_scaler_forms_onnxruntime_refuses_are_left_alone(attrs, shape, why):
    model = one_node("Scaler", attrs, shape=shape)
    assert why in reason(ScalerToStandard(), model)
    assert not ScalerToStandard()(model).modified


def test_standard_scaler_pipeline_is_rewritten_in_one_sweep():
    """The Scaler's output has no shape for onnx's inference; the ML shape rules give it
    one, so the LogisticRegression after it becomes MatMul in the same sweep."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    X = (rng.normal(size=(50, 4)) * [1, 10, 0.1, 3] + 5).astype(np.float32)
    y = (X[:, 0] + X[:, 1] / 10 > 5.5).astype(np.int64)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = skl2onnx.to_onnx(pipe, X[:1], target_opset={"": 17, ML: 1}, options={"zipmap": False})
    scaled = model.graph.node[0].output[0]
    assert onnx.shape_inference.infer_shapes(model).graph.value_info == []  # onnx alone: none
    assert tensor_infos(model)[scaled].shape[1] == 4
    result = MLOpsToStandard()(model)
    rewritten = result.model
    assert not [n for n in rewritten.graph.node if n.domain == ML]
    assert default_trainables(rewritten) == ["coef", "intercept"]
    for run in [reference_run] + ([ort_run] if HAS_ORT else []):
        label, proba = run(rewritten, X)
        np.testing.assert_array_equal(label, pipe.predict(X))
        np.testing.assert_allclose(proba, pipe.predict_proba(X), rtol=1e-4, atol=1e-5)


# -- Imputer -------------------------------------------------------------------------------
def test_simple_imputer_fills_nans_per_feature():
    from sklearn.impute import SimpleImputer

    X = X3.copy()
    X[0, 1] = X[4, 2] = X[5, 0] = np.nan
    imputer = SimpleImputer().fit(X)
    model = skl2onnx.to_onnx(imputer, X[:1], target_opset={"": 17, ML: 1})
    assert [n.op_type for n in model.graph.node] == ["Imputer"]
    assert_rewritten(model, ImputerToStandard(), X, imputer.transform(X).astype(np.float32))


@pytest.mark.parametrize(
    "elem,attrs,values",
    [
        (F, {"imputed_value_floats": [7.0], "replaced_value_float": 2.0}, [[2, 1, 2], [0, 2, 3]]),
        (
            TensorProto.INT64,
            {"imputed_value_int64s": [10, 20, 30], "replaced_value_int64": 2},
            [[2, 1, 2], [0, 2, 3]],
        ),
        (
            TensorProto.DOUBLE,
            {"imputed_value_floats": [1.5, 2.5, 3.5], "replaced_value_float": np.nan},
            [[np.nan, 1, 2], [0, np.nan, np.nan]],
        ),
    ],
    ids=["float-value", "int64", "double-nan"],
)
def test_imputer_replaces_a_value_in_the_input_type(elem, attrs, values):
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    X = np.array(values, dtype)
    imputed = np.asarray(attrs.get("imputed_value_floats") or attrs["imputed_value_int64s"])
    replaced = attrs.get("replaced_value_float", attrs.get("replaced_value_int64"))
    missing = np.isnan(X) if np.isnan(replaced) else X == replaced
    expected = np.where(missing, np.broadcast_to(imputed, X.shape), X).astype(dtype)
    # onnxruntime has no double Imputer kernel: numpy and onnx.reference decide there
    runtimes = ("reference",) if elem == TensorProto.DOUBLE else ("ort", "reference")
    model = one_node("Imputer", attrs, elem)
    assert_rewritten(model, ImputerToStandard(), X, expected, runtimes)


def test_imputer_without_values_for_its_type_is_left_alone():
    model = one_node("Imputer", {"imputed_value_floats": [1.0]}, TensorProto.INT64)
    assert reason(ImputerToStandard(), model) == "it has no imputed values for its input type"


# -- Binarizer -----------------------------------------------------------------------------
def test_sklearn_binarizer():
    from sklearn.preprocessing import Binarizer

    binarizer = Binarizer(threshold=0.7).fit(X3)
    model = skl2onnx.to_onnx(binarizer, X3[:1], target_opset={"": 17, ML: 1})
    X = X3.copy()
    X[0, 0] = np.float32(0.7)  # equal to the threshold: 0
    assert_rewritten(model, BinarizerToStandard(), X, binarizer.transform(X))


@pytest.mark.parametrize("elem", [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32])
def test_binarizer_keeps_the_input_type(elem):
    """onnxruntime has float kernels only; numpy and onnx.reference decide for the others.
    The float32 threshold is compared exactly: 2.5 against integers, 0.1f against doubles."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    threshold = 0.1 if dtype.kind == "f" else -2.5
    if dtype.kind == "f":
        X = np.array([[0.1, float(np.float32(0.1)), 0.10000001, -1.0, 5.0]], dtype)
    else:
        X = np.array([[-3, -2, 0, 1, 7]], dtype)
    expected = (X > float(np.float32(threshold))).astype(dtype)
    model = one_node("Binarizer", {"threshold": threshold}, elem, shape=(1, 5))
    np.testing.assert_array_equal(reference_run(model, X)[0], expected)
    assert_rewritten(model, BinarizerToStandard(), X, expected, runtimes=("reference",))


# -- ArrayFeatureExtractor ------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,indices",
    [
        (("N", 3), [2, 0]),
        (("N", 3), [[2], [1]]),  # flattened
        (("N", 3), 1),  # a scalar index keeps the column axis: [N, 1]
        ((3,), [2, 0]),  # a 1-D input gives [1, k]
        ((2, "N", 3), [1, 1, 0]),  # the last axis
    ],
    ids=["2d", "2d-index", "scalar-index", "1d", "3d"],
)
def test_array_feature_extractor_with_constant_indices_is_gather(shape, indices):
    flat = np.asarray(indices).ravel()
    out_shape = (1, flat.size) if len(shape) == 1 else (*shape[:-1], flat.size)
    model = one_node("ArrayFeatureExtractor", shape=shape, indices=indices, out_shape=out_shape)
    X = np.arange(np.prod([d if isinstance(d, int) else 4 for d in shape]), dtype=np.float32)
    X = X.reshape([d if isinstance(d, int) else 4 for d in shape])
    expected = X[..., flat].reshape((1, -1) if X.ndim == 1 else (*X.shape[:-1], flat.size))
    rewritten = assert_rewritten(model, ArrayFeatureExtractorToGather(), X, expected)
    assert "Gather" in [n.op_type for n in rewritten.graph.node]


def test_array_feature_extractor_on_strings():
    model = one_node(
        "ArrayFeatureExtractor", elem=TensorProto.STRING, indices=[2, 0], out_shape=("N", 2)
    )
    X = np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object)
    assert_rewritten(
        model, ArrayFeatureExtractorToGather(), X, np.array([["c", "a"], ["f", "d"]], object)
    )


def test_array_feature_extractor_left_alone_with_computed_or_negative_indices():
    negative = one_node("ArrayFeatureExtractor", indices=[-1])
    assert "non-negative" in reason(ArrayFeatureExtractorToGather(), negative)
    computed = one_node("ArrayFeatureExtractor", indices=[0])
    del computed.graph.initializer[:]
    computed.graph.input.append(oh.make_tensor_value_info("I", TensorProto.INT64, [1]))
    assert "computed at run time" in reason(ArrayFeatureExtractorToGather(), computed)
    assert not ArrayFeatureExtractorToGather()(computed).modified


def test_linear_svc_positive_class_column_becomes_trainable():
    """skl2onnx selects the positive-class score of a binary LinearSVC with an
    ArrayFeatureExtractor: after the rewrite no ML operator is left on the gradient path."""
    from sklearn.svm import LinearSVC

    import onnxloss

    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    svc = LinearSVC().fit(X, (X[:, 0] - X[:, 1] > 0).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = skl2onnx.to_onnx(svc, X[:1], target_opset={"": 17, ML: 1})
    trainable = make_trainable(model)
    assert not [n.op_type for n in trainable.graph.node if n.domain == ML]
    assert "positive_class_index" not in {t.name for t in trainable.graph.initializer}
    report = onnxloss.check_trainable(trainable)
    assert report.ok and report.trainables == ["coef", "intercept"], report.format()
    for run in [reference_run] + ([ort_run] if HAS_ORT else []):
        label, score = run(trainable, X)
        np.testing.assert_array_equal(label, svc.predict(X))
        np.testing.assert_allclose(score.ravel(), svc.decision_function(X), rtol=1e-5, atol=1e-5)


# -- pipelines, shapes ---------------------------------------------------------------------
def test_column_transformer_with_one_hot_columns():
    """Column selections become Gather, the OneHotEncoders stay (data, never on a gradient
    path), and the LogisticRegression after the Concat knows its 7 features."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import onnxloss

    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    X[:, 2] = np.digitize(X[:, 2], [-0.5, 0.5])
    X[:, 3] = X[:, 3] > 0
    y = (X[:, 0] + X[:, 2] > 1).astype(np.int64)
    columns = ColumnTransformer([("n", StandardScaler(), [0, 1]), ("c", OneHotEncoder(), [2, 3])])
    pipe = make_pipeline(columns, LogisticRegression()).fit(X, y)
    model = skl2onnx.to_onnx(pipe, X[:1], target_opset={"": 17, ML: 1}, options={"zipmap": False})
    trainable = make_trainable(model)
    assert sorted({n.op_type for n in trainable.graph.node if n.domain == ML}) == ["OneHotEncoder"]
    coef = next(t for t in trainable.graph.initializer if t.name == "coef")
    assert list(coef.dims) == [7, 1]  # binary: one column, scores [-s, s]
    assert onnxloss.check_trainable(trainable).ok
    label, proba = ort_run(trainable, X) if HAS_ORT else reference_run(trainable, X)
    np.testing.assert_array_equal(label, pipe.predict(X))
    np.testing.assert_allclose(proba, pipe.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_infer_shapes_goes_through_scaler_imputer_normalizer_and_linear_regressor():
    nodes = [
        oh.make_node("Imputer", ["X"], ["a"], domain=ML, imputed_value_floats=[0.0]),
        oh.make_node("Scaler", ["a"], ["b"], domain=ML, offset=[0.0], scale=[2.0]),
        oh.make_node("Normalizer", ["b"], ["c"], domain=ML, norm="L2"),
        oh.make_node("LinearRegressor", ["c"], ["d"], domain=ML, coefficients=[1.0] * 6, targets=2),
        oh.make_node("Relu", ["d"], ["Y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "chain",
        [oh.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", 3])],
        [oh.make_tensor_value_info("Y", F, None)],
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid(ML, 1)]
    model = oh.make_model(graph, opset_imports=opsets, ir_version=8)
    before = model.SerializeToString()
    inferred = infer_shapes(model)
    assert model.SerializeToString() == before
    infos = {
        vi.name: vi.type.tensor_type for vi in [*inferred.graph.value_info, *inferred.graph.output]
    }
    shapes = {
        name: (t.elem_type, [d.dim_value or d.dim_param for d in t.shape.dim])
        for name, t in infos.items()
    }
    assert shapes == {
        "a": (TensorProto.DOUBLE, ["N", 3]),
        "b": (F, ["N", 3]),
        "c": (F, ["N", 3]),
        "d": (F, ["N", 2]),
        "Y": (F, ["N", 2]),
    }


@requires_ort
def test_make_trainable_then_train_a_scaled_ridge_pipeline():
    """The whole chain on a pipeline that did not train before: the coefficients after the
    (frozen) Scaler move, the scaler's statistics do not."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import onnxloss
    from onnxloss.passes import AddLoss, MakeTrainable, Sequential
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(4)
    X = (rng.normal(size=(128, 3)) * [1, 5, 0.2] + 1).astype(np.float32)
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(X, X @ [1.0, 0.2, 3.0])
    model = skl2onnx.to_onnx(pipe, X[:1], target_opset={"": 17, ML: 1})
    loss_model = Sequential(MakeTrainable(), AddLoss(onnxloss.MSELoss()))(model).model
    y = (X @ [-1.0, 0.1, 2.0] + 0.5).astype(np.float32)
    trainer = OrtGradientOptimizer(loss_model, learning_rate=0.05, max_iter=30, batch_size=16)
    trainer.fit(X, y)
    assert sorted(trainer.get_state()) == ["coef", "intercept"]
    assert trainer.train_losses_[-1] < 0.05 * trainer.train_losses_[0]
