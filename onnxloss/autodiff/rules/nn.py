"""Gradient rules of linear algebra, convolution, pooling, normalization and resizing
(plugin ``nn``).

* ``MatMul``/``Gemm``: products with the other operand transposed; batch dimensions that
  were broadcast are summed back.
* ``Conv``: ``dX`` is a ``ConvTranspose`` of ``dY`` with the same weights, ``dW`` a ``Conv``
  of ``X`` (batch and channels swapped) with ``dY`` as the kernel, strides and dilations
  exchanged. ``ConvTranspose`` is the mirror image. Where strides leave the last input
  rows unread, the gradient is cropped or zero-padded to the input's run-time shape.
* ``AveragePool``: ``dY`` divided by each window's element count, spread back by a
  ``ConvTranspose`` with a kernel of ones; ``MaxPool``: ``dY`` summed into the positions
  of the maxima (the ``Indices`` output, recomputed when not declared).
* ``BatchNormalization``, ``LayerNormalization``, ``InstanceNormalization``: with
  ``x̂ = (x - μ)/σ`` over the normalized axes, ``dx = (dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))/σ``
  when the statistics come from ``x``, ``dx = dx̂/σ`` when they are inputs.
* ``Resize``: linear in ``X`` and separable per axis, so ``dX`` applies the transposed
  interpolation matrix of each resized axis; each matrix is obtained by resizing an
  identity matrix with the node's own attributes, so every mode and coordinate
  transformation the runtime implements is differentiated exactly.
"""

from __future__ import annotations

import numpy as np

from ...hookspecs import hookimpl
from . import RuleTable
from .shapes import SCATTER_ADD_OPSET, scatter_flat

rules = RuleTable()


def _swap_last(g, x, rank):
    return g.transpose(x, [*range(rank - 2), rank - 1, rank - 2])


def _same_batch(a_shape, b_shape) -> bool:
    """Both operands have the same, statically known batch dimensions."""
    if a_shape is None or b_shape is None or len(a_shape) != len(b_shape):
        return False
    batch_a, batch_b = tuple(a_shape[:-2]), tuple(b_shape[:-2])
    return batch_a == batch_b and all(d is not None for d in batch_a)


@rules.define("MatMul")
def matmul(g, node, grads):
    """da = dy @ bᵀ, db = aᵀ @ dy (1-D operands promoted as numpy does; batch dimensions
    that were broadcast summed back)"""
    a, b, dy = node.input(0), node.input(1), grads[0]
    ra, rb = node.require_rank(0), node.require_rank(1)
    same = _same_batch(node.input_shape(0), node.input_shape(1))
    a2, b2, dy2 = a, b, dy
    if ra == 1:
        a2, dy2 = g.unsqueeze(a, [0]), g.unsqueeze(dy, [-2 if rb > 1 else 0])
    if rb == 1:
        b2, dy2 = g.unsqueeze(b, [-1]), g.unsqueeze(dy2, [-1])
    ra2, rb2 = max(ra, 2), max(rb, 2)
    da = db = None
    if node.needs(0):
        da = g.MatMul(dy2, _swap_last(g, b2, rb2))
        if not (same or rb2 == 2):  # b's batch dimensions may have broadcast a
            da = g.sum_to(da, a2)
        if ra == 1:
            da = g.op("Reshape", da, g.shape(a))
    if node.needs(1):
        if rb == 2 and ra2 > 2:
            # one b for every batch: a single product over the flattened batch
            a_flat = g.op("Reshape", a2, g.op("Concat", g.ints([-1]), g.dims(b, [0]), axis=0))
            dy_flat = g.op("Reshape", dy2, g.op("Concat", g.ints([-1]), g.dims(b, [1]), axis=0))
            db = g.MatMul(g.transpose(a_flat, [1, 0]), dy_flat)
        else:
            db = g.MatMul(_swap_last(g, a2, ra2), dy2)
            if not (same or ra2 == 2):
                db = g.sum_to(db, b2)
            if rb == 1:
                db = g.op("Reshape", db, g.shape(b))
    return [da, db]


@rules.define("Gemm")
def gemm(g, node, grads):
    """Y = alpha·A'B' + beta·C: dA' = alpha·dY·B'ᵀ, dB' = alpha·A'ᵀ·dY, dC = beta·dY summed
    to C's shape (A' = Aᵀ when transA...)"""
    a, b, dy = node.input(0), node.input(1), grads[0]
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    ta, tb = node.attr("transA", 0), node.attr("transB", 0)
    da = db = dc = None
    if node.needs(0):
        if ta:
            da = g.Gemm(b, dy, alpha=alpha, transA=tb, transB=1)
        else:
            da = g.Gemm(dy, b, alpha=alpha, transB=1 - tb)
    if node.needs(1):
        if tb:
            db = g.Gemm(dy, a, alpha=alpha, transA=1, transB=ta)
        else:
            db = g.Gemm(a, dy, alpha=alpha, transA=1 - ta)
    if node.needs(2):
        scaled = dy if beta == 1.0 else g.Mul(dy, beta)
        dc = node.sum_to_input(scaled, 2)
    return [da, db, dc]


# -- convolution --------------------------------------------------------------------------
def _spatial(node, weight_index=1):
    """(rank of X, kernel shape, strides, dilations) from the node and its weight."""
    kernel = node.attr("kernel_shape")
    if not kernel:
        shape = node.input_shape(weight_index)
        if shape is None or not all(isinstance(d, int) for d in shape[2:]):
            return None
        kernel = list(shape[2:])
    s = len(kernel)
    strides = node.attr("strides") or [1] * s
    dilations = node.attr("dilations") or [1] * s
    return s + 2, list(kernel), list(strides), list(dilations)


def _explicit_pads(node, spatial, in_dims=None):
    """The begin+end pads of a Conv/pool node, auto_pad resolved (None if that needs
    spatial sizes that are not static)."""
    rank, kernel, strides, dilations = spatial
    s = rank - 2
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return list(node.attr("pads") or [0] * (2 * s))
    if auto_pad == "VALID":
        return [0] * (2 * s)
    if in_dims is None or not all(isinstance(d, int) for d in in_dims):
        return None
    begin, end = [], []
    for n, k, st, d in zip(in_dims, kernel, strides, dilations, strict=True):
        out = -(-n // st)
        total = max(0, (out - 1) * st + (k - 1) * d + 1 - n)
        first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin + end


def _conv_check(node) -> str:
    spatial = _spatial(node)
    if spatial is None:
        return "its kernel shape is unknown (no kernel_shape and no static weight shape)"
    shape = node.input_shape(0)
    dims = None if shape is None else shape[2:]
    if _explicit_pads(node, spatial, dims) is None:
        return "auto_pad SAME_* with spatial sizes unknown before run time"
    if node.op_type == "ConvTranspose" and node.attr("output_shape"):
        if _conv_transpose_pads(node, spatial) is None:
            return "output_shape with input spatial sizes unknown before run time"
    return ""


def _fit(g, t, like, rank):
    """``t`` cropped or zero-padded at the end of its spatial axes to ``like``'s shape."""
    axes = list(range(2, rank))
    cropped = g.op("Slice", t, g.ints([0] * len(axes)), g.dims(like, axes), g.ints(axes))
    missing = g.Sub(g.shape(like), g.shape(cropped))
    pads = g.op("Concat", g.ints([0] * rank), missing, axis=0)
    return g.op("Pad", cropped, pads)


def _batch_channel_swap(rank):
    return [1, 0, *range(2, rank)]


def _grouped(g, t, groups, per_group, rank):
    """[N, G·P, ...] → [P, G·N, ...]: each group's channels become a batch, the batch
    becomes that group's channels (what the weight-gradient convolution needs)."""
    if groups == 1:
        return g.transpose(t, _batch_channel_swap(rank))
    spatial = g.op("Slice", g.shape(t), g.ints([2]), g.ints([rank]))
    split = g.op("Concat", g.dims(t, [0]), g.ints([groups, per_group]), spatial, axis=0)
    t = g.op("Reshape", t, split)
    t = g.transpose(t, [2, 1, 0, *range(3, rank + 1)])
    merged = g.op("Concat", g.ints([per_group, -1]), spatial, axis=0)
    return g.op("Reshape", t, merged)


def _weight_gradient(g, inp, out_grad, kernel, strides, dilations, pads, groups, per_group, rank):
    """Σ over the batch of inp ⋆ out_grad: [Cout, P, k...] where inp has G·P channels."""
    s = rank - 2
    lhs = _grouped(g, inp, groups, per_group, rank)
    rhs = g.transpose(out_grad, _batch_channel_swap(rank))
    full = g.Conv(lhs, rhs, strides=dilations, dilations=strides, pads=pads, group=groups)
    cut = g.op("Slice", full, g.ints([0] * s), g.ints(kernel), g.ints(list(range(2, rank))))
    return g.transpose(cut, _batch_channel_swap(rank))


def _bias_gradient(g, dy, rank):
    return g.reduce_sum(dy, [0, *range(2, rank)])


@rules.define("Conv", check=_conv_check)
def conv(g, node, grads):
    """dX = ConvTranspose(dY, W) fitted to X; dW = Conv(Xᵀ, dYᵀ) with strides and dilations
    exchanged, cut to the kernel; dB = Σ dY over batch and space"""
    x, w, dy = node.input(0), node.input(1), grads[0]
    spatial = _spatial(node)
    rank, kernel, strides, dilations = spatial
    shape = node.input_shape(0)
    pads = _explicit_pads(node, spatial, None if shape is None else shape[2:])
    s = rank - 2
    groups = node.attr("group", 1)
    dx = dw = db = None
    if node.needs(0):
        crop_begin_only = pads[:s] + [0] * s
        full = g.ConvTranspose(
            dy, w, strides=strides, dilations=dilations, pads=crop_begin_only, group=groups
        )
        dx = _fit(g, full, x, rank)
    if node.needs(1):
        per_group = _per_group(node, 1, 1)
        dw = _weight_gradient(g, x, dy, kernel, strides, dilations, pads, groups, per_group, rank)
    if node.needs(2):
        db = _bias_gradient(g, dy, rank)
    return [dx, dw, db]


def _per_group(node, weight_index, axis):
    shape = node.input_shape(weight_index)
    if shape is None or not isinstance(shape[axis], int):
        raise node.unsupported(
            "the weight's channel count is unknown", "give the weight a static shape"
        )
    return shape[axis]


def _conv_transpose_pads(node, spatial):
    rank, kernel, strides, dilations = spatial
    s = rank - 2
    output_shape = node.attr("output_shape")
    output_padding = node.attr("output_padding") or [0] * s
    if not output_shape:
        shape = node.input_shape(0)
        return _explicit_pads(node, spatial, None if shape is None else shape[2:])
    shape = node.input_shape(0)
    if shape is None or not all(isinstance(d, int) for d in shape[2:]):
        return None
    begin, end = [], []
    for n, k, st, d, op, out in zip(
        shape[2:], kernel, strides, dilations, output_padding, output_shape[-s:], strict=True
    ):
        total = st * (n - 1) + op + (k - 1) * d + 1 - out
        if node.attr("auto_pad", "NOTSET") == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return begin + end


@rules.define("ConvTranspose", check=_conv_check)
def conv_transpose(g, node, grads):
    """dX = Conv(dY, W) with the same strides, pads, dilations and groups; dW = the
    weight gradient of that convolution with the roles of X and dY exchanged; dB = Σ dY"""
    x, w, dy = node.input(0), node.input(1), grads[0]
    spatial = _spatial(node)
    rank, kernel, strides, dilations = spatial
    pads = _conv_transpose_pads(node, spatial)
    groups = node.attr("group", 1)
    dx = dw = db = None
    if node.needs(0):
        dx = g.Conv(dy, w, strides=strides, dilations=dilations, pads=pads, group=groups)
    if node.needs(1):
        per_group = _per_group(node, 1, 1)  # output channels per group
        dw = _weight_gradient(g, dy, x, kernel, strides, dilations, pads, groups, per_group, rank)
    if node.needs(2):
        db = _bias_gradient(g, dy, rank)
    return [dx, dw, db]


# -- pooling ------------------------------------------------------------------------------
def _pool_check(node) -> str:
    spatial = _spatial(node, weight_index=None) if node.attr("kernel_shape") else None
    if spatial is None:
        return "no kernel_shape"
    shape = node.input_shape(0)
    if _explicit_pads(node, spatial, None if shape is None else shape[2:]) is None:
        return "auto_pad SAME_* with spatial sizes unknown before run time"
    if node.op_type == "MaxPool" and node.opset < SCATTER_ADD_OPSET:
        _, kernel, strides, dilations = spatial
        if any(st < (k - 1) * d + 1 for k, st, d in zip(kernel, strides, dilations, strict=True)):
            return (
                "its windows overlap, so an element can be the maximum of several windows and "
                "its gradients must be summed with ScatterElements(reduction='add'), which "
                f"needs opset {SCATTER_ADD_OPSET}"
            )
    return ""


@rules.define("MaxPool", check=_pool_check)
def max_pool(g, node, grads):
    """dX = dY summed into the flat positions of the window maxima (the Indices output)"""
    x, dy = node.input(0), grads[0]
    if dy is None:
        return [None]
    indices = node.output(1)
    if indices is None or node.attr("storage_order", 0) != 0:
        attrs = {
            k: node.attr(k)
            for k in ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
            if node.has_attr(k)
        }
        _, indices = g.op("MaxPool", x, num_outputs=2, **attrs)
    reduction = "add" if node.opset >= SCATTER_ADD_OPSET else None
    return [scatter_flat(g, x, indices, dy, reduction=reduction)]


def _window_sum_ones(g, like, kernel, strides, dilations, pads, rank, include_pad, out_like):
    """The number of elements each pooling window averages (padding counted or not),
    shaped [1, 1, out...] and cut to ``out_like``'s spatial size."""
    s = rank - 2
    dims = g.dims(like, list(range(2, rank)))
    if include_pad:
        dims = g.Add(dims, g.ints([b + e for b, e in zip(pads[:s], pads[s:], strict=True)]))
        pads = [0] * (2 * s)
    ones = g.full(g.op("Concat", g.ints([1, 1]), dims, axis=0), 1.0)
    kernel_ones = g.full(g.ints([1, 1, *kernel]), 1.0)
    # extra end padding so that floor-mode Conv yields every ceil-mode window; cut after
    pads = pads[:s] + [e + st - 1 for e, st in zip(pads[s:], strides, strict=True)]
    counts = g.Conv(ones, kernel_ones, strides=strides, dilations=dilations, pads=pads)
    axes = list(range(2, rank))
    return g.op("Slice", counts, g.ints([0] * s), g.dims(out_like, axes), g.ints(axes))


@rules.define("AveragePool", check=_pool_check)
def average_pool(g, node, grads):
    """dX = ConvTranspose(dY / count, ones) per channel, fitted to X"""
    x, y, dy = node.input(0), node.output(0), grads[0]
    spatial = _spatial(node, weight_index=None)
    rank, kernel, strides, dilations = spatial
    shape = node.input_shape(0)
    pads = _explicit_pads(node, spatial, None if shape is None else shape[2:])
    s = rank - 2
    count = _window_sum_ones(
        g, x, kernel, strides, dilations, pads, rank, node.attr("count_include_pad", 0), y
    )
    scaled = g.Div(dy, count)
    spatial_dy = g.op("Slice", g.shape(dy), g.ints([2]), g.ints([rank]))
    per_channel = g.op("Reshape", scaled, g.op("Concat", g.ints([-1, 1]), spatial_dy, axis=0))
    kernel_ones = g.full(g.ints([1, 1, *kernel]), 1.0)
    full = g.ConvTranspose(
        per_channel, kernel_ones, strides=strides, dilations=dilations, pads=pads[:s] + [0] * s
    )
    spatial_x = g.op("Slice", g.shape(x), g.ints([2]), g.ints([rank]))
    flat_x = g.op("Concat", g.ints([-1, 1]), spatial_x, axis=0)
    fitted = _fit(g, full, g.op("Reshape", x, flat_x), rank)
    return [g.op("Reshape", fitted, g.shape(x))]


@rules.define("GlobalAveragePool")
def global_average_pool(g, node, grads):
    """dX = dY broadcast / (number of spatial elements)"""
    x, y, dy = node.input(0), node.output(0), grads[0]
    count = g.Div(g.size_as(x), g.size_as(y))
    return [g.Div(g.expand_as(dy, x), count)]


@rules.define("GlobalMaxPool")
def global_max_pool(g, node, grads):
    """dX = dY broadcast·[x = max] / #ties"""
    x, y, dy = node.input(0), node.output(0), grads[0]
    rank = node.require_rank(0)
    hit = g.mask(g.Equal(x, y))
    count = g.reduce_sum(hit, list(range(2, rank)), keepdims=True)
    return [g.Div(g.Mul(g.expand_as(dy, x), hit), count)]


# -- normalization ------------------------------------------------------------------------
def normalized_gradient(g, x_hat, dx_hat, inv_std, axes):
    """dx for x̂ = (x - mean(x))·inv_std over ``axes`` (statistics from x itself):
    inv_std·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))."""
    mean_d = g.reduce_mean(dx_hat, axes, keepdims=True)
    mean_dx = g.reduce_mean(g.Mul(dx_hat, x_hat), axes, keepdims=True)
    return g.Mul(inv_std, g.Sub(g.Sub(dx_hat, mean_d), g.Mul(x_hat, mean_dx)))


def _moments(g, x, axes, epsilon):
    """(x - mean, 1/sqrt(var + eps)) over ``axes``, kept as size-1 axes."""
    centred = g.Sub(x, g.reduce_mean(x, axes, keepdims=True))
    var = g.reduce_mean(g.Mul(centred, centred), axes, keepdims=True)
    return centred, g.Reciprocal(g.Sqrt(g.Add(var, epsilon)))


def _per_channel(g, v, rank):
    """A [C] vector shaped [C, 1, ..., 1] to broadcast along axis 1 of a rank-``rank`` x."""
    return g.unsqueeze(v, list(range(1, rank - 1))) if rank > 2 else v


def _batch_norm_check(node) -> str:
    if node.input_rank(0) is None:
        return "the rank of its input is unknown"
    return ""


@rules.define("BatchNormalization", check=_batch_norm_check)
def batch_normalization(g, node, grads):
    """inference form, y = scale·(x - mean)/√(var + ε) + B: dx = dy·scale/σ,
    dscale = Σ dy·x̂, dB = Σ dy, dmean = -Σ dy·scale/σ, dvar = -½·Σ dy·scale·(x - mean)/σ³;
    training form (statistics of the batch): the normalized gradient"""
    x, scale, bias, mean, var = (node.input(k) for k in range(5))
    dy = grads[0]
    rank = node.require_rank(0)
    eps = node.attr("epsilon", 1e-5)
    axes = [0, *range(2, rank)]
    training = node.attr("training_mode", 0) == 1
    if training:
        centred, inv = _moments(g, x, axes, eps)
    else:
        centred = g.Sub(x, _per_channel(g, mean, rank))
        inv = _per_channel(g, g.Reciprocal(g.Sqrt(g.Add(var, eps))), rank)
    x_hat = g.Mul(centred, inv)
    s = _per_channel(g, scale, rank)
    dx_hat = g.Mul(dy, s)
    dx = dscale = dbias = dmean = dvar = None
    if node.needs(0):
        dx = normalized_gradient(g, x_hat, dx_hat, inv, axes) if training else g.Mul(dx_hat, inv)
    if node.needs(1):
        dscale = g.reduce_sum(g.Mul(dy, x_hat), axes)
    if node.needs(2):
        dbias = g.reduce_sum(dy, axes)
    if not training and node.needs(3):
        dmean = g.Neg(g.reduce_sum(g.Mul(dx_hat, inv), axes))
    if not training and node.needs(4):
        inv3 = g.Mul(g.Mul(inv, inv), inv)
        dvar = g.reduce_sum(g.Mul(g.Mul(dx_hat, centred), g.Mul(inv3, -0.5)), axes)
    return [dx, dscale, dbias, dmean, dvar]


def _layer_axes(node):
    axis = node.attr("axis", -1)
    if axis < 0:
        return list(range(axis, 0))
    rank = node.require_rank(0)
    return list(range(axis, rank))


def _layer_norm_check(node) -> str:
    if node.attr("axis", -1) >= 0 and node.input_rank(0) is None:
        return "a non-negative axis with an input of unknown rank"
    return ""


@rules.define("LayerNormalization", check=_layer_norm_check)
def layer_normalization(g, node, grads):
    """over the axes from ``axis`` on: dx = normalized gradient of dx̂ = dy·scale,
    dscale = Σ dy·x̂, dB = Σ dy (over the leading axes)"""
    x, scale, dy = node.input(0), node.input(1), grads[0]
    if any(d is not None for d in grads[1:]):
        raise node.unsupported(
            "a gradient flows into its Mean or InvStdDev output",
            "compute the statistics with ReduceMean nodes instead",
        )
    axes = _layer_axes(node)
    centred, inv = _moments(g, x, axes, node.attr("epsilon", 1e-5))
    x_hat = g.Mul(centred, inv)
    dx = dscale = dbias = None
    if node.needs(0):
        dx = normalized_gradient(g, x_hat, g.Mul(dy, scale), inv, axes)
    if node.needs(1):
        dscale = node.sum_to_input(g.Mul(dy, x_hat), 1)
    if node.needs(2):
        dbias = node.sum_to_input(dy, 2)
    return [dx, dscale, dbias]


@rules.define("InstanceNormalization", check=_batch_norm_check)
def instance_normalization(g, node, grads):
    """over the spatial axes of each sample and channel: dx = normalized gradient of
    dx̂ = dy·scale, dscale = Σ dy·x̂, dB = Σ dy (over batch and space)"""
    x, scale, dy = node.input(0), node.input(1), grads[0]
    rank = node.require_rank(0)
    axes = list(range(2, rank))
    centred, inv = _moments(g, x, axes, node.attr("epsilon", 1e-5))
    x_hat = g.Mul(centred, inv)
    dx = dscale = dbias = None
    if node.needs(0):
        dx = normalized_gradient(g, x_hat, g.Mul(dy, _per_channel(g, scale, rank)), inv, axes)
    if node.needs(1):
        dscale = g.reduce_sum(g.Mul(dy, x_hat), [0, *axes])
    if node.needs(2):
        dbias = g.reduce_sum(dy, [0, *axes])
    return [dx, dscale, dbias]


# -- resizing -----------------------------------------------------------------------------
_RESIZE_ATTRS = (
    "mode",
    "coordinate_transformation_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "nearest_mode",
    "antialias",
)


def _resize_check(node) -> str:
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return "coordinate_transformation_mode 'tf_crop_and_resize' (its roi is not handled)"
    if node.has_input(3) and node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "keep_aspect_ratio_policy other than 'stretch' with sizes"
    if node.input_rank(0) is None:
        return "the rank of its input is unknown"
    return ""


@rules.define("Resize", non_differentiable=(1, 2), check=_resize_check)
def resize(g, node, grads):
    """dX = dY contracted, along each resized axis k, with W_k [out_k, in_k], the
    interpolation matrix of that axis: W_k = Resize(I_{in_k}) along its first axis only"""
    x, dy = node.input(0), grads[0]
    rank = node.require_rank(0)
    axes = node.attr("axes") or list(range(rank))
    axes = [a % rank for a in axes]
    attrs = {k: node.attr(k) for k in _RESIZE_ATTRS if node.has_attr(k)}
    scales = node.input(2) if node.has_input(2) else None
    values = node.constant_input(2) if scales is not None else None
    grad = dy
    x_shape, y_shape = node.input_shape(0), node.output_shape(0)
    if values is not None and np.asarray(values).size == 0:
        scales = values = None  # an empty scales input: the sizes input is used
    for position, axis in enumerate(axes):
        known = values is not None or scales is None  # a run-time scale may be anything
        if known and _unchanged(values, position, x_shape, y_shape, axis):
            continue
        n_in = g.dims(x, [axis])
        eye = g.EyeLike(g.full(g.op("Concat", n_in, n_in, axis=0), 0.0))
        if scales is not None:
            s = g.op("Gather", scales, g.ints([position]), axis=0)
            pair = g.op("Concat", s, g.const(np.array([1.0], np.float32)), axis=0)
            matrix = g.op("Resize", eye, None, pair, **attrs)
        else:
            pair = g.op("Concat", g.dims(node.output(0), [axis]), n_in, axis=0)
            matrix = g.op("Resize", eye, None, None, pair, **attrs)
        grad = _contract(g, grad, matrix, axis, rank)
    return [grad]


def _unchanged(scales, position, x_shape, y_shape, axis) -> bool:
    """An axis whose scale is the constant 1 (or, given sizes, whose static size does not
    change): its interpolation matrix is the identity."""
    if scales is not None:
        return float(np.asarray(scales).reshape(-1)[position]) == 1.0
    if x_shape is not None and y_shape is not None:
        a, b = x_shape[axis], y_shape[axis]
        return isinstance(a, int) and a == b
    return False


def _contract(g, grad, matrix, axis, rank):
    """Σ_j grad[..., j (at axis), ...]·matrix[j, i]: axis moved last, MatMul, moved back."""
    if axis == rank - 1:
        return g.MatMul(grad, matrix)
    perm = [*range(axis), *range(axis + 1, rank), axis]
    moved = g.MatMul(g.transpose(grad, perm), matrix)
    inverse = [0] * rank
    for k, p in enumerate(perm):
        inverse[p] = k
    return g.transpose(moved, inverse)


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
