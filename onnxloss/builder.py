"""The node-building API handed to loss and regularizer plugins.

A plugin receives a :class:`GraphBuilder` ``g`` and :class:`onnx_graphsurgeon.Variable`
handles and writes ONNX the way it would write numpy::

    d = g.Sub(prediction, target)      # any ONNX operator, by its op type
    per_sample = g.Mul(d, d)
    s = g.reduce_sum(per_sample, axes=[1])   # opset-aware helper

Everything the builder emits lands in a separate onnx-graphsurgeon graph (the *fragment*),
so the caller's graph is never rebuilt; the rewriter appends the fragment's nodes at the end.
Every name is fresh and deterministic, python numbers become constants of the term's float
type, and the helpers pick the operator form valid for the model's opset.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .naming import NameAllocator
from .tensor_info import TensorInfo

Value = gs.Variable
ValueLike = gs.Variable | float | int | np.ndarray

#: Reductions whose ``axes`` moved from an attribute to an input at opset 18
#: (ReduceSum moved at 13, below anything onnxloss emits for).
_AXES_INPUT_FROM = {"ReduceSum": 13}
_AXES_INPUT_FROM_DEFAULT = 18


class GraphBuilder:
    """Builds the loss fragment: ONNX nodes over named tensors of the original model.

    Attributes:
        opset: the model's ``ai.onnx`` opset; emit nodes valid for it.
        dtype: numpy float type of the term being built (the bound output's type); python
            numbers passed as inputs become constants of this type.
    """

    def __init__(
        self, opset: int, names: NameAllocator, dtype=np.float32, share_constants: bool = False
    ):
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self._names = names
        self._scope = "onnxloss"
        self._nodes: list[gs.Node] = []
        self._inputs: dict[str, gs.Variable] = {}
        # values made by emitted nodes, by name, so that a later lookup by name (a copied
        # node's input) finds the same object
        self._produced: dict[str, gs.Variable] = {}
        # (dtype, shape, bytes) -> one Constant, when the fragment is exported in one piece
        self._constants: dict[tuple, gs.Variable] | None = {} if share_constants else None

    # -- tensors coming from the original model ------------------------------------------
    def input(self, info: TensorInfo) -> Value:
        """A handle on a tensor of the original model (output, initializer, graph input)."""
        var = self._inputs.get(info.name)
        if var is None:
            shape = None if info.shape is None else list(info.shape)
            var = gs.Variable(info.name, dtype=info.dtype, shape=shape)
            self._inputs[info.name] = var
        return var

    @contextlib.contextmanager
    def scope(self, prefix: str, dtype: np.dtype | None = None) -> Iterator[GraphBuilder]:
        """Names emitted inside start with ``prefix``; constants take ``dtype``."""
        saved = self._scope, self.dtype
        self._scope = prefix
        if dtype is not None:
            self.dtype = np.dtype(dtype)
        try:
            yield self
        finally:
            self._scope, self.dtype = saved

    # -- generic node emission -----------------------------------------------------------
    def op(
        self,
        op_type: str,
        *inputs: ValueLike | None,
        num_outputs: int = 1,
        domain: str = "",
        **attrs: object,
    ) -> Value | tuple[Value, ...]:
        """Emit one ``op_type`` node and return its output(s).

        ``None`` inputs are omitted optional inputs. Attribute values are python values
        (int, float, str, lists, numpy arrays for tensors).
        """
        name = self._names.fresh(f"{self._scope}_{op_type}")
        outputs = [gs.Variable(name)]
        outputs += [gs.Variable(self._names.fresh(f"{name}_{i}")) for i in range(1, num_outputs)]
        self._produced.update((o.name, o) for o in outputs)
        node = gs.Node(
            op_type,
            name=name,
            attrs={k: _attr(v, f"{name}_{k}") for k, v in attrs.items()},
            inputs=[self._as_value(v) for v in inputs],
            outputs=outputs,
            domain=domain or None,
        )
        self._nodes.append(node)
        return outputs[0] if num_outputs == 1 else tuple(outputs)

    def __getattr__(self, op_type: str):
        # g.Mul(a, b) is g.op("Mul", a, b): ONNX op types start with a capital letter.
        if op_type[:1].isupper():
            return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)
        raise AttributeError(op_type)

    def const(self, value: float | int | Sequence | np.ndarray, dtype=None) -> Value:
        """A ``Constant`` node. Python numbers default to the term's float type.

        Constants are nodes, not initializers, so a trainer that trains "all float
        initializers" never picks them up as weights.
        """
        if isinstance(value, np.ndarray) and dtype is None:
            array = value
        else:
            array = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if self._constants is not None and key in self._constants:
            return self._constants[key]
        name = self._names.fresh(f"{self._scope}_const")
        out = gs.Variable(name, dtype=array.dtype, shape=list(array.shape))
        self._produced[name] = out
        tensor = onnx.numpy_helper.from_array(array, name)
        self._nodes.append(gs.Node("Constant", name=name, attrs={"value": tensor}, outputs=[out]))
        if self._constants is not None:
            self._constants[key] = out
        return out

    def _as_value(self, v: ValueLike | None) -> gs.Tensor:
        if v is None:
            return gs.Variable.empty()
        if isinstance(v, gs.Variable):
            return v
        if isinstance(v, np.ndarray):
            return self.const(v)
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            return self.const(float(v))
        raise TypeError(f"cannot use {type(v).__name__} {v!r} as a node input")

    # -- opset-aware helpers ---------------------------------------------------------------
    def reduce(
        self, op_type: str, x: Value, axes: Sequence[int] | None = None, keepdims: bool = False
    ) -> Value:
        """``Reduce*`` over ``axes`` (all axes when None), in the model opset's form."""
        keep = int(bool(keepdims))
        if axes is None:
            return self.op(op_type, x, keepdims=keep)
        if self.opset >= _AXES_INPUT_FROM.get(op_type, _AXES_INPUT_FROM_DEFAULT):
            return self.op(op_type, x, self.const(list(axes), np.int64), keepdims=keep)
        return self.op(op_type, x, axes=list(axes), keepdims=keep)

    def reduce_sum(self, x: Value, axes: Sequence[int] | None = None, keepdims=False) -> Value:
        return self.reduce("ReduceSum", x, axes, keepdims)

    def reduce_mean(self, x: Value, axes: Sequence[int] | None = None, keepdims=False) -> Value:
        return self.reduce("ReduceMean", x, axes, keepdims)

    def clip(self, x: Value, low: float | None = None, high: float | None = None) -> Value:
        """``Clip`` with bounds as inputs (opset 11 and later)."""
        lo = None if low is None else self.const(low)
        hi = None if high is None else self.const(high)
        return self.op("Clip", x, lo, hi)

    def unsqueeze(self, x: Value, axes: Sequence[int]) -> Value:
        return self.op("Unsqueeze", x, self.const(list(axes), np.int64))

    def squeeze(self, x: Value, axes: Sequence[int]) -> Value:
        return self.op("Squeeze", x, self.const(list(axes), np.int64))

    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        return self.op("Reshape", x, self.const(list(shape), np.int64))

    def cast(self, x: Value, dtype) -> Value:
        """``Cast`` to ``dtype``; the result keeps ``x``'s static shape for later helpers."""
        out = self.op("Cast", x, to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
        out.dtype, out.shape = np.dtype(dtype), x.shape
        return out

    def square(self, x: Value) -> Value:
        """``x * x`` (ReduceSumSquare and Pow have no or fragile gradients in the runtime)."""
        return self.op("Mul", x, x)

    def add_all(self, values: Sequence[Value]) -> Value:
        """``values[0] + values[1] + ...`` as a chain of ``Add`` (``Sum`` has no gradient in
        onnxruntime-training 1.19.2)."""
        total = values[0]
        for value in values[1:]:
            total = self.op("Add", total, value)
        return total

    def sum_of_squares(self, tensors: Sequence[Value]) -> Value:
        """``Σ_t Σ t²`` over every element of every tensor: a scalar."""
        return self.add_all([self.reduce_sum(self.square(t)) for t in tensors])

    def sum_of_abs(self, tensors: Sequence[Value]) -> Value:
        """``Σ_t Σ |t|`` over every element of every tensor: a scalar."""
        return self.add_all([self.reduce_sum(self.op("Abs", t)) for t in tensors])

    def sum_per_sample(self, x: Value, rank: int | None) -> Value:
        """Sum a ``[N, ...]`` tensor over every axis but the first: shape ``[N]``."""
        if rank == 1:
            return x
        if rank is not None and rank >= 2:
            return self.reduce_sum(x, list(range(1, rank)))
        # Unknown rank: Flatten keeps axis 0 and folds the rest ([N] becomes [N, 1]).
        return self.reduce_sum(self.op("Flatten", x, axis=1), [1])

    def column_index(self, labels: Value) -> Value:
        """Class labels of shape ``[N]`` or ``[N, 1]`` as an int64 ``[N, 1]`` tensor."""
        return self.reshape(self.cast(labels, np.int64), [-1, 1])

    # -- tensors and shapes (the gradient rules' helpers) -------------------------------------
    def value(self, name: str, dtype=None, shape=None) -> Value:
        """A handle on an existing tensor of the model by name (type and shape optional)."""
        var = self._produced.get(name) or self._inputs.get(name)
        if var is None:
            var = gs.Variable(name, dtype=dtype, shape=None if shape is None else list(shape))
            self._inputs[name] = var
        return var

    def ints(self, values: Sequence[int]) -> Value:
        """A 1-D int64 constant (axes, shapes, pads)."""
        return self.const(np.asarray(list(values), np.int64).reshape(-1))

    def shape(self, x: Value) -> Value:
        """``Shape(x)``: the 1-D int64 shape of ``x`` at run time."""
        return self.op("Shape", x)

    def dims(self, x: Value, axes: Sequence[int]) -> Value:
        """The run-time sizes of ``x`` along ``axes`` (negative allowed), 1-D int64."""
        return self.op("Gather", self.shape(x), self.ints(axes), axis=0)

    def size_as(self, x: Value, dtype=None) -> Value:
        """The number of elements of ``x`` as a scalar of ``dtype`` (default: the term's)."""
        return self.cast(self.op("Size", x), dtype if dtype is not None else self.dtype)

    def full(self, shape: Value, fill: float, dtype=None) -> Value:
        """``ConstantOfShape(shape)`` filled with ``fill`` of ``dtype`` (default: the term's)."""
        array = np.asarray([fill], dtype=dtype if dtype is not None else self.dtype)
        return self.op("ConstantOfShape", shape, value=array)

    def zeros_like(self, x: Value, dtype=None) -> Value:
        return self.full(self.shape(x), 0.0, dtype)

    def ones_like(self, x: Value, dtype=None) -> Value:
        return self.full(self.shape(x), 1.0, dtype)

    def mask(self, condition: Value, dtype=None) -> Value:
        """A bool tensor as 0/1 of ``dtype`` (default: the term's float type)."""
        return self.cast(condition, dtype if dtype is not None else self.dtype)

    def keep(self, condition: Value, value: Value) -> Value:
        """``value`` where ``condition``, else 0, as ``value · mask(condition)``.

        For gradients that are finite wherever the condition is false (an incoming
        gradient, a finite multiple of it): onnxruntime's CPU ``Where`` is about ten times
        slower than ``Cast`` + ``Mul`` on large tensors (3.6 ms against 0.6 ms for a
        1000 × 512 float32 tensor, 1.19.2 and 1.32 alike), and a ReLU network's backward
        pass is mostly such selections. Keep ``Where`` when the value can be infinite or NaN
        where it is not selected (``0·inf`` is NaN).
        """
        return self.Mul(value, self.mask(condition))

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        return self.op("Transpose", x, perm=list(perm))

    def expand_as(self, x: Value, like: Value) -> Value:
        """``x`` broadcast to the run-time shape of ``like``."""
        return self.op("Expand", x, self.shape(like))

    def sum_to(
        self,
        grad: Value,
        like: Value,
        grad_shape: Sequence | None = None,
        like_shape: Sequence | None = None,
    ) -> Value:
        """Sum ``grad`` over the axes along which ``like`` was broadcast to ``grad``'s shape
        (numpy rules), giving ``like``'s shape: the gradient of a broadcast input.

        With both static shapes known, the axes are found here (none: ``grad`` itself);
        otherwise they are computed from ``Shape`` at run time: the axes where ``like``'s
        shape, padded with leading ones, differs from ``grad``'s.
        """
        if grad_shape is not None and len(grad_shape) == 0:
            return grad  # a scalar result: every input was a scalar
        axes = _broadcast_axes(grad_shape, like_shape)
        if axes is not None:
            if not axes:
                return grad
            lead = len(grad_shape) - len(like_shape)
            summed = self.reduce_sum(grad, axes, keepdims=True)
            return self.squeeze(summed, list(range(lead))) if lead else summed
        like_dims = self.shape(like)
        grad_dims = self.shape(grad)
        missing = self.op("Sub", self.op("Size", grad_dims), self.op("Size", like_dims))
        ones = self.full(self.unsqueeze(missing, [0]), 1, np.int64)
        padded = self.op("Concat", ones, like_dims, axis=0)
        differs = self.op("Not", self.op("Equal", padded, grad_dims))
        axes_value = self.reshape(self.op("NonZero", differs), [-1])
        summed = self.op("ReduceSum", grad, axes_value, keepdims=1, noop_with_empty_axes=1)
        return self.op("Reshape", summed, like_dims)

    # -- subgraphs (control-flow gradients) --------------------------------------------------
    def nested(self) -> GraphBuilder:
        """A builder for a subgraph (a branch, a loop body): same names, opset and float type,
        and the same handles on outer tensors, so its nodes can read them."""
        sub = GraphBuilder(self.opset, self._names, self.dtype)
        sub._scope = self._scope
        sub._inputs = self._inputs
        sub._produced = self._produced
        if self._constants is not None:  # outer constants are visible inside, not the reverse
            sub._constants = dict(self._constants)
        return sub

    def fresh_value(self, hint: str, dtype=None, shape=None) -> Value:
        """A new named value (a subgraph input), reachable by name through :meth:`value`."""
        return self.value(self._names.fresh(hint), dtype, shape)

    def subgraph(self, hint: str, inputs: Sequence[Value], outputs: Sequence[Value]) -> gs.Graph:
        """The nodes emitted into this (nested) builder as a graph attribute value, dead
        nodes removed."""
        graph = gs.Graph(
            nodes=list(self._nodes),
            inputs=list(inputs),
            outputs=list(outputs),
            name=self._names.fresh(hint),
            opset=self.opset,
        )
        graph.cleanup(remove_unused_graph_inputs=False)
        return graph

    def copy_node(self, node: onnx.NodeProto, rename: dict[str, str]) -> onnx.NodeProto:
        """Emit a copy of ``node`` whose outputs get fresh names (recorded in ``rename``) and
        whose inputs are renamed through ``rename``; returns the copy as a NodeProto, whose
        names are those of the emitted node (for a walk over the copies)."""
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):  # fmt: skip
            raise ValueError(
                f"cannot copy node '{node.name}' ({node.op_type}): it holds a subgraph"
            )
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = self._names.fresh(f"{node.name or node.op_type}_copy")
        del copy.input[:]
        copy.input.extend(rename.get(i, i) for i in node.input)
        del copy.output[:]
        for out in node.output:
            if out:
                rename[out] = self._names.fresh(out)
            copy.output.append(rename[out] if out else "")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in copy.attribute}
        outputs = [gs.Variable(o) if o else gs.Variable.empty() for o in copy.output]
        self._produced.update((o.name, o) for o in outputs if o.name)
        self._nodes.append(
            gs.Node(
                copy.op_type,
                name=copy.name,
                attrs={k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()},
                inputs=[self.value(i) if i else gs.Variable.empty() for i in copy.input],
                outputs=outputs,
                domain=copy.domain or None,
            )
        )
        return copy

    # -- export -----------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the emitted nodes, for :meth:`export_nodes` ``start``."""
        return len(self._nodes)

    def export_nodes(self, outputs: Sequence[Value], start: int = 0) -> list[onnx.NodeProto]:
        """The nodes emitted since ``start`` that compute ``outputs``, dead ones removed,
        in emission order (nodes before ``start`` are taken as already exported).

        Export each range once: onnx-graphsurgeon's cleanup disconnects the dead nodes.
        """
        # No graph inputs: the nodes need none to export, and onnx-graphsurgeon's cleanup
        # compares every input with every used tensor (quadratic with thousands of
        # penalised weights). No copy either: the range is not exported again.
        graph = gs.Graph(nodes=self._nodes[start:], outputs=list(outputs), opset=self.opset)
        # No toposort: every value is made by an earlier call, so emission order is already
        # topological, and keeping it keeps each term's nodes together.
        graph.cleanup(remove_unused_graph_inputs=False)
        return list(gs.export_onnx(graph, do_type_check=False).graph.node)


def _broadcast_axes(grad_shape, like_shape) -> list[int] | None:
    """Axes of ``grad_shape`` to sum to get ``like_shape`` under numpy broadcasting, when
    the static shapes decide it; None when only the run-time shapes can."""
    if grad_shape is None or like_shape is None or len(like_shape) > len(grad_shape):
        return None
    lead = len(grad_shape) - len(like_shape)
    axes = list(range(lead))
    for k, (big, small) in enumerate(zip(grad_shape[lead:], like_shape, strict=True)):
        if small == 1:
            if big != 1:  # broadcast, or unknown: summing an axis of size 1 changes nothing
                axes.append(lead + k)
        elif isinstance(small, int):
            continue  # a fixed size other than 1 was not broadcast
        elif small is None or small != big:
            return None  # a symbolic size may be 1 at run time
    return axes


def _attr(value: object, name: str) -> object:
    # A TensorProto goes through onnx-graphsurgeon's exporter untouched; a gs.Constant
    # would not (0-d arrays come out with shape [1]).
    if isinstance(value, np.ndarray):
        return onnx.numpy_helper.from_array(value, name)
    return value
