"""What onnxloss needs to know about one tensor: its name, element type and shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

#: Element types a loss can be computed in.
FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)

Dim = int | str | None

#: ``(smallest positive subnormal, largest finite)`` of each float element type: a constant
#: outside it becomes 0 or inf in the graph.
FLOAT_RANGES: dict[int, tuple[float, float]] = {
    TensorProto.FLOAT16: (2.0**-24, 65504.0),
    TensorProto.BFLOAT16: (2.0**-133, (2 - 2.0**-7) * 2.0**127),
    TensorProto.FLOAT: (
        float(np.finfo(np.float32).smallest_subnormal),
        float(np.finfo(np.float32).max),
    ),
    TensorProto.DOUBLE: (
        float(np.finfo(np.float64).smallest_subnormal),
        float(np.finfo(np.float64).max),
    ),
}


@dataclass(frozen=True)
class TensorInfo:
    """Name, ONNX element type and shape of a tensor.

    ``shape`` is ``None`` when the rank is unknown; inside a known shape a dimension is an
    ``int`` (fixed), a ``str`` (symbolic, e.g. ``"N"``) or ``None`` (unknown).
    """

    name: str
    elem_type: int
    shape: tuple[Dim, ...] | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))

    @property
    def type_name(self) -> str:
        return type_name(self.elem_type)

    @property
    def has_known_type(self) -> bool:
        """Whether the element type is one ONNX defines (not UNDEFINED, not made up)."""
        return self.elem_type in _KNOWN_TYPES

    @property
    def batch_dim(self) -> Dim:
        """The first dimension, the one onnxloss treats as the sample axis."""
        return None if not self.shape else self.shape[0]

    def renamed(self, name: str) -> TensorInfo:
        return TensorInfo(name, self.elem_type, self.shape)

    def with_type(self, elem_type: int, shape: Sequence[Dim] | None) -> TensorInfo:
        return TensorInfo(self.name, elem_type, None if shape is None else tuple(shape))

    def value_info(self) -> onnx.ValueInfoProto:
        return onnx.helper.make_tensor_value_info(self.name, self.elem_type, self.shape)

    def describe(self) -> str:
        """``'y' (FLOAT, [N, 1])``: the form error messages use."""
        if self.shape is None:
            dims = "unknown rank"
        else:
            dims = "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"'{self.name}' ({self.type_name}, {dims})"

    @classmethod
    def from_value_info(cls, vi: onnx.ValueInfoProto) -> TensorInfo | None:
        """The info of a tensor-typed value, or ``None`` for sequences, maps and optionals."""
        if not vi.type.HasField("tensor_type"):
            return None
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(_dim(d) for d in tt.shape.dim)
        return cls(vi.name, tt.elem_type, shape)

    @classmethod
    def from_initializer(cls, tensor: onnx.TensorProto) -> TensorInfo:
        # Reads only the header fields: works on external data that was never loaded.
        return cls(tensor.name, tensor.data_type, tuple(int(d) for d in tensor.dims))

    @classmethod
    def value_kind(cls, vi: onnx.ValueInfoProto) -> str:
        """The kind of a non-tensor value, for error messages ('sequence', 'map', ...)."""
        return vi.type.WhichOneof("value") or "untyped"


_KNOWN_TYPES = frozenset(v for v in TensorProto.DataType.values() if v != TensorProto.UNDEFINED)


def type_name(elem_type: int) -> str:
    """``FLOAT``; for a number ONNX does not define, ``element type 999``."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"element type {elem_type}"


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    if d.HasField("dim_param"):
        return d.dim_param
    return None
