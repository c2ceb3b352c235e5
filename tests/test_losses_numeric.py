"""Every built-in loss, run as a graph and compared with its numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import identity_model, run_model
from onnx import TensorProto
from reference import CLASS_LOSSES, loss, sample_data

import onnxloss
from onnxloss import MAX_OPSET

# name, options: one row per loss and hyper-parameter setting worth a check.
CASES = [
    ("squared_error", {}),
    ("absolute_error", {}),
    ("elastic", {}),
    ("elastic", {"l1_weight": 0.1, "l2_weight": 0.9}),
    ("huber", {}),
    ("huber", {"delta": 0.3}),
    ("poisson", {}),
    ("poisson", {"log_input": False}),
    ("quantile", {}),
    ("quantile", {"quantile": 0.9}),
    ("bce_with_logits", {}),
    ("bce", {}),
    ("cross_entropy", {}),
    ("cross_entropy", {"label_smoothing": 0.1}),
    ("log_loss", {}),
    ("log", {}),
]
OPSETS = [13, 17, 21, MAX_OPSET]


def _loss_model(name, options, opset, weighted, reduction, cols, elem=TensorProto.FLOAT):
    cls = onnxloss.available_losses()[name].cls
    term = cls(weight="w" if weighted else None, reduction=reduction, **options)
    return onnxloss.rewrite(identity_model(("N", cols), elem, opset), term)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda c: str(c))
def test_loss_matches_numpy(name, options, reduction, weighted, opset):
    rng = np.random.default_rng(abs(hash((name, str(options), opset))) % 2**32)
    cols = 3
    p, y = sample_data(name, 7, cols, rng, **options)
    cols = p.shape[1]
    model = _loss_model(name, options, opset, weighted, reduction, cols)
    feeds = {"P": p, "label": y}
    w = None
    if weighted:
        w = rng.uniform(0.1, 2.0, size=len(p)).astype(np.float32)
        feeds["w"] = w
    got, pred = run_model(model, feeds)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_array_equal(pred, p)  # the original output still comes out second
    expected = loss(name, p.astype(np.float64), y, w, reduction, **options)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda c: str(c))
def test_loss_in_float64(name, options):
    """A double output gives a double loss, computed in double."""
    rng = np.random.default_rng(1)
    p, y = sample_data(name, 5, 2, rng, dtype=np.float64, **options)
    model = _loss_model(name, options, 17, True, "sum", p.shape[1], TensorProto.DOUBLE)
    w = rng.uniform(0.1, 2.0, size=len(p))
    got, _ = run_model(model, {"P": p, "label": y, "w": w})
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, loss(name, p, y, w, "sum", **options), rtol=1e-12)


@pytest.mark.parametrize("name", ["squared_error", "absolute_error", "huber", "quantile"])
def test_one_dimensional_output(name):
    """An output of shape [N] is per sample already: no reduction over other axes."""
    rng = np.random.default_rng(2)
    p, y = (a.ravel() for a in sample_data(name, 6, 1, rng))
    model = onnxloss.rewrite(identity_model(("N",)), onnxloss.available_losses()[name].cls())
    got, _ = run_model(model, {"P": p, "label": y})
    np.testing.assert_allclose(got, loss(name, p[:, None], y[:, None]), rtol=1e-6)


@pytest.mark.parametrize("name", ["squared_error", "huber"])
def test_rank3_output_sums_trailing_axes(name):
    rng = np.random.default_rng(3)
    p = rng.normal(size=(4, 2, 3)).astype(np.float32)
    y = rng.normal(size=(4, 2, 3)).astype(np.float32)
    model = onnxloss.rewrite(
        identity_model(("N", 2, 3)), onnxloss.available_losses()[name].cls(reduction="sum")
    )
    got, _ = run_model(model, {"P": p, "label": y})
    np.testing.assert_allclose(got, loss(name, p, y, reduction="sum"), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CLASS_LOSSES))
def test_class_labels_as_n_or_n1(name):
    """Class labels are declared [N] by default, [N, 1] with target_rank=2; same loss."""
    rng = np.random.default_rng(5)
    p, y = sample_data(name, 6, 3, rng)
    cls = onnxloss.available_losses()[name].cls
    flat = onnxloss.rewrite(identity_model(("N", p.shape[1])), cls())
    column = onnxloss.rewrite(identity_model(("N", p.shape[1])), cls(target_rank=2))
    label_dims = lambda m: len(m.graph.input[1].type.tensor_type.shape.dim)  # noqa: E731
    assert (label_dims(flat), label_dims(column)) == (1, 2)
    a, _ = run_model(flat, {"P": p, "label": y})
    b, _ = run_model(column, {"P": p, "label": y.reshape(-1, 1)})
    np.testing.assert_allclose(a, loss(name, p.astype(np.float64), y), rtol=1e-5)
    assert a == b


def test_sample_weight_is_per_sample_not_outer_product():
    """w [N] times per-sample loss [N]: never the [N] x [N, 1] -> [N, N] broadcast."""
    p = np.array([[1.0], [2.0], [4.0]], np.float32)
    y = np.zeros((3, 1), np.float32)
    w = np.array([1.0, 0.0, 0.5], np.float32)
    model = onnxloss.add_loss_output(identity_model(), weight_name="weight")
    got, _ = run_model(model, {"P": p, "label": y, "weight": w})
    assert got == pytest.approx(1 * 1 + 0 * 4 + 0.5 * 16)  # an [N, N] mix-up gives 31.5
