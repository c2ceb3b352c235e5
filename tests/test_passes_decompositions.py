"""Every decomposition computes what the operator it replaces computes, and has gradients.

Values: the original operator run by onnxruntime (and by ``onnx.reference`` where its
float32 arithmetic stays finite) against the rewritten graph run by both, on random inputs
plus zeros, tiny and large magnitudes, in float32 and float64. Gradients: onnxruntime-training
1.19.2 differentiates the rewritten graph, and its gradient matches finite differences of
the original operator (float64, points away from kinks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from conftest import HAS_ORT
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from onnx.reference import ReferenceEvaluator

from onnxloss.passes import (
    DECOMPOSITIONS,
    DecomposeForGradients,
    DecomposeReduceMax,
    DecomposeSoftplus,
    ReduceL2KeepDims,
)

EDGES = np.array([0.0, -0.0, 1e-7, -1e-7, 100.0, -100.0, 88.8, -88.8, 1e4, -1e4, 3.0, -3.0])


@dataclass
class Case:
    """One node to decompose: ``op(x, *extra)`` with ``x`` of ``shape``."""

    id: str
    op: str
    attrs: dict = field(default_factory=dict)
    shape: tuple = (4, 6)
    opset: int = 18
    extra: list = field(default_factory=list)  # (name, array or None for a float input)
    kinks: tuple = (0.0,)
    scale: float = 3.0
    positive: bool = False  # inputs must be > 0 (logs)
    gradient: bool = True
    axes_input: np.ndarray | None = None  # reductions at opset >= 18
    dynamic_axes: bool = False
    # onnx.reference applies the elementwise part of a reduction that reduces nothing
    # (noop_with_empty_axes=1); the specification and onnxruntime return the input.
    reference_agrees: bool = True


def _reductions() -> list[Case]:
    cases = []
    for op in ("ReduceSumSquare", "ReduceL1", "ReduceLogSum", "ReduceMax", "ReduceMin"):
        positive = op == "ReduceLogSum"
        for keep in (0, 1):
            for axes in ([1], [0, 2], [-1], None):
                tag = "all" if axes is None else "_".join(map(str, axes))
                cases.append(
                    Case(
                        f"{op}-o13-k{keep}-{tag}",
                        op,
                        {"keepdims": keep, **({"axes": axes} if axes else {})},
                        shape=(3, 4, 5),
                        opset=13,
                        positive=positive,
                    )
                )
                cases.append(
                    Case(
                        f"{op}-o18-k{keep}-{tag}",
                        op,
                        {"keepdims": keep},
                        shape=(3, 4, 5),
                        opset=18,
                        positive=positive,
                        axes_input=None if axes is None else np.array(axes),
                    )
                )
        cases.append(
            Case(
                f"{op}-o18-noop",
                op,
                {"keepdims": 1, "noop_with_empty_axes": 1},
                shape=(3, 4, 5),
                opset=18,
                positive=positive,
                axes_input=np.zeros(0, np.int64),
                reference_agrees=False,
            )
        )
    for op in ("ReduceSumSquare", "ReduceL1", "ReduceLogSum", "ReduceMax", "ReduceMin"):
        # an axes input computed at run time: ReduceSum takes it too; TopK needs static axes
        cases.append(
            Case(
                f"{op}-o18-dynamic",
                op,
                {"keepdims": 0},
                shape=(3, 4, 5),
                positive=op == "ReduceLogSum",
                axes_input=np.array([1]),
                dynamic_axes=True,
                gradient=False,
            )
        )
    for op in ("ReduceL2", "ReduceLogSumExp"):
        cases += [
            Case(f"{op}-o17-k0-axes", op, {"keepdims": 0, "axes": [1]}, shape=(3, 4, 5), opset=17),
            Case(f"{op}-o17-k0-all", op, {"keepdims": 0}, shape=(3, 4, 5), opset=17),
            Case(f"{op}-o18-k0-all", op, {"keepdims": 0}, shape=(3, 4, 5), opset=18),
            Case(
                f"{op}-o13-k0-neg", op, {"keepdims": 0, "axes": [-1, 0]}, shape=(3, 4, 5), opset=13
            ),
        ]
    return cases


CASES = [
    Case("Softplus", "Softplus", kinks=()),
    Case("Elu", "Elu"),
    Case("Elu-alpha", "Elu", {"alpha": 0.3}),
    Case("Selu", "Selu"),
    Case("Selu-attrs", "Selu", {"alpha": 1.5, "gamma": 0.7}),
    Case("Celu", "Celu", {"alpha": 2.0}),
    Case("HardSigmoid", "HardSigmoid", kinks=(-2.5, 2.5)),
    Case("HardSigmoid-attrs", "HardSigmoid", {"alpha": 0.5, "beta": 0.1}, kinks=(-0.2, 1.8)),
    Case("HardSwish", "HardSwish", kinks=(-3.0, 3.0)),
    Case("Softsign", "Softsign"),
    Case("Mish", "Mish", kinks=()),
    Case("ThresholdedRelu", "ThresholdedRelu", {"alpha": 0.5}, kinks=(0.5,)),
    Case("Shrink", "Shrink", {"lambd": 1.0, "bias": 0.25}, kinks=(-1.0, 1.0)),
    Case("PRelu-channel", "PRelu", extra=[("slope", None)]),
    Case("PRelu-scalar", "PRelu", extra=[("slope", np.array([0.25]))]),
    Case("Sum-1", "Sum", kinks=()),
    Case("Sum-3", "Sum", extra=[("b", np.linspace(-1, 1, 6)), ("c", None)], kinks=()),
    Case("Mean-1", "Mean", kinks=()),
    Case("Mean-3", "Mean", extra=[("b", np.linspace(-1, 1, 6)), ("c", None)], kinks=()),
    # Its gradient case would need a float64 loss, which the runtime does not differentiate.
    Case("CastLike", "CastLike", extra=[("like", "same")], kinks=(), gradient=False),
    Case(
        "InstanceNormalization",
        "InstanceNormalization",
        {"epsilon": 1e-3},
        shape=(2, 3, 4, 5),
        extra=[("scale", np.array([0.5, 1.0, 2.0])), ("bias", np.array([0.1, -0.2, 0.3]))],
        kinks=(),
    ),
    Case("GlobalMaxPool", "GlobalMaxPool", shape=(2, 3, 4, 5), kinks=()),
    Case("Softplus-o13", "Softplus", opset=13, kinks=()),
    Case("Elu-o21", "Elu", opset=21),
    *_reductions(),
]


def _elem(dtype) -> int:
    return oh.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _allows(op: str, opset: int, dtype) -> bool:
    schema = onnx.defs.get_schema(op, opset)
    want = f"tensor({'double' if np.dtype(dtype) == np.float64 else 'float'})"
    return any(want in c.allowed_type_strs for c in schema.type_constraints)


def build_model(case: Case, dtype, x_as_initializer: np.ndarray | None = None) -> onnx.ModelProto:
    """``y = op(x, *extra)``; with ``x_as_initializer`` the input becomes an initializer W
    fed through ``W * one`` (a training model whose loss is ReduceSum(y))."""
    elem = _elem(dtype)
    inputs, inits, nodes = [], [], []
    x_name = "x"
    if x_as_initializer is None:
        inputs.append(oh.make_tensor_value_info("x", elem, list(case.shape)))
    else:
        inits.append(nh.from_array(x_as_initializer.astype(dtype), "W"))
        inputs.append(oh.make_tensor_value_info("one", elem, []))
        nodes.append(oh.make_node("Mul", ["W", "one"], ["x"], name="feed"))
    names = [x_name]
    for name, value in case.extra:
        if value is None:
            inputs.append(oh.make_tensor_value_info(name, elem, [case.shape[-1]]))
        elif isinstance(value, str):  # CastLike target: a tensor of the other float type
            other = TensorProto.DOUBLE if elem == TensorProto.FLOAT else TensorProto.FLOAT
            inits.append(oh.make_tensor(name, other, [1], [0.0]))
        else:
            inits.append(nh.from_array(np.asarray(value).astype(dtype), name))
        names.append(name)
    if case.axes_input is not None:
        axes_name = "axes"
        if case.dynamic_axes:
            inputs.append(oh.make_tensor_value_info(axes_name, TensorProto.INT64, [None]))
        else:
            inits.append(nh.from_array(case.axes_input.astype(np.int64), axes_name))
        names.append(axes_name)
    nodes.append(oh.make_node(case.op, names, ["y"], name="target_node", **case.attrs))
    outputs = [oh.make_tensor_value_info("y", TensorProto.UNDEFINED, None)]
    if x_as_initializer is not None:
        y_elem = TensorProto.DOUBLE if case.op == "CastLike" and elem == TensorProto.FLOAT else elem
        nodes.append(oh.make_node("ReduceSum", ["y"], ["loss"], keepdims=0, name="loss_sum"))
        outputs = [oh.make_tensor_value_info("loss", y_elem, [])]
    graph = oh.make_graph(nodes, "decompose", inputs, outputs, inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", case.opset)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model) if x_as_initializer is None else model


def sample(case: Case, dtype, rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.normal(scale=case.scale, size=case.shape)
    flat = x.reshape(-1)
    if not case.op.startswith(("Reduce", "Global", "Instance")):
        flat[: len(EDGES)] = EDGES
    if case.positive:
        x = np.abs(x) + 0.1
    feeds = {"x": x.astype(dtype)}
    for name, value in case.extra:
        if value is None:
            feeds[name] = rng.normal(size=case.shape[-1]).astype(dtype)
    if case.dynamic_axes:
        feeds["axes"] = case.axes_input.astype(np.int64)
    return feeds


def ort_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray | None:
    """onnxruntime's output, or None when it has no kernel for this operator and type."""
    if not HAS_ORT:
        return None
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # NOT_IMPLEMENTED: no kernel for this type
        if "NOT_IMPLEMENTED" in str(exc) or "Could not find an implementation" in str(exc):
            return None
        raise
    return session.run(None, feeds)[0]


def reference_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    with np.errstate(all="ignore"):  # the reference of Softplus overflows at large inputs
        return ReferenceEvaluator(model).run(None, feeds)[0]


TOLERANCE = {np.float32: {"rtol": 2e-6, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decomposition_computes_the_same_numbers(case, dtype):
    if not _allows(case.op, case.opset, dtype):
        pytest.skip(f"{case.op} has no {np.dtype(dtype).name} form")
    model = build_model(case, dtype)
    before = model.SerializeToString()
    result = DecomposeForGradients()(model)
    assert model.SerializeToString() == before, "the caller's model was modified"
    rewritten = result.model
    remaining = [n.op_type for n in rewritten.graph.node]
    if case.dynamic_axes and case.op in ("ReduceMax", "ReduceMin"):
        assert not result.modified and remaining == [case.op]
        return
    if not case.dynamic_axes:  # the checker wants output shapes, unknown with dynamic axes
        onnx.checker.check_model(rewritten, full_check=True)
    assert result.modified and result.applied == ("DecomposeForGradients",)
    assert case.op not in remaining or case.op in ("ReduceL2", "ReduceLogSumExp"), remaining
    assert [o.name for o in rewritten.graph.output] == ["y"]
    assert rewritten.ir_version == model.ir_version
    assert list(rewritten.opset_import) == list(model.opset_import)
    assert all(n.name.startswith("target_node_") for n in rewritten.graph.node)

    feeds = sample(case, dtype, np.random.default_rng(len(case.id)))
    tol = TOLERANCE[dtype]
    expected_ort = ort_run(model, feeds)
    expected_ref = reference_run(model, feeds)
    got_ref = reference_run(rewritten, feeds)
    got_ort = ort_run(rewritten, feeds)
    assert got_ref.dtype == expected_ref.dtype
    if not case.reference_agrees:
        # Reduces nothing: the specification says the output is the input, and so says
        # onnxruntime in float32 (its float64 kernels and onnx.reference each differ).
        np.testing.assert_array_equal(got_ref, feeds["x"])
        np.testing.assert_array_equal(got_ort, feeds["x"])
        if dtype == np.float32:
            np.testing.assert_array_equal(expected_ort, feeds["x"])
        return
    assert got_ref.shape == expected_ref.shape
    finite = np.isfinite(expected_ref)
    np.testing.assert_allclose(got_ref[finite], expected_ref[finite], **tol)
    if expected_ort is not None:
        assert got_ort is not None, "onnxruntime runs the original but not the rewrite"
        # onnxruntime's float64 Softplus overflows at large inputs: compare where it is
        # finite (the exact value is checked below); some of its float64 kernels round
        # through float32, hence the looser tolerance there.
        finite = np.isfinite(expected_ort)
        ort_tol = TOLERANCE[np.float32] if dtype == np.float64 else tol
        np.testing.assert_allclose(got_ref[finite], expected_ort[finite], **ort_tol)
        np.testing.assert_allclose(got_ort[finite], expected_ort[finite], **ort_tol)
    elif got_ort is not None:
        np.testing.assert_allclose(got_ort[finite], expected_ref[finite], **tol)
    if case.op in ("Softplus", "Elu", "Selu", "Celu", "Mish"):
        assert np.isfinite(got_ref).all(), "overflow"
        assert got_ort is None or np.isfinite(got_ort).all(), "overflow"
    if case.op == "Softplus":
        exact = np.logaddexp(0, feeds["x"].astype(np.float64))
        np.testing.assert_allclose(got_ref, exact.astype(dtype), **tol)


def gradient_points(case: Case, rng: np.random.Generator) -> np.ndarray:
    """Random points at least 0.05 away from every kink of the operator."""
    x = rng.normal(scale=2.0, size=case.shape)
    if case.positive:
        x = np.abs(x) + 0.5
    for kink in case.kinks:
        near = np.abs(x - kink) < 0.05
        x[near] = kink + 0.1
    if case.op == "Softplus":  # smooth everywhere: include 0 and large magnitudes
        x.reshape(-1)[:5] = [0.0, 30.0, -30.0, 60.0, -60.0]
    return x


def numeric_gradient(case: Case, point: np.ndarray) -> np.ndarray:
    model = build_model(case, np.float64, x_as_initializer=point)
    # the same graph with W as an input, evaluated by onnx.reference in float64
    graph = model.graph
    w = graph.initializer[0]
    del graph.initializer[0]
    graph.input.insert(0, oh.make_tensor_value_info("W", TensorProto.DOUBLE, list(w.dims)))
    evaluator = ReferenceEvaluator(model)
    feeds = {"one": np.array(1.0)}
    for name, value in case.extra:
        if value is None:
            feeds[name] = np.linspace(-0.5, 0.75, case.shape[-1])

    def loss(x):
        return float(evaluator.run(None, {**feeds, "W": x})[0])

    from onnxloss.testing.runtime import numeric_gradient as central

    return central(loss, point, step=1e-6)


GRADIENT_CASES = [
    c
    for c in CASES
    if c.gradient
    and not c.dynamic_axes
    and "noop" not in c.id
    and (c.op not in ("ReduceMax", "ReduceMin") or "k1" in c.id)
]


@pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda c: c.id)
def test_runtime_differentiates_the_decomposition(case):
    from onnxloss.testing.runtime import onnxruntime_gradients

    point = gradient_points(case, np.random.default_rng(7))
    model = build_model(case, np.float32, x_as_initializer=point)
    decomposed = DecomposeForGradients()(model).model
    feeds = {"one": np.array(1.0, np.float32)}
    for name, value in case.extra:
        if value is None:
            feeds[name] = np.linspace(-0.5, 0.75, case.shape[-1]).astype(np.float32)
    _, grads = onnxruntime_gradients(decomposed, feeds, ["W"])
    expected = numeric_gradient(case, point)
    np.testing.assert_allclose(grads["W"], expected, rtol=2e-3, atol=2e-4)


@pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
def test_without_the_decomposition_the_runtime_refuses():
    """The reason for all this: the original operator has no gradient."""
    from onnxloss.testing.runtime import onnxruntime_gradients

    case = next(c for c in CASES if c.id == "Softplus")
    model = build_model(case, np.float32, x_as_initializer=np.ones(case.shape))
    with pytest.raises(onnxloss_error(), match="Softplus"):
        onnxruntime_gradients(model, {"one": np.array(1.0, np.float32)}, ["W"])


def onnxloss_error():
    import onnxloss

    return onnxloss.OnnxLossError


def test_every_decomposition_has_a_case_and_a_formula():
    covered = {c.op for c in CASES}
    for cls in DECOMPOSITIONS:
        assert cls.op_type in covered, f"{cls.__name__} has no numeric test"
        assert cls.formula and cls.__doc__, cls.__name__


def test_each_rule_is_a_pass_of_its_own_and_leaves_other_operators():
    case = next(c for c in CASES if c.id == "Softplus")
    model = build_model(case, np.float32)
    elu = build_model(next(c for c in CASES if c.id == "Elu"), np.float32)
    result = DecomposeSoftplus()(model)
    assert result.applied == ("DecomposeSoftplus",)
    assert "Softplus" not in {n.op_type for n in result.model.graph.node}
    untouched = DecomposeSoftplus()(elu)
    assert not untouched.modified and untouched.applied == ()
    assert untouched.model.SerializeToString() == elu.SerializeToString()


def test_integer_inputs_are_left_alone():
    """Sum of int64 shape values has nothing to differentiate."""
    graph = oh.make_graph(
        [oh.make_node("Sum", ["a", "b"], ["s"])],
        "ints",
        [oh.make_tensor_value_info(n, TensorProto.INT64, [2]) for n in "ab"],
        [oh.make_tensor_value_info("s", TensorProto.INT64, [2])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    assert not DecomposeForGradients()(model).modified


def test_nodes_inside_subgraphs_are_rewritten():
    branch = oh.make_graph(
        [oh.make_node("Softplus", ["x"], ["t"], name="inner")],
        "then",
        [],
        [oh.make_tensor_value_info("t", TensorProto.FLOAT, [3])],
    )
    other = oh.make_graph(
        [oh.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [oh.make_tensor_value_info("e", TensorProto.FLOAT, [3])],
    )
    graph = oh.make_graph(
        [oh.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)],
        "sub",
        [
            oh.make_tensor_value_info("c", TensorProto.BOOL, []),
            oh.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
        ],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    rewritten = DecomposeForGradients()(model).model
    inner = rewritten.graph.node[0].attribute[0].g
    assert "Softplus" not in {n.op_type for n in inner.node}
    x = np.array([-50.0, 0.0, 50.0], np.float32)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_allclose(
            reference_run(rewritten, feeds), np.logaddexp(0, x) if c else -x, rtol=1e-6, atol=1e-7
        )


def test_new_names_never_clash_with_the_model():
    case = next(c for c in CASES if c.id == "Softplus")
    model = build_model(case, np.float32)
    # a tensor already called like what the rule would name its first node
    model.graph.node.insert(
        0, oh.make_node("Identity", ["x"], ["target_node_Abs"], name="target_node_Abs")
    )
    model.graph.output.append(
        oh.make_tensor_value_info("target_node_Abs", TensorProto.FLOAT, list(case.shape))
    )
    rewritten = DecomposeForGradients()(model).model
    onnx.checker.check_model(rewritten, full_check=True)
    outputs = [o for n in rewritten.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    assert sum(n.name == "target_node_Abs" for n in rewritten.graph.node) == 1


def test_dynamic_axes_and_reductions_that_reduce_nothing_keep_their_node():
    case = next(c for c in CASES if c.id == "ReduceMax-o18-dynamic")
    assert not DecomposeReduceMax()(build_model(case, np.float32)).modified
    case = next(c for c in CASES if c.id == "ReduceL2-o18-k0-all")
    model = build_model(case, np.float32)
    model.graph.node[0].input.append("axes")  # keepdims=0 with an axes input is fine already
    model.graph.initializer.append(nh.from_array(np.array([1], np.int64), "axes"))
    assert not ReduceL2KeepDims()(model).modified


def test_decompose_for_gradients_can_be_restricted():
    model = build_model(next(c for c in CASES if c.id == "Softplus"), np.float32)
    assert not DecomposeForGradients(["Elu"])(model).modified
    assert DecomposeForGradients(["Softplus"])(model).modified
    with pytest.raises(onnxloss_error(), match=r"no decomposition for \['Atan'\]"):
        DecomposeForGradients(["Atan"])
