"""onnxloss against PyTorch: every torch.nn loss onnxloss implements, in value and gradient.

``tests/data/torch_losses.npz`` holds PyTorch 2.13's values and input gradients (float64
and float32) for every loss × options × reduction × edge case (made by hand with
``tests/data/make_torch_losses.py``; PyTorch is no dependency of the tests). Here:

* the value of the float64 and float32 graphs (onnx.reference, cross-checked with
  onnxruntime by ``run_model``) equals PyTorch's float64 value to 1e-6 and 1e-5;
* finite differences of the float64 graph equal PyTorch's float64 gradient to 1e-6 (away
  from kinks and clamps, the edge batches excluded: there a difference quotient means
  nothing);
* onnxruntime-training's float32 gradient of the graph equals PyTorch's float64 gradient to
  1e-5, edge batches included (kinks, ties, ``p = 0`` and ``1``, logits ±100).

Tolerances are relative, with an absolute floor scaled by the magnitude of the terms
summed (``scale``: the same reduction of ``|loss(reduction="none")|``) for values and by the
mean magnitude of the gradient for gradients.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.testing.runtime import numeric_gradient

DATA = Path(__file__).parent / "data" / "torch_losses.npz"
ARCHIVE = np.load(DATA)
INDEX = json.loads(bytes(ARCHIVE["index"]).decode())
CASES = INDEX["cases"]

#: PyTorch class name → onnxloss class (the same name: PyTorch's is the API).
LOSSES = {name: getattr(onnxloss, name) for name in {c["loss"] for c in CASES}}
#: How each forward argument of PyTorch binds in onnxloss (the first is ``output``).
BINDINGS = {"input2": "output2", "positive": "positive", "negative": "negative", "var": "var"}
#: PyTorch reduction of a case → (onnxloss reduction, sample weights fed).
REDUCTIONS = {
    "sum": ("sum", False),
    "mean": ("elementwise_mean", False),
    "batchmean": ("mean", False),
    "weighted_sum": ("sum", True),
    "weighted_mean": ("mean", True),
}
RTOL = {np.float64: 1e-6, np.float32: 1e-5}


def case_id(case: dict) -> str:
    options = ",".join(f"{k}={v}" for k, v in case["options"].items())
    return f"{case['index']}-{case['loss']}-{case['batch']}-{case['reduction']}-{options}"


def arrays(case: dict) -> dict[str, np.ndarray]:
    names = INDEX["batches"][case["batch"]]
    return {n: ARCHIVE[f"batch/{case['batch']}/{n}"] for n in names}


def expected(case: dict) -> dict:
    """PyTorch's value, scale and gradients, in float64 and float32."""
    flat = ARCHIVE[f"case/{case['index']}"]
    batch = arrays(case)
    out = {"value64": flat[0], "scale64": flat[1], "value32": flat[2], "scale32": flat[3]}
    offset = 4
    for tag in ("64", "32"):
        for arg in case["gradients"]:
            size = batch[arg].size
            out[f"grad{tag}/{arg}"] = flat[offset : offset + size].reshape(batch[arg].shape)
            offset += size
    assert offset == flat.size
    return out


def predictions(case: dict) -> list[str]:
    """The floating forward arguments: the predictions onnxloss binds (target excluded)."""
    return [n for n in arrays(case) if n not in ("target", "weight_samples")]


def term_for(case: dict, prefix: str = "") -> onnxloss.Loss:
    reduction, weighted = REDUCTIONS[case["reduction"]]
    kwargs = dict(case["options"])
    for arg in predictions(case)[1:]:
        kwargs[BINDINGS[arg]] = f"{prefix}{arg}"
    cls = LOSSES[case["loss"]]
    if cls.has_target:
        kwargs["target"] = f"{prefix}target"
    if weighted:
        # Where PyTorch's weight is taken, the per-sample input is sample_weight.
        key = "sample_weight" if "weight" in kwargs else "weight"
        kwargs[key] = f"{prefix}w"
    return cls(f"{prefix}input", reduction=reduction, **kwargs)


def model_for(cases: list[dict], dtype, trainable: bool) -> tuple[onnx.ModelProto, dict]:
    """One model holding every case's predictions as outputs ``<prefix><argument>``.

    ``trainable``: each output is ``X + offset`` with a zero initializer ``offset`` of the
    full shape, so onnxruntime-training's gradient with respect to ``offset`` is the
    gradient with respect to the prediction."""
    elem = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes, inputs, outputs, inits, feeds = [], [], [], [], {}
    spec = onnxloss.Spec(())
    for k, case in enumerate(cases):
        prefix = f"c{k}_" if len(cases) > 1 else ""
        batch = arrays(case)
        for arg in predictions(case):
            value = batch[arg].astype(dtype)
            name, x = f"{prefix}{arg}", f"{prefix}X_{arg}"
            inputs.append(oh.make_tensor_value_info(x, elem, list(value.shape)))
            outputs.append(oh.make_tensor_value_info(name, elem, list(value.shape)))
            feeds[x] = value
            if trainable:
                inits.append(nh.from_array(np.zeros_like(value), f"{prefix}offset_{arg}"))
                nodes.append(oh.make_node("Add", [x, f"{prefix}offset_{arg}"], [name]))
            else:
                nodes.append(oh.make_node("Identity", [x], [name]))
        target = batch.get("target")
        if target is not None:
            feeds[f"{prefix}target"] = target if target.dtype.kind in "iu" else target.astype(dtype)
        if REDUCTIONS[case["reduction"]][1]:
            feeds[f"{prefix}w"] = batch["weight_samples"].astype(dtype)
        spec = spec + term_for(case, prefix)
    graph = oh.make_graph(nodes, "torch_case", inputs, outputs, inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    return onnxloss.rewrite(model, spec), feeds


def assert_close(got, want, rtol: float, atol: float, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(got, np.float64), want, rtol=rtol, atol=atol, err_msg=what
    )


def gradient_floor(want: np.ndarray, rtol: float) -> float:
    return rtol * float(np.mean(np.abs(want))) if want.size else 0.0


def _session(model_bytes: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


#: Batches where onnx.reference itself is wrong in float32: its LogSoftmax is
#: log(softmax(x)), and softmax underflows to 0 for logits 200 apart (onnxruntime is right).
REFERENCE_UNDERFLOWS = {"ce_edge"}


def evaluate_both(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    """The loss from onnx.reference and, when installed, from onnxruntime."""
    from onnx.reference import ReferenceEvaluator

    with np.errstate(all="ignore"):
        got = {"onnx.reference": ReferenceEvaluator(model).run(["loss"], feeds)[0]}
    if HAS_ORT:
        got["onnxruntime"] = _session(model.SerializeToString()).run(["loss"], feeds)[0]
    return got


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_value_equals_pytorch(case, dtype):
    model, feeds = model_for([case], dtype, trainable=False)
    want = expected(case)
    rtol = RTOL[dtype]
    for evaluator, loss in evaluate_both(model, feeds).items():
        if evaluator == "onnx.reference" and dtype == np.float32:
            if case["batch"] in REFERENCE_UNDERFLOWS:
                continue
        assert loss.dtype == dtype and loss.shape == ()
        what = f"{case_id(case)}: value from {evaluator}"
        assert_close(loss, want["value64"], rtol, rtol * want["scale64"], what)


FD_CASES = [c for c in CASES if "edge" not in c["batch"]]


def loss_runner(model: onnx.ModelProto):
    """feeds → the loss, from onnxruntime when installed (fast), else onnx.reference."""
    if HAS_ORT:
        session = _session(model.SerializeToString())
        return lambda feeds: float(session.run(["loss"], feeds)[0])
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    return lambda feeds: float(evaluator.run(["loss"], feeds)[0])


@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_finite_differences_equal_pytorch_gradient(case):
    """Central differences of the float64 graph against PyTorch's float64 gradient."""
    model, feeds = model_for([case], np.float64, trainable=False)
    run = loss_runner(model)
    want = expected(case)
    for arg in case["gradients"]:
        if arg in case["skip_gradients"]:
            continue
        name = f"X_{arg}"

        def objective(x, name=name):
            return run({**feeds, name: x})

        fd = numeric_gradient(objective, feeds[name])
        g = want[f"grad64/{arg}"]
        assert_close(fd, g, 1e-6, gradient_floor(g, 1e-6), f"{case_id(case)}: d/d{arg}")


def _groups() -> list[list[dict]]:
    by_loss = defaultdict(list)
    for case in CASES:
        by_loss[case["loss"]].append(case)
    return [by_loss[name] for name in sorted(by_loss)]


@pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime-training")
@pytest.mark.parametrize("cases", _groups(), ids=lambda g: g[0]["loss"])
def test_training_runtime_gradient_equals_pytorch(cases):
    """onnxruntime-training's float32 gradient (every case of one loss class in one model,
    each on its own outputs: the gradient of the sum is each case's own) against PyTorch's
    float64 gradient, edge batches included."""
    from onnxloss.testing.runtime import onnxruntime_gradients

    model, feeds = model_for(cases, np.float32, trainable=True)
    trainables = [t.name for t in model.graph.initializer]
    total, grads = onnxruntime_gradients(model, feeds, trainables)
    values = sum(float(expected(c)["value64"]) for c in cases)
    scales = sum(float(expected(c)["scale64"]) for c in cases)
    assert_close(total, values, 1e-5, 1e-5 * scales, "the runtime's loss")
    for k, case in enumerate(cases):
        want = expected(case)
        for arg in case["gradients"]:
            if arg in case["skip_gradients"]:
                continue
            g = want[f"grad64/{arg}"]
            got = grads[f"c{k}_offset_{arg}"]
            assert_close(got, g, 1e-5, gradient_floor(g, 1e-5), f"{case_id(case)}: d/d{arg}")


# -- decompositions at their kinks -----------------------------------------------------------------
ACTIVATIONS = INDEX["activations"]


def activation_model(name: str) -> onnx.ModelProto:
    """``loss = ReduceSum(op(W·one))`` over the points of the archive, W a trainable float32
    (fed ``one = 1``: the runtime's module wants an input)."""
    spec = ACTIVATIONS[name]
    x = ARCHIVE["act/x"].astype(np.float32)
    inits = [nh.from_array(x, "W")]
    inputs = ["x"]
    if spec["op"] == "PRelu":
        inits.append(nh.from_array(np.array([0.25], np.float32), "slope"))
        inputs.append("slope")
    nodes = [
        oh.make_node("Mul", ["W", "one"], ["x"]),
        oh.make_node(spec["op"], inputs, ["y"], **spec["attrs"]),
        oh.make_node("ReduceSum", ["y"], ["loss"], keepdims=0),
    ]
    outputs = [oh.make_tensor_value_info("loss", onnx.TensorProto.FLOAT, [])]
    one = [oh.make_tensor_value_info("one", onnx.TensorProto.FLOAT, [])]
    graph = oh.make_graph(nodes, name, one, outputs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


@pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime-training")
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_decomposition_gradient_at_kinks_equals_pytorch(name):
    """DecomposeForGradients keeps PyTorch's value and its gradient at the kinks (0, ±3,
    ±lambd...) where the runtime's Relu, Abs, Min and Clip would choose another one."""
    from onnxloss.passes import DecomposeForGradients
    from onnxloss.testing.runtime import onnxruntime_gradients

    decomposed = DecomposeForGradients()(activation_model(name)).model
    loss, grads = onnxruntime_gradients(decomposed, {"one": np.array(1.0, np.float32)}, ["W"])
    value, grad = ARCHIVE[f"act/{name}/value"], ARCHIVE[f"act/{name}/grad"]
    assert_close(loss, value.sum(), 1e-5, 1e-5 * np.abs(value).sum(), f"{name}: value")
    assert_close(grads["W"], grad, 1e-5, 1e-6, f"{name}: gradient at {ARCHIVE['act/x']}")
