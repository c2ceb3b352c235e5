"""What the PyTorch losses add around the numbers: several predictions bound by name, losses
without a target, the label check, the metadata a trainer reads, ``elementwise_mean`` in
the trainer, PyTorch's ``weight`` beside onnxloss's, and the defect that started it all
(BCEWithLogits at a zero logit)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT, identity_model, run_model
from loss_examples import EXAMPLES, example_model
from onnx import TensorProto
from onnx import helper as oh

import onnxloss
from onnxloss.examples import linear_regression

requires_ort = pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime-training")


def triplet_model() -> onnx.ModelProto:
    return example_model("triplet_margin")


# -- several predictions, bound by name ---------------------------------------------------------
def test_extra_predictions_bind_outputs_and_tensors_by_name():
    """``output2`` may name an output or any typed tensor of the graph (here an
    intermediate value declared in value_info)."""
    model = example_model("margin_ranking")
    model.graph.value_info.append(
        oh.make_tensor_value_info("second_cols", TensorProto.FLOAT, ["N", 1])
    )
    by_output = onnxloss.rewrite(model, onnxloss.MarginRankingLoss("first", output2="second"))
    meta = onnxloss.read_metadata(by_output)
    assert meta["losses"][0]["predictions"] == {"output": "first", "output2": "second"}
    p = np.array([[1.0, 0.5], [0.0, 2.0], [3.0, 1.0]], np.float32)
    y = np.array([1.0, -1.0, -1.0], np.float32)
    loss = run_model(by_output, {"P": p, "label": y})[0]
    expected = np.maximum(-y * (p[:, 0] - p[:, 1]), 0).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("term", "match"),
    [
        (onnxloss.TripletMarginLoss("anchor", positive="positive"), "negative="),
        (onnxloss.TripletMarginLoss("anchor", positive="nowhere", negative="negative"), "nowhere"),
        (onnxloss.CosineEmbeddingLoss("anchor", output2=7), "out of range"),
    ],
)
def test_missing_or_unknown_predictions_are_named(term, match):
    model = example_model("triplet_margin")
    with pytest.raises(onnxloss.OutputSelectionError, match=match):
        onnxloss.rewrite(model, term)


def test_predictions_must_share_shape_and_type():
    model = example_model("cosine_embedding")
    model.graph.output[1].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(onnxloss.ShapeError, match="output2 'right'"):
        onnxloss.rewrite(model, onnxloss.CosineEmbeddingLoss("left", output2="right"))
    model = example_model("cosine_embedding")
    model.graph.output[1].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(onnxloss.DtypeError, match="same float type"):
        onnxloss.rewrite(model, onnxloss.CosineEmbeddingLoss("left", output2="right"))


def test_constructor_arguments_of_the_new_losses_are_checked():
    with pytest.raises(onnxloss.OutputSelectionError, match="no target"):
        onnxloss.TripletMarginLoss(target="label")
    with pytest.raises(onnxloss.OutputSelectionError, match="unknown prediction"):
        onnxloss.MSELoss(predictions={"other": "x"})
    with pytest.raises(onnxloss.CoefficientError, match="elementwise_mean"):
        onnxloss.MSELoss(reduction="batchmean")  # only KLDivLoss takes PyTorch's name
    assert onnxloss.KLDivLoss(reduction="batchmean").reduction == "mean"


def test_a_loss_without_target_adds_no_input_and_strips_back():
    model = triplet_model()
    result = onnxloss.rewrite(
        model,
        onnxloss.TripletMarginLoss("anchor", positive="positive", negative="negative", weight="w"),
    )
    added = [i.name for i in result.graph.input[len(model.graph.input) :]]
    assert added == ["w"]
    meta = onnxloss.read_metadata(result)
    assert meta["targets"] == {} and meta["weights"] == ["w"]
    assert meta["losses"][0]["target"] is None
    assert onnxloss.strip_loss(result).SerializeToString() == model.SerializeToString()


def test_repr_round_trips_through_the_metadata():
    term = onnxloss.CrossEntropyLoss(
        weight=[1.0, 2.0, 0.5], sample_weight="w", ignore_index=3, label_smoothing=0.1
    )
    assert eval(repr(term), {**vars(onnxloss)}) == term  # noqa: S307 - our own repr
    both = onnxloss.TripletMarginLoss("a", positive="p", negative="n", swap=True)
    assert eval(repr(both), {**vars(onnxloss)}) == both  # noqa: S307


# -- PyTorch's weight beside onnxloss's sample weights -------------------------------------------
def test_class_weights_and_sample_weights_together():
    model = identity_model(("N", 3))
    term = onnxloss.CrossEntropyLoss(weight=[1.0, 2.0, 0.5], sample_weight="w", reduction="sum")
    result = onnxloss.rewrite(model, term)
    z = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], np.float32)
    y = np.array([1, 2])
    w = np.array([2.0, 0.25], np.float32)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = (w * np.array([2.0, 0.5]) * -log_p[[0, 1], y]).sum()
    np.testing.assert_allclose(run_model(result, {"P": z, "label": y, "w": w})[0], expected, 1e-6)
    with pytest.raises(onnxloss.OutputSelectionError, match="both"):
        onnxloss.CrossEntropyLoss(weight="w", sample_weight="v")


def test_weight_lengths_are_checked_against_the_output():
    with pytest.raises(onnxloss.ShapeError, match="weight has 2 values"):
        onnxloss.rewrite(identity_model(("N", 3)), onnxloss.CrossEntropyLoss(weight=[1.0, 2.0]))
    with pytest.raises(onnxloss.ShapeError, match="pos_weight has 2 values"):
        onnxloss.rewrite(
            identity_model(("N", 3)), onnxloss.BCEWithLogitsLoss(pos_weight=[1.0, 2.0])
        )


# -- labels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("term", "labels"),
    [
        (onnxloss.CrossEntropyLoss(), [0, -1, 2]),  # -1 is not the last class
        (onnxloss.CrossEntropyLoss(), [0, 3, 2]),
        (onnxloss.CrossEntropyLoss(ignore_index=1), [0, -100, 2]),  # -100 is not ignored here
        (onnxloss.NLLLoss(), [5, 0, 0]),
        (onnxloss.MultiMarginLoss(), [0, 1, -1]),
        (onnxloss.LogLoss(), [0, 1, 3]),
    ],
)
def test_labels_outside_the_classes_are_refused_by_the_runtime(term, labels):
    """Every evaluator refuses the batch (a Reshape named after the rule fails); nothing is
    read as another class."""
    from onnx.reference import ReferenceEvaluator

    result = onnxloss.rewrite(identity_model(("N", 3)), term)
    feeds = {"P": np.zeros((3, 3), np.float32), "label": np.array(labels)}
    with pytest.raises(ValueError, match="reshape"):
        ReferenceEvaluator(result).run(None, feeds)
    if HAS_ORT:
        import onnxruntime as ort

        session = ort.InferenceSession(result.SerializeToString())
        with pytest.raises(Exception, match="labels_must_be_in_0_to_2"):
            session.run(None, feeds)


def test_ignored_labels_count_nowhere_and_an_empty_batch_gives_zero():
    result = onnxloss.rewrite(
        identity_model(("N", 3)), onnxloss.CrossEntropyLoss(reduction="elementwise_mean")
    )
    z = np.array([[2.0, 0.0, 0.0], [9.0, -9.0, 0.0]], np.float32)
    one = run_model(result, {"P": z, "label": np.array([0, -100])})[0]
    np.testing.assert_allclose(one, np.log(np.exp(z[0]).sum()) - 2.0, rtol=1e-6)
    empty = run_model(result, {"P": z, "label": np.array([-100, -100])})[0]
    assert empty == 0.0  # PyTorch gives NaN; one empty batch must not stop training


def test_multilabel_margin_refuses_values_below_minus_one():
    result = onnxloss.rewrite(identity_model(("N", 3)), onnxloss.MultiLabelMarginLoss())
    from onnx.reference import ReferenceEvaluator

    feeds = {"P": np.zeros((2, 3), np.float32), "label": np.array([[0, -1, 2], [1, -2, -1]])}
    with pytest.raises(ValueError, match="reshape"):
        ReferenceEvaluator(result).run(None, feeds)


def test_metadata_tells_a_trainer_how_to_check_labels():
    model = example_model("cross_entropy")
    result = onnxloss.rewrite(model, onnxloss.CrossEntropyLoss(ignore_index=-1))
    assert onnxloss.read_metadata(result)["labels"] == {"label": {"classes": 3, "ignore_index": -1}}
    result = onnxloss.rewrite(model, onnxloss.MultiLabelMarginLoss())
    assert onnxloss.read_metadata(result)["labels"] == {"label": {"classes": 3, "end": -1}}
    assert onnxloss.read_metadata(onnxloss.rewrite(model, onnxloss.MSELoss()))["labels"] == {}


def test_spatial_cross_entropy_needs_fixed_classes_and_labels_per_pixel():
    model = identity_model(("N", 3, "H", "W"))
    result = onnxloss.rewrite(model, onnxloss.CrossEntropyLoss())
    label = next(i for i in result.graph.input if i.name == "label")
    dims = [d.dim_param or d.dim_value for d in label.type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W"]
    with pytest.raises(onnxloss.ShapeError, match="number of classes"):
        onnxloss.rewrite(identity_model(("N", "C", 4)), onnxloss.CrossEntropyLoss())


# -- reductions ---------------------------------------------------------------------------
def test_elementwise_mean_is_the_mean_over_every_element():
    model = identity_model(("N", 2, "K"))  # a symbolic axis: the count comes at run time
    p = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    for reduction, expected in (
        ("sum", (p**2).sum()),
        ("mean", (p**2).sum() / 2),
        ("elementwise_mean", (p**2).mean()),
    ):
        result = onnxloss.rewrite(model, onnxloss.MSELoss(reduction=reduction))
        got = run_model(result, {"P": p, "label": np.zeros_like(p)})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert onnxloss.read_metadata(result)["reduction"] == reduction


@requires_ort
def test_trainer_takes_elementwise_mean_as_batch_independent():
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = X @ np.array([[1.0, -1.0], [2.0, 0.0], [0.5, 1.0]])
    steps = {}
    for reduction in ("mean", "elementwise_mean"):
        model = onnxloss.rewrite(linear_regression(3, 2), onnxloss.MSELoss(reduction=reduction))
        trainer = OrtGradientOptimizer(model, ["coef"], learning_rate=0.1, batch_size=64,
                                       max_iter=1, shuffle=False)  # fmt: skip
        trainer.fit(X, y)
        steps[reduction] = trainer.get_state()["coef"]
    # one step on the element mean is half the step on the per-sample mean (2 columns)
    np.testing.assert_allclose(steps["elementwise_mean"], steps["mean"] / 2, rtol=1e-5)


@requires_ort
def test_trainer_fits_a_loss_without_target():
    from onnxloss.train import OrtGradientOptimizer

    model = onnxloss.rewrite(
        example_model("triplet_margin", base="mlp"), EXAMPLES["triplet_margin"].make()
    )
    X = np.random.default_rng(1).normal(size=(128, 3))
    trainer = OrtGradientOptimizer(model, optimizer="adamw", learning_rate=0.05, max_iter=10)
    trainer.fit(X)
    assert trainer.train_losses_[-1] < 0.5 * trainer.train_losses_[0]


# -- the defect of issue 13 ---------------------------------------------------------------
@requires_ort
def test_zero_initialised_logistic_regression_takes_the_right_first_step():
    """At a zero logit the gradient of BCEWithLogits is sigmoid(0) - y = 0.5 - y: the first
    SGD step of a zero-initialised logistic regression is ``-lr·Xᵀ(0.5 - y)/N``."""
    from onnxloss.train import OrtGradientOptimizer

    rng = np.random.default_rng(2)
    X = rng.normal(size=(32, 3)).astype(np.float32)
    y = (rng.uniform(size=(32, 1)) < 0.3).astype(np.float32)
    model = onnxloss.rewrite(linear_regression(3, 1), onnxloss.BCEWithLogitsLoss())
    trainer = OrtGradientOptimizer(model, ["coef"], learning_rate=1.0, batch_size=32, max_iter=1,
                                   shuffle=False)  # fmt: skip
    trainer.fit(X, y)
    expected = -(X.T @ (0.5 - y)) / len(X)
    np.testing.assert_allclose(trainer.get_state()["coef"], expected, rtol=1e-5, atol=1e-7)


def test_add_loss_output_takes_the_new_losses():
    """No label for a triplet loss; PyTorch's weight beside the sample-weight input."""
    triplet = onnxloss.add_loss_output(
        triplet_model(), "triplet_margin", output_index="anchor", positive="positive",
        negative="negative", weight_name="w",
    )  # fmt: skip
    assert [i.name for i in triplet.graph.input] == ["P", "w"]
    ce = onnxloss.add_loss_output(
        example_model("cross_entropy"), "cross_entropy", weight_name="w", weight=[1.0, 2.0, 0.5]
    )
    meta = onnxloss.read_metadata(ce)
    assert meta["weights"] == ["w"] and "weight=[1.0, 2.0, 0.5]" in meta["terms"][0]
