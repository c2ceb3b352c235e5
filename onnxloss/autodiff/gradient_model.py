"""``gradient(model)``: the loss model with one more output per differentiated tensor."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from ..model_io import ModelLike, load_model
from ..registry import PluginRegistry
from ..rewrite import _validate_model
from .description import GRADIENT_KEY, write_metadata
from .walk import GradientGraph, differentiate


def gradient(
    model: ModelLike,
    wrt: Sequence[str] | None = None,
    *,
    loss_output: str | None = None,
    validate: bool = True,
    registry: PluginRegistry | None = None,
) -> onnx.ModelProto:
    """Reverse-mode differentiation of a loss model, as a graph pass.

    Args:
        model: a ``ModelProto`` (never modified) or a path; its ``loss_output`` (default:
            the first output) is a float tensor, usually a scalar (for a tensor, the
            gradient of the sum of its elements is taken).
        wrt: names of the initializers or graph inputs to differentiate with respect to;
            None takes :func:`onnxloss.readiness.default_trainables` (every float
            initializer of rank >= 1, the trainer's default).
        loss_output: the output to differentiate.
        validate: run ``onnx.checker.check_model(full_check=True)`` on the result.
        registry: where the gradient rules come from (default: the process-wide registry).

    Returns:
        A copy of ``model`` with every original input, output, node, initializer,
        function and metadata entry, the gradient nodes appended, and one output
        ``∂loss/∂w`` per tensor ``w`` of ``wrt`` after the original outputs, named
        ``<w>_grad`` (or ``<w>_grad_<k>`` when that name is taken), with ``w``'s type and
        shape. A metadata entry ``onnxloss.gradient`` records the loss and the gradient
        names (read it with :func:`onnxloss.autodiff.describe_training_step`).

    Raises:
        GradientError: an operator on the path has no rule, a tensor of ``wrt`` is missing
            or does not reach the loss, or the loss is not a float output.
    """
    model = load_model(model)
    built = differentiate(model, wrt, loss_output, registry)
    nodes = built.builder.export_nodes(built.gradients)
    result = _assemble(built, nodes)
    if validate:
        _validate_model(result)
    return result


def _assemble(built: GradientGraph, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(built.model)
    out.graph.node.extend(nodes)
    for info, value in zip(built.wrt, built.gradients, strict=True):
        out.graph.output.append(info.renamed(value.name).value_info())
    write_metadata(out, GRADIENT_KEY, gradient_metadata(built))
    return out


def gradient_metadata(built: GradientGraph) -> dict:
    """The record a trainer reads: the loss, the data inputs, each tensor's gradient."""
    wrt = {t.name for t in built.wrt}
    return {
        "loss": built.loss.name,
        "data_inputs": [n for n in built.index.input_names if n not in wrt],
        "outputs": [n for n in built.index.output_names if n != built.loss.name],
        "trained": [
            {"name": t.name, "gradient": v.name, "dtype": t.type_name, "shape": dims(t.shape)}
            for t, v in zip(built.wrt, built.gradients, strict=True)
        ],
    }


def dims(shape) -> list:
    """A shape as JSON: ints, symbolic names, None for unknown sizes."""
    return [] if shape is None else [d if isinstance(d, int | str) else None for d in shape]
