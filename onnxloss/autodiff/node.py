"""One forward node as a gradient rule sees it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..builder import GraphBuilder, Value
from ..errors import OnnxLossError
from ..passes.node_rules import NodeView, RewriteContext
from ..tensor_info import TensorInfo


class GradientError(OnnxLossError):
    """The gradient cannot be built: an operator on the path has no rule (or a form its rule
    does not handle), a tensor to differentiate is missing or does not reach the loss."""


class GradientNode(NodeView):
    """A node of the forward graph handed to a gradient rule.

    Inputs and outputs are graph values a rule passes to the builder ``g``; static types and
    shapes come from shape inference when it knows them (``input_shape`` and friends return
    None otherwise, and the rule then works from ``g.shape(...)`` at run time). Attributes
    read with :meth:`attr` fall back on the operator schema's defaults.

    Attributes:
        node: the ``onnx.NodeProto`` (read only).
        opset: the opset of the node's domain.
        implicit_inputs: names the node's subgraphs read from the enclosing scope; a
            control-flow rule returns their gradients after those of the explicit inputs.
    """

    def __init__(
        self,
        node: onnx.NodeProto,
        ctx: RewriteContext,
        g: GraphBuilder,
        needs: Sequence[bool],
        implicit_inputs: Sequence[str] = (),
        engine=None,
    ):
        super().__init__(node, ctx)
        self._g = g
        self._needs = list(needs)
        self.implicit_inputs = list(implicit_inputs)
        self.engine = engine

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def domain(self) -> str:
        return self.node.domain

    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def needs(self, index: int) -> bool:
        """Whether the gradient with respect to input ``index`` is wanted (a rule may skip
        computing the others)."""
        return 0 <= index < len(self._needs) and self._needs[index]

    def input(self, index: int) -> Value | None:
        """Input ``index`` as a graph value, or None when it is omitted."""
        if not self.has_input(index):
            return None
        return self._value(self.node.input[index])

    def output(self, index: int) -> Value | None:
        """Output ``index`` as a graph value (the forward result), or None if not declared."""
        if index >= len(self.node.output) or not self.node.output[index]:
            return None
        return self._value(self.node.output[index])

    def output_info(self, index: int) -> TensorInfo | None:
        if index >= len(self.node.output) or not self.node.output[index]:
            return None
        return self.ctx.infos.get(self.node.output[index])

    def input_shape(self, index: int) -> tuple | None:
        info = self.input_info(index)
        return None if info is None else info.shape

    def output_shape(self, index: int) -> tuple | None:
        info = self.output_info(index)
        return None if info is None else info.shape

    def input_rank(self, index: int) -> int | None:
        shape = self.input_shape(index)
        return None if shape is None else len(shape)

    def output_rank(self, index: int) -> int | None:
        shape = self.output_shape(index)
        return None if shape is None else len(shape)

    def require_rank(self, index: int) -> int:
        """The static rank of input ``index``; a :class:`GradientError` if unknown."""
        rank = self.input_rank(index)
        if rank is None:
            raise self.unsupported(
                f"the rank of input #{index} ('{self.node.input[index]}') is unknown",
                "declare its shape (onnx.shape_inference.infer_shapes fills it in)",
            )
        return rank

    def constant_ints(self, index: int) -> list[int] | None:
        """An input holding constant integers (axes, pads...) as a list, else None."""
        value = self.constant_input(index)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    def sum_to_input(self, grad: Value, index: int, grad_shape=None) -> Value:
        """``grad`` (shaped like output 0 unless ``grad_shape`` says otherwise) summed back
        to the shape of input ``index``, which may have been broadcast."""
        shape = self.output_shape(0) if grad_shape is None else grad_shape
        return self._g.sum_to(grad, self.input(index), shape, self.input_shape(index))

    def unsupported(self, what: str, fix: str) -> GradientError:
        """The error a rule raises for a form of its operator it does not handle."""
        return GradientError(
            f"cannot differentiate node '{self.name}' ({self.op_type}): {what}. Fix: {fix}"
        )

    def _value(self, name: str) -> Value:
        info = self.ctx.infos.get(name)
        if info is None or not info.elem_type:
            return self._g.value(name)
        return self._g.value(name, info.dtype, info.shape)
