"""PyTorch's values and gradients for every torch.nn loss onnxloss implements, and for the
activations whose decompositions have a kink (run by hand, with torch installed).

    python tests/data/make_torch_losses.py

Writes ``torch_losses.npz``, read by ``tests/test_torch_losses.py``. Not a test: pytest does
not collect it, and nothing in onnxloss imports torch.

Every case is a loss class, its PyTorch options, a batch of inputs and a reduction:

* ``"sum"`` and ``"mean"`` are PyTorch's own (``"mean"`` is onnxloss's
  ``"elementwise_mean"``), ``"batchmean"`` is ``KLDivLoss``'s (onnxloss's ``"mean"``);
* ``"weighted_sum"`` and ``"weighted_mean"`` weight samples the way a PyTorch user does,
  ``(w * loss(reduction="none").sum(non-batch axes)).sum()``, or that divided by the
  number of samples (those with a label left, when labels are ignored): what onnxloss's
  ``weight=`` input gives with ``"sum"`` and ``"mean"``.

The inputs are float64 numbers that float32 represents exactly, so the float64 results are
the exact answer for the float32 inputs too. For each case the file holds the inputs (once
per batch, ``batch/<name>/<argument>``) and one array ``case/<i>``: the value and
``scale`` (the same reduction of ``|loss(reduction="none")|``, the magnitude the tests
scale their absolute tolerance by) in float64, the same in float32, then the gradients
with respect to every floating input but the target (in the order the index lists them),
flattened, in float64 and then in float32. ``index`` is a JSON description of it all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
OUT = HERE / "torch_losses.npz"
N, C, D = 5, 3, 4


def f32(a) -> np.ndarray:
    """float64 values that float32 holds exactly."""
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


class Recorder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []
        self.batches: dict[str, list[str]] = {}

    def batch(self, name: str, **arrays) -> str:
        """Store one batch of inputs (prediction first, then as the loss takes them)."""
        assert name not in self.batches, name
        for key, value in arrays.items():
            value = np.asarray(value)
            self.arrays[f"batch/{name}/{key}"] = value if value.dtype.kind in "iu" else f32(value)
        self.batches[name] = list(arrays)
        return name

    def case(self, loss: str, batch: str, options: dict | None = None, *, reductions=None,
             weighted=True, skip_gradients=(), note=""):  # fmt: skip
        options = dict(options or {})
        reductions = list(reductions or ["sum", "mean"])
        if weighted:
            reductions += ["weighted_sum", "weighted_mean"]
        for reduction in reductions:
            index = len(self.cases)
            results = {dtype: run(loss, options, self, batch, reduction, dtype)
                       for dtype in (torch.float64, torch.float32)}  # fmt: skip
            # One array per case: value, scale (float64 then float32), then the gradients
            # in float64 and in float32, each flattened in the order of "gradients".
            grads = sorted(results[torch.float64][2])
            parts = [np.array([r[0], r[1]]) for r in results.values()]
            parts += [results[dtype][2][arg].ravel() for dtype in results for arg in grads]
            self.arrays[f"case/{index}"] = np.concatenate(parts).astype(np.float64)
            self.cases.append({
                "index": index, "loss": loss, "options": options, "batch": batch,
                "reduction": reduction, "gradients": grads,
                "skip_gradients": list(skip_gradients), "note": note,
            })  # fmt: skip


# -- running PyTorch --------------------------------------------------------------------------
#: The forward arguments of each loss, in PyTorch's order; "target" gets no gradient.
SIGNATURES = {
    "GaussianNLLLoss": ("input", "target", "var"),
    "MarginRankingLoss": ("input", "input2", "target"),
    "CosineEmbeddingLoss": ("input", "input2", "target"),
    "TripletMarginLoss": ("input", "positive", "negative"),
    "TripletMarginWithDistanceLoss": ("input", "positive", "negative"),
}
TENSOR_OPTIONS = ("weight", "pos_weight")


def samples_left(loss, options, tensors) -> int:
    """The samples onnxloss's "mean" counts: all, or those with a label not ignored."""
    target = tensors.get("target", tensors["input"])
    if loss not in ("CrossEntropyLoss", "NLLLoss"):
        return len(target)
    kept = (target != options.get("ignore_index", -100)).reshape(len(target), -1)
    return int(kept.any(dim=1).sum())


def run(loss, options, rec, batch, reduction, dtype):
    names = rec.batches[batch]
    signature = SIGNATURES.get(loss, ("input", "target"))
    tensors = {}
    for name in names:
        value = rec.arrays[f"batch/{batch}/{name}"]
        if name == "weight_samples":
            continue
        if value.dtype.kind in "iu":
            tensors[name] = torch.tensor(value)
        else:
            tensors[name] = torch.tensor(value, dtype=dtype, requires_grad=name != "target")
    kwargs = {k: (torch.tensor(v, dtype=dtype) if k in TENSOR_OPTIONS else v)
              for k, v in options.items()}  # fmt: skip
    cls = getattr(torch.nn, loss)
    args = [tensors[a] for a in signature]
    torch_reduction = {"batchmean": "batchmean", "sum": "sum", "mean": "mean"}.get(
        reduction, "none"
    )
    value = cls(reduction=torch_reduction, **kwargs)(*args)
    none = cls(reduction="none", **kwargs)(*args).detach()
    if reduction.startswith("weighted_"):
        w = torch.tensor(rec.arrays[f"batch/{batch}/weight_samples"], dtype=dtype)
        n = samples_left(loss, options, tensors)
        per_sample = value.reshape(len(value), -1).sum(dim=1)
        abs_per_sample = none.abs().reshape(len(none), -1).sum(dim=1)
        if reduction == "weighted_sum":
            value, scale = (w * per_sample).sum(), float((w * abs_per_sample).sum())
        else:
            value, scale = (w * per_sample).sum() / n, float((w * abs_per_sample).sum() / n)
    elif reduction == "batchmean":
        scale = float(none.abs().sum() / len(none))
    elif reduction == "sum":
        scale = float(none.abs().sum())
    else:
        scale = (
            float(none.abs().mean())
            if loss not in ("CrossEntropyLoss", "NLLLoss")
            else float(abs(value.detach()))
        )
    value.backward()
    gradients = {
        name: t.grad.numpy()
        for name, t in tensors.items()
        if t.requires_grad and t.grad is not None and name in signature
    }
    return float(value.detach()), scale, gradients


# -- the cases ----------------------------------------------------------------------------------
def cases(rec: Recorder) -> None:  # noqa: PLR0915 - one table, read top to bottom
    rng = np.random.default_rng(20261203)
    w_samples = rng.uniform(0.25, 2.0, size=N)

    def normal(*shape, scale=1.0):
        return rng.normal(scale=scale, size=shape)

    # Regression: random, and edges (d = 0, d = ±beta / ±delta, large values).
    x, y = normal(N, C), normal(N, C)
    rec.batch("reg", input=x, target=y, weight_samples=w_samples)
    xe = np.array([[0.0, 0.5, -0.5], [1.0, -1.0, 100.0], [-100.0, 2.0, 0.25],
                   [3.0, -0.75, 0.0], [1e-3, -2.5, 7.0]])  # fmt: skip
    rec.batch("reg_edge", input=xe, target=np.zeros((N, C)), weight_samples=w_samples)
    for loss, option_sets in (
        ("L1Loss", [{}]),
        ("MSELoss", [{}]),
        ("SmoothL1Loss", [{}, {"beta": 0.5}, {"beta": 0.0}]),
        ("HuberLoss", [{}, {"delta": 0.5}]),
    ):
        for options in option_sets:
            rec.case(loss, "reg", options)
            rec.case(loss, "reg_edge", options, weighted=False)

    # Poisson: counts with 0 and 1 (no Stirling term there).
    counts = np.array([[0, 1, 2], [3, 0, 5], [1, 1, 4], [2, 7, 0], [6, 1, 3]], float)
    rec.batch("poisson_log", input=normal(N, C, scale=0.5), target=counts, weight_samples=w_samples)
    rec.batch("poisson_rate", input=rng.uniform(0.1, 4.0, (N, C)), target=counts,
              weight_samples=w_samples)  # fmt: skip
    for options in ({}, {"full": True}):
        rec.case("PoissonNLLLoss", "poisson_log", options)
    for options in (
        {"log_input": False},
        {"log_input": False, "full": True},
        {"log_input": False, "eps": 1e-3},
    ):
        rec.case("PoissonNLLLoss", "poisson_rate", options)

    # Gaussian NLL: heteroscedastic, homoscedastic ([N] and [N, 1]), full; a variance below
    # eps (PyTorch's gradient with respect to it passes through its no-grad clamp).
    mu, target = normal(N, C), normal(N, C)
    rec.batch("gauss", input=mu, target=target, var=rng.uniform(0.2, 2.0, (N, C)),
              weight_samples=w_samples)  # fmt: skip
    rec.batch("gauss_n", input=mu, target=target, var=rng.uniform(0.2, 2.0, N),
              weight_samples=w_samples)  # fmt: skip
    rec.batch("gauss_n1", input=mu, target=target, var=rng.uniform(0.2, 2.0, (N, 1)),
              weight_samples=w_samples)  # fmt: skip
    tiny_var = rng.uniform(0.2, 2.0, (N, C))
    tiny_var[0, :2] = [1e-8, 0.0]
    rec.batch("gauss_tiny", input=mu, target=target, var=tiny_var, weight_samples=w_samples)
    for batch in ("gauss", "gauss_n", "gauss_n1"):
        rec.case("GaussianNLLLoss", batch)
    rec.case("GaussianNLLLoss", "gauss", {"full": True, "eps": 1e-3})
    note = "var < eps: PyTorch's gradient passes through its no-grad clamp, onnxloss's is 0"
    rec.case("GaussianNLLLoss", "gauss_tiny", weighted=False, skip_gradients=["var"], note=note)

    # Binary cross-entropy on probabilities: random, soft targets, p in {0, 1} exactly.
    p = rng.uniform(0.02, 0.98, (N, C))
    rec.batch("bce", input=p, target=rng.integers(0, 2, (N, C)).astype(float),
              weight_samples=w_samples)  # fmt: skip
    pe = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 1e-7], [1 - 2**-20, 0.0, 1.0],
                   [0.25, 1.0, 0.0], [0.0, 0.0, 1.0]])  # fmt: skip
    ye = np.array([[1.0, 0.0, 0.5], [1.0, 0.0, 1.0], [0.0, 0.5, 0.25],
                   [1.0, 1.0, 0.0], [0.0, 0.3, 0.7]])  # fmt: skip
    rec.batch("bce_edge", input=pe, target=ye, weight_samples=w_samples)
    class_w = [0.5, 2.0, 1.25]
    for options in ({}, {"weight": class_w}):
        rec.case("BCELoss", "bce", options)
        rec.case("BCELoss", "bce_edge", options, weighted=False)

    # Binary cross-entropy on logits: logits ±100, ±40, ±20, exactly 0.
    z = normal(N, C, scale=2.0)
    rec.batch("logits", input=z, target=rng.uniform(0, 1, (N, C)), weight_samples=w_samples)
    ze = np.array([[0.0, 0.0, 100.0], [-100.0, 40.0, -40.0], [20.0, -20.0, 0.0],
                   [100.0, -100.0, 1.5], [0.0, 3.0, -0.5]])  # fmt: skip
    rec.batch("logits_edge", input=ze, target=ye, weight_samples=w_samples)
    for options in ({}, {"pos_weight": [2.0, 0.5, 1.0]},
                    {"weight": class_w, "pos_weight": [3.0, 1.0, 0.25]}):  # fmt: skip
        rec.case("BCEWithLogitsLoss", "logits", options)
        rec.case("BCEWithLogitsLoss", "logits_edge", options, weighted=False)

    # Cross-entropy / NLL: plain, weights, smoothing, ignored labels, spatial, logits ±100.
    scores = normal(N, C, scale=2.0)
    labels = np.array([0, 2, 1, 2, 0])
    ignored = np.array([0, -100, 1, 2, -100])
    rec.batch("ce", input=scores, target=labels, weight_samples=w_samples)
    rec.batch("ce_ignored", input=scores, target=ignored, weight_samples=w_samples)
    rec.batch("ce_edge", input=np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0],
                                         [0.0, 0.0, 0.0], [100.0, 100.0, -100.0],
                                         [-100.0, -100.0, -100.0]]),
              target=np.array([1, 1, 2, 0, 2]), weight_samples=w_samples)  # fmt: skip
    spatial = normal(2, C, 2, 3, scale=2.0)
    spatial_labels = rng.integers(0, C, (2, 2, 3))
    spatial_labels[0, 0, 1] = spatial_labels[1, 1, 2] = -100
    rec.batch("ce_spatial", input=spatial, target=spatial_labels, weight_samples=w_samples[:2])
    everything = {"weight": class_w, "label_smoothing": 0.2}
    for options in ({}, {"label_smoothing": 0.1}, {"weight": class_w}, everything):
        rec.case("CrossEntropyLoss", "ce", options)
    for options in ({}, {"weight": class_w}, everything):
        rec.case("CrossEntropyLoss", "ce_ignored", options)
    rec.case("CrossEntropyLoss", "ce", {"ignore_index": 1, "weight": class_w})
    rec.case("CrossEntropyLoss", "ce_edge", {})
    rec.case("CrossEntropyLoss", "ce_edge", {"label_smoothing": 0.3}, weighted=False)
    for options in ({}, everything):
        rec.case("CrossEntropyLoss", "ce_spatial", options, reductions=["sum", "mean"],
                 weighted=False)  # fmt: skip
    rec.case("CrossEntropyLoss", "ce_spatial", everything, reductions=[], weighted=True)
    log_p = torch.log_softmax(torch.tensor(scores), dim=1).numpy()
    rec.batch("nll", input=log_p, target=ignored, weight_samples=w_samples)
    rec.batch("nll_plain", input=log_p, target=labels, weight_samples=w_samples)
    rec.batch("nll_spatial", input=torch.log_softmax(torch.tensor(spatial), 1).numpy(),
              target=spatial_labels, weight_samples=w_samples[:2])  # fmt: skip
    for options in ({}, {"weight": class_w}):
        rec.case("NLLLoss", "nll", options)
    rec.case("NLLLoss", "nll_plain", {"ignore_index": 2})
    rec.case("NLLLoss", "nll_spatial", {"weight": class_w})

    # KL divergence: probabilities with zeros, log targets.
    probs = rng.dirichlet(np.ones(C), N)
    probs[0] = [0.0, 0.25, 0.75]
    probs[3] = [1.0, 0.0, 0.0]
    probs = f32(probs)
    log_q = torch.log_softmax(torch.tensor(normal(N, C)), 1).numpy()
    rec.batch("kl", input=log_q, target=probs, weight_samples=w_samples)
    rec.batch("kl_log", input=log_q, target=np.log(rng.dirichlet(np.ones(C), N)),
              weight_samples=w_samples)  # fmt: skip
    rec.case("KLDivLoss", "kl", reductions=["sum", "mean", "batchmean"])
    rec.case("KLDivLoss", "kl_log", {"log_target": True}, reductions=["sum", "batchmean"])

    # Margin ranking: random and ties at the hinge.
    x1, x2 = normal(N), normal(N)
    sign = np.array([1.0, -1.0, 1.0, -1.0, 1.0])
    rec.batch("rank", input=x1, input2=x2, target=sign, weight_samples=w_samples)
    rec.batch("rank_edge", input=np.array([1.0, 1.0, 0.0, 2.0, -1.0]),
              input2=np.array([0.5, 1.5, 0.0, 2.0, 3.0]), target=sign,
              weight_samples=w_samples)  # fmt: skip
    for options in ({}, {"margin": 0.5}):
        rec.case("MarginRankingLoss", "rank", options)
        rec.case("MarginRankingLoss", "rank_edge", options, weighted=False)

    # Hinge embedding: ±1 targets, the hinge's tie, and a target that is neither.
    rec.batch("hinge", input=np.abs(normal(N, C)), target=np.where(normal(N, C) > 0, 1.0, -1.0),
              weight_samples=w_samples)  # fmt: skip
    rec.batch("hinge_edge", input=np.array([[1.0, 0.5, 0.0], [2.0, 1.0, 0.25], [0.5, 1.5, 3.0],
                                            [1.0, 0.0, 0.75], [0.2, 0.4, 1.0]]),
              target=np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 0.0], [-1.0, 1.0, -1.0],
                               [-1.0, -1.0, 1.0], [1.0, -1.0, -1.0]]),
              weight_samples=w_samples)  # fmt: skip
    for options in ({}, {"margin": 0.5}):
        rec.case("HingeEmbeddingLoss", "hinge", options)
    rec.case("HingeEmbeddingLoss", "hinge_edge", {}, weighted=False)

    # Soft margin and multi-label soft margin: logits ±100.
    signs = np.where(normal(N, C) > 0, 1.0, -1.0)
    rec.batch("soft", input=normal(N, C, scale=2.0), target=signs, weight_samples=w_samples)
    rec.batch("soft_edge", input=ze, target=signs, weight_samples=w_samples)
    rec.case("SoftMarginLoss", "soft")
    rec.case("SoftMarginLoss", "soft_edge", weighted=False,
             note="PyTorch's float32 overflows to inf here; compared with its float64")  # fmt: skip
    multilabel = (normal(N, C) > 0).astype(float)
    rec.batch("mlsoft", input=normal(N, C, scale=2.0), target=multilabel, weight_samples=w_samples)
    rec.batch("mlsoft_edge", input=ze, target=multilabel, weight_samples=w_samples)
    for options in ({}, {"weight": class_w}):
        rec.case("MultiLabelSoftMarginLoss", "mlsoft", options)
        rec.case("MultiLabelSoftMarginLoss", "mlsoft_edge", options, weighted=False)

    # Multi-margin: p = 1, 2, margin, class weights; ties at the hinge.
    rec.batch("mm", input=normal(N, C), target=labels, weight_samples=w_samples)
    rec.batch("mm_edge", input=np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0],
                                         [1.0, 0.0, -1.0], [0.5, 0.5, -0.5]]),
              target=labels, weight_samples=w_samples)  # fmt: skip
    for options in ({}, {"p": 2}, {"margin": 0.5, "weight": class_w}):
        rec.case("MultiMarginLoss", "mm", options)
        rec.case("MultiMarginLoss", "mm_edge", options, weighted=False)

    # Multi-label margin: -1 ends the list; duplicates count twice; ties at the hinge.
    ml_targets = np.array([[0, -1, 2], [2, 1, -1], [1, 1, -1], [0, 1, 2], [-1, 0, 1]])
    rec.batch("mlm", input=normal(N, C), target=ml_targets, weight_samples=w_samples)
    rec.batch("mlm_edge", input=np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 2.0], [2.0, 2.0, 2.0],
                                          [1.0, 0.0, -1.0], [0.5, 0.5, -0.5]]),
              target=ml_targets, weight_samples=w_samples)  # fmt: skip
    rec.case("MultiLabelMarginLoss", "mlm")
    rec.case("MultiLabelMarginLoss", "mlm_edge", weighted=False)

    # Cosine embedding: random, identical, orthogonal and zero vectors.
    a, b = normal(N, D), normal(N, D)
    rec.batch("cos", input=a, input2=b, target=sign, weight_samples=w_samples)
    ae, be = a.copy(), b.copy()
    be[0] = ae[0]  # cos = 1
    ae[1], be[1] = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]  # cos = 0: the hinge's tie
    ae[2] = 0.0  # a zero vector: cos = 0 through the epsilon
    rec.batch("cos_edge", input=ae, input2=be, target=np.array([1.0, -1.0, 1.0, -1.0, 0.0]),
              weight_samples=w_samples)  # fmt: skip
    for options in ({}, {"margin": 0.5}):
        rec.case("CosineEmbeddingLoss", "cos", options)
    rec.case("CosineEmbeddingLoss", "cos_edge", {}, weighted=False)

    # Triplets: random; anchor = positive; a tie at the hinge.
    anchor, positive, negative = normal(N, D), normal(N, D), normal(N, D)
    rec.batch("triplet", input=anchor, positive=positive, negative=negative,
              weight_samples=w_samples)  # fmt: skip
    pe_, ne_ = positive.copy(), negative.copy()
    pe_[0] = anchor[0]
    ne_[1] = anchor[1] + 10.0
    rec.batch("triplet_edge", input=anchor, positive=pe_, negative=ne_, weight_samples=w_samples)
    for options in ({}, {"p": 1.0}, {"swap": True}, {"margin": 0.5, "p": 3.0, "eps": 1e-3}):
        rec.case("TripletMarginLoss", "triplet", options)
    rec.case("TripletMarginLoss", "triplet_edge", {}, weighted=False)
    for options in ({}, {"swap": True}, {"margin": 0.5}):
        rec.case("TripletMarginWithDistanceLoss", "triplet", options)


# -- activations with a kink (the decompositions of onnxloss.passes) ----------------------------
ACTIVATIONS = {
    # name: (ONNX op, ONNX attributes, PyTorch function)
    "Softplus": ("Softplus", {}, torch.nn.functional.softplus),
    "Elu": ("Elu", {"alpha": 0.5}, lambda x: torch.nn.functional.elu(x, 0.5)),
    "Elu-1": ("Elu", {"alpha": 1.0}, torch.nn.functional.elu),
    "Selu": ("Selu", {}, torch.selu),
    "Celu": ("Celu", {"alpha": 2.0}, lambda x: torch.celu(x, 2.0)),
    "Mish": ("Mish", {}, torch.nn.functional.mish),
    "HardSigmoid": (
        "HardSigmoid",
        {"alpha": 1.0 / 6.0, "beta": 0.5},
        torch.nn.functional.hardsigmoid,
    ),  # fmt: skip
    "HardSwish": ("HardSwish", {}, torch.nn.functional.hardswish),
    "Softsign": ("Softsign", {}, torch.nn.functional.softsign),
    "ThresholdedRelu": (
        "ThresholdedRelu",
        {"alpha": 1.0},
        lambda x: torch.nn.functional.threshold(x, 1.0, 0.0),
    ),  # fmt: skip
    "Shrink-soft": (
        "Shrink",
        {"lambd": 0.5, "bias": 0.5},
        lambda x: torch.nn.functional.softshrink(x, 0.5),
    ),  # fmt: skip
    "Shrink-hard": (
        "Shrink",
        {"lambd": 0.5, "bias": 0.0},
        lambda x: torch.nn.functional.hardshrink(x, 0.5),
    ),  # fmt: skip
    "PRelu": (
        "PRelu",
        {},
        lambda x: torch.nn.functional.prelu(x, torch.tensor([0.25], dtype=x.dtype)),
    ),
}
KINK_POINTS = [0.0, -3.0, 3.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 30.0, -30.0, 1e-3]


def activations(rec: Recorder) -> dict:
    x = f32(KINK_POINTS)
    table = {}
    for name, (op, attrs, fn) in ACTIVATIONS.items():
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = fn(t)
        value.sum().backward()
        rec.arrays[f"act/{name}/value"] = value.detach().numpy()
        rec.arrays[f"act/{name}/grad"] = t.grad.numpy()
        table[name] = {"op": op, "attrs": attrs}
    rec.arrays["act/x"] = x
    return table


def main() -> None:
    torch.manual_seed(0)
    rec = Recorder()
    cases(rec)
    table = activations(rec)
    index = {
        "torch": torch.__version__,
        "cases": rec.cases,
        "batches": rec.batches,
        "activations": table,
    }
    rec.arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    np.savez_compressed(OUT, **rec.arrays)
    size = OUT.stat().st_size / 1024
    print(f"{OUT.name}: {len(rec.cases)} cases, {size:.0f} KiB, torch {torch.__version__}")


if __name__ == "__main__":
    main()
