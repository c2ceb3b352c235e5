"""IR version and opset passes: bring a model within what the training runtime loads.

onnxruntime-training 1.19.2 loads IR versions up to 10 and builds gradients for ai.onnx
opsets 11 to 21; recent exporters write IR 10–11 and opsets 18–23, and the version converter
stamps the newest IR version on what it returns.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ..errors import OpsetError
from ..model_index import DEFAULT_DOMAINS, model_graphs
from .base import Pass

#: The IR version that introduced each element type added after IR 8 (from onnx.proto).
ELEMENT_TYPE_IR = {
    TensorProto.FLOAT8E4M3FN: 9,
    TensorProto.FLOAT8E4M3FNUZ: 9,
    TensorProto.FLOAT8E5M2: 9,
    TensorProto.FLOAT8E5M2FNUZ: 9,
    TensorProto.UINT4: 10,
    TensorProto.INT4: 10,
}
for _name, _ir in (
    ("FLOAT4E2M1", 11),
    ("FLOAT8E8M0", 12),
    ("UINT2", 13),
    ("INT2", 13),
    ("FLOAT6E2M3", 14),
    ("FLOAT6E3M2", 14),
):
    if hasattr(TensorProto, _name):  # newer onnx releases only
        ELEMENT_TYPE_IR[getattr(TensorProto, _name)] = _ir

RUNTIME_MAX_IR = 10
RUNTIME_OPSETS = (11, 21)


def required_ir_version(model: onnx.ModelProto) -> tuple[int, str]:
    """The lowest IR version that can hold ``model``, and what requires it."""
    imports = [(op.domain, op.version) for op in model.opset_import]
    need, why = 3, "the IR format"
    opset_ir = onnx.helper.find_min_ir_version_for(
        [onnx.helper.make_opsetid(d, v) for d, v in imports], ignore_unknown=True
    )
    if opset_ir > need:
        need, why = opset_ir, f"opset imports {imports}"
    for ir, reason in _feature_versions(model):
        if ir > need:
            need, why = ir, reason
    return need, why


def _feature_versions(model: onnx.ModelProto):
    if len(model.functions):
        yield 8, "model-local functions"
    for function in model.functions:
        if len(function.attribute_proto):
            yield 9, f"default attribute values in function '{function.name}'"
        if function.overload:
            yield 10, f"the overload of function '{function.name}'"
        if len(function.metadata_props):
            yield 10, f"metadata_props on function '{function.name}'"
    if _has_field(model, "configuration"):
        yield 11, "multi-device configurations"
    for graph in model_graphs(model):
        if len(graph.metadata_props):
            yield 10, f"metadata_props on graph '{graph.name}'"
        for group in (graph.input, graph.output, graph.value_info):
            for vi in group:
                yield from _type_versions(vi.type, vi.name)
        for tensor in graph.initializer:
            yield from _elem_version(tensor.data_type, tensor.name)
        for node in graph.node:
            if len(node.metadata_props):
                yield 10, f"metadata_props on node '{node.name}'"
            if _has_field(node, "device_configurations"):
                yield 11, f"device configurations on node '{node.name}'"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield from _elem_version(attr.t.data_type, f"attribute of '{node.name}'")
                elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype"):
                    yield from _elem_version(attr.i, f"{node.op_type} '{node.name}'")


def _has_field(message, name: str) -> bool:
    # Fields that only newer onnx releases define.
    return name in message.DESCRIPTOR.fields_by_name and len(getattr(message, name)) > 0


def _type_versions(tp: onnx.TypeProto, where: str):
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        yield from _elem_version(getattr(tp, which).elem_type, where)
    elif which == "sequence_type":
        yield from _type_versions(tp.sequence_type.elem_type, where)
    elif which == "optional_type":
        yield from _type_versions(tp.optional_type.elem_type, where)
    elif which == "map_type":
        yield from _type_versions(tp.map_type.value_type, where)


def _elem_version(elem_type: int, where: str):
    ir = ELEMENT_TYPE_IR.get(elem_type)
    if ir is not None:
        yield ir, f"element type {TensorProto.DataType.Name(elem_type)} ({where})"


class LowerIRVersion(Pass):
    """Set ``ir_version`` to ``target`` (10, what onnxruntime 1.19.2 loads) when the model
    is newer and nothing in it needs the newer version: its opset imports
    (``onnx.helper.find_min_ir_version_for``), element types (FLOAT8 from 9, INT4/UINT4 from
    10, FLOAT4E2M1 from 11, FLOAT8E8M0 from 12, INT2/UINT2 from 13, FLOAT6 from 14),
    function overloads and ``metadata_props`` on nodes (10), multi-device configurations
    (11). Raises :class:`~onnxloss.OpsetError` naming what needs the newer version otherwise.
    """

    def __init__(self, target: int = RUNTIME_MAX_IR):
        self.target = int(target)

    def apply(self, model: onnx.ModelProto) -> bool:
        if model.ir_version <= self.target:
            return False
        need, why = required_ir_version(model)
        if need > self.target:
            raise OpsetError(
                f"cannot lower the model from IR version {model.ir_version} to {self.target}: "
                f"{why} needs IR version {need}"
                + (
                    "; lower the opset first (ConvertOpset)"
                    if why.startswith("opset imports")
                    else "; remove or convert that first"
                )
            )
        model.ir_version = self.target
        return True

    def __repr__(self) -> str:
        return f"LowerIRVersion({self.target})"


def _dedupe_opset_imports(model: onnx.ModelProto) -> None:
    """One import per domain (skl2onnx writes the default domain twice; the converter would
    update the first only)."""
    seen: dict[str, onnx.OperatorSetIdProto] = {}
    for op in model.opset_import:
        domain = "" if op.domain in DEFAULT_DOMAINS else op.domain
        if domain not in seen or op.version > seen[domain].version:
            seen[domain] = op
    if len(seen) < len(model.opset_import):
        kept = [onnx.helper.make_opsetid(op.domain, op.version) for op in seen.values()]
        del model.opset_import[:]
        model.opset_import.extend(kept)


class ConvertOpset(Pass):
    """Convert the model's ai.onnx opset with ``onnx.version_converter``.

    Args:
        target: the opset to convert to; None keeps the opset when it lies within
            ``[low, high]`` and converts to the nearest bound otherwise.
        low, high: the range used when ``target`` is None (13–21: what onnxloss's loss
            rewriter and onnxruntime-training 1.19.2 both accept).

    The converter rebuilds the model and stamps it with the newest IR version; this pass
    gives back the model's own IR version (or the lowest one its new opset needs), its
    metadata, doc string, producer and model-local functions.
    """

    def __init__(self, target: int | None = None, *, low: int = 13, high: int = 21):
        self.target, self.low, self.high = target, low, high

    def apply(self, model: onnx.ModelProto) -> bool:
        current = next(
            (op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS), None
        )
        if current is None:
            raise OpsetError("the model imports no ai.onnx opset; there is nothing to convert")
        target = self.target
        if target is None:
            target = min(max(current, self.low), self.high)
        if target == current:
            return False
        _dedupe_opset_imports(model)
        try:
            converted = onnx.version_converter.convert_version(model, target)
        except Exception as exc:
            raise OpsetError(
                f"onnx.version_converter cannot convert the model from opset {current} to "
                f"{target}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from exc
        kept = onnx.ModelProto()
        kept.CopyFrom(model)
        model.CopyFrom(converted)
        for field in ("doc_string", "producer_name", "producer_version", "domain", "model_version"):
            setattr(model, field, getattr(kept, field))
        del model.metadata_props[:]
        model.metadata_props.extend(kept.metadata_props)
        if not len(model.functions):
            model.functions.extend(kept.functions)
        model.ir_version = max(kept.ir_version, required_ir_version(model)[0])
        return True

    def __repr__(self) -> str:
        return f"ConvertOpset({self.target})" if self.target else "ConvertOpset()"
