"""Hypothesis over shapes and attribute values: the gradient rules agree with float64 finite
differences (onnx.reference) and run on onnxruntime, for broadcast shapes, reduction axes,
permutations, slices, convolutions, resizes and gathers. Examples are bounded (the suite's
time budget): each test draws at most 10."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_autodiff_rules import C, Case, F, check

SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
OPSET = st.sampled_from([13, 17, 21])
dims = st.integers(1, 3)


@st.composite
def broadcast_pair(draw):
    shape = tuple(draw(st.lists(dims, min_size=1, max_size=3)))
    other = [d if draw(st.booleans()) else 1 for d in shape]
    other = other[draw(st.integers(0, len(other) - 1)) :]
    if draw(st.booleans()):
        shape, other = tuple(other), shape
    return shape, tuple(other)


@SETTINGS
@given(
    op=st.sampled_from(["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"]),
    shapes=broadcast_pair(),
    opset=OPSET,
)
def test_broadcasting_binary_operators(op, shapes, opset):
    a, b = shapes
    low = 0.3 if op in ("Pow", "Div") else -2.0
    check(Case(op, (F(a, low, 2.0, batch=False), F(b, low, 2.0, batch=False))), opset)


@SETTINGS
@given(
    op=st.sampled_from(
        [
            "ReduceSum",
            "ReduceMean",
            "ReduceL2",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceSumSquare",
            "ReduceProd",
        ]
    ),  # fmt: skip
    shape=st.lists(dims, min_size=1, max_size=3).map(tuple),
    data=st.data(),
    keepdims=st.integers(0, 1),
    opset=OPSET,
)
def test_reductions_over_any_axes(op, shape, data, keepdims, opset):
    rank = len(shape)
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank,
                              unique_by=lambda a: a % rank))  # fmt: skip
    case = Case(op, (F(shape, 0.5, 2.0, batch=False),), {"keepdims": keepdims}, axes=tuple(axes),
                axes_input_from=13 if op == "ReduceSum" else 18)  # fmt: skip
    check(case, opset)


@SETTINGS
@given(perm=st.permutations(range(4)), opset=OPSET)
def test_transpose_permutations(perm, opset):
    check(Case("Transpose", (F((2, 1, 3, 2)),), {"perm": list(perm)}), opset)


@SETTINGS
@given(data=st.data(), opset=OPSET)
def test_slices(data, opset):
    shape = (4, 5)
    axis = data.draw(st.sampled_from([0, 1, -1]))
    size = shape[axis]
    step = data.draw(st.sampled_from([1, 2, -1, -2]))
    # from -size: onnx.reference (numpy slicing) and the ONNX spec differ on a start
    # below -size with a negative step (empty in numpy, clamped to 0 in ONNX)
    start = data.draw(st.integers(-size, size + 1))
    end = data.draw(st.integers(-size - 1, size + 1))
    picked = np.arange(size)[slice(start, end, step)] if start != end else []
    if len(picked) == 0:
        end = start + (1 if step > 0 else -1)  # a non-empty slice
    case = Case("Slice", (F(shape), C([start]), C([end]), C([axis]), C([step])))
    check(case, opset)


@SETTINGS
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    dilation=st.integers(1, 2),
    group=st.integers(1, 2),
    transpose=st.booleans(),
)
def test_convolutions(kernel, stride, pad, dilation, group, transpose):
    op = "ConvTranspose" if transpose else "Conv"
    channels = 2 * group  # two per group, in and out
    w, x = (channels, 2, kernel, kernel), (1, channels, 6, 5)
    attrs = {"strides": [stride] * 2, "pads": [pad] * 4, "dilations": [dilation] * 2,
             "group": group}  # fmt: skip
    more = {}
    if group > 1:  # onnx.reference fails on grouped ConvTranspose (Conv's gradient uses one)
        more = {"runtime": "onnxruntime", "fd_step": 0.1, "rtol": 1e-3, "atol": 1e-3}
    check(Case(op, (F(x), F(w, batch=False)), attrs, **more), 17)


@SETTINGS
@given(
    scales=st.tuples(st.sampled_from([0.5, 1.0, 1.5, 2.0]), st.sampled_from([1.0, 2.0, 3.0])),
    attrs=st.sampled_from(
        [
            {"mode": "nearest"},
            {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            },
            {"mode": "linear"},
            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
            {"mode": "cubic"},
        ]
    ),  # fmt: skip
    opset=OPSET,
)
def test_resizes(scales, attrs, opset):
    scale = np.array([1.0, 1.0, *scales], np.float32)
    check(Case("Resize", (F((1, 1, 4, 3)), None, C(scale, np.float32)), attrs), opset)


@SETTINGS
@given(data=st.data(), opset=OPSET)
def test_gathers_with_repeated_and_negative_indices(data, opset):
    shape = (3, 4, 2)
    axis = data.draw(st.integers(-3, 2))
    size = shape[axis]
    indices = data.draw(st.lists(st.integers(-size, size - 1), min_size=1, max_size=5))
    check(Case("Gather", (F(shape), C(indices)), {"axis": axis}), opset)


@SETTINGS
@given(op=st.sampled_from(["Softmax", "LogSoftmax"]), axis=st.integers(-3, 2), opset=OPSET)
def test_softmax_axes(op, axis, opset):
    check(Case(op, (F((2, 3, 2)),), {"axis": axis}), opset)
