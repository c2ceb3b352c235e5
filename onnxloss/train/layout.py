"""Which inputs of a loss model are features, targets and sample weights.

Read from the metadata :func:`onnxloss.rewrite` writes (``targets``, ``weights``,
``reduction``), or from conventions for loss models built by other means (a ``label``
input, else the second input). Both backends feed a model through this layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..errors import OnnxLossError, OutputSelectionError
from ..rewrite import read_metadata
from ..tensor_info import TensorInfo

#: Reductions after which the loss is already independent of the batch size (a mean over
#: samples, or over every element); only ``"sum"`` is divided by the batch size.
BATCH_INDEPENDENT = ("mean", "elementwise_mean")


@dataclass
class LossModelLayout:
    """Which inputs of the loss model are features, targets and sample weights."""

    loss_name: str
    reduction: str
    features: list[TensorInfo]
    targets: list[TensorInfo]
    weights: list[TensorInfo]
    outputs: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [*self.features, *self.targets, *self.weights]

    @property
    def per_sample_sum(self) -> bool:
        """Whether the loss is a sum over the batch (the trainer divides it by ``B``)."""
        return self.reduction == "sum"


def describe_layout(
    model: onnx.ModelProto,
    loss_output_name: str,
    sample_weight_name: str | None,
    loss_reduction: str,
) -> LossModelLayout:
    """Read the loss model's layout from the rewriter's metadata (or from conventions)."""
    graph = model.graph
    if not graph.output or graph.output[0].name != loss_output_name:
        first = graph.output[0].name if graph.output else None
        names = [o.name for o in graph.output]
        if loss_output_name in names:
            raise OutputSelectionError(
                f"the loss '{loss_output_name}' is output #{names.index(loss_output_name)} of "
                f"{names}; the trainer differentiates the FIRST output, so put the loss "
                "first (onnxloss.rewrite does this)"
            )
        raise OutputSelectionError(
            f"the model has no output named '{loss_output_name}' (first output: {first!r}); "
            "pass loss_output_name=<name of the scalar loss>, or build the model with "
            "onnxloss.add_loss_output"
        )
    infos = {i.name: TensorInfo.from_value_info(i) for i in graph.input}
    untyped = [name for name, info in infos.items() if info is None]
    if untyped:
        raise OnnxLossError(
            f"the loss model's input(s) {untyped} are not tensors; the trainer feeds tensors only"
        )
    meta = read_metadata(model) or {}
    target_names = list(meta.get("targets", {}))
    weight_names = list(meta.get("weights", []))
    if not meta:
        names = [i.name for i in graph.input]
        target_names = ["label"] if "label" in names else names[1:2]
    missing = [n for n in (*target_names, *weight_names) if n not in infos]
    if missing:
        raise OnnxLossError(
            f"the model's onnxloss metadata names input(s) {missing} that the graph does not "
            f"have (its inputs are {list(infos)}); rewrite the inference model again"
        )
    if sample_weight_name is not None and sample_weight_name not in weight_names:
        if sample_weight_name not in infos:
            raise OutputSelectionError(
                f"sample_weight_name '{sample_weight_name}' is not an input of the loss model; "
                f"its inputs are {list(infos)}"
            )
        weight_names = [sample_weight_name]
    reduction = loss_reduction
    if reduction == "auto":
        reduction = meta.get("reduction", "mean")
        # A mix of "mean" and "elementwise_mean" is independent of the batch size too.
        if set(meta.get("reductions", [reduction])) <= set(BATCH_INDEPENDENT):
            reduction = "mean"
    if reduction != "sum" and reduction not in BATCH_INDEPENDENT:
        raise OnnxLossError(
            f"the loss model mixes reductions ({meta.get('terms')}); the trainer scales one "
            "reduction to a per-sample mean, so use the same reduction for every loss term, "
            "or pass loss_reduction='sum' or 'mean'"
        )
    used = set(target_names) | set(weight_names)
    return LossModelLayout(
        loss_name=loss_output_name,
        reduction=reduction,
        features=[infos[n] for n in infos if n not in used],
        targets=[infos[n] for n in target_names],
        weights=[infos[n] for n in weight_names],
        outputs=[o.name for o in graph.output],
    )
