"""The readiness check: every problem on the way from the weights to the loss, with a fix;
the ``onnxloss check`` command and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss import MSELoss, check_trainable, rewrite
from onnxloss.cli import main
from onnxloss.examples import linear_regression, mlp

F = TensorProto.FLOAT


def chain(ops, opset=17, ir_version=8, extra_nodes=(), extra_inits=(), loss=True):
    """``h0 = X @ W``, then each op in turn, then (optionally) ``loss = ReduceSum(h)``
    first among the outputs."""
    nodes = [oh.make_node("MatMul", ["X", "W"], ["h0"], name="matmul")]
    for i, op in enumerate(ops):
        op_type, attrs = (op, {}) if isinstance(op, str) else op
        nodes.append(oh.make_node(op_type, [f"h{i}"], [f"h{i + 1}"], name=f"n{i}", **attrs))
    last = f"h{len(ops)}"
    nodes += list(extra_nodes)
    outputs = [oh.make_tensor_value_info(last, F, None)]
    if loss:
        nodes.append(oh.make_node("ReduceSum", [last], ["loss"], keepdims=0, name="sum"))
        outputs.insert(0, oh.make_tensor_value_info("loss", F, []))
    graph = oh.make_graph(
        nodes,
        "chain",
        [oh.make_tensor_value_info("X", F, ["N", 3])],
        outputs,
        [nh.from_array(np.ones((3, 2), np.float32), "W"), *extra_inits],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=ir_version)


def kinds(report):
    return sorted((p.severity, p.kind) for p in report.problems)


def test_a_ready_loss_model_passes():
    report = check_trainable(rewrite(mlp((3, 4, 1)), MSELoss()))
    assert report.ok and report.problems == []
    assert report.trainables == ["W0", "b0", "W1", "b1"]
    assert report.loss_outputs == ["loss"]
    assert report.path_nodes[:3] == ["matmul0", "add0", "act0"]
    assert report.format().startswith("ready to train ['W0', 'b0', 'W1', 'b1'] towards ['loss']")
    report.raise_for_errors()  # nothing to raise


def test_operators_without_gradient_are_named_with_their_fix():
    report = check_trainable(
        chain(["Softplus", "Relu", ("Elu", {"alpha": 0.5}), "Sign"]), ["W"], loss_output="loss"
    )
    assert not report.ok
    lines = {p.subject: p for p in report.errors}
    assert set(lines) == {"n0", "n2", "n3"}
    assert lines["n0"].kind == "no-gradient"
    assert "node 'n0' (Softplus) on the gradient path" in lines["n0"].message
    assert "DecomposeSoftplus() rewrites it as (x + |x|)/2 + Log(1 + Exp(-|x|))" in lines["n0"].fix
    assert "DecomposeElu()" in lines["n2"].fix
    assert "no pass rewrites it" in lines["n3"].fix
    with pytest.raises(onnxloss.NotTrainableError, match=r"\(3 problem\(s\)\).*'n0' \(Softplus\)"):
        report.raise_for_errors()


def test_nodes_off_the_gradient_path_do_not_matter():
    """Label post-processing, integer computations and other outputs are fine."""
    extra = [
        oh.make_node("ArgMax", ["h1"], ["label"], axis=1, name="argmax"),
        oh.make_node("Softplus", ["X"], ["side"], name="softplus_of_input"),  # no weight upstream
        oh.make_node("Sign", ["h1"], ["sign"], name="other_output"),  # not towards the loss
        oh.make_node("Shape", ["h1"], ["shape"], name="shape"),
        oh.make_node("Cast", ["shape"], ["shape_f"], to=F, name="cast"),
        oh.make_node("ReduceMax", ["shape_f"], ["m"], keepdims=0, name="int_path_max"),
        oh.make_node("Mul", ["h1", "m"], ["h2"], name="scaled"),
    ]
    model = chain(["Relu"], extra_nodes=extra)
    model.graph.node[-1].input[0] = "h2"  # the loss sums h2
    model.graph.output.append(oh.make_tensor_value_info("sign", F, None))
    report = check_trainable(model, ["W"], loss_output="loss")
    assert report.ok, report.format()
    assert "int_path_max" not in report.path_nodes and "other_output" not in report.path_nodes


def test_many_nodes_of_one_kind_are_grouped():
    report = check_trainable(chain(["Softplus"] * 8), ["W"], loss_output="loss")
    (problem,) = report.errors
    assert problem.message.startswith(
        "8 Softplus nodes on the gradient path ('n0', 'n1', 'n2', 'n3', 'n4' and 3 more)"
    )
    assert problem.subject == ", ".join(f"n{i}" for i in range(8))


def test_forms_the_runtime_cannot_differentiate():
    model = chain(
        [("ReduceL2", {"axes": [1], "keepdims": 0}), ("Pad", {"mode": "reflect"})], extra_inits=[]
    )
    model.graph.node[2].input.append("pads")
    model.graph.initializer.append(nh.from_array(np.array([0, 1]), "pads"))
    report = check_trainable(model, ["W"], loss_output="loss")
    forms = {p.subject: p for p in report.errors}
    assert forms["n0"].kind == "gradient-form"
    assert "keepdims=0 without an axes input" in forms["n0"].message
    assert "ReduceL2KeepDims()" in forms["n0"].fix
    assert "mode 'reflect'" in forms["n1"].message


def test_layer_norm_without_its_optional_outputs():
    nodes = [oh.make_node("LayerNormalization", ["h0", "scale", "bias"], ["h1"], name="ln")]
    inits = [
        nh.from_array(np.ones(2, np.float32), "scale"),
        nh.from_array(np.zeros(2, np.float32), "bias"),
    ]
    model = chain([], extra_nodes=nodes, extra_inits=inits)
    model.graph.node[-1].input[0] = "h1"
    (problem,) = check_trainable(model, ["W", "scale"], loss_output="loss").errors
    assert problem.kind == "gradient-form" and "DeclareGradientOutputs()" in problem.fix
    fixed = onnxloss.passes.DeclareGradientOutputs()(model).model
    assert check_trainable(fixed, ["W", "scale"], loss_output="loss").ok


def test_missing_cpu_kernel_depends_on_the_device():
    model = chain(
        [],
        extra_nodes=[
            oh.make_node("Reshape", ["h0", "shape4"], ["h4"], name="to4d"),
            oh.make_node("ConvTranspose", ["h4", "kernel"], ["h5"], name="deconv"),
        ],
        extra_inits=[
            nh.from_array(np.array([1, 1, -1, 2]), "shape4"),
            nh.from_array(np.ones((1, 1, 2, 2), np.float32), "kernel"),
        ],
    )
    model.graph.node[-1].input[0] = "h5"
    assert kinds(check_trainable(model, ["W"], loss_output="loss")) == [("error", "no-cpu-kernel")]
    assert check_trainable(model, ["W"], loss_output="loss", device="cuda").problems == []
    unknown = check_trainable(model, ["W"], loss_output="loss", device=None)
    assert kinds(unknown) == [("warning", "no-cpu-kernel")] and unknown.ok


def test_unknown_operators_are_warnings():
    model = chain([])
    model.graph.node.insert(1, oh.make_node("Custom", ["h0"], ["h9"], domain="my.domain", name="c"))
    model.graph.node[-1].input[0] = "h9"
    model.opset_import.append(oh.make_opsetid("my.domain", 1))
    report = check_trainable(model, ["W"], loss_output="loss")
    assert report.ok
    assert kinds(report) == [("warning", "domain"), ("warning", "unknown-gradient")]
    assert "my.domain.Custom" in report.warnings[1].message


def test_nodes_inside_subgraphs_on_the_path_are_checked():
    then = oh.make_graph(
        [oh.make_node("Softplus", ["h0"], ["t"], name="inner_softplus")],
        "then",
        [],
        [oh.make_tensor_value_info("t", F, None)],
    )
    other = oh.make_graph(
        [oh.make_node("Relu", ["h0"], ["e"], name="inner_relu")],
        "else",
        [],
        [oh.make_tensor_value_info("e", F, None)],
    )
    node = oh.make_node("If", ["flag"], ["h1"], then_branch=then, else_branch=other, name="if")
    model = chain([], extra_nodes=[node], extra_inits=[nh.from_array(np.array(True), "flag")])
    model.graph.node[-1].input[0] = "h1"
    report = check_trainable(model, ["W"], loss_output="loss")
    assert [p.subject for p in report.errors] == ["inner_softplus"]
    assert "if" in report.path_nodes


def test_loop_on_the_path_is_reported_before_it_kills_the_process():
    body = oh.make_graph(
        [
            oh.make_node("Identity", ["cond"], ["cond_out"]),
            oh.make_node("Add", ["acc", "h0"], ["acc_out"]),
        ],
        "body",
        [
            oh.make_tensor_value_info("i", TensorProto.INT64, []),
            oh.make_tensor_value_info("cond", TensorProto.BOOL, []),
            oh.make_tensor_value_info("acc", F, None),
        ],
        [
            oh.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            oh.make_tensor_value_info("acc_out", F, None),
        ],
    )
    loop = oh.make_node("Loop", ["trips", "", "h0"], ["h1"], body=body, name="loop")
    model = chain([], extra_nodes=[loop], extra_inits=[nh.from_array(np.array(2), "trips")])
    model.graph.node[-1].input[0] = "h1"
    (problem,) = check_trainable(model, ["W"], loss_output="loss").errors
    assert problem.kind == "crashes-runtime" and "aborts the process" in problem.message


def test_trainables_that_cannot_be_trained():
    model = chain(
        ["Relu"],
        extra_nodes=[
            oh.make_node("Constant", [], ["K"], value=nh.from_array(np.ones(2, np.float32), "kv")),
            oh.make_node("Clip", ["h1", "low"], ["h2"], name="clip"),
            oh.make_node("Cast", ["steps"], ["steps_f"], to=F, name="cast_steps"),
        ],
        extra_inits=[
            nh.from_array(np.array(0.0, np.float32), "low"),
            nh.from_array(np.ones(2), "W64"),
            nh.from_array(np.array([1, 2]), "steps"),
            nh.from_array(np.ones(2, np.float32), "unused"),
        ],
    )
    model.graph.node[-1].input[0] = "h2"
    model.graph.input.append(oh.make_tensor_value_info("fed", F, [2]))
    report = check_trainable(
        model, ["W", "W64", "steps", "fed", "K", "Wx", "unused", "low"], loss_output="loss"
    )
    by_subject = {p.subject: p for p in report.errors if p.subject != "W64"}
    w64 = [p for p in report.errors if p.subject == "W64"]
    assert [p.kind for p in w64] == ["trainable-dtype", "trainable-unreachable"]
    assert "ToFloat32()" in w64[0].fix
    assert by_subject["steps"].kind == "trainable-dtype" and "INT64" in by_subject["steps"].message
    assert by_subject["fed"].kind == "trainable-input"
    assert "Constant node" in by_subject["K"].message
    assert (
        by_subject["Wx"].kind == "trainable-missing" and "did you mean 'W'" in by_subject["Wx"].fix
    )
    assert by_subject["unused"].kind == "trainable-unreachable"
    assert by_subject["low"].kind == "trainable-unreachable"  # a Clip bound has no gradient
    assert "W" not in by_subject


def test_an_initializer_listed_as_input_is_refused_and_fixed():
    model = rewrite(linear_regression(3), MSELoss())
    model.graph.input.append(oh.make_tensor_value_info("coef", F, [3, 1]))
    (problem,) = check_trainable(model, ["coef"]).errors
    assert problem.kind == "trainable-input" and "InitializersNotInputs()" in problem.fix
    fixed = onnxloss.passes.InitializersNotInputs()(model).model
    assert check_trainable(fixed, ["coef"]).ok


def test_loss_problems():
    model = rewrite(linear_regression(3), MSELoss())
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend(outputs[::-1])
    assert kinds(check_trainable(model)) == [("error", "loss-position")]
    assert kinds(check_trainable(model, loss_output="nope")) == [("error", "loss-missing")]
    double = rewrite(linear_regression(3, dtype=np.float64), MSELoss())
    report = check_trainable(double)
    assert ("error", "loss-dtype") in kinds(report)
    assert ("error", "trainable-dtype") in kinds(report)
    vector = chain(["Relu"], loss=False)
    warn = check_trainable(vector, ["W"], loss_output="h1")
    assert kinds(warn) == [("warning", "loss-shape")] and warn.ok


def test_inference_model_paths_to_every_float_output():
    report = check_trainable(mlp((3, 4, 1), activation="Softplus"))
    assert ("warning", "no-loss") in kinds(report)
    assert report.loss_outputs == ["variable"]
    assert [p.subject for p in report.errors] == ["act0"]


def test_versions():
    low = check_trainable(chain([], opset=9), ["W"], loss_output="loss")
    assert kinds(low) == [("error", "opset")] and "ConvertOpset(13)" in low.errors[0].fix
    high = check_trainable(chain([], opset=22, ir_version=10), ["W"], loss_output="loss")
    assert kinds(high) == [("error", "opset")] and "ConvertOpset(21)" in high.errors[0].fix
    lowerable = check_trainable(chain([], ir_version=11), ["W"], loss_output="loss")
    assert kinds(lowerable) == [("warning", "ir-version")] and lowerable.ok
    model = chain([], ir_version=11)
    model.graph.value_info.append(oh.make_tensor_value_info("q", TensorProto.FLOAT4E2M1, [1]))
    stuck = check_trainable(model, ["W"], loss_output="loss")
    assert kinds(stuck) == [("error", "ir-version")] and "FLOAT4E2M1" in stuck.errors[0].message


def test_check_reads_only_and_imports_no_runtime(tmp_path):
    model = chain(["Softplus"])
    before = model.SerializeToString()
    check_trainable(model, ["W"], loss_output="loss")
    assert model.SerializeToString() == before
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code = (
        "import sys, onnxloss; "
        f"r = onnxloss.check_trainable({str(path)!r}, ['W'], loss_output='loss'); "
        "assert not r.ok; assert 'onnxruntime' not in sys.modules, 'imported onnxruntime'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_user_errors():
    with pytest.raises(onnxloss.ModelFileError, match="does not exist"):
        check_trainable("/nonexistent/model.onnx")
    with pytest.raises(onnxloss.OnnxLossError, match="weights must be a list"):
        check_trainable(linear_regression(2), "coef")


# -- the command line ---------------------------------------------------------------------
def test_cli_exit_codes(tmp_path, capsys):
    ready = tmp_path / "ready.onnx"
    onnx.save(rewrite(linear_regression(3), MSELoss()), str(ready))
    assert main(["check", str(ready)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{ready}: ready to train ['coef', 'intercept'] towards ['loss']")

    blocked = tmp_path / "blocked.onnx"
    onnx.save(chain(["Softplus", "Elu"]), str(blocked))
    assert main(["check", str(blocked), "--weights", "W", "--loss-output", "loss"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{blocked}: not trainable: 2 problem(s) block training"
    assert lines[1].startswith("error: node 'n0' (Softplus) on the gradient path")
    assert "Fix: onnxloss.passes.DecomposeSoftplus()" in lines[1]
    assert len(lines) == 3

    assert main(["check", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxloss: error: model file") and err.count("\n") == 1
    assert main(["check", str(blocked), "--weights", ","]) == 2
    assert "expected comma-separated tensor names" in capsys.readouterr().err


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(chain(["Softplus"]), str(path))
    assert main(["check", str(path), "--loss-output", "loss", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["trainable"] is False and data["weights"] == ["W"]
    assert data["problems"][0]["kind"] == "no-gradient"
    assert data["problems"][0]["subject"] == "n0"


def test_the_guide_lists_every_pass_and_every_measured_operator():
    """docs/real-models.md must not drift from the code."""
    from pathlib import Path

    from onnxloss import gradient_ops
    from onnxloss.passes import DECOMPOSITIONS, MakeTrainable

    text = (Path(__file__).resolve().parent.parent / "docs" / "real-models.md").read_text()
    names = [cls.__name__ for cls in DECOMPOSITIONS] + [p.name for p in MakeTrainable().passes]
    missing = [n for n in names if f"`{n}" not in text]
    assert not missing, missing
    ops = gradient_ops.GRADIENT | gradient_ops.NO_GRADIENT | gradient_ops.STOPS_GRADIENT
    missing = sorted(op for op in ops if op not in text)
    assert not missing, missing


def test_external_data_is_never_loaded(tmp_path, capsys):
    model = rewrite(mlp((3, 40, 1), activation="Softplus"), MSELoss())
    path = tmp_path / "big.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="big.data", size_threshold=0)
    (tmp_path / "big.data").unlink()  # the check must not need the weights
    assert main(["check", str(path)]) == 1
    assert "(Softplus)" in capsys.readouterr().out
