"""Gradient rules of control flow: ``If``, ``Loop`` and ``Scan`` (plugin ``control_flow``).

A subgraph's intermediate values are not visible outside the node that runs it, so the
gradient recomputes what it needs:

* ``If``: a second ``If`` on the same condition whose branches recompute the forward
  branch and run the reverse-mode walk over it, returning the gradients of the outer
  values the branch reads (zeros for those a branch does not use).
* ``Loop``: a *recording* loop reruns the forward loop and stacks the loop-carried values
  entering each iteration; a *backward* loop then visits the iterations from last to
  first: it takes iteration ``t``'s recorded values, recomputes the body, runs the walk
  over it with the gradients of the body's outputs (carried from iteration ``t + 1``,
  and the slice ``t`` of each scan output's gradient) and carries the gradient of the
  body's inputs to iteration ``t - 1``, summing the gradients of the outer values the
  body reads. Carried values must keep their shape from one iteration to the next.
* ``Scan``: run as such a loop, whose body first gathers iteration ``t``'s element of each
  scan input (along its axis, in its direction); the scan inputs are then outer values of
  the body, whose gradients the walk returns whole.

Subgraphs nested inside a differentiated body are not handled (the rule says so).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ...hookspecs import hookimpl
from ...model_index import subgraphs
from ...tensor_info import TensorInfo
from . import RuleTable

rules = RuleTable()


def _nested_check(node) -> str:
    for sub in subgraphs(node.node):
        for inner in sub.node:
            if subgraphs(inner):
                return (
                    f"its subgraph holds another subgraph (node '{inner.name or inner.op_type}'"
                    f", {inner.op_type}): nested control flow is not differentiated"
                )
    return ""


def _infos(node):
    return node.ctx.infos


def _register_copy(infos, rename: dict[str, str]) -> None:
    """Types and shapes of copied values, from the originals'."""
    for old, new in rename.items():
        info = infos.get(old)
        if info is not None and new not in infos:
            infos[new] = info.renamed(new)


def _copy_body(b, body: onnx.GraphProto, rename: dict[str, str], infos) -> list[onnx.NodeProto]:
    copies = [b.copy_node(n, rename) for n in body.node]
    _register_copy(infos, rename)
    return copies


def _typed(value, info: TensorInfo | None):
    if info is not None and info.elem_type:
        value.dtype = info.dtype
        value.shape = None if info.shape is None else list(info.shape)
    return value


def _engine(node, b):
    return type(node.engine)(node.ctx, b, node.engine.registry)


def _add_seed(b, seeds: dict, name: str, value) -> None:
    seeds[name] = b.Add(seeds[name], value) if name in seeds else value


@rules.define("If", non_differentiable=(0,), check=_nested_check)
def if_(g, node, grads):
    """a second If on the same condition: each branch recomputes the forward branch and
    returns the gradients of the outer values it reads"""
    implicit = node.implicit_inputs
    wanted = [n for p, n in enumerate(implicit) if node.needs(node.num_inputs + p)]
    if not wanted:
        return [None]
    infos = _infos(node)
    branches = {}
    for attr in ("then_branch", "else_branch"):
        branch = node.attr(attr)
        b = g.nested()
        rename: dict[str, str] = {}
        copies = _copy_body(b, branch, rename, infos)
        seeds: dict = {}
        for out, grad in zip(branch.output, grads, strict=True):
            if grad is not None:
                _add_seed(b, seeds, rename.get(out.name, out.name), grad)
        found = _engine(node, b).run(copies, seeds, wanted)
        outs = []
        for name in wanted:
            value = found[name]
            if value is None:
                value = b.zeros_like(b.value(name))
            outs.append(_typed(b.Identity(value), infos.get(name)))
        branches[attr] = b.subgraph(f"{node.name}_{attr}_grad", [], outs)
    results = g.op("If", node.input(0), num_outputs=len(wanted), **branches)
    results = results if isinstance(results, tuple) else (results,)
    by_name = dict(zip(wanted, results, strict=True))
    return [None] + [by_name.get(n) for n in implicit]


def _loop_check(node) -> str:
    reason = _nested_check(node)
    if reason:
        return reason
    return ""


@rules.define("Loop", non_differentiable=(0, 1), check=_loop_check)
def loop(g, node, grads):
    """a recording loop stacks each iteration's carried inputs; a backward loop runs the
    iterations in reverse, recomputing the body and walking back through it"""
    body = node.attr("body")
    n_carried = len(body.input) - 2
    inits = [node.input(2 + k) for k in range(n_carried)]
    wanted_outer = [
        n for p, n in enumerate(node.implicit_inputs) if node.needs(node.num_inputs + p)
    ]
    found = loop_gradient(
        g,
        node,
        body,
        trip_count=node.input(0),
        condition=node.input(1),
        inits=inits,
        outputs=[node.output(k) for k in range(node.num_outputs)],
        grads=grads,
        wanted_carried=[node.needs(2 + k) for k in range(n_carried)],
        wanted_outer=wanted_outer,
    )
    carried, outer = found
    explicit = [None, None, *carried]
    return explicit + [outer.get(n) for n in node.implicit_inputs]


def loop_gradient(
    g,
    node,
    body: onnx.GraphProto,
    *,
    trip_count,
    condition,
    inits: Sequence,
    outputs: Sequence,
    grads: Sequence,
    wanted_carried: Sequence[bool],
    wanted_outer: Sequence[str],
):
    """The gradients of a loop (ONNX ``Loop`` semantics, given by its parts) with respect to
    its initial carried values and the outer values its body reads.

    Returns ``(carried, outer)``: a list with the gradient of each initial value (or None)
    and a dict outer name → gradient. Also used by the recurrent rules, whose cells run as
    loops.
    """
    infos = _infos(node)
    n_carried = len(body.input) - 2
    n_scan = len(body.output) - 1 - n_carried
    body_in = [TensorInfo.from_value_info(v) or infos.get(v.name) for v in body.input]
    body_in = [infos.get(v.name, i) if i is None or not i.elem_type else i
               for v, i in zip(body.input, body_in, strict=True)]  # fmt: skip

    # 1. the recording loop: the forward loop again, stacking each iteration's inputs
    rb = g.nested()
    iteration = rb.fresh_value("iteration", np.int64, [])
    cond_in = rb.fresh_value("cond", np.bool_, [])
    carried = [
        _typed(rb.fresh_value(f"{v.name}_in"), body_in[2 + k]) for k, v in enumerate(body.input[2:])
    ]
    rename = {body.input[0].name: iteration.name, body.input[1].name: cond_in.name}
    rename.update({v.name: c.name for v, c in zip(body.input[2:], carried, strict=True)})
    _copy_body(rb, body, rename, infos)
    forward_outs = [rb.Identity(rb.value(rename.get(o.name, o.name))) for o in body.output]
    # flattened: the runtimes agree on stacking 1-D elements (onnx.reference concatenates)
    records = [rb.reshape(c, [-1]) for c in carried] or [rb.reshape(iteration, [-1])]
    record_graph = rb.subgraph(
        f"{node.name}_record",
        [iteration, cond_in, *carried],
        [
            *(_typed(v, _out_info(body, k, infos)) for k, v in enumerate(forward_outs)),
            *(_typed(r, None) for r in records),
        ],  # fmt: skip
    )
    for r, c in zip(records, carried, strict=False):
        r.dtype, r.shape = c.dtype, None
    if not carried:
        records[0].dtype, records[0].shape = np.int64, [1]
    recorded = g.op(
        "Loop",
        trip_count,
        condition,
        *inits,
        body=record_graph,
        num_outputs=n_carried + n_scan + len(records),
    )
    recorded = recorded if isinstance(recorded, tuple) else (recorded,)
    stacks = list(recorded[n_carried + n_scan :])
    trips = g.op("Gather", g.shape(stacks[0]), g.const(np.array(0, np.int64)), axis=0)

    # 2. the backward loop, iterations in reverse
    floats = [k for k in range(n_carried) if body_in[2 + k] is None or body_in[2 + k].is_float]
    bb = g.nested()
    j = bb.fresh_value("reverse_iteration", np.int64, [])
    cond_b = bb.fresh_value("cond", np.bool_, [])
    d_carried = [_typed(bb.fresh_value(f"{body.input[2 + k].name}_grad"), body_in[2 + k])
                 for k in floats]  # fmt: skip
    d_outer = [_typed(bb.fresh_value(f"{n}_grad_sum"), infos.get(n)) for n in wanted_outer]
    t = bb.Sub(bb.Sub(trips, bb.const(np.array(1, np.int64))), j)
    infos[t.name] = TensorInfo(t.name, onnx.TensorProto.INT64, ())
    at_t = {}
    for k in range(n_carried):
        value = bb.op("Reshape", bb.op("Gather", stacks[k], t, axis=0), g.shape(inits[k]))
        at_t[k] = _typed(value, body_in[2 + k])
        infos[value.name] = (body_in[2 + k] or TensorInfo(value.name, 0)).renamed(value.name)
    true = bb.const(np.array(True))
    rename = {body.input[0].name: t.name, body.input[1].name: true.name}
    rename.update({body.input[2 + k].name: at_t[k].name for k in range(n_carried)})
    copies = _copy_body(bb, body, rename, infos)
    seeds: dict = {}
    for pos, k in enumerate(floats):
        _add_seed(bb, seeds, rename.get(body.output[1 + k].name, body.output[1 + k].name),
                  d_carried[pos])  # fmt: skip
    for s in range(n_scan):
        grad = grads[n_carried + s]
        if grad is not None:
            name = body.output[1 + n_carried + s].name
            _add_seed(bb, seeds, rename.get(name, name), bb.op("Gather", grad, t, axis=0))
    wrt = [at_t[k].name for k in floats] + list(wanted_outer)
    found = _engine(node, bb).run(copies, seeds, wrt)
    new_carried = []
    for pos, k in enumerate(floats):
        value = found[at_t[k].name]
        new_carried.append(
            bb.Identity(value if value is not None else bb.zeros_like(d_carried[pos]))
        )
    new_outer = []
    for acc, name in zip(d_outer, wanted_outer, strict=True):
        value = found[name]
        new_outer.append(bb.Add(acc, value) if value is not None else bb.Identity(acc))
    for v, like in zip([*new_carried, *new_outer], [*d_carried, *d_outer], strict=True):
        v.dtype, v.shape = like.dtype, like.shape
    cond_out = bb.Identity(true)
    cond_out.dtype, cond_out.shape = np.bool_, []
    back_graph = bb.subgraph(
        f"{node.name}_backward",
        [j, cond_b, *d_carried, *d_outer],
        [cond_out, *new_carried, *new_outer],
    )
    init_carried = [grads[k] if grads[k] is not None else g.zeros_like(outputs[k]) for k in floats]
    init_outer = [g.zeros_like(g.value(n)) for n in wanted_outer]
    if not floats and not wanted_outer:
        return [None] * n_carried, {}
    back = g.op(
        "Loop",
        trips,
        g.const(np.array(True)),
        *init_carried,
        *init_outer,
        body=back_graph,
        num_outputs=len(floats) + len(wanted_outer),
    )
    back = back if isinstance(back, tuple) else (back,)
    carried_grads = [None] * n_carried
    for pos, k in enumerate(floats):
        if wanted_carried[k]:
            carried_grads[k] = back[pos]
    outer = dict(zip(wanted_outer, back[len(floats) :], strict=True))
    return carried_grads, outer


def _scan_check(node) -> str:
    reason = _nested_check(node)
    if reason:
        return reason
    n_scan_in = node.attr("num_scan_inputs")
    ranks = [node.input_rank(node.num_inputs - n_scan_in + m) for m in range(n_scan_in)]
    outs = len(node.attr("body").output) - (node.num_inputs - n_scan_in)
    if None in ranks or any(node.output_rank(node.num_outputs - outs + k) is None
                            for k in range(outs)):  # fmt: skip
        return "the ranks of its scan inputs and outputs must be known"
    return ""


@rules.define("Scan", check=_scan_check)
def scan(g, node, grads):
    """as a loop whose body gathers each scan input's element for iteration t"""
    body = node.attr("body")
    m = node.attr("num_scan_inputs")
    n = node.num_inputs - m
    k_out = len(body.output) - n
    in_axes = list(node.attr("scan_input_axes") or [0] * m)
    in_dirs = list(node.attr("scan_input_directions") or [0] * m)
    out_axes = list(node.attr("scan_output_axes") or [0] * k_out)
    out_dirs = list(node.attr("scan_output_directions") or [0] * k_out)
    names = g._names
    first = node.input(n)
    axis0 = in_axes[0] % node.input_rank(n)
    trips = g.squeeze(g.dims(first, [axis0]), [0])
    it = onnx.helper.make_tensor_value_info(names.fresh("t"), onnx.TensorProto.INT64, [])
    cond = onnx.helper.make_tensor_value_info(names.fresh("cond"), onnx.TensorProto.BOOL, [])
    last = names.fresh("last")
    nodes = [
        onnx.helper.make_node("Sub", [trips.name, _one(g).name], [last]),
    ]
    for j in range(m):
        index = it.name
        if in_dirs[j]:
            index = names.fresh("reverse_t")
            nodes.append(onnx.helper.make_node("Sub", [last, it.name], [index]))
        axis = in_axes[j] % node.input_rank(n + j)
        nodes.append(
            onnx.helper.make_node(
                "Gather", [node.node.input[n + j], index], [body.input[n + j].name], axis=axis
            )
        )
    cond_out = names.fresh("cond_out")
    nodes.append(onnx.helper.make_node("Identity", [cond.name], [cond_out]))
    nodes += list(body.node)
    virtual = onnx.helper.make_graph(
        nodes,
        names.fresh(f"{node.name}_as_loop"),
        [it, cond, *body.input[:n]],
        [onnx.helper.make_tensor_value_info(cond_out, onnx.TensorProto.BOOL, []), *body.output],
    )
    infos = _infos(node)
    for out in (n_.output[0] for n_ in nodes if n_.op_type == "Sub"):
        infos[out] = TensorInfo(out, onnx.TensorProto.INT64, ())
    for vi in body.input[n:]:
        info = TensorInfo.from_value_info(vi)
        if info is not None:
            infos.setdefault(vi.name, info)
    scan_grads = []
    for k in range(k_out):
        grad = grads[n + k]
        if grad is not None:
            rank = node.output_rank(n + k)
            axis = out_axes[k] % rank
            if axis:
                grad = g.transpose(grad, [axis, *(a for a in range(rank) if a != axis)])
            if out_dirs[k]:
                big = np.iinfo(np.int64)
                grad = g.op("Slice", grad, g.ints([-1]), g.ints([big.min]), g.ints([0]),
                            g.ints([-1]))  # fmt: skip
        scan_grads.append(grad)
    scanned = [node.node.input[n + j] for j in range(m) if node.needs(n + j)]
    implicit = [x for p, x in enumerate(node.implicit_inputs) if node.needs(node.num_inputs + p)]
    carried, outer = loop_gradient(
        g,
        node,
        virtual,
        trip_count=trips,
        condition=g.const(np.array(True)),
        inits=[node.input(k) for k in range(n)],
        outputs=[node.output(k) for k in range(n)],
        grads=[*grads[:n], *scan_grads],
        wanted_carried=[node.needs(k) for k in range(n)],
        wanted_outer=list(dict.fromkeys([*scanned, *implicit])),
    )
    explicit = carried + [outer.get(node.node.input[n + j]) for j in range(m)]
    return explicit + [outer.get(x) for x in node.implicit_inputs]


def _one(g):
    return g.const(np.array(1, np.int64))


def _out_info(body: onnx.GraphProto, k: int, infos) -> TensorInfo | None:
    vi = body.output[k]
    return TensorInfo.from_value_info(vi) or infos.get(vi.name)


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
