"""Gradient rules of operators that move, select or copy elements (plugin ``shapes``).

Reshapes send ``dy`` back with ``x``'s run-time shape; ``Transpose`` with the inverse
permutation; ``Concat``/``Split`` with each other. Selections (``Slice``, ``Pad``) use the
*index trick*: the same operator applied to the flat positions ``0..n-1`` of ``x`` says
where each output element came from, and ``ScatterElements`` puts ``dy`` back there, so the
rule inherits the operator's own handling of negative, clamped and out-of-range arguments.
Gathers and copies that may read an element several times (``Gather``, ``GatherElements``,
``Expand``, ``Tile``, ``Pad`` in edge/reflect/wrap mode) sum the contributions: with
``reduction='add'`` scatters from opset 16, with ``OneHot`` products below it where that
is exact.
"""

from __future__ import annotations

import numpy as np

from ...hookspecs import hookimpl
from . import RuleTable

rules = RuleTable()

#: Scatter operators take reduction='add' from this opset on.
SCATTER_ADD_OPSET = 16


@rules.define("Reshape", "Flatten", "Squeeze", "Unsqueeze", non_differentiable=(1,))
def reshape(g, node, grads):
    """dx = Reshape(dy, Shape(x))"""
    return [g.op("Reshape", grads[0], g.shape(node.input(0)))]


@rules.define("Transpose")
def transpose(g, node, grads):
    """dx = Transpose(dy, inverse(perm)) (no perm: the reversal, its own inverse)"""
    perm = node.attr("perm")
    if not perm:
        return [g.op("Transpose", grads[0])]
    inverse = [0] * len(perm)
    for k, p in enumerate(perm):
        inverse[p] = k
    return [g.transpose(grads[0], inverse)]


@rules.define("Concat")
def concat(g, node, grads):
    """dx_i = the slice of dy that x_i filled: Split(dy, [size_i along axis])"""
    axis = node.attr("axis")
    sizes = g.op("Concat", *[g.dims(node.input(k), [axis]) for k in range(node.num_inputs)], axis=0)
    parts = g.op("Split", grads[0], sizes, axis=axis, num_outputs=node.num_inputs)
    parts = parts if isinstance(parts, tuple) else (parts,)
    return [p if node.needs(k) else None for k, p in enumerate(parts)]


@rules.define("Split", non_differentiable=(1,))
def split(g, node, grads):
    """dx = Concat(dy_1, dy_2, ...) along the axis (zeros for outputs with no gradient)"""
    parts = [dy if dy is not None else g.zeros_like(node.output(k)) for k, dy in enumerate(grads)]
    return [g.op("Concat", *parts, axis=node.attr("axis", 0))]


def positions(g, x, start=0):
    """``start, start+1, ...`` (int64) laid out in ``x``'s run-time shape."""
    n = g.op("Size", x)
    if start:
        n = g.Add(n, g.const(np.array(start, np.int64)))
    flat = g.op("Range", g.const(np.array(start, np.int64)), n, g.const(np.array(1, np.int64)))
    return g.op("Reshape", flat, g.shape(x))


def scatter_flat(g, x, where, dy, reduction=None, slot=False):
    """``dy``'s elements put (or, with ``reduction='add'``, summed) at the flat positions
    ``where`` of a tensor shaped like ``x``. With ``slot``, ``where`` counts from 1 and
    position 0 is a dump for padding, dropped afterwards."""
    n = g.op("Size", x)
    if slot:
        n = g.Add(n, g.const(np.array(1, np.int64)))
    zeros = g.full(g.unsqueeze(n, [0]), 0.0)
    flat_where = g.reshape(where, [-1])
    flat_dy = g.reshape(dy, [-1])
    attrs = {"reduction": reduction} if reduction else {}
    out = g.op("ScatterElements", zeros, flat_where, flat_dy, axis=0, **attrs)
    if slot:
        out = g.op("Slice", out, g.ints([1]), g.unsqueeze(n, [0]), g.ints([0]))
    return g.op("Reshape", out, g.shape(x))


@rules.define("Slice")
def slice_(g, node, grads):
    """dx = dy scattered back to the positions Slice read (the index trick)"""
    x = node.input(0)
    picked = g.op("Slice", positions(g, x), *[node.input(k) for k in range(1, node.num_inputs)])
    return [scatter_flat(g, x, picked, grads[0])]


def _pad_check(node) -> str:
    if node.attr("mode", "constant") == "constant" or node.opset >= SCATTER_ADD_OPSET:
        return ""
    return (
        f"mode '{node.attr('mode')}' copies elements, whose gradients must be summed with "
        f"ScatterElements(reduction='add'), which needs opset {SCATTER_ADD_OPSET}"
    )


@rules.define("Pad", non_differentiable=(2,), check=_pad_check)
def pad(g, node, grads):
    """dx = dy at the positions Pad copied x's elements to, summed for edge/reflect/wrap
    copies; the padding (and any cropped part of x) gets nothing"""
    x = node.input(0)
    mode = node.attr("mode", "constant")
    inputs = [node.input(k) for k in range(1, node.num_inputs)]
    if mode == "constant":
        if len(inputs) >= 2:
            inputs[1] = g.const(np.array(0, np.int64))
        padded = g.op("Pad", positions(g, x, start=1), *inputs, mode="constant")
        return [scatter_flat(g, x, padded, grads[0], slot=True)]
    if len(inputs) >= 2:
        inputs[1] = None  # no constant value outside 'constant' mode
    padded = g.op("Pad", positions(g, x), *inputs, mode=mode)
    return [scatter_flat(g, x, padded, grads[0], reduction="add")]


@rules.define("Expand", non_differentiable=(1,))
def expand(g, node, grads):
    """dx = dy summed over the broadcast axes"""
    return [node.sum_to_input(grads[0], 0)]


@rules.define("Tile", non_differentiable=(1,))
def tile(g, node, grads):
    """dy viewed as [r0, d0, r1, d1, ...] (r the repeats, d x's shape), summed over the r axes"""
    x = node.input(0)
    rank = node.require_rank(0)
    repeats = g.unsqueeze(node.input(1), [1])
    interleaved = g.reshape(g.op("Concat", repeats, g.unsqueeze(g.shape(x), [1]), axis=1), [-1])
    view = g.op("Reshape", grads[0], interleaved)
    return [g.reduce_sum(view, list(range(0, 2 * rank, 2)))]


def _normalized(g, indices, size):
    """int64 indices with the negative ones made positive: where(i < 0, i + size, i)."""
    indices = g.cast(indices, np.int64)
    negative = g.Less(indices, g.const(np.array(0, np.int64)))
    return g.Where(negative, g.Add(indices, size), indices)


def _unique_indices(node) -> bool:
    """Constant indices that name each position once (all >= 0, or all < 0, distinct)."""
    values = node.constant_ints(1)
    if values is None:
        return False
    signs = {v >= 0 for v in values}
    return len(signs) <= 1 and len(set(values)) == len(values)


def _gather_check(node) -> str:
    known = node.input_rank(0) is not None and node.input_rank(1) is not None
    if known or node.opset >= SCATTER_ADD_OPSET or _unique_indices(node):
        return ""
    return (
        "the ranks of its data and indices are unknown and its indices may repeat: summing "
        "their gradients then needs ScatterElements(reduction='add'), from opset 16"
    )


@rules.define("Gather", check=_gather_check)
def gather(g, node, grads):
    """dx[..., i, ...] = Σ over the positions j where indices[j] = i of dy[..., j, ...]
    (ScatterND with reduction='add' from opset 16, a OneHot product below; ranks unknown:
    the index trick, ScatterElements with reduction='add' on flat positions)"""
    data, indices, dy = node.input(0), node.input(1), grads[0]
    if node.input_rank(0) is None or node.input_rank(1) is None:
        picked = g.op("Gather", positions(g, data), indices, axis=node.attr("axis", 0))
        reduction = None if _unique_indices(node) else "add"
        return [scatter_flat(g, data, picked, dy, reduction=reduction), None]
    r, q = node.require_rank(0), node.require_rank(1)
    axis = node.attr("axis", 0) % r
    size = g.dims(data, [axis])
    idx = _normalized(g, indices, g.squeeze(size, [0]))
    # dy is [pre, idx..., post]: put the index axes first, [idx..., pre, post]
    perm = [*range(axis, axis + q), *range(axis), *range(axis + q, r + q - 1)]
    dy_t = g.transpose(dy, perm) if perm != list(range(r + q - 1)) else dy
    data_perm = [axis, *range(axis), *range(axis + 1, r)]
    moved_shape = g.op("Gather", g.shape(data), g.ints(data_perm), axis=0)
    if node.opset >= SCATTER_ADD_OPSET:
        zeros = g.full(moved_shape, 0.0)
        dx_t = g.op("ScatterND", zeros, g.unsqueeze(idx, [-1]), dy_t, reduction="add")
    else:
        depth = g.squeeze(size, [0])
        one_hot = g.op("OneHot", g.reshape(idx, [-1]), depth, g.const([0.0, 1.0]), axis=-1)
        rows = g.unsqueeze(g.op("Size", idx), [0])
        flat = g.op("Reshape", dy_t, g.op("Concat", rows, g.ints([-1]), axis=0))
        dx_t = g.op("Reshape", g.MatMul(g.transpose(one_hot, [1, 0]), flat), moved_shape)
    if axis == 0:
        return [dx_t, None]
    inverse = [0] * r
    for k, p in enumerate(data_perm):
        inverse[p] = k
    return [g.transpose(dx_t, inverse), None]


def _gather_elements_check(node) -> str:
    if node.opset < SCATTER_ADD_OPSET and node.input_rank(0) is None:
        return "the rank of its data must be known below opset 16"
    return ""


@rules.define("GatherElements", check=_gather_elements_check)
def gather_elements(g, node, grads):
    """dx = dy summed into the positions indices pick along the axis (ScatterElements
    with reduction='add' from opset 16; a OneHot along a new last axis, summed, below)"""
    data, indices, dy = node.input(0), node.input(1), grads[0]
    axis = node.attr("axis", 0)
    size = g.dims(data, [axis])
    idx = _normalized(g, indices, g.squeeze(size, [0]))
    if node.opset >= SCATTER_ADD_OPSET:
        zeros = g.zeros_like(data)
        return [g.op("ScatterElements", zeros, idx, dy, axis=axis, reduction="add"), None]
    r = node.require_rank(0)
    axis %= r
    depth = g.squeeze(size, [0])
    one_hot = g.op("OneHot", idx, depth, g.const([0.0, 1.0]), axis=-1)  # [idx..., D]
    summed = g.reduce_sum(g.Mul(one_hot, g.unsqueeze(dy, [-1])), [axis], keepdims=False)
    moved = g.transpose(summed, [*range(axis), r - 1, *range(axis, r - 1)])
    # indices may be shorter than data along the other axes: pad with zeros at the end
    missing = g.Sub(g.shape(data), g.shape(moved))
    pads = g.op("Concat", g.full(g.ints([r]), 0, np.int64), missing, axis=0)
    return [g.op("Pad", moved, pads), None]


def _gather_nd_check(node) -> str:
    if node.opset < SCATTER_ADD_OPSET:
        return f"its gradient needs ScatterND(reduction='add'), from opset {SCATTER_ADD_OPSET}"
    if node.attr("batch_dims", 0):
        return "batch_dims other than 0"
    return ""


@rules.define("GatherND", check=_gather_nd_check)
def gather_nd(g, node, grads):
    """dx = ScatterND(zeros, indices, dy, reduction='add')"""
    data = node.input(0)
    return [g.op("ScatterND", g.zeros_like(data), node.input(1), grads[0], reduction="add"), None]


def _scatter_check(node) -> str:
    reduction = node.attr("reduction", "none")
    return "" if reduction in ("none", "add") else f"reduction '{reduction}'"


@rules.define("ScatterElements", check=_scatter_check)
def scatter_elements(g, node, grads):
    """reduction none: d(data) = dy with the written positions zeroed, d(updates) = dy at
    those positions; reduction add: d(data) = dy"""
    indices, updates, dy = node.input(1), node.input(2), grads[0]
    axis = node.attr("axis", 0)
    d_data = None
    if node.needs(0):
        d_data = dy
        if node.attr("reduction", "none") == "none":
            d_data = g.op("ScatterElements", dy, indices, g.zeros_like(updates), axis=axis)
    d_updates = g.op("GatherElements", dy, indices, axis=axis) if node.needs(2) else None
    return [d_data, None, d_updates]


@rules.define("ScatterND", check=_scatter_check)
def scatter_nd(g, node, grads):
    """as ScatterElements, with ScatterND / GatherND"""
    indices, updates, dy = node.input(1), node.input(2), grads[0]
    d_data = None
    if node.needs(0):
        d_data = dy
        if node.attr("reduction", "none") == "none":
            d_data = g.op("ScatterND", dy, indices, g.zeros_like(updates))
    d_updates = g.op("GatherND", dy, indices) if node.needs(2) else None
    return [d_data, None, d_updates]


@rules.define("TopK")
def top_k(g, node, grads):
    """dx = dy(values) put back at the positions the indices output names, along the axis"""
    x, dy = node.input(0), grads[0]
    if dy is None:
        return [None]
    axis = node.attr("axis", -1)
    indices = node.output(1)
    if indices is None:  # not declared: recompute it
        _, indices = g.op(
            "TopK",
            x,
            node.input(1),
            num_outputs=2,
            axis=axis,
            largest=node.attr("largest", 1),
            sorted=node.attr("sorted", 1),
        )
    return [g.op("ScatterElements", g.zeros_like(x), indices, dy, axis=axis)]


@rules.define("Trilu")
def trilu(g, node, grads):
    """dx = Trilu(dy) with the same k and upper (a fixed mask)"""
    return [g.op("Trilu", grads[0], node.input(1), upper=node.attr("upper", 1))]


@rules.define("DepthToSpace", "SpaceToDepth")
def depth_space(g, node, grads):
    """a permutation of the elements: dy scattered back through the index trick"""
    x = node.input(0)
    attrs = {"blocksize": node.attr("blocksize")}
    if node.op_type == "DepthToSpace":
        attrs["mode"] = node.attr("mode", "DCR")
    # the index trick in float64 (exact below 2**53 elements): the kernels take floats
    flat = g.cast(positions(g, x), np.float64)
    moved = g.cast(g.op(node.op_type, flat, **attrs), np.int64)
    return [scatter_flat(g, x, moved, grads[0])]


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
