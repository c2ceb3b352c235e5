"""The gradient tables of onnxloss.gradient_ops, measured again against the installed
onnxruntime-training, and the readiness check's verdict against what the runtime does.

Each operator gets a small graph ``h = X·W → op → y → loss = ReduceSum(y)``;
``generate_artifacts`` must succeed for every operator listed with a gradient, fail with
"has not been registered" for every operator listed without, and ``check_trainable`` must
say "ok" exactly when generation (and, for the CPU-kernel list, a training session) works.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxloss import check_trainable
from onnxloss.gradient_ops import (
    CRASHES,
    GRADIENT,
    NO_CPU_KERNEL,
    NO_GRADIENT,
    STOPS_GRADIENT,
    gradient_support,
)

pytestmark = pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")

F = TensorProto.FLOAT


def c(name, value):
    return nh.from_array(np.asarray(value), name)


def node(op, inputs, outputs=("y",), **attrs):
    return oh.make_node(op, list(inputs), list(outputs), name=f"probe_{op}", **attrs)


def subgraph(nodes, inputs, outputs):
    return oh.make_graph(nodes, "body", inputs, outputs)


def value(name, elem=F, shape=(3, 4)):
    return oh.make_tensor_value_info(name, elem, list(shape))


def if_node():
    then = subgraph([oh.make_node("Neg", ["h"], ["t"])], [], [value("t")])
    other = subgraph([oh.make_node("Abs", ["h"], ["e"])], [], [value("e")])
    return node("If", ["flag"], then_branch=then, else_branch=other)


def scan_node():
    body = subgraph(
        [oh.make_node("Add", ["s", "row"], ["s_out"]), oh.make_node("Identity", ["s_out"], ["r"])],
        [value("s", shape=[4]), value("row", shape=[4])],
        [value("s_out", shape=[4]), value("r", shape=[4])],
    )
    return node("Scan", ["zeros4", "h"], ["y", "rows"], num_scan_inputs=1, body=body)


def loop_node():
    body = subgraph(
        [
            oh.make_node("Identity", ["cond"], ["cond_out"]),
            oh.make_node("Add", ["acc", "h"], ["acc_out"]),
        ],
        [value("i", TensorProto.INT64, []), value("cond", TensorProto.BOOL, []), value("acc")],
        [value("cond_out", TensorProto.BOOL, []), value("acc_out")],
    )
    return node("Loop", ["trips", "", "zeros"], body=body)


def recipe(op: str):
    """(nodes, initializers, opset) computing y from h for ``op``."""
    f32 = np.float32
    reshape = oh.make_node("Reshape", ["h", "shape4"], ["h4"], name="to4d")
    nchw = [c("shape4", np.array([1, 1, 3, 4]))]
    on_4d = {  # op: (attributes, inputs after the 4-D tensor, their initializers)
        "Conv": ({}, ["K"], [c("K", np.ones((2, 1, 2, 2), f32))]),
        "ConvTranspose": ({}, ["K"], [c("K", np.ones((1, 2, 2, 2), f32))]),
        "MaxPool": ({"kernel_shape": [2, 2]}, [], []),
        "AveragePool": ({"kernel_shape": [2, 2]}, [], []),
        "LpPool": ({"kernel_shape": [2, 2]}, [], []),
        "GlobalAveragePool": ({}, [], []),
        "GlobalMaxPool": ({}, [], []),
        "LRN": ({"size": 1}, [], []),
        "Resize": ({"mode": "nearest"}, ["", "scales"], [c("scales", np.array([1, 1, 2, 2], f32))]),
        "GridSample": ({}, ["grid"], [c("grid", np.zeros((1, 2, 2, 2), f32))]),
        "RoiAlign": (
            {"output_height": 1, "output_width": 1},
            ["rois", "batch_index"],
            [c("rois", np.array([[0, 0, 2, 2]], f32)), c("batch_index", np.array([0]))],
        ),
        "MaxRoiPool": (
            {"pooled_shape": [1, 1]},
            ["rois"],
            [c("rois", np.array([[0, 0, 0, 2, 2]], f32))],
        ),
        "InstanceNormalization": (
            {},
            ["s", "b"],
            [c("s", np.ones(1, f32)), c("b", np.zeros(1, f32))],
        ),
        "BatchNormalization": (
            {},
            ["s", "b", "m", "v"],
            [c(n, np.full(1, v, f32)) for n, v in (("s", 1), ("b", 0), ("m", 0), ("v", 1))],
        ),
    }
    if op in on_4d:
        attrs, names, inits = on_4d[op]
        return [reshape, node(op, ["h4", *names], **attrs)], nchw + inits, 17
    channels = {  # ops whose input is [1, C, H, W] with the channels first
        "GroupNormalization": ([1, 4, 3, 1], {"num_groups": 2}, ["s", "b"], 21),
        "DepthToSpace": ([1, 4, 3, 1], {"blocksize": 2}, [], 17),
        "SpaceToDepth": ([1, 1, 2, 6], {"blocksize": 2}, [], 17),
        "Upsample": ([1, 1, 3, 4], {}, ["scales"], 9),
    }
    if op in channels:
        shape, attrs, names, opset = channels[op]
        inits = [c("shape4", np.array(shape))]
        if op == "GroupNormalization":
            inits += [c("s", np.ones(4, f32)), c("b", np.zeros(4, f32))]
        if op == "Upsample":
            inits.append(c("scales", np.array([1, 1, 2, 2], f32)))
        return [reshape, node(op, ["h4", *names], **attrs)], inits, opset
    labels = c("labels", np.array([0, 1, 2]))
    special = {
        "Gemm": (
            [node("Gemm", ["h", "B", "C"], transB=1)],
            [c("B", np.ones((2, 4), f32)), c("C", np.ones(2, f32))],
        ),
        "MatMul": ([node("MatMul", ["h", "B"])], [c("B", np.ones((4, 2), f32))]),
        "LayerNormalization": (
            [node("LayerNormalization", ["h", "s", "b"], ["y", "mean", "inv_std"])],
            [c("s", np.ones(4, f32)), c("b", np.zeros(4, f32))],
        ),
        "Dropout": (
            [node("Dropout", ["h", "ratio", "training"], ["y", "mask"])],
            [c("ratio", np.array(0.5, f32)), c("training", np.array(True))],
        ),
        "SoftmaxCrossEntropyLoss": (
            [node("SoftmaxCrossEntropyLoss", ["h", "labels"], ["y", "log_prob"])],
            [labels],
        ),
        "NegativeLogLikelihoodLoss": (
            [node("NegativeLogLikelihoodLoss", ["h", "labels"])],
            [labels],
        ),
        "Clip": (
            [node("Clip", ["h", "low", "high"])],
            [c("low", np.array(0.1, f32)), c("high", np.array(0.9, f32))],
        ),
        "Pow": ([node("Pow", ["h", "two"])], [c("two", np.array(2.0, f32))]),
        "Expand": ([node("Expand", ["h", "shape"])], [c("shape", np.array([2, 3, 4]))]),
        "Tile": ([node("Tile", ["h", "repeats"])], [c("repeats", np.array([2, 1]))]),
        "Reshape": ([node("Reshape", ["h", "shape"])], [c("shape", np.array([4, 3]))]),
        "Transpose": ([node("Transpose", ["h"], perm=[1, 0])], []),
        "Squeeze": (
            [oh.make_node("Unsqueeze", ["h", "axis0"], ["u"]), node("Squeeze", ["u", "axis0"])],
            [c("axis0", np.array([0]))],
        ),
        "Unsqueeze": ([node("Unsqueeze", ["h", "axis0"])], [c("axis0", np.array([0]))]),
        "Split": (
            [
                node("Split", ["h", "sizes"], ["a", "b"], axis=1),
                oh.make_node("Mul", ["a", "b"], ["y"]),
            ],
            [c("sizes", np.array([2, 2]))],
        ),
        "Slice": (
            [node("Slice", ["h", "starts", "ends"])],
            [c("starts", np.array([1])), c("ends", np.array([3]))],
        ),
        "Pad": ([node("Pad", ["h", "pads"])], [c("pads", np.array([1, 1, 1, 1]))]),
        "Gather": ([node("Gather", ["h", "index"], axis=1)], [c("index", np.array([0, 2]))]),
        "GatherElements": (
            [node("GatherElements", ["h", "index"], axis=1)],
            [c("index", np.zeros((3, 2), np.int64))],
        ),
        "GatherND": ([node("GatherND", ["h", "index"])], [c("index", np.zeros((2, 1), np.int64))]),
        "ScatterND": (
            [node("ScatterND", ["h", "index", "updates"])],
            [c("index", np.zeros((1, 1), np.int64)), c("updates", np.ones((1, 4), f32))],
        ),
        "ScatterElements": (
            [node("ScatterElements", ["h", "index", "updates"])],
            [c("index", np.zeros((1, 4), np.int64)), c("updates", np.ones((1, 4), f32))],
        ),
        "TopK": ([node("TopK", ["h", "k"], ["y", "indices"])], [c("k", np.array([2]))]),
        "Concat": ([node("Concat", ["h", "h"], axis=0)], []),
        "Where": (
            [oh.make_node("Greater", ["h", "X"], ["cond"]), node("Where", ["cond", "h", "X"])],
            [],
        ),
        "Cast": ([node("Cast", ["h"], to=TensorProto.DOUBLE)], []),
        "CastLike": ([node("CastLike", ["h", "X"])], []),
        "Gelu": ([node("Gelu", ["h"])], [], 20),
        "Mish": ([node("Mish", ["h"])], [], 18),
        "Softmax": ([node("Softmax", ["h"], ["s"]), oh.make_node("Mul", ["s", "X"], ["y"])], []),
        "Einsum": ([node("Einsum", ["h"], equation="ij->i")], []),
        "MeanVarianceNormalization": ([node("MeanVarianceNormalization", ["h"], axes=[1])], []),
        "CumSum": ([node("CumSum", ["h", "axis"])], [c("axis", np.array(1))]),
        "Mod": ([node("Mod", ["h", "X"], fmod=1)], []),
        "PRelu": ([node("PRelu", ["h", "slope"])], [c("slope", np.full(4, 0.2, f32))]),
        "Det": (
            [
                node("Slice", ["h", "s0", "s3", "s1"], ["square"]),
                oh.make_node("Det", ["square"], ["y"]),
            ],
            [c("s0", np.array([0])), c("s3", np.array([3])), c("s1", np.array([1]))],
        ),
        "If": ([if_node()], [c("flag", np.array(True))]),
        "Scan": ([scan_node()], [c("zeros4", np.zeros(4, f32))]),
        "Loop": ([loop_node()], [c("trips", np.array(2)), c("zeros", np.zeros((3, 4), f32))]),
        "Range": (
            [
                oh.make_node("ReduceSum", ["h"], ["total"], keepdims=0),
                node("Range", ["zero", "total", "one"]),
            ],
            [c("zero", np.array(0.0, f32)), c("one", np.array(1.0, f32))],
        ),
        "Compress": (
            [node("Compress", ["h", "keep"], axis=1)],
            [c("keep", np.array([True, False, True, True]))],
        ),
        "ReverseSequence": (
            [node("ReverseSequence", ["h", "lengths"], batch_axis=0, time_axis=1)],
            [c("lengths", np.array([4, 3, 2]))],
        ),
        "DFT": (
            [oh.make_node("Unsqueeze", ["h", "axis2"], ["h3"]), node("DFT", ["h3"])],
            [c("axis2", np.array([2]))],
        ),
        "CenterCropPad": (
            [node("CenterCropPad", ["h", "crop"])],
            [c("crop", np.array([2, 2]))],
            18,
        ),
        "Bernoulli": ([oh.make_node("Sigmoid", ["h"], ["p"]), node("Bernoulli", ["p"])], []),
        "ReduceL2": ([node("ReduceL2", ["h"], keepdims=1)], []),
        "ReduceLogSumExp": ([node("ReduceLogSumExp", ["h"], keepdims=1)], []),
    }
    if op in special:
        entry = special[op]
        return entry[0], entry[1], entry[2] if len(entry) > 2 else 17
    if op in ("Sum", "Mean", "Max", "Min", "Add", "Sub", "Mul", "Div"):
        return [node(op, ["h", "X"])], [], 17
    return [node(op, ["h"])], [], 17


def probe_model(op: str) -> onnx.ModelProto:
    nodes, inits, opset = recipe(op)
    nodes = [
        oh.make_node("Mul", ["X", "W"], ["h"], name="feed"),
        *nodes,
        oh.make_node("ReduceSum", ["y"], ["loss"], keepdims=0, name="loss_sum"),
    ]
    graph = oh.make_graph(
        nodes,
        f"probe_{op}",
        [oh.make_tensor_value_info("X", F, [3, 4])],
        [oh.make_tensor_value_info("loss", F, [])],
        [nh.from_array(np.full((3, 4), 0.5, np.float32), "W"), *inits],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)
    if op == "Cast":  # a float64 loss has no gradient: come back to float32
        model.graph.node[-2].output[0] = "y64"
        model.graph.node.insert(-1, oh.make_node("Cast", ["y64"], ["y"], to=F))
    return model


def generate(model: onnx.ModelProto, trainables=("W",), session: bool = False) -> str | None:
    """None when generate_artifacts (and, with ``session``, a training Module) works, else
    the runtime's error message."""
    from onnxloss.train._runtime import load_runtime, native_log_filter

    rt = load_runtime()
    rt.ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory() as folder:
        try:
            with native_log_filter():
                rt.artifacts.generate_artifacts(
                    model,
                    requires_grad=list(trainables),
                    frozen_params=[],
                    loss=None,
                    optimizer=rt.onnxblock.optim.SGD(),
                    artifact_directory=folder,
                )
            if session:
                state = rt.api.CheckpointState.load_checkpoint(f"{folder}/checkpoint")
                rt.api.Module(f"{folder}/training_model.onnx", state, f"{folder}/eval_model.onnx")
        except Exception as exc:
            return " ".join(str(exc).split())
    return None


MEASURED = sorted((GRADIENT | NO_GRADIENT | STOPS_GRADIENT) - CRASHES)


@pytest.mark.parametrize("op", MEASURED)
def test_table_entry_matches_the_runtime(op):
    model = probe_model(op)
    onnx.checker.check_model(model, full_check=True)
    error = generate(model, session=op in NO_CPU_KERNEL)
    if op in NO_GRADIENT:
        assert error is not None and f"has not been registered: {op}" in error, error
    elif op in STOPS_GRADIENT:
        assert error is not None and "unreachable" in error, error
    elif op in NO_CPU_KERNEL:
        assert (
            error is not None
            and f"Could not find an implementation for {NO_CPU_KERNEL[op]}" in error
        )
    else:
        assert error is None, error


@pytest.mark.parametrize("op", MEASURED)
def test_readiness_verdict_matches_the_runtime(op):
    """The check says "ok" exactly when the runtime can train the probe model."""
    model = probe_model(op)
    report = check_trainable(model, ["W"], loss_output="loss", device="cpu")
    works = generate(model, session=True) is None
    assert report.ok == works, report.format()


def test_loop_on_the_gradient_path_kills_the_process():
    """Why Loop is reported as an error rather than left to the runtime."""
    model = probe_model("Loop")
    assert not check_trainable(model, ["W"], loss_output="loss").ok
    code = (
        "import sys, onnx; sys.path.insert(0, 'tests'); "
        "from test_readiness_runtime import generate; "
        "generate(onnx.load_from_string(sys.stdin.buffer.read()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=model.SerializeToString(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode < 0 or proc.returncode > 1, proc.returncode


FORMS = [
    ("ReduceL2", [("ReduceL2", {"keepdims": 0, "axes": [1]})], 17, False),
    ("ReduceL2", [("ReduceL2", {"keepdims": 1, "axes": [1]})], 17, True),
    ("ReduceL2", [("ReduceL2", {"keepdims": 0})], 18, False),
    ("ReduceLogSumExp", [("ReduceLogSumExp", {"keepdims": 0, "axes": [1]})], 17, False),
    ("LayerNormalization", "ln-1-output", 17, False),
    ("Dropout", "dropout-1-output", 17, False),
    ("Dropout", [("Dropout", {})], 17, True),
    ("SoftmaxCrossEntropyLoss", "sce-1-output", 17, False),
    ("Pad", "pad-reflect", 17, False),
    ("BatchNormalization", "bn-training", 17, False),
    ("Transpose", "transpose-default-perm", 17, False),
]


def form_model(op, spec, opset):
    model = probe_model(op)
    model.opset_import[0].version = opset
    probe = next(n for n in model.graph.node if n.name == f"probe_{op}")
    if isinstance(spec, list):
        _, attrs = spec[0]
        del probe.input[1:]
        del probe.output[1:]
        del probe.attribute[:]
        probe.attribute.extend(oh.make_attribute(k, v) for k, v in attrs.items())
    elif spec in ("ln-1-output", "dropout-1-output", "sce-1-output"):
        del probe.output[1:]
    elif spec == "pad-reflect":
        probe.attribute.append(oh.make_attribute("mode", "reflect"))
    elif spec == "transpose-default-perm":
        del probe.attribute[:]
    elif spec == "bn-training":
        probe.attribute.append(oh.make_attribute("training_mode", 1))
        probe.output.extend(["running_mean", "running_var"])
    return model


@pytest.mark.parametrize("op,spec,opset,works", FORMS)
def test_forms(op, spec, opset, works):
    model = form_model(op, spec, opset)
    probe = next(n for n in model.graph.node if n.name == f"probe_{op}")
    assert gradient_support(probe, opset).blocks == (not works)
    assert (generate(model, session=True) is None) == works
    assert check_trainable(model, ["W"], loss_output="loss").ok == works


@pytest.mark.parametrize("op,spec,opset,works", [f for f in FORMS if not f[3]])
def test_make_trainable_fixes_the_forms_it_can(op, spec, opset, works):
    from onnxloss.passes import make_trainable

    fixed = make_trainable(form_model(op, spec, opset))
    report = check_trainable(fixed, ["W"], loss_output="loss")
    if op in ("Pad", "BatchNormalization"):  # no pass for these: still reported
        assert not report.ok
    else:
        assert report.ok, report.format()
        assert generate(fixed, session=True) is None


def test_an_operator_the_tables_do_not_know_gets_a_readable_runtime_error(monkeypatch):
    """When the check only warns (an unmeasured operator) and the runtime then fails, the
    trainer's message keeps the runtime's sentence, not its C++ signature."""
    import onnxloss
    from onnxloss import gradient_ops
    from onnxloss.train.artifacts import TrainingArtifacts

    monkeypatch.setattr(gradient_ops, "NO_GRADIENT", gradient_ops.NO_GRADIENT - {"Softplus"})
    model = probe_model("Softplus")
    report = check_trainable(model, ["W"], loss_output="loss")
    assert report.ok and report.warnings[0].kind == "unknown-gradient"
    with pytest.raises(onnxloss.OnnxLossError) as info:
        TrainingArtifacts(model, ["W"])
    message = str(info.value)
    assert (
        "The gradient builder has not been registered: Softplus for node probe_Softplus" in message
    )
    assert "std::" not in message and "onnxruntime_src" not in message
