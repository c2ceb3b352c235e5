"""Gradient rules of the recurrent operators ``LSTM``, ``GRU`` and ``RNN`` (plugin
``recurrent``).

Each direction of the operator is rewritten, for the gradient only, as a loop over time
whose body is one step of the cell (the ONNX equations, gates in ONNX's order, with the
node's activations, clip, ``input_forget`` and peepholes); the loop is then differentiated
by the ``Loop`` rule's machinery (backpropagation through time, recomputing each step).
The cell reads ``X``, ``W``, ``R``, ``B`` (and ``P``) from the enclosing graph, so their
gradients come out whole, both directions summed. ``sequence_lens`` is not handled (all
sequences must run the full length). ``layout=1`` is handled by transposing to time-major.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...builder import GraphBuilder
from ...hookspecs import hookimpl
from ...tensor_info import TensorInfo
from . import RuleTable
from .control_flow import loop_gradient

rules = RuleTable()

#: Gates per cell, in the order of ONNX's weights, and the default activations.
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {
    "LSTM": ["Sigmoid", "Tanh", "Tanh"],
    "GRU": ["Sigmoid", "Tanh"],
    "RNN": ["Tanh"],
}
#: Activation name → (ONNX operator or None for a composition, attributes taking alpha/beta)
ACTIVATIONS = {
    "Relu": (),
    "Tanh": (),
    "Sigmoid": (),
    "Softsign": (),
    "Softplus": (),
    "Affine": ("alpha", "beta"),
    "LeakyRelu": ("alpha",),
    "ThresholdedRelu": ("alpha",),
    "ScaledTanh": ("alpha", "beta"),
    "HardSigmoid": ("alpha", "beta"),
    "Elu": ("alpha",),
}
_SEQUENCE_LENS = {"LSTM": 4, "GRU": 4, "RNN": 4}


def _check(node) -> str:
    if node.has_input(_SEQUENCE_LENS[node.op_type]):
        return "its sequence_lens input (variable-length sequences) is not handled"
    for name in _activations(node):
        if name not in ACTIVATIONS:
            return f"activation '{name}' is not handled"
    w = node.input_shape(1)
    if w is None or not isinstance(w[1], int) or node.input_rank(0) != 3:
        return "the weight W needs a static shape and X a known rank 3"
    return ""


def _activations(node) -> list[str]:
    directions = 2 if node.attr("direction", "forward") == "bidirectional" else 1
    given = node.attr("activations")
    if not given:
        return DEFAULT_ACTIVATIONS[node.op_type] * directions
    return [a.decode() if isinstance(a, bytes) else a for a in given]


def _activation_functions(node):
    """Per direction, the activation functions with their alpha/beta (ONNX defaults)."""
    names = _activations(node)
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    defaults = {"LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None),
                "HardSigmoid": (0.2, 0.5), "Elu": (1.0, None),
                "Affine": (1.0, 0.0), "ScaledTanh": (1.0, 1.0)}  # fmt: skip
    funcs = []
    for name in names:
        params = ACTIVATIONS[name]
        alpha = beta = None
        if "alpha" in params:
            alpha = alphas.pop(0) if alphas else defaults[name][0]
        if "beta" in params:
            beta = betas.pop(0) if betas else defaults[name][1]
        funcs.append((name, alpha, beta))
    per = len(DEFAULT_ACTIVATIONS[node.op_type])
    return [funcs[k * per : (k + 1) * per] for k in range(len(funcs) // per)]


def _apply(g: GraphBuilder, func, x, clip):
    name, alpha, beta = func
    if clip is not None:
        x = g.clip(x, -clip, clip)
    if name in ("Relu", "Tanh", "Sigmoid", "Softsign", "Softplus"):
        return g.op(name, x)
    if name == "Affine":
        return g.Add(g.Mul(x, alpha), beta)
    if name == "ScaledTanh":
        return g.Mul(g.Tanh(g.Mul(x, beta)), alpha)
    if name == "HardSigmoid":
        return g.op(name, x, alpha=alpha, beta=beta)
    return g.op(name, x, alpha=alpha)


def _cell(g, node, kind, funcs, x_t, h, c, weights, clip):
    """One step: returns (h_new, c_new or None)."""
    w, r, wb, rb, p = weights
    hidden = node.attr("hidden_size") or node.input_shape(2)[-1]
    f, act_g = funcs[0], funcs[1] if len(funcs) > 1 else None
    xw = g.MatMul(x_t, g.transpose(w, [1, 0]))
    if kind == "RNN":
        pre = g.Add(g.Add(xw, g.MatMul(h, g.transpose(r, [1, 0]))), g.Add(wb, rb))
        return _apply(g, f, pre, clip), None
    if kind == "LSTM":
        act_h = funcs[2]
        pre = g.Add(g.Add(xw, g.MatMul(h, g.transpose(r, [1, 0]))), g.Add(wb, rb))
        a_i, a_o, a_f, a_c = g.op("Split", pre, g.ints([hidden] * 4), axis=1, num_outputs=4)
        if p is not None:
            p_i, p_o, p_f = g.op("Split", p, g.ints([hidden] * 3), axis=0, num_outputs=3)
            a_i = g.Add(a_i, g.Mul(p_i, c))
            a_f = g.Add(a_f, g.Mul(p_f, c))
        i = _apply(g, f, a_i, clip)
        forget = g.Sub(1.0, i) if node.attr("input_forget", 0) else _apply(g, f, a_f, clip)
        c_new = g.Add(g.Mul(forget, c), g.Mul(i, _apply(g, act_g, a_c, clip)))
        if p is not None:
            a_o = g.Add(a_o, g.Mul(p_o, c_new))
        o = _apply(g, f, a_o, clip)
        return g.Mul(o, _apply(g, act_h, c_new, clip)), c_new
    # GRU
    w_z, w_r, w_h = g.op("Split", w, g.ints([hidden] * 3), axis=0, num_outputs=3)
    r_z, r_r, r_h = g.op("Split", r, g.ints([hidden] * 3), axis=0, num_outputs=3)
    wb_z, wb_r, wb_h = g.op("Split", wb, g.ints([hidden] * 3), axis=0, num_outputs=3)
    rb_z, rb_r, rb_h = g.op("Split", rb, g.ints([hidden] * 3), axis=0, num_outputs=3)

    def lin(v, m, bias=None):
        out = g.MatMul(v, g.transpose(m, [1, 0]))
        return out if bias is None else g.Add(out, bias)

    z = _apply(g, f, g.Add(g.Add(lin(x_t, w_z), lin(h, r_z)), g.Add(wb_z, rb_z)), clip)
    rr = _apply(g, f, g.Add(g.Add(lin(x_t, w_r), lin(h, r_r)), g.Add(wb_r, rb_r)), clip)
    if node.attr("linear_before_reset", 0):
        inner = g.Mul(rr, lin(h, r_h, rb_h))
    else:
        inner = lin(g.Mul(rr, h), r_h, rb_h)
    cand = _apply(g, act_g, g.Add(g.Add(lin(x_t, w_h), inner), wb_h), clip)
    return g.Add(g.Mul(g.Sub(1.0, z), cand), g.Mul(z, h)), None


@rules.define("LSTM", "GRU", "RNN", non_differentiable=(4,), check=_check)
def recurrent(g, node, grads):
    """backpropagation through time: each direction as a loop over its cell, the loop
    differentiated by the Loop rule's machinery"""
    kind = node.op_type
    layout = node.attr("layout", 0)
    direction = node.attr("direction", "forward")
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    hidden = node.attr("hidden_size") or node.input_shape(2)[-1]
    clip = node.attr("clip")
    funcs = _activation_functions(node)
    x = node.input(0)
    x_name = node.node.input[0]
    infos = node.ctx.infos
    x_info = node.input_info(0)
    if layout:  # batch-major: run the cell on the time-major view
        x = g.transpose(x, [1, 0, 2])
        x_name = x.name
        shape = None if x_info.shape is None else tuple(x_info.shape[k] for k in (1, 0, 2))
        infos[x_name] = TensorInfo(x_name, x_info.elem_type, shape)
    has_c = kind == "LSTM"
    dy, dy_h = grads[0] if grads else None, grads[1] if len(grads) > 1 else None
    dy_c = grads[2] if has_c and len(grads) > 2 else None
    if layout:
        dy = None if dy is None else g.transpose(dy, [1, 2, 0, 3])  # [B,T,D,H] → [T,D,B,H]
        dy_h = None if dy_h is None else g.transpose(dy_h, [1, 0, 2])
        dy_c = None if dy_c is None else g.transpose(dy_c, [1, 0, 2])
    names = node.node.input
    outer_names = {k: names[k] for k in (1, 2, 3) if node.has_input(k)}
    if kind == "LSTM" and node.has_input(7):
        outer_names[7] = names[7]
    wanted = [x_name] if node.needs(0) else []
    wanted += [n for k, n in outer_names.items() if node.needs(k)]
    state_inputs = [5, 6] if has_c else [5]
    totals: dict = {}
    state_grads = {k: [] for k in state_inputs}
    batch = g.dims(x, [1])
    for d, where in enumerate(directions):
        inits = []
        for k in state_inputs:
            if node.has_input(k):
                state = node.input(k)
                if layout:
                    state = g.transpose(state, [1, 0, 2])
                inits.append(g.op("Gather", state, g.const(np.array(d, np.int64)), axis=0))
            else:
                inits.append(g.full(g.op("Concat", batch, g.ints([hidden]), axis=0), 0.0))
        body = _body(g, node, kind, funcs[d], d, where, x_name, outer_names, hidden, clip, has_c)
        scan = None
        if dy is not None:
            scan = g.op("Gather", dy, g.const(np.array(d, np.int64)), axis=1)
            if where == "reverse":
                scan = _reverse_time(g, scan)
        picked = [
            None if v is None else g.op("Gather", v, g.const(np.array(d, np.int64)), axis=0)
            for v in ([dy_h, dy_c] if has_c else [dy_h])
        ]
        trips = g.dims(x, [0])
        carried, outer = loop_gradient(
            g,
            node,
            body,
            trip_count=g.squeeze(trips, [0]),
            condition=g.const(np.array(True)),
            inits=inits,
            outputs=inits,
            grads=[*picked, scan],
            wanted_carried=[node.needs(k) for k in state_inputs],
            wanted_outer=wanted,
        )
        for name, value in outer.items():
            if value is not None:
                totals[name] = g.Add(totals[name], value) if name in totals else value
        for k, value in zip(state_inputs, carried, strict=True):
            state_grads[k].append(value)
    results = [None] * node.num_inputs
    if node.needs(0) and x_name in totals:
        results[0] = totals[x_name] if not layout else g.transpose(totals[x_name], [1, 0, 2])
    for k, name in outer_names.items():
        if node.needs(k):
            results[k] = totals.get(name)
    for k in state_inputs:
        parts = state_grads[k]
        if node.needs(k) and all(p is not None for p in parts):
            stacked = g.op("Concat", *[g.unsqueeze(p, [0]) for p in parts], axis=0)
            results[k] = g.transpose(stacked, [1, 0, 2]) if layout else stacked
    return results


def _reverse_time(g, v):
    big = np.iinfo(np.int64)
    return g.op("Slice", v, g.ints([-1]), g.ints([big.min]), g.ints([0]), g.ints([-1]))


def _body(g, node, kind, funcs, d, where, x_name, outer_names, hidden, clip, has_c):
    """The loop body of one direction: (iteration, cond, h[, c]) → (cond, h[, c], h)."""
    infos = node.ctx.infos
    b = GraphBuilder(g.opset, g._names, g.dtype)
    x_info = infos[x_name]
    dtype = x_info.dtype
    batch = x_info.shape[1] if x_info.shape is not None else None
    names = g._names
    it = onnx.helper.make_tensor_value_info(names.fresh("t"), onnx.TensorProto.INT64, [])
    cond = onnx.helper.make_tensor_value_info(names.fresh("cond"), onnx.TensorProto.BOOL, [])
    elem = x_info.elem_type
    states = [onnx.helper.make_tensor_value_info(names.fresh(n), elem, [batch, hidden])
              for n in (["h", "c"] if has_c else ["h"])]  # fmt: skip
    with b.scope(f"{node.name}_{where}_cell", dtype=dtype):
        x = b.value(x_name)
        step = b.value(it.name)
        if where == "reverse":
            last = b.Sub(b.squeeze(b.dims(x, [0]), [0]), b.const(np.array(1, np.int64)))
            step = b.Sub(last, step)
        x_t = b.op("Gather", x, step, axis=0)
        index = b.const(np.array(d, np.int64))

        def weight(k):
            return b.op("Gather", b.value(outer_names[k]), index, axis=0)

        w, r = weight(1), weight(2)
        size = GATES[kind] * hidden
        if 3 in outer_names:
            wb, rb = b.op("Split", weight(3), b.ints([size, size]), axis=0, num_outputs=2)
        else:
            wb = rb = b.const(np.zeros(size, dtype))
        p = weight(7) if 7 in outer_names else None
        h = b.value(states[0].name)
        c = b.value(states[1].name) if has_c else None
        h_new, c_new = _cell(b, node, kind, funcs, x_t, h, c, (w, r, wb, rb, p), clip)
        cond_out = b.Identity(b.value(cond.name))
        outs = [cond_out, b.Identity(h_new)] + ([b.Identity(c_new)] if has_c else [])
        outs.append(b.Identity(h_new))
    nodes = b.export_nodes(outs)
    out_infos = [
        onnx.helper.make_tensor_value_info(outs[0].name, onnx.TensorProto.BOOL, []),
        *(onnx.helper.make_tensor_value_info(v.name, elem, [batch, hidden]) for v in outs[1:]),
    ]
    body = onnx.helper.make_graph(nodes, names.fresh("cell"), [it, cond, *states], out_infos)
    _infer_body(body, infos, [x_name, *outer_names.values()], g.opset)
    return body


def _infer_body(body: onnx.GraphProto, infos: dict, outer: list[str], opset: int) -> None:
    """Types and shapes of the body's values, by shape inference on the body alone (the
    outer values it reads declared as inputs)."""
    declared = [infos[n].value_info() for n in outer if n in infos and infos[n].elem_type]
    graph = onnx.helper.make_graph(
        list(body.node), "cell", [*body.input, *declared], list(body.output)
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # best effort: unknown shapes fall back on run-time shapes
        return
    for vi in [*inferred.graph.value_info, *body.input, *body.output]:
        info = TensorInfo.from_value_info(vi)
        if info is not None and info.elem_type:
            infos.setdefault(vi.name, info)


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
