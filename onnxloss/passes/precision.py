"""``ToFloat32``: a model computing in float64 turned into one computing in float32.

onnxruntime-training 1.19.2 trains float32 initializers only, and differentiates a float32
loss only. Converters write float64 models when given float64 data (``skl2onnx.to_onnx(model,
X.astype(np.float64))``); this pass converts such a model explicitly, so the precision loss
is a decision the user takes, not something a trainer does behind their back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto
from onnx.external_data_helper import uses_external_data

from ..errors import DtypeError
from ..model_index import model_graphs
from .base import Pass

FLOAT = TensorProto.FLOAT

#: ``(op_type, attribute)`` pairs whose integer value is an element type.
DTYPE_ATTRIBUTES = frozenset(
    {
        ("Cast", "to"),
        ("EyeLike", "dtype"),
        ("RandomNormal", "dtype"),
        ("RandomUniform", "dtype"),
        ("RandomNormalLike", "dtype"),
        ("RandomUniformLike", "dtype"),
        ("Bernoulli", "dtype"),
    }
)


class ToFloat32(Pass):
    """Convert every float64 tensor of the model to float32.

    Converted: initializers (dense and sparse), the element types of graph inputs, outputs
    and ``value_info`` (in subgraphs and model-local functions too, through sequences, maps
    and optionals), tensor attributes (``Constant`` values, ``ConstantOfShape`` fills...),
    and element-type attributes (``Cast(to=DOUBLE)``, ``EyeLike(dtype=...)``, the random
    generators). Integer and bool tensors are left alone.

    Args:
        types: the element types to convert to float32 (default float64 only; add
            ``TensorProto.FLOAT16`` / ``BFLOAT16`` to widen half-precision models too).
    """

    def __init__(self, types: Iterable[int] = (TensorProto.DOUBLE,)):
        self.types = frozenset(int(t) for t in types)
        if FLOAT in self.types:
            raise DtypeError("ToFloat32 converts other types to FLOAT; FLOAT is not a source")

    def apply(self, model: onnx.ModelProto) -> bool:
        changed = False
        for graph in model_graphs(model, functions=True):
            changed |= self._graph(graph)
        for function in model.functions:
            for vi in function.value_info:
                changed |= self._type(vi.type)
            changed |= self._nodes(function.node)
        return changed

    def _graph(self, graph: onnx.GraphProto) -> bool:
        changed = False
        for i, tensor in enumerate(graph.initializer):
            if tensor.data_type in self.types:
                graph.initializer[i].CopyFrom(self._tensor(tensor))
                changed = True
        for sparse in graph.sparse_initializer:
            if sparse.values.data_type in self.types:
                sparse.values.CopyFrom(self._tensor(sparse.values))
                changed = True
        for group in (graph.input, graph.output, graph.value_info):
            for vi in group:
                changed |= self._type(vi.type)
        return self._nodes(graph.node) or changed

    def _nodes(self, nodes: Iterable[onnx.NodeProto]) -> bool:
        changed = False
        for node in nodes:
            for attr in node.attribute:
                kind = attr.type
                if kind == onnx.AttributeProto.TENSOR and attr.t.data_type in self.types:
                    attr.t.CopyFrom(self._tensor(attr.t))
                    changed = True
                elif kind == onnx.AttributeProto.TENSORS:
                    for t in attr.tensors:
                        if t.data_type in self.types:
                            t.CopyFrom(self._tensor(t))
                            changed = True
                elif kind == onnx.AttributeProto.SPARSE_TENSOR:
                    if attr.sparse_tensor.values.data_type in self.types:
                        values = attr.sparse_tensor.values
                        values.CopyFrom(self._tensor(values))
                        changed = True
                elif kind == onnx.AttributeProto.TYPE_PROTO:
                    changed |= self._type(attr.tp)
                elif kind == onnx.AttributeProto.TYPE_PROTOS:
                    for tp in attr.type_protos:
                        changed |= self._type(tp)
                elif kind == onnx.AttributeProto.INT and attr.i in self.types:
                    if (node.op_type, attr.name) in DTYPE_ATTRIBUTES and node.domain in (
                        "",
                        "ai.onnx",
                    ):
                        attr.i = FLOAT
                        changed = True
        return changed

    def _type(self, tp: onnx.TypeProto) -> bool:
        which = tp.WhichOneof("value")
        if which in ("tensor_type", "sparse_tensor_type"):
            inner = getattr(tp, which)
            if inner.elem_type in self.types:
                inner.elem_type = FLOAT
                return True
            return False
        if which == "sequence_type":
            return self._type(tp.sequence_type.elem_type)
        if which == "optional_type":
            return self._type(tp.optional_type.elem_type)
        if which == "map_type":
            return self._type(tp.map_type.value_type)
        return False

    def _tensor(self, tensor: TensorProto) -> TensorProto:
        if uses_external_data(tensor):
            raise DtypeError(
                f"ToFloat32: tensor '{tensor.name}' keeps its data in an external file that was "
                "not loaded; load the model with its external data (onnx.load(path)) first"
            )
        array = onnx.numpy_helper.to_array(tensor).astype(np.float32)
        converted = onnx.numpy_helper.from_array(array, tensor.name)
        converted.doc_string = tensor.doc_string
        converted.metadata_props.extend(tensor.metadata_props)
        return converted
