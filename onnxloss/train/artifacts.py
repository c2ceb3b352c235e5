"""From a loss model to onnxruntime-training artifacts.

Checks what the runtime would otherwise reject deep inside C++ (loss not first, trainable
tensors that are not float32 initializers, IR or opset versions too new, and everything
:func:`onnxloss.check_trainable` finds on the gradient path), rescales a sum-reduced loss
to a per-sample mean, and runs ``artifacts.generate_artifacts`` into a temporary directory
that lives as long as the returned object.
"""

from __future__ import annotations

import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..builder import GraphBuilder
from ..errors import DtypeError, OnnxLossError, OpsetError, OutputSelectionError
from ..model_index import ModelIndex
from ..naming import NameAllocator
from ..rewrite import read_metadata
from ..tensor_info import TensorInfo
from ._runtime import load_runtime, native_log_filter, quiet_python_logging

#: Newest IR version onnxruntime 1.19.2 loads, and newest ai.onnx opset it trains.
RUNTIME_MAX_IR = 10
RUNTIME_MAX_OPSET = 21
RUNTIME_MIN_OPSET = 11


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
                f"{names}; onnxruntime-training differentiates the FIRST output, so put the loss "
                "first (onnxloss.rewrite does this)"
            )
        raise OutputSelectionError(
            f"the model has no output named '{loss_output_name}' (first output: {first!r}); "
            "pass loss_output_name=<name of the scalar loss>, or build the model with "
            "onnxloss.add_loss_output"
        )
    infos = {i.name: TensorInfo.from_value_info(i) for i in graph.input}
    meta = read_metadata(model) or {}
    target_names = list(meta.get("targets", {}))
    weight_names = list(meta.get("weights", []))
    if not meta:
        names = [i.name for i in graph.input]
        target_names = ["label"] if "label" in names else names[1:2]
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
        # "elementwise_mean" (and a mix of it with "mean") is already independent of the
        # batch size, like "mean": nothing to rescale.
        if set(meta.get("reductions", [reduction])) <= {"mean", "elementwise_mean"}:
            reduction = "mean"
    if reduction not in ("sum", "mean"):
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


def runtime_compatible(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with an IR version the runtime loads, or an OpsetError if it cannot be."""
    opset = ModelIndex(model).opset
    if not RUNTIME_MIN_OPSET <= opset <= RUNTIME_MAX_OPSET:
        raise OpsetError(
            f"the model uses ai.onnx opset {opset}; onnxruntime-training 1.19.2 builds "
            f"gradients for opsets {RUNTIME_MIN_OPSET} to {RUNTIME_MAX_OPSET}. Convert it: "
            f"onnx.version_converter.convert_version(model, {RUNTIME_MAX_OPSET})"
        )
    if model.ir_version <= RUNTIME_MAX_IR:
        return model
    # Lowered only when nothing in the model needs the newer version; else an OpsetError
    # names what does.
    from ..passes.versions import LowerIRVersion

    return LowerIRVersion(RUNTIME_MAX_IR)(model).model


def per_sample_mean(model: onnx.ModelProto, layout: LossModelLayout) -> onnx.ModelProto:
    """For a sum-reduced loss, a copy whose first output is the loss divided by the batch
    size ``N`` (read from the first feature input's shape), so that every step is
    ``η × ∇(mean per-sample loss)`` for SGD and AdamW alike."""
    index = ModelIndex(model)
    names = NameAllocator(index.taken_names)
    loss_vi = model.graph.output[0]
    loss = TensorInfo.from_value_info(loss_vi)
    if loss is None or not loss.is_float:
        raise DtypeError(f"the loss output '{loss_vi.name}' is not a float tensor")
    g = GraphBuilder(index.opset, names, loss.dtype)
    source = (layout.features or layout.targets)[0]
    with g.scope("onnxloss_batch_size"):
        shape = g.Shape(g.input(source))
        n = g.cast(g.op("Gather", shape, g.const(np.array(0, np.int64)), axis=0), loss.dtype)
        mean = g.Div(g.input(loss), n)
    mean.name = names.fresh(f"{loss.name}_per_sample")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(g.export_nodes([mean]))
    out.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info(mean.name, loss.elem_type, []))
    return out


class TrainingArtifacts:
    """Training, eval and optimizer models and the initial checkpoint, in a temporary
    directory removed when this object is garbage-collected (or :meth:`cleanup` is called).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        trainables: list[str],
        optimizer: str = "sgd",
        optimizer_params: dict | None = None,
        max_grad_norm: float | None = None,
        check: bool = True,
    ):
        rt = load_runtime()
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxloss-")
        self._finalizer = weakref.finalize(self, self._tmp.cleanup)
        self.directory = Path(self._tmp.name)
        rt.ort.set_default_logger_severity(3)
        clip = None
        if max_grad_norm is not None:
            clip = rt.onnxblock.optim.ClipGradNorm(float(max_grad_norm))
        block = _optimizer_block(rt, optimizer, optimizer_params or {}, clip)
        # Everything the readiness check can see (operators without a gradient on the way
        # to the loss, unreachable weights...) is reported as one clear list here, instead
        # of as the first C++ error of generate_artifacts. The device is not known yet, so
        # missing CPU gradient kernels stay warnings. (``check=False``: the caller did it.)
        if check:
            from ..readiness import check_trainable as check_readiness

            first = model.graph.output[0].name if model.graph.output else None
            report = check_readiness(model, list(trainables), loss_output=first, device=None)
            report.raise_for_errors()
        try:
            with native_log_filter(), quiet_python_logging():
                rt.artifacts.generate_artifacts(
                    model,
                    requires_grad=list(trainables),
                    frozen_params=[],
                    loss=None,
                    optimizer=block,
                    artifact_directory=str(self.directory),
                )
        except Exception as exc:
            raise OnnxLossError(
                f"onnxruntime-training could not build the gradient graph: {_runtime_reason(exc)}"
                ". Operators without a gradient in onnxruntime-training 1.19.2 (Sign, Softplus, "
                "Elu, ReduceSumSquare, ReduceMax...) on the path from a trained tensor to the "
                "loss are the usual cause"
            ) from exc
        self.training_model = self.directory / "training_model.onnx"
        self.eval_model = self.directory / "eval_model.onnx"
        self.optimizer_model = self.directory / "optimizer_model.onnx"
        self.checkpoint = self.directory / "checkpoint"
        _lower_ir(self.optimizer_model)

    def cleanup(self) -> None:
        self._finalizer()


def _optimizer_block(rt, optimizer: str, params: dict, clip):
    if optimizer == "sgd":
        if params:
            raise OnnxLossError(
                f"optimizer 'sgd' takes no optimizer_params (got {sorted(params)}): the runtime's "
                "SGD is plain W -= lr·grad"
            )
        return rt.onnxblock.optim.SGD(clip_grad=clip)
    if optimizer == "adamw":
        allowed = {"betas", "eps", "weight_decay"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise OnnxLossError(
                f"optimizer 'adamw' has no parameter(s) {unknown}; it takes {sorted(allowed)}"
            )
        return rt.onnxblock.optim.AdamW(**params, clip_grad=clip)
    raise OnnxLossError(f"optimizer {optimizer!r} is not 'sgd' or 'adamw'")


def _lower_ir(path: Path) -> None:
    # generate_artifacts stamps the optimizer model with the installed onnx's IR version;
    # onnx >= 1.18 writes 11+, which onnxruntime 1.19.2 refuses to load.
    model = onnx.load(str(path))
    if model.ir_version > RUNTIME_MAX_IR:
        model.ir_version = RUNTIME_MAX_IR
        onnx.save(model, str(path))


def _runtime_reason(exc: BaseException) -> str:
    """The informative part of a C++ error: what follows the source location and signature
    ("The gradient builder has not been registered: Sign for node n1")."""
    text = " ".join(str(exc).split())
    for marker in ("was false. ", "[ONNXRuntimeError] : "):
        if marker in text:
            return text.rsplit(marker, 1)[1][:500]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
