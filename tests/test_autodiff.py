"""The gradient pass as an API: the graph rules it keeps, its errors, gradient rules from
third-party plugins, the optimizer-update and training-step models, their metadata, and the
``train-graph`` / ``check --backend`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from onnx.reference import ReferenceEvaluator
from plugin_dists import make_dist

import onnxloss
from onnxloss.autodiff import (
    GradientError,
    TrainingMetadataError,
    describe_training_step,
    gradient,
    optimizer_update,
    training_step,
)
from onnxloss.autodiff.verify import check_gradient
from onnxloss.cli import main
from onnxloss.examples import mlp
from onnxloss.registry import PluginRegistry

F = TensorProto.FLOAT


def loss_model(opset=17, **kw):
    return onnxloss.rewrite(
        mlp((3, 4, 2), opset=opset, activation="Tanh", **kw), onnxloss.MSELoss()
    )


def feeds(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, 3)).astype(np.float32),
            "label": rng.normal(size=(n, 2)).astype(np.float32)}  # fmt: skip


def outputs(model, data):
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, data), strict=True))


# -- graph rules ------------------------------------------------------------------------
def test_the_caller_model_is_untouched_and_the_result_deterministic():
    model = loss_model()
    model.functions.append(oh.make_function("my.fn", "F", ["a"], ["b"],
                                            [oh.make_node("Identity", ["a"], ["b"])],
                                            [oh.make_opsetid("", 17)]))  # fmt: skip
    model.doc_string = "kept"
    before = model.SerializeToString()
    first, second = gradient(model), gradient(model)
    assert model.SerializeToString() == before
    assert first.SerializeToString() == second.SerializeToString()
    assert first.ir_version == model.ir_version and first.opset_import == model.opset_import
    assert first.functions == model.functions and first.doc_string == "kept"
    assert list(first.graph.node)[: len(model.graph.node)] == list(model.graph.node)
    assert [i.name for i in first.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in first.graph.output] == [
        "loss", "variable", "W0_grad", "b0_grad", "W1_grad", "b1_grad"
    ]  # fmt: skip
    kept = {p.key: p.value for p in model.metadata_props}
    assert all(p.key in kept or p.key == "onnxloss.gradient" for p in first.metadata_props)
    added = first.graph.node[len(model.graph.node) :]
    assert {n.domain for n in added} == {""}
    onnx.checker.check_model(first, full_check=True)
    onnx.shape_inference.infer_shapes(first, check_type=True, strict_mode=True)


def test_gradient_names_are_fresh():
    model = loss_model()
    model.graph.node.append(oh.make_node("Identity", ["loss"], ["W0_grad"]))
    model.graph.output.append(oh.make_tensor_value_info("W0_grad", F, []))
    names = [o.name for o in gradient(model, ["W0"]).graph.output]
    assert names[-1] == "W0_grad_1"


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_gradients_equal_finite_differences_with_dynamic_batch(opset):
    from onnxloss.examples import linear_regression

    rng = np.random.default_rng(opset)
    base = linear_regression(3, 2, opset=opset, coef=rng.normal(size=(3, 2)), dtype=np.float64)
    model = onnxloss.rewrite(base, onnxloss.HuberLoss(delta=0.5) + onnxloss.L2Penalty("coef", 0.1))
    grad = gradient(model)
    assert grad.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for n in (1, 7):  # one gradient graph, two batch sizes
        data = {"X": rng.normal(size=(n, 3)), "label": rng.normal(size=(n, 2))}
        check_gradient(model, data, ["coef", "intercept"])


def test_a_weight_used_twice_gets_the_sum():
    """Mul(w, w): d(Σ w²)/dw = 2w (onnxruntime-training fails on this graph)."""
    graph = oh.make_graph(
        [oh.make_node("Mul", ["w", "w"], ["sq"]), oh.make_node("ReduceSum", ["sq"], ["loss"],
                                                               keepdims=0)],
        "square",
        [],
        [oh.make_tensor_value_info("loss", F, [])],
        [nh.from_array(np.array([1.0, -2.0, 3.0], np.float32), "w")],
    )  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    got = outputs(gradient(model), {})["w_grad"]
    np.testing.assert_allclose(got, [2.0, -4.0, 6.0])


def test_integer_and_bool_edges_cut_the_path():
    n = [
        oh.make_node("Cast", ["w"], ["wi"], to=TensorProto.INT64),
        oh.make_node("Cast", ["wi"], ["wf"], to=F),
        oh.make_node("ReduceSum", ["wf"], ["loss"], keepdims=0),
    ]
    graph = oh.make_graph(n, "cut", [], [oh.make_tensor_value_info("loss", F, [])],
                          [nh.from_array(np.ones(3, np.float32), "w")])  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    # Asked for by name: by default 'w' is no weight at all (it reaches only integers).
    with pytest.raises(GradientError, match="'w' do\\(es\\) not reach the loss"):
        gradient(model, ["w"])


def test_errors_name_the_culprit():
    model = loss_model()
    with pytest.raises(GradientError, match="did you mean 'W0'"):
        gradient(model, ["W0x"])
    with pytest.raises(GradientError, match="list of tensor names"):
        gradient(model, "W0")
    with pytest.raises(GradientError, match="not an output"):
        gradient(model, loss_output="nope")
    with pytest.raises(onnxloss.OpsetError):
        gradient(_opset12())
    custom = loss_model()
    custom.graph.node[2].op_type, custom.graph.node[2].domain = "Wiggle", "my.ops"
    custom.opset_import.append(oh.make_opsetid("my.ops", 1))
    with pytest.raises(GradientError, match="node 'act0' \\(Wiggle\\).*no gradient rule"):
        gradient(custom)
    assert issubclass(GradientError, onnxloss.OnnxLossError)


def _opset12():
    model = loss_model()
    model.opset_import[0].version = 12
    return model


# -- rules from third-party plugins ---------------------------------------------------------
WIGGLE = """
import onnxloss

@onnxloss.hookimpl
def onnxloss_register_gradients(register):
    # Wiggle(x) = x + sin(x): dx = dy·(1 + cos(x))
    register("Wiggle", lambda g, node, dy: [g.Mul(dy[0], g.Add(g.Cos(node.input(0)), 1.0))],
             domain="my.ops")
"""
CLASHING = """
import onnxloss

@onnxloss.hookimpl
def onnxloss_register_gradients(register):
    register("Relu", lambda g, node, dy: [dy[0]])
    register("Gizmo", lambda g, node, dy: [None])
"""


def test_a_third_party_rule_for_a_custom_domain(site):
    make_dist(site, "wiggle-grad", "1.0", {"wiggle": "wiggle_mod"}, {"wiggle_mod": WIGGLE})
    reg = PluginRegistry()
    rule = reg.gradient_rule("Wiggle", "my.ops")
    assert rule is not None and rule.plugin.distribution == "wiggle-grad"
    model = _wiggle_model()
    grad = gradient(model, registry=reg)
    np.testing.assert_allclose(_run_with_wiggle(grad), 1 + np.cos([0.3, -1.2]), rtol=1e-12)


def _wiggle_model():
    """loss = Σ Wiggle(w), Wiggle a custom-domain operator."""
    node = oh.make_node("Wiggle", ["w"], ["y"], domain="my.ops", name="wiggle")
    graph = oh.make_graph(
        [node, oh.make_node("ReduceSum", ["y"], ["loss"], keepdims=0)], "custom", [],
        [oh.make_tensor_value_info("loss", TensorProto.DOUBLE, [])],
        [nh.from_array(np.array([0.3, -1.2]), "w")],
    )  # fmt: skip
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid("my.ops", 1)]
    return oh.make_model(graph, opset_imports=opsets, ir_version=8)


def _run_with_wiggle(model):
    from onnx.reference.op_run import OpRun

    class Wiggle(OpRun):
        op_domain = "my.ops"

        def _run(self, x):
            return (x + np.sin(x),)

    return ReferenceEvaluator(model, new_ops=[Wiggle]).run(["w_grad"], {})[0]


def test_a_rule_for_a_taken_operator_is_refused_naming_both_plugins(site):
    make_dist(site, "clash-grad", "0.1", {"clash": "clash_mod"}, {"clash_mod": CLASHING})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = PluginRegistry()
        assert reg.gradient_rule("Relu").plugin.name == "elementwise"
        assert reg.gradient_rule("Gizmo").plugin.name == "clash"  # its other rule registers
    (failure,) = reg.failures
    text = failure.describe()
    assert "plugin 'clash' (clash-grad 0.1)" in text and "plugin 'elementwise' (built-in)" in text
    assert "Relu" in text and any("Relu" in str(w.message) for w in caught)


def test_a_failing_rule_is_attributed_to_its_plugin(fresh_registry):
    class Broken:
        @onnxloss.hookimpl
        def onnxloss_register_gradients(self, register):
            register("Wiggle", lambda g, node, dy: 1 / 0, domain="my.ops")

    fresh_registry.add_plugin(Broken(), "broken")
    with pytest.raises(onnxloss.PluginError, match="plugin 'broken'.*ZeroDivisionError"):
        gradient(_wiggle_model())


def test_the_builtin_rules_are_plugins(fresh_registry):
    rules = fresh_registry.gradient_rules()
    families = {r.plugin.name for r in rules.values()}
    assert families == {"elementwise", "reductions", "shapes", "nn", "recurrent", "control_flow"}
    assert all(r.plugin.builtin for r in rules.values())
    assert len(rules) >= 100


# -- update and training-step models ---------------------------------------------------------
def test_gradient_then_update_equals_the_training_step():
    """What a data-parallel trainer runs (gradient model, all-reduce, update model) gives the
    same new weights and state as the single training-step model."""
    model = loss_model()
    data = feeds()
    kwargs = dict(optimizer_params={"weight_decay": 0.1}, max_grad_norm=0.5)
    grad_model = gradient(model)
    update = optimizer_update(grad_model, optimizer="adamw", **kwargs)
    step = training_step(model, optimizer="adamw", **kwargs)
    g_info, u_info, s_info = map(describe_training_step, (grad_model, update, step))
    assert (g_info.kind, u_info.kind, s_info.kind) == (
        "gradient",
        "optimizer_update",
        "training_step",
    )
    weights = {t.name: nh.to_array(t) for t in model.graph.initializer}
    grads = outputs(grad_model, data)
    common = {u_info.learning_rate_input: np.array(0.1, np.float32),
              u_info.step_input: np.array(3, np.int64)}  # fmt: skip
    state = {s.input: np.full(weights[s.weight].shape, 0.5, np.float32) for s in u_info.state}
    upd = outputs(update, {**{t.input: weights[t.name] for t in u_info.trained},
                           **{t.gradient: grads[g.gradient] for t, g in
                              zip(u_info.trained, g_info.trained, strict=True)},
                           **state, **common})  # fmt: skip
    stp = outputs(step, {**data, **{t.input: weights[t.name] for t in s_info.trained},
                         **state, **common})  # fmt: skip
    for a, b in zip(u_info.trained, s_info.trained, strict=True):
        np.testing.assert_allclose(upd[a.output], stp[b.output], rtol=1e-6)
    for a, b in zip(u_info.state, s_info.state, strict=True):
        np.testing.assert_allclose(upd[a.output], stp[b.output], rtol=1e-6)


def test_training_step_layout_and_description():
    model = loss_model()
    step = training_step(model, ["W0", "b0"], "adamw", gradients=True)
    info = describe_training_step(step)
    assert info.loss_output == "loss" and info.data_inputs == ("X", "label")
    assert info.outputs == ("variable",)
    assert [(t.name, t.input, t.output, t.gradient) for t in info.trained] == [
        ("W0", "W0", "W0_new", "W0_grad"), ("b0", "b0", "b0_new", "b0_grad")
    ]  # fmt: skip
    assert [(s.input, s.output, s.weight, s.role) for s in info.state][:2] == [
        ("W0_exp_avg", "W0_exp_avg_new", "W0", "exp_avg"),
        ("W0_exp_avg_sq", "W0_exp_avg_sq_new", "W0", "exp_avg_sq"),
    ]
    assert (info.learning_rate_input, info.step_input) == ("learning_rate", "step")
    assert dict(info.hyperparameters) == {
        "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0, "bias_correction": True
    }  # fmt: skip
    assert {i.name for i in step.graph.initializer} == {"W1", "b1"}  # the trained are inputs
    zeros = info.initial_state()
    assert zeros["W0_exp_avg"].shape == (3, 4) and not zeros["W0_exp_avg"].any()
    assert step.ir_version == model.ir_version and step.opset_import == model.opset_import
    onnx.checker.check_model(step, full_check=True)
    onnx.shape_inference.infer_shapes(step, check_type=True, strict_mode=True)
    out = outputs(step, {**feeds(3), "W0": np.zeros((3, 4), np.float32),
                         "b0": np.zeros(4, np.float32), **zeros,
                         "learning_rate": np.array(0.1, np.float32),
                         "step": np.array(1, np.int64)})  # fmt: skip
    assert out["W0_new"].shape == (3, 4)


def test_optimizer_errors():
    model = loss_model()
    with pytest.raises(onnxloss.OnnxLossError, match="'sgd' takes no optimizer_params"):
        training_step(model, optimizer_params={"eps": 1e-3})
    with pytest.raises(onnxloss.OnnxLossError, match="no parameter\\(s\\) \\['momentum'\\]"):
        training_step(model, optimizer="adamw", optimizer_params={"momentum": 0.9})
    with pytest.raises(onnxloss.CoefficientError, match="betas"):
        training_step(model, optimizer="adamw", optimizer_params={"betas": (0.9, 1.5)})
    with pytest.raises(onnxloss.CoefficientError, match="max_grad_norm"):
        training_step(model, max_grad_norm=-1)
    with pytest.raises(onnxloss.OnnxLossError, match="'rmsprop' is not"):
        training_step(model, optimizer="rmsprop")


def test_malformed_metadata_is_an_error():
    step = training_step(loss_model())
    with pytest.raises(TrainingMetadataError, match="none of the metadata"):
        describe_training_step(loss_model())
    for breakage in ("{not json", json.dumps({"format": 1, "kind": "training_step"})):
        broken = onnx.ModelProto()
        broken.CopyFrom(step)
        prop = next(p for p in broken.metadata_props if p.key == "onnxloss.training_step")
        prop.value = breakage
        with pytest.raises(TrainingMetadataError, match="onnxloss.training_step"):
            describe_training_step(broken)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(step)
    renamed.graph.input[-1].name = "steps"
    with pytest.raises(TrainingMetadataError, match="names \\['step'\\]"):
        describe_training_step(renamed)


def test_importing_the_pass_imports_no_runtime():
    code = "import onnxloss.autodiff, sys; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime")
def test_the_training_step_runs_on_onnxruntime_with_io_binding():
    import onnxruntime as ort

    step = training_step(loss_model(), optimizer="adamw", max_grad_norm=1.0)
    info = describe_training_step(step)
    session = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    init = {t.name: nh.to_array(t) for t in loss_model().graph.initializer}
    for name, value in {**feeds(4), **{t.input: init[t.name] for t in info.trained},
                        **info.initial_state(), info.learning_rate_input: np.array(0.1, np.float32),
                        info.step_input: np.array(1, np.int64)}.items():  # fmt: skip
        binding.bind_cpu_input(name, value)
    for name in [info.loss_output, *(t.output for t in info.trained)]:
        binding.bind_output(name)
    session.run_with_iobinding(binding)
    loss, *new = binding.copy_outputs_to_cpu()
    assert np.isfinite(loss) and new[0].shape == init["W0"].shape


# -- command line -----------------------------------------------------------------------------
def test_cli_train_graph(tmp_path, capsys):
    source, out = tmp_path / "loss.onnx", tmp_path / "step.onnx"
    onnx.save(loss_model(), str(source))
    args = [
        str(source),
        str(out),
        "--weights",
        "W0,b0",
        "--optimizer",
        "adamw",
        "--max-grad-norm",
        "2",
        "--option",
        "weight_decay=0.01",
        "--option",
        "betas=(0.8,0.9)",
    ]
    assert main(["train-graph", *args]) == 0
    info = describe_training_step(onnx.load(str(out)))
    assert [t.name for t in info.trained] == ["W0", "b0"] and info.max_grad_norm == 2.0
    assert info.hyperparameters["betas"] == [0.8, 0.9]
    assert capsys.readouterr().out.strip() == f"wrote {out}"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--weights", "W0x"], "did you mean 'W0'"),
        (["--option", "momentum=0.9", "--optimizer", "adamw"], "no parameter"),
        (["--optimizer", "adam"], "invalid choice"),
    ],
)
def test_cli_train_graph_user_errors(tmp_path, capsys, extra, message):
    source, out = tmp_path / "loss.onnx", tmp_path / "step.onnx"
    onnx.save(loss_model(), str(source))
    assert main(["train-graph", str(source), str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxloss: error:") and message in err and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_cli_check_backend(tmp_path, capsys):
    model = onnxloss.rewrite(mlp((3, 4, 1), activation="Softplus"), onnxloss.MSELoss())
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["check", str(path)]) == 1  # no Softplus gradient in the training build
    assert "Softplus" in capsys.readouterr().out
    assert main(["check", str(path), "--backend", "onnxruntime", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trainable"] and report["backend"] == "onnxruntime"
    assert report["problems"] == []


# -- documentation and readiness ---------------------------------------------------------------
def test_the_guide_lists_every_builtin_rule():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "autodiff.md").read_text()
    table = page.split("<!-- autodiff-rules: begin -->")[1].split("<!-- autodiff-rules: end -->")[0]
    documented = {}
    for line in table.strip().splitlines()[2:]:
        family, ops = (cell.strip() for cell in line.strip("|").split("|"))
        documented[family] = sorted(op.strip() for op in ops.split(","))
    found: dict[str, list[str]] = {}
    for (_domain, op), reg in PluginRegistry(entry_points=False).gradient_rules().items():
        found.setdefault(reg.plugin.name, []).append(op)
    assert documented == {k: sorted(v) for k, v in found.items()}


def _with_node(op_type: str, **attrs):
    """An MLP whose first activation is replaced by ``op_type``."""
    model = loss_model()
    node = model.graph.node[2]
    node.op_type = op_type
    node.attribute.extend(oh.make_attribute(k, v) for k, v in attrs.items())
    return model


def test_readiness_for_the_autodiff_backend():
    check = onnxloss.check_trainable
    softplus = _with_node("Softplus")
    assert not check(softplus).ok and check(softplus, backend="onnxruntime").ok
    cumsum = loss_model()
    cumsum.graph.node[2].op_type = "CumSum"
    cumsum.graph.node[2].input.append("axis")
    cumsum.graph.initializer.append(nh.from_array(np.array(1, np.int64), "axis"))
    assert check(cumsum, backend="onnxruntime").ok
    custom = _with_node("Wiggle")
    custom.graph.node[2].domain = "my.ops"
    custom.opset_import.append(oh.make_opsetid("my.ops", 1))
    report = check(custom, backend="onnxruntime")
    (error,) = report.errors
    assert error.kind == "no-gradient-rule" and error.subject == "act0"
    assert "onnxloss_register_gradients" in error.fix
    with pytest.raises(onnxloss.NotTrainableError, match="onnxloss.autodiff"):
        report.raise_for_errors()
    with pytest.raises(onnxloss.OnnxLossError, match="backend must be one of"):
        check(softplus, backend="torch")


def test_readiness_reports_forms_a_rule_refuses():
    """MaxPool with overlapping windows needs ScatterElements(add): opset 16."""
    model = onnxloss.rewrite(_pool_model(13), onnxloss.MSELoss())
    (error,) = onnxloss.check_trainable(model, backend="onnxruntime").errors
    assert error.kind == "gradient-form" and "overlap" in error.message
    later = onnxloss.rewrite(_pool_model(16), onnxloss.MSELoss())
    assert onnxloss.check_trainable(later, backend="onnxruntime").ok


def _pool_model(opset):
    graph = oh.make_graph(
        [oh.make_node("Mul", ["X", "w"], ["h"]),
         oh.make_node("MaxPool", ["h"], ["variable"], kernel_shape=[3], strides=[1], name="pool")],
        "pool", [oh.make_tensor_value_info("X", F, ["N", 1, 6])],
        [oh.make_tensor_value_info("variable", F, ["N", 1, 4])],
        [nh.from_array(np.ones((1, 1, 6), np.float32), "w")],
    )  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)


def test_readiness_accepts_what_only_the_training_build_refuses():
    """float64 weights and opsets above 21 train with the pass (the latter with a warning
    about onnxruntime 1.19.2)."""
    from onnxloss.examples import linear_regression

    float64 = onnxloss.rewrite(linear_regression(3, dtype=np.float64), onnxloss.MSELoss())
    assert not onnxloss.check_trainable(float64).ok
    assert onnxloss.check_trainable(float64, backend="onnxruntime").ok
    new = onnxloss.rewrite(linear_regression(3, opset=22, ir_version=10), onnxloss.MSELoss())
    report = onnxloss.check_trainable(new, backend="onnxruntime")
    assert report.ok and [p.kind for p in report.warnings] == ["runtime-version"]
    old = onnxloss.rewrite(linear_regression(3), onnxloss.MSELoss())
    old.opset_import[0].version = 12
    assert [p.kind for p in onnxloss.check_trainable(old, backend="onnxruntime").errors] == [
        "opset"
    ]
