"""The gradient pass against onnxruntime-training 1.19.2, where that runtime has a gradient:
every rule's test graph, every built-in loss × penalty, every model of the compatibility
table, and three SGD / AdamW steps of the training-step graph against the training API.
Runs only where the training build is installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import BUILTIN_LOSSES, HAS_ORT
from onnx import numpy_helper as nh
from test_autodiff_rules import BINARY, NN, RECURRENT, REDUCTIONS, SHAPES, UNARY, Case, build

import onnxloss
from onnxloss.autodiff import describe_training_step, gradient, training_step
from onnxloss.examples import mlp
from onnxloss.gradient_ops import gradient_support
from onnxloss.testing.runtime import training_runtime_problem

pytestmark = pytest.mark.skipif(
    not HAS_ORT or training_runtime_problem() is not None,
    reason="needs onnxruntime-training (the [train] extra)",
)
ROOT = Path(__file__).resolve().parent.parent


def training_gradients(model, feeds, trainables):
    """(loss, {name: gradient}) from onnxruntime-training's own gradient graph, without the
    readiness check (some tests measure what the runtime does wrong)."""
    from onnxloss.testing.runtime import onnxruntime_gradients

    return onnxruntime_gradients(model, feeds, trainables, check=False)


def pass_gradients(model, feeds, trainables):
    """(loss, {name: gradient}) from the gradient pass's graph, run by onnxruntime."""
    import onnxruntime as ort

    grad_model = gradient(model, list(trainables))
    session = ort.InferenceSession(
        grad_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in grad_model.graph.output]
    out = dict(zip(names, session.run(None, feeds), strict=True))
    info = describe_training_step(grad_model)
    return float(out[names[0]]), {t.name: out[t.gradient] for t in info.trained}


def assert_close(ours, theirs, rtol=1e-5, what=""):
    """Relative agreement, 1e-5 of each tensor's largest magnitude (float32 rounding)."""
    for name, expected in theirs.items():
        scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-6)
        np.testing.assert_allclose(
            ours[name], expected, rtol=rtol, atol=rtol * scale, err_msg=f"{what} d/d{name}"
        )


def as_initializers(model, feeds, names):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [i for i in out.graph.input if i.name not in names]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    out.graph.initializer.extend(nh.from_array(feeds[n], n) for n in names)
    return out, {k: v for k, v in feeds.items() if k not in names}


#: Inputs the training build differentiates, where it does not take them all (Clip's bounds,
#: Pow's exponent and BatchNormalization's statistics are constants to it).
RUNTIME_INPUTS = {"Clip": ["x0"], "Pow": ["x0"], "BatchNorm-inference": ["x0", "x1", "x2"]}
#: Graphs the training build cannot differentiate (it raises), checked to still fail.
RUNTIME_FAILS = {
    "Cast-$elem": "a Cast to the same type: 'Argument mismatch when removing edge'",
    "Pow-int-exponent": "an int64 exponent: 'bound to different types' in its Sub",
    "Slice-steps": "negative steps: the training step raises at run time",
    "MatMul-1d-3d": "a 1-D operand: 'Incompatible dimensions' in its FusedMatMul",
    "MatMul-3d-1d": "a 1-D operand: 'Incompatible dimensions' in its FusedMatMul",
    "MatMul-1d-1d": "1-D operands: 'Input tensors of wrong rank'",
}
#: Graphs where the training build's gradient is wrong (the input whose gradient is): it
#: disagrees with finite differences, which the pass matches.
RUNTIME_WRONG = {
    "Conv-2d-auto_padSAME_UPPER-strides[2, 2]": "x1",
    "AveragePool-pads": "x0",
    "AveragePool-count-pad": "x0",
    "AvgPool-1d": "x0",
    "BatchNorm-inference": "x0",
    "Where": "x2",
    "ScatterElements-add": "x0",
}


def runtime_case(case: Case, seed: int = 1):
    """The case's graph with each differentiated input x fed as data times a trained
    initializer of ones (the training build trains initializers, and crashes on some
    operators fed by one directly): the gradient of that scale is x ⊙ ∂loss/∂x."""
    model, feeds, wrt = build(case, 17, np.random.default_rng(seed), np.float32)
    wanted = RUNTIME_INPUTS.get(case.id or case.op, wrt)
    graph = model.graph
    scaled = []
    for vi in graph.input:
        if vi.name in wanted:
            data = f"{vi.name}_data"
            graph.node.insert(
                0, onnx.helper.make_node("Mul", [data, f"{vi.name}_scale"], [vi.name])
            )
            graph.initializer.append(
                nh.from_array(np.ones_like(feeds[vi.name]), f"{vi.name}_scale")
            )
            feeds[data] = feeds.pop(vi.name)
            vi.name = data
            scaled.append(f"{vi.name[:-5]}_scale")
    return model, feeds, scaled


def _supported(case: Case) -> bool:
    model, _, _ = build(case, 17, np.random.default_rng(0), np.float32)
    return gradient_support(model.graph.node[0], 17).status == "ok" and case.dtype is np.float64


_RUNTIME_CASES = [
    c
    for c in UNARY + BINARY + REDUCTIONS + SHAPES + NN + RECURRENT
    if 17 in c.opsets() and c.runtime == "reference" and c.on_onnxruntime and _supported(c)
]
CASES = [
    pytest.param(
        c,
        id=c.id or c.op,
        marks=[
            pytest.mark.xfail(
                raises=(onnxloss.OnnxLossError, RuntimeError),
                strict=True,
                reason=RUNTIME_FAILS[c.id or c.op],
            )
        ]  # fmt: skip
        if (c.id or c.op) in RUNTIME_FAILS
        else [],
    )
    for c in _RUNTIME_CASES
    if (c.id or c.op) not in RUNTIME_WRONG
]


@pytest.mark.parametrize("case", CASES)
def test_rule_matches_the_training_build(case):
    model, feeds, trained = runtime_case(case)
    loss, theirs = training_gradients(model, feeds, trained)
    our_loss, ours = pass_gradients(model, feeds, trained)
    assert our_loss == pytest.approx(loss, rel=1e-6)
    assert_close(ours, theirs, what=case.id or case.op)


@pytest.mark.parametrize("case_id", sorted(RUNTIME_WRONG))
def test_the_training_build_is_wrong_where_we_say_so(case_id):
    """On these graphs the training build's gradient is far from central differences of
    the forward graph (run by onnxruntime, float32: the loss is quadratic in the linear
    operators' outputs, so a step of 0.01 is exact up to rounding); the pass's is not."""
    import onnxruntime as ort

    from onnxloss.autodiff.verify import as_inputs
    from onnxloss.testing.runtime import numeric_gradient

    case = next(c for c in _RUNTIME_CASES if (c.id or c.op) == case_id)
    model, feeds, trained = runtime_case(case)
    _, theirs = training_gradients(model, feeds, trained)
    _, ours = pass_gradients(model, feeds, trained)
    name = f"{RUNTIME_WRONG[case_id]}_scale"
    forward, values = as_inputs(model, [name])
    session = ort.InferenceSession(forward.SerializeToString(), providers=["CPUExecutionProvider"])

    def loss(v):
        return float(session.run(None, {**feeds, name: v.astype(np.float32)})[0])

    expected = numeric_gradient(loss, values[name].astype(np.float64), 1e-2)
    scale = float(np.max(np.abs(expected)))
    assert np.max(np.abs(ours[name] - expected)) < 1e-3 * scale
    assert np.max(np.abs(theirs[name] - expected)) > 0.05 * scale


def _loss_model(name: str, penalty: str | None):
    """The loss on an MLP head that suits it (tests/loss_examples.py), with its feeds."""
    from loss_examples import EXAMPLES, example_model
    from test_gradients import data_for

    from onnxloss.train.data import Feeder
    from onnxloss.train.layout import describe_layout

    rng = np.random.default_rng(0)
    X, y = data_for(name, rng)
    spec = EXAMPLES[name].make()
    if penalty:
        options = {"l1": 1e-2, "l2": 1e-2} if penalty == "elastic_net" else {"alpha": 1e-2}
        spec = spec + onnxloss.available_regularizers()[penalty].cls("W*", **options)
    model = onnxloss.rewrite(example_model(name, base="mlp"), spec)
    layout = describe_layout(model, "loss", None, "auto")
    names = [i.name for i in layout.inputs]
    target = None if y is None or not layout.targets else y[:32]
    arrays = Feeder(layout, names).arrays(X[:32], target, None)
    return model, dict(zip(names, arrays, strict=True))


@pytest.mark.parametrize("penalty", [None, "l1", "l2", "elastic_net"])
@pytest.mark.parametrize("name", sorted(BUILTIN_LOSSES))
def test_every_builtin_loss_and_penalty_matches_the_training_build(name, penalty):
    model, feeds = _loss_model(name, penalty)
    weights = onnxloss.readiness.default_trainables(model)
    loss, theirs = training_gradients(model, feeds, weights)
    our_loss, ours = pass_gradients(model, feeds, weights)
    assert our_loss == pytest.approx(loss, rel=1e-6)
    assert_close(ours, theirs, what=f"{name} + {penalty}")


def _compatibility_script():
    spec = importlib.util.spec_from_file_location(
        "compatibility_table_autodiff", ROOT / "scripts" / "compatibility_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _compatibility_models():
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from onnxloss.passes import AddLoss, MakeTrainable, Sequential

    table = _compatibility_script()
    found = []
    for case in table.cases():
        X, y = table.data(case.kind, False, 0)
        if case.features is not None:  # the ColumnTransformer row's categorical columns
            X = case.features(X)
        model = case.make(X, y)
        try:
            loss_model = Sequential(MakeTrainable(), AddLoss(case.loss()))(model).model
        except onnxloss.OnnxLossError:
            continue
        if not onnxloss.check_trainable(loss_model).ok:
            continue  # the rows that do not train (a tree ensemble): nothing to compare
        Xf, yf = table.data(case.kind, True, 1)
        if case.features is not None:
            Xf = case.features(Xf)
        found.append((case.name, loss_model, Xf[:32], yf[:32]))
    return found


def test_every_compatibility_table_model_matches_the_training_build():
    models = _compatibility_models()
    assert len(models) >= 11
    for name, model, X, y in models:
        inputs = [i.name for i in model.graph.input]
        target = model.graph.input[1]
        elem = target.type.tensor_type.elem_type
        dims = len(target.type.tensor_type.shape.dim)
        y = y.astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        y = y.reshape(-1, 1) if dims == 2 and y.ndim == 1 else y
        feeds = dict(zip(inputs, [X.astype(np.float32), y], strict=False))
        weights = onnxloss.readiness.default_trainables(model)
        loss, theirs = training_gradients(model, feeds, weights)
        our_loss, ours = pass_gradients(model, feeds, weights)
        # float32 through two runtimes' kernels: LogisticRegression's confident
        # probabilities lose digits in 1 - p, so the loss agrees to about 4e-5.
        assert our_loss == pytest.approx(loss, rel=1e-4), name
        assert_close(ours, theirs, what=name)


STEP_CASES = [
    ("sgd", None, None),
    ("sgd", None, 0.05),
    ("adamw", None, None),
    ("adamw", {"weight_decay": 0.01, "betas": (0.8, 0.99), "eps": 1e-5}, 0.05),
]


@pytest.mark.parametrize("optimizer,params,clip", STEP_CASES)
def test_three_training_steps_equal_the_training_api(optimizer, params, clip):
    import onnxruntime as ort

    from onnxloss.train._runtime import load_runtime
    from onnxloss.train.artifacts import TrainingArtifacts

    model = onnxloss.rewrite(mlp((3, 5, 2), activation="Tanh", seed=3), onnxloss.MSELoss())
    weights = ["W0", "b0", "W1", "b1"]
    rng = np.random.default_rng(0)
    batches = [
        {
            "X": rng.normal(size=(8, 3)).astype(np.float32),
            "label": rng.normal(size=(8, 2)).astype(np.float32),
        }  # fmt: skip
        for _ in range(3)
    ]
    lr = 0.05
    step_model = training_step(
        model, weights, optimizer, optimizer_params=params, max_grad_norm=clip
    )
    info = describe_training_step(step_model)
    session = ort.InferenceSession(
        step_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in step_model.graph.output]
    initial = {t.name: nh.to_array(t) for t in model.graph.initializer}
    current = {t.input: initial[t.name] for t in info.trained}
    state = info.initial_state()
    ours = []
    for k, batch in enumerate(batches, start=1):
        feeds = {**batch, **current, **state,
                 info.learning_rate_input: np.array(lr, np.float32),
                 info.step_input: np.array(k, np.int64)}  # fmt: skip
        out = dict(zip(names, session.run(None, feeds), strict=True))
        current = {t.input: out[t.output] for t in info.trained}
        state = {s.input: out[s.output] for s in info.state}
        ours.append({t.name: current[t.input] for t in info.trained})

    rt = load_runtime()
    artifacts = TrainingArtifacts(model, weights, optimizer, params, clip, check=False)
    try:
        ckpt = rt.api.CheckpointState.load_checkpoint(str(artifacts.checkpoint))
        module = rt.api.Module(
            str(artifacts.training_model), ckpt, str(artifacts.eval_model), device="cpu"
        )
        opt = rt.api.Optimizer(str(artifacts.optimizer_model), module)
        opt.set_learning_rate(lr)
        module.train()
        theirs = []
        for batch in batches:
            module.lazy_reset_grad()
            module(*[batch[n] for n in module.input_names()])
            opt.step()
            theirs.append({w: np.array(ckpt.parameters[w].data, copy=True) for w in weights})
    finally:
        artifacts.cleanup()
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        for w in weights:
            np.testing.assert_allclose(a[w], b[w], rtol=1e-6, atol=1e-7, err_msg=f"step {k} {w}")


@pytest.mark.parametrize("name", ["torch_mlp", "torch_zoo"])
def test_the_models_of_tests_data_match_the_training_build(name):
    """tests/data's PyTorch models: the pass differentiates them as exported (Softplus, ELU,
    HardSwish, LayerNormalization, SELU, CELU, Mish, Softsign, HardSigmoid, PRelu,
    LogSoftmax, ReduceLogSumExp...); the training build needs make_trainable's
    decompositions first. Both compute the same function, so the gradients must agree."""
    from onnxloss.passes import make_trainable

    data = ROOT / "tests" / "data"
    model = onnx.load(str(data / f"{name}.onnx"))
    first = model.graph.output[0].name
    spec = onnxloss.MSELoss(first) if name == "torch_mlp" else onnxloss.CrossEntropyLoss(first)
    raw = onnxloss.rewrite(model, spec)
    fixed = onnxloss.rewrite(make_trainable(model), spec)
    X = np.load(data / f"{name}.npz")["X"][:8]
    label = np.zeros((8, 1), np.float32) if name == "torch_mlp" else np.arange(8) % 3
    feeds = {"X": X, "label": label}
    weights = onnxloss.readiness.default_trainables(raw)
    assert not onnxloss.check_trainable(raw).ok  # the training build cannot take it as is
    assert onnxloss.check_trainable(raw, backend="onnxruntime").ok
    loss, theirs = training_gradients(fixed, feeds, weights)
    our_loss, ours = pass_gradients(raw, feeds, weights)
    assert our_loss == pytest.approx(loss, rel=1e-5)
    assert_close(ours, theirs, rtol=2e-5, what=name)
