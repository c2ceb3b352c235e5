"""What the rewriter promises about the graphs it returns."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import BUILTIN_LOSSES, identity_model, run_model
from loss_examples import EXAMPLES, example_model
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss.examples import linear_regression, mlp
from onnxloss.model_index import all_names
from onnxloss.rewrite import read_metadata, strip_loss

#: Operators with a gradient builder in onnxruntime-training 1.19.2 (facts note), plus
#: those that only ever touch labels, shapes or constants (no gradient needed).
DIFFERENTIABLE = {
    "Reciprocal", "Abs", "Log", "Sigmoid", "Tanh", "Exp", "Relu", "LeakyRelu", "Sqrt", "Neg",
    "Erf", "Sin", "Cos", "Softmax", "LogSoftmax", "Clip", "Max", "Min", "Where", "Pow",
    "ReduceSum", "ReduceMean", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Concat", "Split", "Slice", "Gather", "GatherElements", "Expand", "Tile", "Pad", "Cast",
    "TopK", "Gelu", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Identity",
}  # fmt: skip
#: Bool or int64 outputs (comparisons for Where, label checks, shapes): nothing to
#: differentiate, whatever they read.
NO_GRADIENT_NEEDED = {
    "Constant", "Equal", "Less", "Greater", "GreaterOrEqual", "And", "Or", "Not", "Shape",
    "Size",
}  # fmt: skip


def rich_model() -> onnx.ModelProto:
    """A model with everything the rewriter must carry over: metadata, doc strings, a local
    function, a second opset domain, value_info and a subgraph."""
    fn = oh.make_function(
        "custom.fn", "Twice", ["x"], ["y"],
        [oh.make_node("Add", ["x", "x"], ["y"])],
        opset_imports=[oh.make_opsetid("", 17)],
    )  # fmt: skip
    then_graph = oh.make_graph(
        [oh.make_node("Identity", ["h"], ["branch_out"], name="squared_error_Sub")],
        "then", [], [oh.make_tensor_value_info("branch_out", TensorProto.FLOAT, ["N", 1])],
    )  # fmt: skip
    else_graph = oh.make_graph(
        [oh.make_node("Neg", ["h"], ["loss_Add"], name="squared_error_Mul")],
        "else", [], [oh.make_tensor_value_info("loss_Add", TensorProto.FLOAT, ["N", 1])],
    )  # fmt: skip
    nodes = [
        oh.make_node("MatMul", ["X", "coef"], ["xw"], name="matmul", doc_string="the product"),
        oh.make_node("Twice", ["xw"], ["h"], domain="custom.fn", name="twice"),
        oh.make_node("If", ["flag"], ["variable"], then_branch=then_graph, else_branch=else_graph),
    ]
    graph = oh.make_graph(
        nodes,
        "rich",
        [
            oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2]),
            oh.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])],
        [nh.from_array(np.array([[1.0], [2.0]], np.float32), "coef")],
        doc_string="graph doc",
        value_info=[oh.make_tensor_value_info("xw", TensorProto.FLOAT, ["N", 1])],
    )
    model = oh.make_model(
        graph,
        opset_imports=[
            oh.make_opsetid("", 17),
            oh.make_opsetid("ai.onnx.ml", 3),
            oh.make_opsetid("custom.fn", 1),
        ],
        ir_version=8,
        functions=[fn],
        producer_name="tests",
        producer_version="9.9",
        model_version=42,
        doc_string="model doc",
    )
    onnx.helper.set_model_props(model, {"author": "someone", "license": "MIT"})
    onnx.checker.check_model(model, full_check=True)
    return model


ALL_LOSSES = sorted(BUILTIN_LOSSES)


def _term_for(name, model=None):
    return EXAMPLES[name].make()


def _model_for(name, opset=17):
    # The outputs each loss binds (class scores, probabilities, several predictions...).
    return example_model(name, opset=opset)


def test_caller_model_never_mutated():
    model = rich_model()
    before = model.SerializeToString()
    onnxloss.add_loss_output(model, penalty={"coef": 0.1}, weight_name="w")
    onnxloss.rewrite(model, onnxloss.L1Loss() + onnxloss.L2Penalty("coef"))
    assert model.SerializeToString() == before


def test_everything_else_carried_over():
    model = rich_model()
    result = onnxloss.rewrite(model, onnxloss.MSELoss(weight="w") + onnxloss.L1Penalty("c*"))
    assert result.ir_version == model.ir_version
    assert list(result.opset_import) == list(model.opset_import)
    assert list(result.functions) == list(model.functions)
    assert (result.producer_name, result.producer_version) == ("tests", "9.9")
    assert (result.model_version, result.doc_string) == (42, "model doc")
    assert list(result.metadata_props)[:-1] == list(model.metadata_props)
    assert result.metadata_props[-1].key == "onnxloss"
    g, o = result.graph, model.graph
    assert (g.name, g.doc_string) == (o.name, o.doc_string)
    assert list(g.node)[: len(o.node)] == list(o.node)
    assert list(g.input)[: len(o.input)] == list(o.input)
    assert list(g.output)[1:] == list(o.output)
    assert list(g.initializer) == list(o.initializer)
    assert list(g.value_info) == list(o.value_info)
    onnx.checker.check_model(result, full_check=True)
    # Undoing the rewrite gives the original back, byte for byte.
    assert strip_loss(result).SerializeToString() == model.SerializeToString()


def test_new_names_unique_against_subgraphs_too():
    model = rich_model()
    taken = all_names(model)
    assert {"squared_error_Sub", "squared_error_Mul", "loss_Add"} <= taken
    result = onnxloss.rewrite(model, onnxloss.MSELoss())
    added = result.graph.node[len(model.graph.node) :]
    new_names = {n.name for n in added} | {o for n in added for o in n.output}
    assert not (new_names - {"loss"}) & taken
    assert len({n.name for n in added}) == len(added)
    outputs = [o for n in added for o in n.output]
    assert len(set(outputs)) == len(outputs)
    x = np.ones((2, 2), np.float32)
    loss, variable = run_model_ref(
        result, {"X": x, "flag": np.array(True), "label": np.zeros((2, 1), np.float32)}
    )
    assert loss == pytest.approx(float((variable**2).sum()) / 2)  # mean over 2 samples


def run_model_ref(model, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_same_call_gives_identical_bytes(name):
    a = onnxloss.rewrite(_model_for(name), _term_for(name) + onnxloss.L2Penalty("P", 0.1))
    b = onnxloss.rewrite(_model_for(name), _term_for(name) + onnxloss.L2Penalty("P", 0.1))
    assert a.SerializeToString() == b.SerializeToString()


def test_identical_bytes_across_processes(tmp_path):
    """No dependence on hash seeds or object ids: two interpreters write the same file."""
    code = (
        "import sys, onnxloss\n"
        "from onnxloss.examples import mlp\n"
        "m = onnxloss.rewrite(mlp((3, 4, 2)), 0.3 * onnxloss.HuberLoss(weight='w') "
        "+ onnxloss.ElasticNetPenalty('W*', l1=0.1, l2=0.2) + onnxloss.L1Penalty(['b1', 'b0']))\n"
        "open(sys.argv[1], 'wb').write(m.SerializeToString())\n"
    )
    outputs = []
    for seed in ("1", "2"):
        path = tmp_path / f"m{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("opset", [13, 17, 18, 21, onnxloss.MAX_OPSET])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_first_scalar_and_checker_clean(name, opset):
    result = onnxloss.rewrite(_model_for(name, opset), _term_for(name))
    onnx.checker.check_model(result, full_check=True)
    first = result.graph.output[0]
    assert first.name == "loss"
    assert first.type.tensor_type.elem_type == TensorProto.FLOAT
    assert len(first.type.tensor_type.shape.dim) == 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_losses_use_only_differentiable_operators(name):
    model = _model_for(name)
    result = onnxloss.rewrite(model, _term_for(name, model) + onnxloss.ElasticNetPenalty("P", 1, 1))
    ops = {n.op_type for n in result.graph.node[len(model.graph.node) :]}
    assert ops <= DIFFERENTIABLE | NO_GRADIENT_NEEDED, ops - DIFFERENTIABLE


@pytest.mark.parametrize(("opset", "form"), [(17, "attribute"), (18, "input")])
def test_reduce_mean_axes_follow_the_opset(opset, form):
    """ReduceMean takes axes as an attribute before opset 18 and as an input from 18."""
    model = identity_model(("N", 3), opset=opset)
    result = onnxloss.rewrite(model, onnxloss.CrossEntropyLoss(label_smoothing=0.2))
    means = [
        n
        for n in result.graph.node
        if n.op_type == "ReduceMean" and len(n.input) + len(n.attribute) > 2
    ]
    assert means, "label smoothing reduces over the class axis"
    for node in means:
        has_attr = any(a.name == "axes" for a in node.attribute)
        assert has_attr == (form == "attribute")
        assert (len(node.input) == 2) == (form == "input")
    p = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    run_model(result, {"P": p, "label": np.array([0, 1, 2, 1])})


def test_metadata_records_layout_for_the_trainer():
    model = linear_regression(2)
    result = onnxloss.rewrite(model, onnxloss.MSELoss(weight="w", reduction="sum"))
    meta = read_metadata(result)
    assert meta["loss"] == "loss"
    assert meta["reduction"] == "sum"
    assert meta["targets"] == {"label": "variable"}
    assert meta["weights"] == ["w"]
    assert meta["nodes"] == len(result.graph.node) - len(model.graph.node)


def test_multi_task_losses_sum_into_one():
    graph = oh.make_graph(
        [oh.make_node("Identity", ["A"], ["reg"]), oh.make_node("Identity", ["B"], ["cls"])],
        "two_heads",
        [
            oh.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("B", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            oh.make_tensor_value_info("reg", TensorProto.FLOAT, ["N", 1]),
            oh.make_tensor_value_info("cls", TensorProto.FLOAT, ["N", 3]),
        ],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    spec = onnxloss.MSELoss("reg") + 0.5 * onnxloss.CrossEntropyLoss("cls", weight="w")
    result = onnxloss.rewrite(model, spec)
    assert [i.name for i in result.graph.input] == ["A", "B", "reg_label", "cls_label", "w"]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 1)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    ya, yb = rng.normal(size=(5, 1)).astype(np.float32), rng.integers(0, 3, 5)
    w = rng.uniform(size=5).astype(np.float32)
    got, *_ = run_model(result, {"A": a, "B": b, "reg_label": ya, "cls_label": yb, "w": w})
    from reference import loss

    expected = loss("squared_error", a, ya) + 0.5 * loss("cross_entropy", b.astype(float), yb, w)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_two_losses_may_share_a_label():
    model = mlp((2, 3, 1))
    spec = 0.5 * onnxloss.MSELoss(target="y") + 0.5 * onnxloss.L1Loss(target="y")
    result = onnxloss.rewrite(model, spec)
    assert [i.name for i in result.graph.input] == ["X", "y"]


def test_loss_on_an_intermediate_tensor():
    """A loss may bind to a tensor inside the graph (e.g. logits before a softmax)."""
    graph = oh.make_graph(
        [
            oh.make_node("Identity", ["P"], ["logits"]),
            oh.make_node("Softmax", ["logits"], ["proba"], axis=1),
        ],
        "clf",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor_value_info("proba", TensorProto.FLOAT, ["N", 3])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    result = onnxloss.rewrite(model, onnxloss.CrossEntropyLoss("logits"))
    p = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 1])
    got, proba = run_model(result, {"P": p, "label": y})
    np.testing.assert_allclose(got, -np.log(proba[np.arange(4), y]).mean(), rtol=1e-5)
