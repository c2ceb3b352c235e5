"""scikit-learn's ai.onnx.ml operators rewritten as standard operators over initializers.

Every rewrite computes what the original operator computes: onnxruntime (and onnx.reference)
run the model skl2onnx wrote, and both run the rewritten model, on the same data.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import TensorProto
from onnx import helper as oh
from onnx.reference import ReferenceEvaluator

from onnxloss.passes import (
    LinearClassifierToMatMul,
    LinearRegressorToMatMul,
    MLOpsToStandard,
    NormalizerToStandard,
    ZipMapToTensor,
    make_trainable,
)

sklearn = pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")

from sklearn.linear_model import (  # noqa: E402
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.svm import LinearSVC  # noqa: E402

ML = "ai.onnx.ml"


def data(n=60, features=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    score = X @ rng.normal(size=features)
    return X, score


def convert(estimator, X, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(
            estimator, X[:1], target_opset={"": 17, ML: 1}, options=options or None
        )


def run_all(model: onnx.ModelProto, X: np.ndarray) -> list[list[np.ndarray]]:
    """Outputs from onnx.reference and, when installed, onnxruntime."""
    with np.errstate(over="ignore"):  # skl2onnx's own graphs overflow exp on far points
        runs = [ReferenceEvaluator(model).run(None, {"X": X})]
    if HAS_ORT:
        import onnxruntime as ort

        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        runs.append(session.run(None, {"X": X}))
    return runs


def assert_same_outputs(original, rewritten, X, rtol=1e-5, atol=1e-6):
    expected = run_all(original, X)[-1]  # onnxruntime when installed, else the reference
    for got in run_all(rewritten, X):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            if e.dtype.kind in "iuO" or g.dtype.kind in "iuO":  # labels
                np.testing.assert_array_equal(np.asarray(g).ravel(), np.asarray(e).ravel())
            else:
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def ml_ops(model):
    return [n.op_type for n in model.graph.node if n.domain == ML]


REGRESSORS = [
    ("LinearRegression", lambda: LinearRegression(), 1),
    ("LinearRegression-2-targets", lambda: LinearRegression(), 2),
    ("Ridge", lambda: Ridge(alpha=2.0), 1),
    ("SGDRegressor", lambda: SGDRegressor(max_iter=50, tol=None, random_state=0), 1),
]


@pytest.mark.parametrize("name,make,targets", REGRESSORS, ids=[r[0] for r in REGRESSORS])
def test_linear_regressor_becomes_matmul_over_coef_and_intercept(name, make, targets):
    X, score = data()
    y = score if targets == 1 else np.c_[score, -2 * score + 1]
    estimator = make().fit(X, y)
    model = convert(estimator, X)
    assert ml_ops(model) == ["LinearRegressor"]
    result = LinearRegressorToMatMul()(model)
    rewritten = result.model
    assert result.applied == ("LinearRegressorToMatMul",)
    assert ml_ops(rewritten) == []
    onnx.checker.check_model(rewritten, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    np.testing.assert_allclose(
        inits["coef"], np.asarray(estimator.coef_).reshape(targets, -1).T, rtol=1e-6
    )
    np.testing.assert_allclose(inits["intercept"], np.atleast_1d(estimator.intercept_), rtol=1e-6)
    assert inits["coef"].dtype == np.float32 and inits["coef"].shape == (4, targets)
    assert [o.name for o in rewritten.graph.output] == ["variable"]
    assert_same_outputs(model, rewritten, X)
    np.testing.assert_allclose(
        run_all(rewritten, X)[0][0].reshape(len(X), -1),
        estimator.predict(X).reshape(len(X), -1),
        rtol=1e-4,
        atol=1e-4,
    )


CLASSIFIERS = [
    ("LogisticRegression-binary", lambda: LogisticRegression(), 2, {"zipmap": False}),
    ("LogisticRegression-multiclass", lambda: LogisticRegression(), 3, {"zipmap": False}),
    ("LinearSVC-multiclass", lambda: LinearSVC(), 3, {}),
    (
        "SGDClassifier-log-multiclass",
        lambda: SGDClassifier(loss="log_loss", random_state=0),
        3,
        {"zipmap": False},
    ),
]


def labels(score, n_classes):
    if n_classes == 2:
        return (score > 0).astype(np.int64)
    return np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)


@pytest.mark.parametrize(
    "name,make,n_classes,options", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS]
)
def test_linear_classifier_becomes_matmul_with_the_same_labels_and_scores(
    name, make, n_classes, options
):
    X, score = data(seed=1)
    estimator = make().fit(X, labels(score, n_classes))
    model = convert(estimator, X, **options)
    result = MLOpsToStandard()(model)
    rewritten = result.model
    onnx.checker.check_model(rewritten, full_check=True)
    left = ml_ops(rewritten)
    assert "LinearClassifier" not in left and "Normalizer" not in left, left
    assert {"coef", "intercept"} <= {t.name for t in rewritten.graph.initializer}
    assert [o.name for o in rewritten.graph.output] == [o.name for o in model.graph.output]
    assert_same_outputs(model, rewritten, X)
    got = run_all(rewritten, X)[0]
    np.testing.assert_array_equal(got[0].ravel(), estimator.predict(X))


def test_string_class_labels_are_gathered_from_a_constant():
    X, score = data(seed=2)
    y = np.array(["cat", "dog", "eel"])[labels(score, 3)]
    model = convert(LogisticRegression().fit(X, y), X, zipmap=False)
    rewritten = MLOpsToStandard()(model).model
    assert_same_outputs(model, rewritten, X)
    assert set(run_all(rewritten, X)[0][0]) <= {"cat", "dog", "eel"}


def hand_made_classifier(post_transform: str, rows: int, n_classes: int, intercepts=True):
    """A LinearClassifier written by hand (single-row binary form included)."""
    rng = np.random.default_rng(rows + n_classes)
    attrs = {
        "coefficients": rng.normal(size=rows * 3).astype(np.float32).tolist(),
        "classlabels_ints": list(range(10, 10 + n_classes)),
        "post_transform": post_transform,
    }
    if intercepts:
        attrs["intercepts"] = rng.normal(size=rows).astype(np.float32).tolist()
    node = oh.make_node(
        "LinearClassifier", ["X"], ["label", "scores"], domain=ML, name="lc", **attrs
    )
    graph = oh.make_graph(
        [node],
        "lc",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
        [
            oh.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            oh.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", max(rows, n_classes)]),
        ],
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid(ML, 1)]
    return oh.make_model(graph, opset_imports=opsets, ir_version=8)


@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC", "SOFTMAX"])
@pytest.mark.parametrize("rows,n_classes", [(2, 2), (4, 4)])
def test_hand_made_linear_classifiers(post_transform, rows, n_classes):
    model = hand_made_classifier(post_transform, rows, n_classes)
    X = np.random.default_rng(3).normal(size=(25, 3)).astype(np.float32)
    rewritten = LinearClassifierToMatMul()(model).model
    assert ml_ops(rewritten) == []
    assert_same_outputs(model, rewritten, X)


def test_single_row_binary_classifier_is_left_alone_because_runtimes_disagree():
    """onnxruntime scores it [1 - s, s] whatever the post-transform, onnx.reference
    post_transform([-s, s]): no rewrite can match both."""
    from onnxloss.passes.node_rules import NodeView, RewriteContext

    model = hand_made_classifier("LOGISTIC", 1, 2)
    result = LinearClassifierToMatMul()(model)
    assert not result.modified
    view = NodeView(model.graph.node[0], RewriteContext(model))
    assert "disagree" in LinearClassifierToMatMul().explain(view)


def test_classifier_without_intercepts_gets_a_zero_intercept():
    """Intercepts are optional in the specification (onnx.reference then gives NaN and
    onnxruntime 1.19.2 crashes): the rewrite uses zeros, checked against numpy."""
    model = hand_made_classifier("NONE", 3, 3, intercepts=False)
    rewritten = LinearClassifierToMatMul()(model).model
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    np.testing.assert_array_equal(inits["intercept"], np.zeros(3, np.float32))
    X = np.random.default_rng(4).normal(size=(10, 3)).astype(np.float32)
    attrs = {a.name: a for a in model.graph.node[0].attribute}
    coefficients = np.array(attrs["coefficients"].floats, np.float32).reshape(3, 3)
    scores = X @ coefficients.T
    for label, got in run_all(rewritten, X):
        np.testing.assert_allclose(got, scores, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(label, 10 + scores.argmax(axis=1))


def test_unsupported_post_transform_is_left_for_the_readiness_check():
    model = hand_made_classifier("PROBIT", 2, 2)
    result = LinearClassifierToMatMul()(model)
    assert not result.modified and ml_ops(result.model) == ["LinearClassifier"]


def normalizer(norm: str):
    graph = oh.make_graph(
        [oh.make_node("Normalizer", ["X"], ["Y"], domain=ML, norm=norm, name="norm")],
        "n",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid(ML, 1)]
    return oh.make_model(graph, opset_imports=opsets, ir_version=8)


@pytest.mark.parametrize("norm", ["L1", "L2", "MAX"])
def test_normalizer_keeps_rows_of_zeros_and_matches(norm):
    """MAX divides by the largest value (not magnitude), as onnxruntime does."""
    if norm == "MAX" and not HAS_ORT:
        pytest.skip("onnx.reference divides by max|x|; the specification and onnxruntime by max(x)")
    model = normalizer(norm)
    X = np.random.default_rng(5).normal(size=(7, 4)).astype(np.float32) * 3
    X[0] = 0.0
    X[1] = [1e-15, -1e-15, 0, 0]
    X[2] = [1e15, -3e14, 2, 0]
    X[3] = [-1, -2, -0.5, -4]  # MAX: a negative divisor flips the signs
    rewritten = NormalizerToStandard()(model).model
    assert ml_ops(rewritten) == []
    assert_same_outputs(model, rewritten, X)
    np.testing.assert_array_equal(run_all(rewritten, X)[0][0][0], np.zeros(4, np.float32))


def test_zipmap_becomes_the_probability_tensor():
    X, score = data(seed=6)
    estimator = LogisticRegression().fit(X, labels(score, 3))
    with_zipmap = convert(estimator, X)
    assert "ZipMap" in ml_ops(with_zipmap)
    result = ZipMapToTensor()(with_zipmap)
    model = result.model
    assert result.modified and "ZipMap" not in ml_ops(model)
    out = next(o for o in model.graph.output if o.name == "output_probability")
    assert out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert (
        len(out.type.tensor_type.shape.dim) == 2
        and out.type.tensor_type.shape.dim[1].dim_value == 3
    )
    onnx.checker.check_model(model, full_check=True)
    probabilities = run_all(model, X)[-1][1]
    np.testing.assert_allclose(probabilities, estimator.predict_proba(X), rtol=1e-4, atol=1e-5)
    assert not ZipMapToTensor()(model).modified


def test_make_trainable_handles_a_default_skl2onnx_classifier():
    """zipmap on, ai.onnx.ml operators: after make_trainable a loss can bind and the weights
    are float32 initializers."""
    X, score = data(seed=8)
    estimator = LogisticRegression().fit(X, labels(score, 3))
    model = make_trainable(convert(estimator, X))
    assert {n.op_type for n in model.graph.node if n.domain == ML} <= {"ArrayFeatureExtractor"}
    np.testing.assert_allclose(
        run_all(model, X)[-1][1], estimator.predict_proba(X), rtol=1e-4, atol=1e-5
    )


def test_the_linear_passes_only_touch_the_main_graph_and_keep_the_caller_model():
    X, score = data()
    model = convert(LinearRegression().fit(X, score), X)
    before = model.SerializeToString()
    LinearRegressorToMatMul()(model)
    assert model.SerializeToString() == before


def test_initializer_names_do_not_clash():
    X, score = data()
    model = convert(LinearRegression().fit(X, score), X)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, np.float32), "coef"))
    rewritten = LinearRegressorToMatMul()(model).model
    names = [t.name for t in rewritten.graph.initializer]
    assert names.count("coef") == 1 and "coef_1" in names and "intercept" in names
    assert_same_outputs(model, rewritten, X)


@pytest.mark.skipif(not HAS_ORT, reason="onnx.reference implements post_transform NONE only")
@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_regressor_post_transforms(post_transform):
    node = oh.make_node(
        "LinearRegressor",
        ["X"],
        ["Y"],
        domain=ML,
        targets=2,
        coefficients=[1.0, 2.0, 3.0, -4.0, 5.0, -6.0],
        intercepts=[0.5, -1.0],
        post_transform=post_transform,
    )
    graph = oh.make_graph(
        [node],
        "lr",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])],
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid(ML, 1)]
    model = oh.make_model(graph, opset_imports=opsets, ir_version=8)
    X = np.random.default_rng(9).normal(size=(12, 3)).astype(np.float32)
    rewritten = LinearRegressorToMatMul()(model).model
    import onnxruntime as ort

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"X": X})[0]

    np.testing.assert_allclose(run(rewritten), run(model), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        ReferenceEvaluator(rewritten).run(None, {"X": X})[0], run(model), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "make,options",
    [
        (lambda: LogisticRegression(), {"zipmap": False}),
        (lambda: LinearSVC(random_state=0), {}),
    ],
    ids=["LogisticRegression", "LinearSVC"],
)
def test_binary_classifier_keeps_one_column_so_its_scores_stay_opposite(make, options):
    """skl2onnx writes a binary linear classifier as two opposite rows; the rewrite keeps
    one column of weights, so any trained value keeps scores [-s, s] (probabilities that
    sum to one, a label that follows the score)."""
    X, score = data(seed=10)
    estimator = make().fit(X, labels(score, 2))
    model = convert(estimator, X, **options)
    rewritten = MLOpsToStandard()(model).model
    assert_same_outputs(model, rewritten, X)
    coef = next(t for t in rewritten.graph.initializer if t.name == "coef")
    assert list(coef.dims) == [4, 1]
    # any other weights: the structure, not the fitted values, keeps the scores opposite
    moved = onnx.ModelProto()
    moved.CopyFrom(rewritten)
    for t in moved.graph.initializer:
        if t.name in ("coef", "intercept"):
            value = np.random.default_rng(11).normal(size=tuple(t.dims)).astype(np.float32)
            t.CopyFrom(onnx.numpy_helper.from_array(value, t.name))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in moved.graph.initializer}
    s = X @ weights["coef"][:, 0] + weights["intercept"][0]
    for label, scores in run_all(moved, X):
        scores = np.asarray(scores).reshape(len(X), -1)
        np.testing.assert_array_equal(label, estimator.classes_[(s > 0).astype(int)])
        if scores.shape[1] == 2 and isinstance(estimator, LogisticRegression):
            np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
            np.testing.assert_allclose(scores[:, 1], 1 / (1 + np.exp(-s)), rtol=1e-5, atol=1e-6)
        else:  # LinearSVC: the positive class's score
            np.testing.assert_allclose(scores[:, -1], s, rtol=1e-5, atol=1e-5)


def test_the_check_names_a_rewrite_only_when_make_trainable_does_it():
    """The advice "(make_trainable does)" must hold: it does for a LinearRegression pipeline
    with a StandardScaler, and a classifier the pass leaves alone says why instead."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import onnxloss

    X, score = data(seed=12)
    model = convert(make_pipeline(StandardScaler(), LinearRegression()).fit(X, score), X)
    [problem] = onnxloss.check_trainable(model).errors
    assert "LinearRegressorToMatMul() turns them" in problem.message
    assert "make_trainable does" in problem.message
    assert onnxloss.check_trainable(make_trainable(model)).ok

    probit = hand_made_classifier("PROBIT", 2, 2)
    [problem] = onnxloss.check_trainable(probit).errors
    assert "leaves it alone (post_transform PROBIT" in problem.message
    assert "make_trainable does" not in problem.message + problem.fix
    assert not make_trainable(probit).graph.initializer  # indeed nothing to train after it
    [missing] = onnxloss.check_trainable(probit, ["coef"]).errors
    assert missing.kind == "trainable-missing" and "apply the pass" not in missing.fix
    [missing] = onnxloss.check_trainable(model, ["coef"]).errors
    assert missing.fix == "apply the pass named above first"
