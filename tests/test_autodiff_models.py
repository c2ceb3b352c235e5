"""Whole models through the gradient pass.

* Models built by hand with onnx.helper, in float64: the ones onnxruntime-training cannot
  train (a ConvTranspose autoencoder, a Resize CNN, a CumSum sequence model), an LSTM, a GRU,
  an attention block, a residual block and an embedding: gradients equal to central finite
  differences of the forward graph (onnx.reference).
* Models exported by torch.onnx (TorchScript and dynamo exporters, opsets 13 to 21, files
  under tests/data/autodiff made by make_torch_autodiff_models.py): every operator on the
  gradient path has a rule, and the gradients equal PyTorch's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.autodiff import describe_training_step, gradient, training_step
from onnxloss.autodiff.verify import gradients_and_differences
from onnxloss.readiness import check_trainable

D = TensorProto.DOUBLE
DATA = Path(__file__).parent / "data" / "autodiff"


class Net:
    """A float64 model under construction: nodes, initializers with random values."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def param(self, name: str, *shape, scale: float = 0.5) -> str:
        self.inits.append(nh.from_array(self.rng.normal(size=shape) * scale, name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A Constant node (not an initializer: those are trained by default)."""
        self.count += 1
        name = f"c{self.count}"
        tensor = nh.from_array(np.asarray(value, dtype), name)
        self.nodes.append(oh.make_node("Constant", [], [name], value=tensor, name=name))
        return name

    def __call__(self, op: str, *inputs: str, n: int = 1, **attrs):
        self.count += 1
        outs = [f"{op.lower()}{self.count}_{k}" for k in range(n)]
        self.nodes.append(oh.make_node(op, list(inputs), outs, name=f"{op}{self.count}", **attrs))
        return outs[0] if n == 1 else outs

    def model(self, x_shape, y: str, opset: int = 17, x_type=D) -> onnx.ModelProto:
        self.nodes.append(oh.make_node("Identity", [y], ["variable"], name="out"))
        graph = oh.make_graph(
            self.nodes,
            "net",
            [oh.make_tensor_value_info("X", x_type, x_shape)],
            [oh.make_tensor_value_info("variable", D, None)],
            self.inits,
        )
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)
        return onnx.shape_inference.infer_shapes(model)


def conv_transpose_autoencoder():
    n = Net(1)
    h = n("Relu", n("Conv", "X", n.param("W1", 3, 1, 3, 3), n.param("b1", 3), strides=[2, 2],
                    pads=[1, 1, 1, 1]))  # fmt: skip
    up = n("ConvTranspose", h, n.param("W2", 3, 1, 3, 3), n.param("b2", 1), strides=[2, 2],
           pads=[1, 1, 1, 1], output_padding=[1, 1])  # fmt: skip
    return n.model(["N", 1, 6, 6], n("Sigmoid", up)), (2, 1, 6, 6)


def resize_cnn():
    n = Net(2)
    h = n("Conv", "X", n.param("W1", 2, 1, 3, 3), n.param("b1", 2), pads=[1, 1, 1, 1])
    up = n("Resize", h, "", n.const([1.0, 1.0, 2.0, 2.0], np.float32), mode="linear")
    near = n("Resize", up, "", n.const([1.0, 1.0, 1.0, 0.5], np.float32), mode="nearest")
    y = n("Conv", n("Tanh", near), n.param("W2", 1, 2, 3, 3), n.param("b2", 1), pads=[1, 1, 1, 1])
    return n.model(["N", 1, 4, 4], y), (2, 1, 4, 4)


def cumsum_sequence():
    n = Net(3)
    h = n("Add", n("MatMul", "X", n.param("W", 3, 4)), n.param("b", 4))
    s = n("Tanh", n("CumSum", h, n.const(1)))
    y = n("ReduceMean", n("MatMul", s, n.param("V", 4, 1)), n.const([1]), keepdims=0)
    return n.model(["N", 5, 3], y, opset=18), (2, 5, 3)


def lstm_model(kind: str = "LSTM"):
    n = Net(4)
    gates, hidden = {"LSTM": 4, "GRU": 3}[kind], 3
    seq = n("Transpose", "X", perm=[1, 0, 2])
    extra = {"linear_before_reset": 1} if kind == "GRU" else {}
    y, y_h = n(kind, seq, n.param("W", 1, gates * hidden, 2), n.param("R", 1, gates * hidden,
               hidden), n.param("B", 1, 2 * gates * hidden), n=2, hidden_size=hidden,
               **extra)  # fmt: skip
    last = n("Squeeze", y_h, n.const([0]))
    return n.model(["N", 4, 2], n("MatMul", last, n.param("V", hidden, 2))), (2, 4, 2)


def attention_block():
    """Pre-norm attention with two heads, a causal mask, and a GELU feed-forward."""
    n = Net(5)
    d, heads = 4, 2
    x = n("LayerNormalization", "X", n.param("g1", d), n.param("be1", d))
    qkv = n("MatMul", x, n.param("Wqkv", d, 3 * d))
    q, k, v = n("Split", qkv, n.const([d, d, d]), axis=2, n=3)

    def split_heads(t):
        shaped = n("Reshape", t, n.const([0, 0, heads, d // heads]))
        return n("Transpose", shaped, perm=[0, 2, 1, 3])

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    scores = n("Div", n("MatMul", q, n("Transpose", k, perm=[0, 1, 3, 2])),
               n.const(np.sqrt(d // heads), np.float64))  # fmt: skip
    causal = n.const(np.tril(np.ones((3, 3), bool)), np.bool_)
    mask = n("Expand", causal, n("Shape", scores))
    masked = n("Where", mask, scores, n.const(-1e4, np.float64))
    att = n("MatMul", n("Softmax", masked, axis=-1), v)
    merged = n("Reshape", n("Transpose", att, perm=[0, 2, 1, 3]), n.const([0, 0, d]))
    h = n("Add", "X", n("MatMul", merged, n.param("Wo", d, d)))
    f = n("MatMul", n("LayerNormalization", h, n.param("g2", d), n.param("be2", d)),
          n.param("W1", d, 2 * d))  # fmt: skip
    # GELU, tanh form (onnx.reference computes Erf in float32, too coarse for differences;
    # the exported transformers cover Erf against PyTorch)
    cube = n("Mul", n("Mul", n("Mul", f, f), f), n.const(0.044715, np.float64))
    inner = n("Mul", n("Add", f, cube), n.const(np.sqrt(2 / np.pi), np.float64))
    gelu = n("Mul", n("Mul", f, n.const(0.5, np.float64)),
             n("Add", n("Tanh", inner), n.const(1.0, np.float64)))  # fmt: skip
    out = n("Add", h, n("MatMul", gelu, n.param("W2", 2 * d, d)))
    first = n("Slice", out, n.const([0]), n.const([1]), n.const([1]))
    pooled = n("Concat", first, n("ReduceMean", out, axes=[1], keepdims=1), axis=1)
    return n.model(["N", 3, d], pooled), (2, 3, d)


def residual_block():
    n = Net(6)
    c = 2

    def conv_bn(t, k):
        conv = n("Conv", t, n.param(f"W{k}", c, c, 3, 3), pads=[1, 1, 1, 1])
        var = n.const(np.array([0.5, 1.5]), np.float64)
        return n("BatchNormalization", conv, n.param(f"s{k}", c), n.param(f"o{k}", c),
                 n.param(f"m{k}", c), var)  # fmt: skip

    stem = n("Conv", "X", n.param("W0", c, 1, 3, 3), pads=[1, 1, 1, 1])
    r = conv_bn(n("Relu", conv_bn(stem, 1)), 2)
    pooled = n("Flatten", n("GlobalAveragePool", n("Relu", n("Add", stem, r))))
    return n.model(["N", 1, 4, 4], n("Gemm", pooled, n.param("Wf", 2, c), transB=1)), (2, 1, 4, 4)


def embedding():
    n = Net(7)
    e = n("Gather", n.param("E", 6, 3), "X")
    pooled = n("ReduceMean", e, n.const([1]), keepdims=0)
    y = n("Gemm", pooled, n.param("Wf", 3, 2), n.param("bf", 2))
    return n.model(["N", 4], y, opset=18, x_type=TensorProto.INT64), (3, 4)


HAND_BUILT = {
    "conv_transpose_autoencoder": conv_transpose_autoencoder,
    "resize_cnn": resize_cnn,
    "cumsum_sequence": cumsum_sequence,
    "lstm": lstm_model,
    "gru": lambda: lstm_model("GRU"),
    "attention_block": attention_block,
    "residual_block": residual_block,
    "embedding": embedding,
}
#: What stops the training build, found by its readiness check.
TRAINING_BUILD_REFUSES = {
    "conv_transpose_autoencoder": "no-cpu-kernel",
    "resize_cnn": "no-cpu-kernel",
    "cumsum_sequence": "no-gradient",
}


def _loss_model(name: str):
    model, x_shape = HAND_BUILT[name]()
    loss_model = onnxloss.rewrite(model, onnxloss.MSELoss())
    rng = np.random.default_rng(0)
    if name == "embedding":
        x = rng.integers(0, 6, x_shape)
    else:
        x = rng.normal(size=x_shape)
    y = rng.normal(size=onnx.reference.ReferenceEvaluator(model).run(None, {"X": x})[0].shape)
    return loss_model, {"X": x, "label": y}


@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_hand_built_model_gradients_equal_finite_differences(name):
    loss_model, feeds = _loss_model(name)
    weights = onnxloss.readiness.default_trainables(loss_model)
    assert check_trainable(loss_model, backend="onnxruntime").ok
    found = gradients_and_differences(loss_model, feeds, weights)
    for w, (got, expected) in found.items():
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8, err_msg=f"{name}: {w}")
    grad_model = gradient(loss_model)
    onnx.checker.check_model(grad_model, full_check=True)
    onnx.shape_inference.infer_shapes(grad_model, check_type=True, strict_mode=True)


@pytest.mark.parametrize("name", sorted(TRAINING_BUILD_REFUSES))
def test_the_training_build_cannot_train_these(name):
    loss_model, _ = _loss_model(name)
    kinds = {p.kind for p in check_trainable(loss_model).errors}
    assert TRAINING_BUILD_REFUSES[name] in kinds


# -- models exported by torch.onnx ------------------------------------------------------
EXPORTED = sorted(DATA.glob("*.onnx"))


def _exported(path: Path):
    model = onnx.load(str(path))
    loss_model = onnxloss.rewrite(model, onnxloss.MSELoss())
    data = np.load(DATA / f"{path.stem.split('-')[0]}.npz")
    feeds = {"X": data["X"], "label": np.zeros_like(data["variable"])}
    torch_grads = {
        key.rsplit("/", 1)[1]: data[key]
        for key in data.files
        if key.startswith(f"grad/{path.stem}/")
    }
    return loss_model, feeds, torch_grads, float(data["loss"])


def _reachable(loss_model) -> list[str]:
    """The default trainables minus those no differentiable path joins to the loss (the
    dynamo exporter stores Resize's scales as float initializers)."""
    report = check_trainable(loss_model, backend="onnxruntime")
    cut = {p.subject for p in report.errors if p.kind == "trainable-unreachable"}
    return [w for w in onnxloss.readiness.default_trainables(loss_model) if w not in cut]


def test_the_exported_models_are_there():
    stems = {p.stem for p in EXPORTED}
    assert len(stems) == 40 and all(DATA.joinpath(f"{s.split('-')[0]}.npz").exists() for s in stems)


@pytest.mark.skipif(not HAS_ORT, reason="runs the gradient graph on onnxruntime")
@pytest.mark.parametrize("path", EXPORTED, ids=[p.stem for p in EXPORTED])
def test_exported_model_gradients_equal_pytorch(path):
    import onnxruntime as ort

    loss_model, feeds, torch_grads, torch_loss = _exported(path)
    weights = _reachable(loss_model)
    report = check_trainable(loss_model, weights, backend="onnxruntime")
    assert report.ok, report.format()
    grad_model = gradient(loss_model, weights)
    session = ort.InferenceSession(
        grad_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in grad_model.graph.output]
    out = dict(zip(names, session.run(None, feeds), strict=True))
    assert float(out["loss"]) == pytest.approx(torch_loss, rel=1e-5)
    info = describe_training_step(grad_model)
    compared = 0
    for t in info.trained:
        if t.name in torch_grads:
            expected = torch_grads[t.name]
            scale = float(np.max(np.abs(expected)))
            np.testing.assert_allclose(out[t.gradient], expected, rtol=1e-4, atol=1e-5 * scale)
            compared += 1
    assert compared >= 2  # every model has parameters stored as they are


@pytest.mark.skipif(not HAS_ORT, reason="runs the training step on onnxruntime")
@pytest.mark.parametrize("name", ["lstm-dynamo18", "transformer-torchscript17", "cnn-dynamo21"])
def test_exported_models_train_on_onnxruntime(name):
    """Ten SGD steps of the training-step graph on plain onnxruntime lower the loss."""
    import onnxruntime as ort

    loss_model, feeds, _, _ = _exported(DATA / f"{name}.onnx")
    weights = _reachable(loss_model)
    step = training_step(loss_model, weights, "adamw")
    info = describe_training_step(step)
    session = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in step.graph.output]
    initial = {t.name: nh.to_array(t) for t in loss_model.graph.initializer}
    current = {t.input: initial[t.name] for t in info.trained}
    state = info.initial_state()
    losses = []
    for k in range(1, 11):
        run = {**feeds, **current, **state, info.learning_rate_input: np.array(0.01, np.float32),
               info.step_input: np.array(k, np.int64)}  # fmt: skip
        out = dict(zip(names, session.run(None, run), strict=True))
        losses.append(float(out[info.loss_output]))
        current = {t.input: out[t.output] for t in info.trained}
        state = {s.input: out[s.output] for s in info.state}
    assert losses[-1] < 0.9 * losses[0], losses
