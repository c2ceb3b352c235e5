"""Reading and writing onnxruntime-training's checkpoint files (the ``ODTC`` flatbuffer).

The training build keeps the optimizer's moments inside its ``CheckpointState``; its Python
API gives access to the parameters only. A checkpoint saved with
``include_optimizer_state=True`` holds everything, so this module reads one to get the
moments and the step count out, and writes one to put them back: that is how a run moves
between the two backends (:mod:`onnxloss.train.state`).

It uses the flatbuffers bindings generated from the runtime's own schema
(``ort_training_checkpoint.fbs``), which the onnxruntime wheels ship under
``onnxruntime/tools/ort_format_model/ort_flatbuffers_py``; they need the ``flatbuffers``
package, a dependency of onnxruntime-training.

Layout (schema version 2): ``Checkpoint{version, module_state{requires_grad_params,
frozen_params}, optimizer_groups[{group_name, step, initial_learning_rate,
optimizer_states[{param_name, momentums[Tensor]}]}], property_bag{ints, floats, strings}}``.
For AdamW, ``momentums`` are ``[m, v]`` (first and second moments); SGD has none.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxLossError

#: The flatbuffer file identifier of a training checkpoint.
FILE_IDENTIFIER = b"ODTC"
_PACKAGE = "ort_flatbuffers_py"


@dataclass
class OrtCheckpoint:
    """The parts of a training checkpoint onnxloss reads and writes."""

    version: int
    params: dict[str, np.ndarray]
    requires_grad: list[str]
    step: int | None = None
    initial_learning_rate: float = 0.0
    group_name: str = "group0"
    momentums: dict[str, list[np.ndarray]] = field(default_factory=dict)
    properties: dict[str, int | float | str] = field(default_factory=dict)


def is_ort_checkpoint(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a training checkpoint."""
    return len(head) >= 8 and head[4:8] == FILE_IDENTIFIER


@cache
def _schema():
    """The generated flatbuffers classes of the installed onnxruntime, or None."""
    ort = importlib.util.find_spec("onnxruntime")
    if ort is None or ort.origin is None or importlib.util.find_spec("flatbuffers") is None:
        return None
    folder = Path(ort.origin).parent / "tools" / "ort_format_model" / _PACKAGE
    if not (folder / "fbs" / "Checkpoint.py").is_file():
        return None
    if _PACKAGE not in sys.modules:
        # The generated modules import each other as ``ort_flatbuffers_py.fbs.X``: make that
        # package importable without adding the runtime's tools folder to sys.path.
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_PACKAGE}.fbs")


def _require_schema():
    schema = _schema()
    if schema is None:
        raise OnnxLossError(
            "reading or writing onnxruntime-training checkpoints needs the flatbuffers bindings "
            "that onnxruntime ships (onnxruntime/tools/ort_format_model) and the 'flatbuffers' "
            "package; install 'onnxloss[train]'"
        )
    return schema


def read(path: str | Path) -> OrtCheckpoint:
    """Parse a training checkpoint file (an OnnxLossError if it is not one)."""
    data = Path(path).read_bytes()
    if not is_ort_checkpoint(data[:8]):
        raise OnnxLossError(f"'{path}' is not an onnxruntime-training checkpoint")
    fbs = _require_schema()
    try:
        return _read(fbs, data)
    except OnnxLossError:
        raise
    except Exception as exc:  # a truncated or forged buffer
        raise OnnxLossError(
            f"'{path}' is a damaged onnxruntime-training checkpoint: {type(exc).__name__}"
        ) from exc


def _read(fbs, data: bytes) -> OrtCheckpoint:
    root = fbs.Checkpoint.Checkpoint.GetRootAs(data, 0)
    module = root.ModuleState()
    params: dict[str, np.ndarray] = {}
    requires_grad: list[str] = []
    if module is not None:
        for i in range(module.RequiresGradParamsLength()):
            name, array = _tensor(module.RequiresGradParams(i))
            params[name] = array
            requires_grad.append(name)
        for i in range(module.FrozenParamsLength()):
            name, array = _tensor(module.FrozenParams(i))
            params[name] = array
    ckpt = OrtCheckpoint(int(root.Version()), params, requires_grad)
    if root.OptimizerGroupsLength() > 1:
        raise OnnxLossError("the checkpoint holds several optimizer groups; onnxloss writes one")
    if root.OptimizerGroupsLength() == 1:
        group = root.OptimizerGroups(0)
        ckpt.step = int(group.Step())
        ckpt.initial_learning_rate = float(group.InitialLearningRate())
        ckpt.group_name = (group.GroupName() or b"group0").decode()
        for j in range(group.OptimizerStatesLength()):
            state = group.OptimizerStates(j)
            moments = [_tensor(state.Momentums(k))[1] for k in range(state.MomentumsLength())]
            ckpt.momentums[state.ParamName().decode()] = moments
    bag = root.PropertyBag()
    if bag is not None:
        for getter, count, cast in (
            (bag.Ints, bag.IntsLength(), int),
            (bag.Floats, bag.FloatsLength(), float),
            (bag.Strings, bag.StringsLength(), None),
        ):
            for k in range(count):
                prop = getter(k)
                value = prop.Value()
                value = value.decode() if cast is None else cast(value)
                ckpt.properties[prop.Name().decode()] = value
    return ckpt


def _tensor(t) -> tuple[str, np.ndarray]:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.DataType())
    dims = [int(d) for d in t.DimsAsNumpy()] if t.DimsLength() else []
    raw = t.RawDataAsNumpy() if t.RawDataLength() else np.zeros(0, np.uint8)
    array = np.frombuffer(raw.tobytes(), dtype=dtype)
    if array.size != int(np.prod(dims)):
        raise OnnxLossError(f"tensor '{t.Name().decode()}' has {array.size} values for {dims}")
    return t.Name().decode(), array.reshape(dims).copy()


def write(path: str | Path, ckpt: OrtCheckpoint) -> None:
    """Write ``ckpt`` as a training checkpoint file the runtime loads."""
    Path(path).write_bytes(serialize(ckpt))


def serialize(ckpt: OrtCheckpoint) -> bytes:
    fbs = _require_schema()
    import flatbuffers

    b = flatbuffers.Builder(1024 + sum(a.nbytes for a in ckpt.params.values()) * 3)

    def vector(start, items):
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def tensor(name: str, array: np.ndarray) -> int:
        T = fbs.Tensor
        array = np.ascontiguousarray(array)
        name_off = b.CreateString(name)
        raw = b.CreateNumpyVector(np.frombuffer(array.tobytes(), np.uint8))
        dims = b.CreateNumpyVector(np.asarray(array.shape, np.int64))
        T.TensorStart(b)
        T.TensorAddName(b, name_off)
        T.TensorAddDims(b, dims)
        T.TensorAddDataType(b, onnx.helper.np_dtype_to_tensor_dtype(array.dtype))
        T.TensorAddRawData(b, raw)
        return T.TensorEnd(b)

    M = fbs.ModuleState
    trained = [tensor(n, ckpt.params[n]) for n in ckpt.requires_grad]
    frozen = [tensor(n, a) for n, a in ckpt.params.items() if n not in ckpt.requires_grad]
    trained_vec = vector(M.ModuleStateStartRequiresGradParamsVector, trained)
    frozen_vec = vector(M.ModuleStateStartFrozenParamsVector, frozen)
    M.ModuleStateStart(b)
    M.ModuleStateAddRequiresGradParams(b, trained_vec)
    M.ModuleStateAddFrozenParams(b, frozen_vec)
    module = M.ModuleStateEnd(b)

    groups = []
    if ckpt.step is not None:
        P, G = fbs.ParameterOptimizerState, fbs.OptimizerGroup
        states = []
        for name in ckpt.requires_grad:
            moments = [
                tensor(f"momentum{k}", m) for k, m in enumerate(ckpt.momentums.get(name, []))
            ]
            moments_vec = vector(P.ParameterOptimizerStateStartMomentumsVector, moments)
            name_off = b.CreateString(name)
            P.ParameterOptimizerStateStart(b)
            P.ParameterOptimizerStateAddParamName(b, name_off)
            P.ParameterOptimizerStateAddMomentums(b, moments_vec)
            states.append(P.ParameterOptimizerStateEnd(b))
        states_vec = vector(G.OptimizerGroupStartOptimizerStatesVector, states)
        group_name = b.CreateString(ckpt.group_name)
        G.OptimizerGroupStart(b)
        G.OptimizerGroupAddGroupName(b, group_name)
        G.OptimizerGroupAddStep(b, int(ckpt.step))
        G.OptimizerGroupAddInitialLearningRate(b, float(ckpt.initial_learning_rate))
        G.OptimizerGroupAddOptimizerStates(b, states_vec)
        groups.append(G.OptimizerGroupEnd(b))

    bag = _property_bag(fbs, b, vector, ckpt.properties)
    C = fbs.Checkpoint
    groups_vec = vector(C.CheckpointStartOptimizerGroupsVector, groups)
    C.CheckpointStart(b)
    C.CheckpointAddVersion(b, ckpt.version)
    C.CheckpointAddModuleState(b, module)
    C.CheckpointAddOptimizerGroups(b, groups_vec)
    C.CheckpointAddPropertyBag(b, bag)
    b.Finish(C.CheckpointEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _property_bag(fbs, b, vector, properties: dict) -> int:
    kinds = {"ints": [], "floats": [], "strings": []}
    for name, value in properties.items():
        name_off = b.CreateString(name)
        if isinstance(value, str):
            mod, kind, value_off = fbs.StringProperty, "strings", b.CreateString(value)
            mod.StringPropertyStart(b)
            mod.StringPropertyAddName(b, name_off)
            mod.StringPropertyAddValue(b, value_off)
            kinds[kind].append(mod.StringPropertyEnd(b))
        elif isinstance(value, int):
            fbs.IntProperty.IntPropertyStart(b)
            fbs.IntProperty.IntPropertyAddName(b, name_off)
            fbs.IntProperty.IntPropertyAddValue(b, value)
            kinds["ints"].append(fbs.IntProperty.IntPropertyEnd(b))
        else:
            fbs.FloatProperty.FloatPropertyStart(b)
            fbs.FloatProperty.FloatPropertyAddName(b, name_off)
            fbs.FloatProperty.FloatPropertyAddValue(b, float(value))
            kinds["floats"].append(fbs.FloatProperty.FloatPropertyEnd(b))
    B = fbs.PropertyBag
    ints = vector(B.PropertyBagStartIntsVector, kinds["ints"])
    floats = vector(B.PropertyBagStartFloatsVector, kinds["floats"])
    strings = vector(B.PropertyBagStartStringsVector, kinds["strings"])
    B.PropertyBagStart(b)
    B.PropertyBagAddInts(b, ints)
    B.PropertyBagAddFloats(b, floats)
    B.PropertyBagAddStrings(b, strings)
    return B.PropertyBagEnd(b)
