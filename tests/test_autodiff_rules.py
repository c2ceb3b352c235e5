"""Every gradient rule against float64 central finite differences of the forward graph,
run by onnx.reference, at opsets 13, 17 and 21 (or the operator's first opset), with
broadcast shapes and a dynamic batch dimension; the gradient graph also runs on
onnxruntime, which must agree with the reference evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT, ORT_MAX_OPSET
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from onnx.reference import ReferenceEvaluator

from onnxloss.autodiff import gradient
from onnxloss.autodiff.verify import gradients_and_differences

D = TensorProto.DOUBLE
OPSETS = (13, 17, 21)


@dataclass(frozen=True)
class F:
    """A float64 input that is differentiated, drawn uniformly in [low, high]; its first
    dimension is declared symbolic ("N") when ``batch``."""

    shape: tuple
    low: float = -2.0
    high: float = 2.0
    batch: bool = True
    wrt: bool = True


@dataclass(frozen=True)
class C:
    """A constant input (initializer): indices, axes, shapes, masks..."""

    value: object
    dtype: object = np.int64


@dataclass(frozen=True)
class Case:
    op: str
    inputs: tuple
    attrs: dict = field(default_factory=dict)
    outputs: int = 1
    #: the outputs the loss sums (default: all)
    loss_outputs: tuple | None = None
    min_opset: int = 13
    max_opset: int = 99
    #: reductions: axes given as attribute below ``axes_input_from``, as input from it
    axes: tuple | None = None
    axes_input_from: int = 18
    id: str = ""
    #: float64 unless the operator takes float32 only (then the differences are coarser)
    dtype: object = np.float64
    #: finite-difference step and tolerances (coarser where the reference evaluator
    #: computes in float32, as for Erf)
    fd_step: float = 1e-6
    rtol: float = 1e-5
    atol: float = 1e-7
    #: "onnxruntime" where onnx.reference cannot run the gradient graph (then float32, and
    #: the differences are exact up to rounding because the loss is quadratic in the
    #: output of a linear operator)
    runtime: str = "reference"
    #: False where onnxruntime cannot run the forward operator (LSTM with layout=1)
    on_onnxruntime: bool = True

    def opsets(self) -> list[int]:
        return sorted({max(o, self.min_opset) for o in OPSETS if o <= self.max_opset})


def build(case: Case, opset: int, rng, dtype=np.float64) -> tuple[onnx.ModelProto, dict, list]:
    """A model ``loss = Σ_k Σ (y_k² + y_k)`` over the outputs of one ``case.op`` node (a
    nonlinear loss, so every output element gets its own gradient), in ``dtype``."""
    elem = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    names, graph_inputs, inits, feeds, wrt = [], [], [], {}, []
    for k, spec in enumerate(case.inputs):
        name = f"x{k}"
        if spec is None:
            names.append("")
            continue
        names.append(name)
        if isinstance(spec, F):
            value = rng.uniform(spec.low, spec.high, spec.shape).astype(dtype)
            dims = list(spec.shape)
            if spec.batch and dims:
                dims[0] = "N"
            graph_inputs.append(oh.make_tensor_value_info(name, elem, dims))
            feeds[name] = value
            if spec.wrt:
                wrt.append(name)
        else:
            kind = dtype if spec.dtype is np.float64 else spec.dtype
            inits.append(nh.from_array(np.asarray(spec.value, kind), name))
    attrs = {k: elem if v == "$elem" else v for k, v in case.attrs.items()}
    if case.axes is not None:
        if opset >= case.axes_input_from:
            inits.append(nh.from_array(np.asarray(case.axes, np.int64), "axes"))
            names.append("axes")
        else:
            attrs["axes"] = list(case.axes)
    outs = [f"y{k}" for k in range(case.outputs)]
    nodes = [oh.make_node(case.op, names, outs, name="op", **attrs)]
    parts = []
    chosen = case.loss_outputs if case.loss_outputs is not None else range(case.outputs)
    for k, out in [(k, outs[k]) for k in chosen]:
        nodes += [
            oh.make_node("Mul", [out, out], [f"s{k}"]),
            oh.make_node("Add", [out, f"s{k}"], [f"p{k}"]),
            oh.make_node("ReduceSum", [f"p{k}"], [f"r{k}"], keepdims=0),
        ]
        parts.append(f"r{k}")
    total = parts[0]
    for k, part in enumerate(parts[1:]):
        nodes.append(oh.make_node("Add", [total, part], [f"sum{k}"]))
        total = f"sum{k}"
    nodes.append(oh.make_node("Identity", [total], ["loss"]))
    graph = oh.make_graph(
        nodes, "case", graph_inputs, [oh.make_tensor_value_info("loss", elem, [])], inits
    )
    ir = 8 if opset <= 21 else oh.find_min_ir_version_for([oh.make_opsetid("", opset)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=ir)
    return model, feeds, wrt


def check(case: Case, opset: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    on_ort = case.runtime == "onnxruntime"
    if on_ort and (not HAS_ORT or opset > ORT_MAX_OPSET):
        pytest.skip("needs onnxruntime for this opset")
    model, feeds, wrt = build(case, opset, rng, np.float32 if on_ort else case.dtype)
    onnx.checker.check_model(model, full_check=True)
    found = gradients_and_differences(model, feeds, wrt, step=case.fd_step, runtime=case.runtime)
    for name, (got, expected) in found.items():
        np.testing.assert_allclose(
            got,
            expected,
            rtol=case.rtol,
            atol=case.atol,
            err_msg=f"{case.op} d/d{name} opset {opset}",
        )
    grad_model = gradient(model, wrt)
    onnx.shape_inference.infer_shapes(grad_model, check_type=True, strict_mode=True)
    if not on_ort and case.on_onnxruntime:  # float32 on onnxruntime agrees with the reference
        model32, feeds32, wrt32 = build(case, opset, np.random.default_rng(seed), np.float32)
        on_runtime(gradient(model32, wrt32), feeds32)
    return grad_model


def on_runtime(model: onnx.ModelProto, feeds: dict) -> None:
    """Run ``model`` on onnxruntime (when installed and it loads the opset) and compare with
    the reference evaluator, to float32 accuracy (gradients cancel: atol scales with the
    largest value)."""
    expected = ReferenceEvaluator(model).run(None, feeds)
    if not HAS_ORT or model.opset_import[0].version > ORT_MAX_OPSET:
        return
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for out, e, got in zip(model.graph.output, expected, session.run(None, feeds), strict=True):
        scale = float(np.max(np.abs(e))) if np.size(e) else 1.0
        np.testing.assert_allclose(
            got, e, rtol=1e-4, atol=1e-5 * max(scale, 1.0), err_msg=f"output {out.name}"
        )


X = F((3, 4))
POS = F((3, 4), 0.2, 2.0)
UNIT = F((3, 4), -0.9, 0.9)


def unary(op, spec=X, **attrs):
    suffix = "-".join(str(v) for v in attrs.values())
    return Case(op, (spec,), attrs, id=f"{op}-{suffix}" if suffix else op)


UNARY = [
    unary("Identity"),
    unary("Neg"),
    unary("Abs"),
    unary("Exp"),
    unary("Log", POS),
    unary("Sqrt", POS),
    unary("Reciprocal", POS),
    unary("Sigmoid"),
    unary("Tanh"),
    unary("Relu"),
    unary("LeakyRelu", alpha=0.1),
    unary("Elu", alpha=0.7),
    unary("Selu"),
    Case("Celu", (X,), {"alpha": 1.5}, dtype=np.float32, fd_step=1e-3, rtol=2e-3, atol=2e-4),
    unary("Softplus"),
    unary("Softsign"),
    unary("HardSigmoid", alpha=0.3, beta=0.4),
    Case("HardSwish", (F((3, 4), -4.0, 4.0),), min_opset=14),
    Case("Mish", (X,), min_opset=18),
    # onnx.reference computes Erf in float32: coarser differences
    Case("Erf", (X,), fd_step=1e-3, rtol=1e-3, atol=1e-4),
    unary("Sin"),
    unary("Cos"),
    unary("Tan", UNIT),
    unary("Sinh"),
    unary("Cosh"),
    unary("Asin", UNIT),
    unary("Acos", UNIT),
    unary("Atan"),
    unary("Asinh"),
    unary("Acosh", F((3, 4), 1.1, 3.0)),
    unary("Atanh", UNIT),
    unary("ThresholdedRelu", alpha=0.5),
    unary("Shrink", lambd=0.6, bias=0.2),
    unary("Sign"),
    unary("Floor"),
    unary("Ceil"),
    unary("Round"),
    unary("Cast", to="$elem"),
    unary("Softmax", axis=1),
    unary("Softmax", F((2, 3, 4)), axis=-2),
    unary("LogSoftmax", axis=-1),
    unary("LogSoftmax", F((2, 3, 4)), axis=0),
    unary("Hardmax", axis=1),
    Case("Gelu", (X,), min_opset=20, fd_step=1e-3, rtol=1e-3, atol=1e-4, id="Gelu"),
    Case("Gelu", (X,), {"approximate": "tanh"}, min_opset=20, id="Gelu-tanh"),
    Case("CastLike", (X, C(np.zeros(1), np.float64)), min_opset=15),
    Case("Dropout", (X, C(0.3, np.float64)), id="Dropout-inference"),
    Case("Dropout", (X, C(0.3, np.float64), C(False, np.bool_)), outputs=1, id="Dropout-mode"),
    Case("Clip", (X, F((), -0.5, -0.4, batch=False), F((), 0.4, 0.5, batch=False)), id="Clip"),
    Case("Clip", (X, None, C(0.5, np.float64)), id="Clip-max"),
]

BINARY = [
    Case(op, (a, b), id=f"{op}-{a.shape}-{b.shape}")
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min")
    for a, b in [
        (F((2, 3, 4)), F((3, 1), 0.5, 2.0, batch=False)),
        (F((3, 1)), F((4,), 0.5, 2.0, batch=False)),
        (F((3, 4)), F((), 0.5, 2.0, batch=False)),
    ]
] + [
    Case("Pow", (F((3, 4), 0.3, 2.0), F((4,), -1.5, 2.5, batch=False)), id="Pow"),
    Case("Pow", (F((3, 4), 0.3, 2.0), C(np.array([2, 3, 1, 0]))), id="Pow-int-exponent"),
    Case("Mod", (F((3, 4), 0.1, 5.0), F((4,), 1.1, 1.9, batch=False)), {"fmod": 1}, id="Mod"),
    Case("Max", (F((3, 4)), F((4,), batch=False), F((3, 1))), id="Max-3"),
    Case("Min", (F((3, 4)),), id="Min-1"),
    Case("Sum", (F((3, 4)), F((4,), batch=False), F((3, 1))), id="Sum"),
    Case("Mean", (F((3, 4)), F((1, 4), batch=False)), id="Mean"),
    Case(
        "Where",
        (C(np.array([[True, False, True, False]]), np.bool_), F((3, 4)), F((4,), batch=False)),
    ),
    Case("PRelu", (F((2, 3, 2)), F((3, 1), batch=False)), id="PRelu"),
]


def reduction(op, spec=F((2, 3, 4)), axes=(1,), keepdims=1, **kw):
    return Case(
        op,
        (spec,),
        {"keepdims": keepdims, **kw},
        axes=axes,
        axes_input_from=13 if op == "ReduceSum" else 18,
        id=f"{op}-{axes}-k{keepdims}",
    )


REDUCTIONS = []
for _op in (
    "ReduceSum",
    "ReduceMean",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
):
    REDUCTIONS += [reduction(_op), reduction(_op, axes=(-1, 0), keepdims=0)]
REDUCTIONS += [
    reduction("ReduceLogSum", F((2, 3, 4), 0.2, 2.0)),
    reduction("ReduceLogSum", F((2, 3, 4), 0.2, 2.0), axes=None, keepdims=0),
    reduction("ReduceSum", axes=None, keepdims=0),
    reduction("ReduceMean", axes=None, keepdims=1),
    Case("CumSum", (F((3, 4)), C(1)), id="CumSum"),
    Case("CumSum", (F((3, 4)), C(0)), {"exclusive": 1, "reverse": 1}, id="CumSum-excl-rev"),
]


@pytest.mark.parametrize(
    "case,opset",
    [
        pytest.param(c, o, id=f"{c.id or c.op}-op{o}")
        for c in UNARY + BINARY + REDUCTIONS
        for o in c.opsets()
    ],
)
def test_rule_matches_finite_differences(case, opset):
    check(case, opset)


SHAPES = [
    Case("Reshape", (F((2, 3, 4)), C([2, -1]))),
    Case("Flatten", (F((2, 3, 4)),), {"axis": 2}),
    Case("Squeeze", (F((3, 1, 4)), C([1]))),
    Case("Unsqueeze", (F((3, 4)), C([0, -1]))),
    Case("Transpose", (F((2, 3, 4)),), {"perm": [2, 0, 1]}, id="Transpose-perm"),
    Case("Transpose", (F((2, 3, 4)),), id="Transpose-reverse"),
    Case("Concat", (F((2, 3)), F((2, 1)), F((2, 2))), {"axis": 1}),
    Case("Concat", (F((2, 3)), F((1, 3), batch=False)), {"axis": -2}, id="Concat-neg"),
    Case("Split", (F((2, 6)), C([1, 2, 3])), {"axis": 1}, outputs=3),
    Case(
        "Split",
        (F((4, 3)),),
        {"axis": 0, "num_outputs": 2},
        outputs=2,
        min_opset=18,
        id="Split-num_outputs",
    ),  # fmt: skip
    Case("Slice", (F((4, 5)), C([1, -1]), C([3, -6]), C([0, 1]), C([1, -2])), id="Slice-steps"),
    Case("Slice", (F((3, 4, 2)), C([1]), C([100]), C([-2])), id="Slice-clamped"),
    Case("Pad", (F((2, 3)), C([0, 1, 1, 2]), C(0.5, np.float64)), id="Pad-constant"),
    # onnx.reference refuses negative pads: checked on onnxruntime
    Case(
        "Pad",
        (F((3, 4)), C([1, -1, -1, 2])),
        runtime="onnxruntime",
        fd_step=0.1,
        rtol=1e-3,
        atol=1e-3,
        id="Pad-negative",
    ),  # fmt: skip
    Case("Pad", (F((3, 4)), C([1, 2, 0, 1])), {"mode": "edge"}, min_opset=16, id="Pad-edge"),
    Case(
        "Pad", (F((3, 4)), C([2, 1, 1, 2])), {"mode": "reflect"}, min_opset=16, id="Pad-reflect"
    ),  # fmt: skip
    Case("Pad", (F((3, 4)), C([1, 2, 1, 3])), {"mode": "wrap"}, min_opset=19, id="Pad-wrap"),
    Case("Expand", (F((3, 1)), C([2, 3, 4]))),
    Case("Tile", (F((2, 3)), C([2, 3]))),
    Case("Gather", (F((4, 3)), C([[0, 3], [-1, 0], [2, 0]])), id="Gather-dup-neg"),
    Case("Gather", (F((2, 4, 3)), C([1, 3, 1])), {"axis": 1}, id="Gather-axis1"),
    Case("Gather", (F((2, 4, 3)), C(2)), {"axis": -1}, id="Gather-scalar-index"),
    Case("GatherElements", (F((3, 4)), C([[0, 3, 3], [1, 1, 0], [-1, 2, 0]])), {"axis": 1}),
    Case("GatherElements", (F((3, 4)), C([[2, 0, 2, 1]])), {"axis": 0}, id="GatherElements-0"),
    Case("GatherND", (F((3, 4)), C([[0, 1], [2, 3], [0, 1]])), min_opset=16),
    Case("ScatterElements", (F((3, 4)), C([[0, 2], [3, 1], [1, 0]]), F((3, 2))), {"axis": 1}),
    Case(
        "ScatterElements",
        (F((3, 4)), C([[0, 0], [3, 1], [2, 2]]), F((3, 2))),
        {"axis": 1, "reduction": "add"},
        min_opset=16,
        id="ScatterElements-add",
    ),  # fmt: skip
    Case("ScatterND", (F((3, 4)), C([[1], [0]]), F((2, 4)))),
    Case("TopK", (F((3, 5)), C([2])), {"axis": 1}, outputs=2, loss_outputs=(0,)),
    Case(
        "TopK",
        (F((3, 5)), C([3])),
        {"axis": 0, "largest": 0},
        outputs=2,
        loss_outputs=(0,),
        id="TopK-smallest",
    ),  # fmt: skip
    Case("Trilu", (F((4, 4)), C(1)), {"upper": 0}, min_opset=14),
    Case("DepthToSpace", (F((1, 8, 2, 3)),), {"blocksize": 2}),
    Case("DepthToSpace", (F((1, 8, 2, 3)),), {"blocksize": 2, "mode": "CRD"}, id="D2S-CRD"),
    Case("SpaceToDepth", (F((1, 2, 4, 6)),), {"blocksize": 2}),
]


def conv(op, x, w, b=None, **attrs):
    inputs = (F(x), F(w, batch=False)) + ((F(b, batch=False),) if b else ())
    name = "-".join(f"{k}{v}" for k, v in attrs.items())
    more = {}
    if attrs.get("group", 1) > 1:
        # onnx.reference fails on grouped ConvTranspose: checked on onnxruntime
        more = dict(runtime="onnxruntime", fd_step=0.1, rtol=1e-3, atol=1e-3)
    return Case(op, inputs, attrs, id=f"{op}-{len(x) - 2}d-{name}", **more)


NN = [
    Case("MatMul", (F((3, 4)), F((4, 2), batch=False)), id="MatMul-2d"),
    Case("MatMul", (F((2, 3, 4)), F((4, 2), batch=False)), id="MatMul-3d-2d"),
    Case("MatMul", (F((3, 4)), F((2, 4, 2), batch=False)), id="MatMul-2d-3d"),
    Case("MatMul", (F((2, 1, 3, 4)), F((3, 4, 2), batch=False)), id="MatMul-batch-broadcast"),
    Case("MatMul", (F((4,)), F((2, 4, 3), batch=False)), id="MatMul-1d-3d"),
    Case("MatMul", (F((2, 3, 4)), F((4,), batch=False)), id="MatMul-3d-1d"),
    Case("MatMul", (F((4,)), F((4,), batch=False)), id="MatMul-1d-1d"),
    Case("Gemm", (F((3, 4)), F((4, 2), batch=False), F((2,), batch=False)), id="Gemm"),
    Case(
        "Gemm",
        (F((4, 3)), F((2, 4), batch=False), F((3, 1), batch=False)),
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
        id="Gemm-trans",
    ),  # fmt: skip
    Case("Gemm", (F((3, 4)), F((2, 4), batch=False)), {"transB": 1}, id="Gemm-noC"),
    conv("Conv", (2, 2, 5, 5), (3, 2, 3, 3), (3,)),
    conv("Conv", (2, 2, 7, 6), (4, 1, 3, 2), (4,), strides=[2, 2], pads=[1, 0, 1, 1], group=2),
    conv("Conv", (1, 3, 8), (2, 3, 3), dilations=[2], strides=[3]),
    conv("Conv", (1, 2, 5, 6), (2, 2, 2, 3), auto_pad="SAME_UPPER", strides=[2, 2]),
    conv("Conv", (1, 1, 4, 3, 4), (2, 1, 2, 2, 3), (2,)),
    conv("ConvTranspose", (2, 2, 3, 4), (2, 3, 3, 3), (3,)),
    conv(
        "ConvTranspose",
        (1, 4, 3, 3),
        (4, 1, 3, 2),
        (2,),
        strides=[2, 3],
        pads=[1, 0, 1, 1],
        output_padding=[1, 2],
        group=2,
    ),  # fmt: skip
    conv("ConvTranspose", (1, 2, 4), (2, 2, 2), dilations=[2], strides=[2]),
    Case(
        "MaxPool",
        (F((2, 2, 5, 5)),),
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        id="MaxPool-disjoint",
    ),  # fmt: skip
    Case(
        "MaxPool",
        (F((1, 2, 5, 6)),),
        {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 0, 1]},
        min_opset=16,
        id="MaxPool-overlap",
    ),  # fmt: skip
    Case(
        "MaxPool",
        (F((1, 2, 5, 5)),),
        {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
        id="MaxPool-ceil",
    ),  # fmt: skip
    Case(
        "AveragePool",
        (F((2, 2, 5, 5)),),
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        id="AveragePool",
    ),  # fmt: skip
    Case(
        "AveragePool",
        (F((1, 2, 5, 6)),),
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]},
        id="AveragePool-pads",
    ),  # fmt: skip
    Case(
        "AveragePool",
        (F((1, 2, 5, 6)),),
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "count_include_pad": 1},
        id="AveragePool-count-pad",
    ),  # fmt: skip
    Case("AveragePool", (F((1, 1, 7)),), {"kernel_shape": [3], "strides": [2]}, id="AvgPool-1d"),
    Case("GlobalAveragePool", (F((2, 3, 2, 3)),)),
    Case("GlobalMaxPool", (F((2, 3, 2, 3)),)),
    Case(
        "BatchNormalization",
        (
            F((2, 3, 2, 2)),
            F((3,), batch=False),
            F((3,), batch=False),
            F((3,), batch=False),
            F((3,), 0.5, 2.0, batch=False),
        ),
        {"epsilon": 1e-3},
        min_opset=14,
        id="BatchNorm-inference",
    ),  # fmt: skip
    # onnx.reference's BatchNormalization-9 (opsets 9 to 13) mixes in the batch's
    # statistics: at opset 13 the check runs on onnxruntime
    Case(
        "BatchNormalization",
        (
            F((2, 3, 2, 2)),
            F((3,), batch=False),
            F((3,), batch=False),
            F((3,), batch=False),
            C(np.array([0.5, 1.0, 2.0]), np.float64),
        ),
        {"epsilon": 1e-3},
        max_opset=13,
        runtime="onnxruntime",
        fd_step=0.1,
        rtol=1e-3,
        atol=1e-3,
        id="BatchNorm-inference-ort",
    ),  # fmt: skip
    Case(
        "BatchNormalization",
        (
            F((4, 3)),
            F((3,), batch=False),
            F((3,), batch=False),
            C(np.zeros(3), np.float64),
            C(np.ones(3), np.float64),
        ),
        {"training_mode": 1},
        outputs=3,
        loss_outputs=(0,),
        min_opset=15,
        id="BatchNorm-training",
    ),  # fmt: skip
    Case(
        "LayerNormalization",
        (F((2, 3, 4)), F((4,), batch=False), F((4,), batch=False)),
        min_opset=17,
        id="LayerNorm-last",
    ),  # fmt: skip
    Case(
        "LayerNormalization",
        (F((2, 3, 4)), F((3, 4), batch=False)),
        {"axis": 1},
        min_opset=17,
        id="LayerNorm-axis1",
    ),  # fmt: skip
    Case("InstanceNormalization", (F((2, 3, 4)), F((3,), batch=False), F((3,), batch=False))),
]

RESIZE_MODES = [
    {"mode": "nearest"},
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear"},
    {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    {"mode": "cubic", "cubic_coeff_a": -0.5},
]
RESIZE = [
    Case(
        "Resize",
        (F((1, 2, 3, 4)), None, C([1.0, 1.0, 2.0, 1.5], np.float32)),
        attrs,
        id=f"Resize-scales-{'-'.join(map(str, attrs.values()))}",
    )  # fmt: skip
    for attrs in RESIZE_MODES
] + [
    Case(
        "Resize",
        (F((1, 2, 4, 6)), None, None, C([1, 2, 3, 4])),
        {"mode": "linear"},
        id="Resize-sizes-down",
    ),  # fmt: skip
    Case(
        "Resize",
        (F((1, 2, 3, 4)), C([], np.float32), C([1.0, 1.0, 2.0, 2.0], np.float32)),
        {"mode": "nearest"},
        id="Resize-empty-roi",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "case,opset",
    [
        pytest.param(c, o, id=f"{c.id or c.op}-op{o}")
        for c in SHAPES + NN + RESIZE
        for o in c.opsets()
    ],
)
def test_shape_and_nn_rules_match_finite_differences(case, opset):
    check(case, opset)


H, T = 3, 4
SEQ, B2 = F((T, 2, 2), batch=False), 2


def seq(*shape):
    return F(shape, batch=False)


RECURRENT = [
    Case(
        "LSTM",
        (SEQ, seq(1, 4 * H, 2), seq(1, 4 * H, H), seq(1, 8 * H)),
        {"hidden_size": H},
        outputs=3,
        id="LSTM",
    ),  # fmt: skip
    Case(
        "LSTM",
        (
            SEQ,
            seq(2, 4 * H, 2),
            seq(2, 4 * H, H),
            seq(2, 8 * H),
            None,
            seq(2, B2, H),
            seq(2, B2, H),
            seq(2, 3 * H),
        ),
        {"hidden_size": H, "direction": "bidirectional"},
        outputs=3,
        id="LSTM-bidirectional-peepholes",
    ),  # fmt: skip
    # onnx.reference ignores clip, input_forget and activations: checked on onnxruntime
    Case(
        "LSTM",
        (SEQ, seq(1, 4 * H, 2), seq(1, 4 * H, H)),
        {
            "hidden_size": H,
            "clip": 0.8,
            "input_forget": 1,
            "activations": ["HardSigmoid", "Tanh", "Softsign"],
        },
        outputs=3,
        runtime="onnxruntime",
        fd_step=2e-3,
        rtol=3e-3,
        atol=1e-3,
        id="LSTM-clip-forget-activations",
    ),  # fmt: skip
    Case(
        "LSTM",
        (seq(B2, T, 2), seq(1, 4 * H, 2), seq(1, 4 * H, H), seq(1, 8 * H), None, seq(B2, 1, H)),
        {"hidden_size": H, "layout": 1},
        outputs=3,
        min_opset=14,
        on_onnxruntime=False,
        id="LSTM-layout1",
    ),  # fmt: skip
    Case(
        "GRU",
        (SEQ, seq(1, 3 * H, 2), seq(1, 3 * H, H), seq(1, 6 * H)),
        {"hidden_size": H},
        outputs=2,
        id="GRU",
    ),  # fmt: skip
    Case(
        "GRU",
        (SEQ, seq(2, 3 * H, 2), seq(2, 3 * H, H), seq(2, 6 * H), None, seq(2, B2, H)),
        {"hidden_size": H, "linear_before_reset": 1, "direction": "bidirectional"},
        outputs=2,
        id="GRU-linear-before-reset",
    ),  # fmt: skip
    Case(
        "RNN",
        (SEQ, seq(1, H, 2), seq(1, H, H), seq(1, 2 * H)),
        {"hidden_size": H, "direction": "reverse"},
        outputs=2,
        id="RNN-reverse",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "case,opset",
    [pytest.param(c, o, id=f"{c.id}-op{o}") for c in RECURRENT for o in c.opsets()],
)
def test_recurrent_rules_match_finite_differences(case, opset):
    check(case, opset)


def _control_flow_model(kind: str, opset: int, flag: bool, dtype=np.float64):
    """A Loop (acc ← acc·w + i·x, scan output tanh(acc)) or an If (w·x or sin(w)) on the way
    from w, x (and a0) to the loss."""
    D = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    v = lambda n, shape, t=D: oh.make_tensor_value_info(n, t, shape)  # noqa: E731
    if kind == "Loop":
        body = oh.make_graph(
            [
                oh.make_node("Identity", ["cond"], ["cond_out"]),
                oh.make_node("Mul", ["acc", "w"], ["aw"]),
                oh.make_node("Cast", ["i"], ["fi"], to=D),
                oh.make_node("Mul", ["x", "fi"], ["xi"]),
                oh.make_node("Add", ["aw", "xi"], ["acc_out"]),
                oh.make_node("Tanh", ["acc_out"], ["scan"]),
            ],
            "body",
            [v("i", [], TensorProto.INT64), v("cond", [], TensorProto.BOOL), v("acc", [3])],
            [v("cond_out", [], TensorProto.BOOL), v("acc_out", [3]), v("scan", [3])],
        )
        first = oh.make_node("Loop", ["M", "T", "a0"], ["y", "scans"], body=body, name="loop")
        extra = [oh.make_node("ReduceSum", ["scans"], ["extra"], keepdims=0)]
        inputs = [v("a0", [3]), v("w", [3]), v("x", [3])]
    else:
        then = oh.make_graph([oh.make_node("Mul", ["w", "x"], ["t"])], "then", [], [v("t", [3])])
        other = oh.make_graph([oh.make_node("Sin", ["w"], ["e"])], "else", [], [v("e", [3])])
        first = oh.make_node("If", ["T"], ["y"], then_branch=then, else_branch=other, name="if")
        extra = [oh.make_node("Identity", ["zero"], ["extra"])]
        inputs = [v("w", [3]), v("x", [3])]
    nodes = [
        first,
        *extra,
        oh.make_node("Mul", ["y", "y"], ["yy"]),
        oh.make_node("ReduceSum", ["yy"], ["s"], keepdims=0),
        oh.make_node("Add", ["s", "extra"], ["loss"]),
    ]
    inits = [
        nh.from_array(np.array(4, np.int64), "M"),
        nh.from_array(np.array(flag), "T"),
        nh.from_array(np.array(0.0, dtype), "zero"),
    ]
    graph = oh.make_graph(nodes, "control_flow", inputs, [v("loss", [])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kind,flag", [("Loop", True), ("If", True), ("If", False)])
def test_control_flow_rules_match_finite_differences(kind, flag, opset):
    model = _control_flow_model(kind, opset, flag)
    rng = np.random.default_rng(opset)
    feeds = {"a0": rng.normal(size=3), "w": rng.uniform(0.5, 0.9, 3), "x": rng.normal(size=3)}
    feeds = {i.name: feeds[i.name] for i in model.graph.input}
    for name, (got, expected) in gradients_and_differences(model, feeds, list(feeds)).items():
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8, err_msg=name)
    grad_model = gradient(model, list(feeds))
    onnx.shape_inference.infer_shapes(grad_model, check_type=True, strict_mode=True)
    model32 = _control_flow_model(kind, opset, flag, np.float32)
    on_runtime(gradient(model32, list(feeds)), {k: v.astype(np.float32) for k, v in feeds.items()})


def _scan_model(opset: int, dtype=np.float64, reverse: int = 0, axis: int = 0):
    """Scan over the rows of x (reverse, or not): s ← tanh(s·w + x_t), outputs s_t² stacked
    along ``axis``."""
    D = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    v = lambda n, shape, t=D: oh.make_tensor_value_info(n, t, shape)  # noqa: E731
    body = oh.make_graph(
        [
            oh.make_node("Mul", ["s", "w"], ["sw"]),
            oh.make_node("Add", ["sw", "xt"], ["pre"]),
            oh.make_node("Tanh", ["pre"], ["s_out"]),
            oh.make_node("Mul", ["s_out", "s_out"], ["y"]),
        ],
        "scan_body",
        [v("s", [2]), v("xt", [2])],
        [v("s_out", [2]), v("y", [2])],
    )
    scan = oh.make_node(
        "Scan",
        ["s0", "x"],
        ["s_final", "ys"],
        body=body,
        num_scan_inputs=1,
        scan_input_directions=[reverse],
        scan_output_axes=[axis],
        name="scan",
    )
    nodes = [
        scan,
        oh.make_node("ReduceSum", ["ys"], ["a"], keepdims=0),
        oh.make_node("ReduceSum", ["s_final"], ["b"], keepdims=0),
        oh.make_node("Add", ["a", "b"], ["loss"]),
    ]
    graph = oh.make_graph(
        nodes, "scan", [v("s0", [2]), v("w", [2]), v("x", [4, 2])], [v("loss", [])]
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", OPSETS)
def test_scan_rule_matches_finite_differences(opset):
    reverse = 0  # onnx.reference runs forward scans only: the reverse one is checked below
    model = _scan_model(opset, reverse=reverse)
    rng = np.random.default_rng(opset)
    feeds = {"s0": rng.normal(size=2), "w": rng.normal(size=2), "x": rng.normal(size=(4, 2))}
    for name, (got, expected) in gradients_and_differences(model, feeds, list(feeds)).items():
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8, err_msg=name)
    model32 = _scan_model(opset, np.float32, reverse)
    on_runtime(gradient(model32, list(feeds)), {k: v.astype(np.float32) for k, v in feeds.items()})


@pytest.mark.skipif(not HAS_ORT, reason="onnx.reference runs forward scans along axis 0 only")
def test_reverse_scan_with_another_output_axis_on_onnxruntime():
    model = _scan_model(17, np.float32, reverse=1, axis=1)
    rng = np.random.default_rng(3)
    feeds = {"s0": rng.normal(size=2), "w": rng.normal(size=2), "x": rng.normal(size=(4, 2))}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    found = gradients_and_differences(model, feeds, list(feeds), step=1e-2, runtime="onnxruntime")
    for name, (got, expected) in found.items():
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3, err_msg=name)
