"""Backend ``"onnxruntime"``: the whole step as one standard-ONNX graph on a plain runtime.

:func:`onnxloss.autodiff.training_step` writes forward, backward and the SGD/AdamW update
(with onnxruntime-training's formulas) as one model; any ``onnxruntime.InferenceSession``
runs it, the maintained ``onnxruntime`` and ``onnxruntime-gpu`` included.

The weights and the optimizer state live in two sets of runtime values that take turns:
a step reads set ``k`` and writes set ``1 - k`` through an ``IOBinding`` prepared once per
batch shape, so nothing goes through numpy between steps and nothing is allocated. A step
whose loss is not finite is simply not adopted (the sets do not swap).

Data-parallel training uses two more sessions built on first use: the gradient graph
(:func:`onnxloss.autodiff.gradient`) and the update alone
(:func:`onnxloss.autodiff.optimizer_update`), with an allreduce between them.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..errors import OnnxLossError
from ._runtime import PLAIN, load_plain_runtime
from .backend import Backend, RunConfig, session_options
from .data import Batch
from .inference import inference_model
from .state import RunState

#: IOBindings kept per weight set (a data set gives two batch shapes: full and ragged).
_CACHED_BINDINGS = 8


def _autodiff():
    try:
        from .. import autodiff
    except ImportError as exc:  # pragma: no cover - part of the package
        raise OnnxLossError(f"onnxloss.autodiff failed to import: {exc}") from exc
    return autodiff


class PlainRuntimeBackend(Backend):
    name = PLAIN

    def __init__(self, config: RunConfig):
        super().__init__(config)
        ort = load_plain_runtime()
        self.ort = ort
        self._capi = ort.capi._pybind_state
        providers = ort.get_available_providers()
        if config.device != "cpu" and "CUDAExecutionProvider" not in providers:
            raise OnnxLossError(
                f"device={config.device!r} needs onnxruntime's CUDA build (pip install "
                "'onnxloss[train-onnxruntime-gpu]') and a GPU; the installed onnxruntime "
                f"offers {providers}"
            )
        autodiff = _autodiff()
        step_model = autodiff.training_step(
            config.loss_model,
            list(self.trainables),
            optimizer=config.optimizer,
            optimizer_params=dict(config.optimizer_params),
            max_grad_norm=config.max_grad_norm,
        )
        self.spec = autodiff.describe_training_step(step_model)
        self._options = session_options(ort, config)
        self._step_session = self._session(_only_outputs(step_model, self._step_outputs()))
        self.input_names = list(self.spec.data_inputs)
        self._device = config.device.split(":")[0]
        self._device_id = int(config.device.split(":")[1]) if ":" in config.device else 0
        self._cpu = self._capi.OrtDevice(
            self._capi.OrtDevice.cpu(), self._capi.OrtDevice.default_memory(), 0
        )
        initial = {t.name: t for t in config.loss_model.graph.initializer}
        self._dtypes = {
            n: onnx.helper.tensor_dtype_to_np_dtype(initial[n].data_type) for n in self.trainables
        }
        # Two sets of weights and optimizer state: a step reads one and writes the other.
        self._slots = [self._allocate(), self._allocate()]
        self._current = 0
        self.steps = 0
        self._scalars()
        self._bindings: list[dict] = [{}, {}]
        self._eval = None
        self._split = None
        for name in self.trainables:
            self._write(self._current, ("weight", name), onnx.numpy_helper.to_array(initial[name]))

    def runtime_module(self):
        return self.ort

    # -- runtime values ---------------------------------------------------------------------
    def _session(self, model: onnx.ModelProto):
        return self.ort.InferenceSession(
            model.SerializeToString(), sess_options=self._options, providers=self.config.providers
        )

    def _step_outputs(self) -> list[str]:
        spec = self.spec
        names = [spec.loss_output]
        names += [w.output for w in spec.trained]
        names += [s.output for s in spec.state]
        return names

    def _entries(self):
        """``(key, input name, output name, shape source)`` for every tensor carried over."""
        for w in self.spec.trained:
            yield ("weight", w.name), w.input, w.output, w.name
        for s in self.spec.state:
            yield (s.role, s.weight), s.input, s.output, s.weight

    def _allocate(self) -> dict:
        """One set of runtime values for the weights and the state (zeros)."""
        values = {}
        for key, _, _, weight in self._entries():
            shape = _initializer_shape(self.config.loss_model, weight)
            values[key] = self._new_value(np.zeros(shape, dtype=self._dtype_of(weight)))
        return values

    def _dtype_of(self, weight: str):
        for t in self.config.loss_model.graph.initializer:
            if t.name == weight:
                return onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        raise OnnxLossError(f"no initializer '{weight}'")

    def _new_value(self, array: np.ndarray):
        """A runtime value on the backend's device; on the CPU it views a numpy array
        (kept alongside it), so reading and writing need no copy."""
        if self._device == "cpu":
            array = np.ascontiguousarray(array)
            return (self._capi.OrtValue.ortvalue_from_numpy(array, self._cpu), array)
        value = self.ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)
        return (value._ortvalue, value)

    def _read(self, slot: int, key) -> np.ndarray:
        value, holder = self._slots[slot][key]
        return holder.copy() if isinstance(holder, np.ndarray) else holder.numpy()

    def _write(self, slot: int, key, array: np.ndarray) -> None:
        value, holder = self._slots[slot][key]
        if isinstance(holder, np.ndarray):
            holder[...] = array
        else:
            holder.update_inplace(np.ascontiguousarray(array, dtype=holder.data_type_np()))

    def _scalars(self) -> None:
        """The learning rate, step and loss as one-element arrays viewed by runtime values."""
        spec = self.spec
        self._lr = np.zeros((), np.float32)
        self._step = np.zeros((), np.int64)
        self._loss = np.zeros((), self._dtype_of(self.trainables[0]))
        self._lr_value = self._capi.OrtValue.ortvalue_from_numpy(self._lr, self._cpu)
        self._step_value = self._capi.OrtValue.ortvalue_from_numpy(self._step, self._cpu)
        self._loss_value = self._capi.OrtValue.ortvalue_from_numpy(self._loss, self._cpu)
        self._scalar_names = (spec.learning_rate_input, spec.step_input, spec.loss_output)

    def _data_values(self, batch: Batch) -> list:
        return [self._capi.OrtValue.ortvalue_from_numpy(a, self._cpu) for a in batch.arrays]

    def _binding(self, batch: Batch):
        """The step's IOBinding for the current weight set and this batch's memory."""
        cache = self._bindings[self._current]
        binding = cache.get(batch.key) if batch.key is not None else cache.get(None)
        if binding is None:
            binding = self._step_session.io_binding()._iobinding
            reads, writes = self._slots[self._current], self._slots[1 - self._current]
            for key, input_name, output_name, _ in self._entries():
                binding.bind_ortvalue_input(input_name, reads[key][0])
                binding.bind_ortvalue_output(output_name, writes[key][0])
            lr_name, step_name, loss_name = self._scalar_names
            binding.bind_ortvalue_input(lr_name, self._lr_value)
            binding.bind_ortvalue_input(step_name, self._step_value)
            binding.bind_ortvalue_output(loss_name, self._loss_value)
            if batch.key is not None:
                if len(cache) >= _CACHED_BINDINGS:
                    cache.pop(next(iter(cache)))
                values = self._data_values(batch)
                for name, value in zip(self.input_names, values, strict=True):
                    binding.bind_ortvalue_input(name, value)
                cache[batch.key] = (binding, values, batch.arrays)
                return binding
            cache[None] = (binding, None, None)
        else:
            binding = binding[0]
        if batch.key is None:  # arrays that live for this step only: bind them now
            for name, value in zip(self.input_names, self._data_values(batch), strict=True):
                binding.bind_ortvalue_input(name, value)
        return binding

    # -- steps ------------------------------------------------------------------------------
    def train_step(self, batch: Batch, learning_rate: float) -> float:
        self._lr[...] = learning_rate
        self._step[...] = self.steps + 1
        binding = self._binding(batch)
        self._step_session._sess.run_with_iobinding(binding, None)
        loss = float(self._loss)
        if math.isfinite(loss):
            self._current = 1 - self._current
            self.steps += 1
        return loss

    def evaluate(self, batch: Batch) -> float:
        if self._eval is None:
            loss = self.config.loss_model.graph.output[0].name
            model = inference_model(self.config.loss_model, [loss], list(self.trainables))
            self._eval = self._session(model)
        feeds = dict(zip(self.input_names, batch.arrays, strict=True))
        needed = {i.name for i in self._eval.get_inputs()}
        feeds = {k: v for k, v in feeds.items() if k in needed}
        feeds.update(self.weights())
        return float(self._eval.run(None, feeds)[0])

    # -- data-parallel steps ----------------------------------------------------------------
    def _split_sessions(self):
        if self._split is None:
            autodiff = _autodiff()
            config = self.config
            grad_model = autodiff.gradient(config.loss_model, list(self.trainables))
            update_model = autodiff.optimizer_update(
                grad_model,
                list(self.trainables),
                optimizer=config.optimizer,
                optimizer_params=dict(config.optimizer_params),
                max_grad_norm=config.max_grad_norm,
            )
            self._split = _SplitStep(self, grad_model, update_model)
        return self._split

    def compute_gradients(self, batch: Batch) -> float:
        return self._split_sessions().gradients(batch)

    def gradient_buffers(self) -> list[np.ndarray]:
        return self._split_sessions().grad_arrays

    def apply_gradients(self, learning_rate: float) -> None:
        self._split_sessions().update(learning_rate)

    # -- state ------------------------------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        return {n: self._read(self._current, ("weight", n)) for n in self.trainables}

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self._write(self._current, ("weight", name), value)

    def export_state(self) -> RunState:
        moments = {}
        for s in self.spec.state:
            moments.setdefault(s.weight, {})[s.role] = self._read(self._current, (s.role, s.weight))
        return RunState(self.config.optimizer, self.steps, self.weights(), moments)

    def import_state(self, state: RunState) -> None:
        self.set_weights(state.weights)
        for s in self.spec.state:
            value = state.moments.get(s.weight, {}).get(s.role)
            if value is None:
                value = np.zeros(state.weights[s.weight].shape, self._dtype_of(s.weight))
            self._write(self._current, (s.role, s.weight), value)
        self.steps = int(state.step)


def _initializer_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...]:
    for t in model.graph.initializer:
        if t.name == name:
            return tuple(int(d) for d in t.dims)
    raise OnnxLossError(f"no initializer '{name}'")


def _only_outputs(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """The model with just ``outputs`` (the runtime then skips what nothing needs)."""
    by_name = {o.name: o for o in model.graph.output}
    missing = [n for n in outputs if n not in by_name]
    if missing:
        raise OnnxLossError(f"the training-step model lacks the outputs {missing}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:]
    out.graph.output.extend(by_name[n] for n in outputs)
    return out


class _SplitStep:
    """Gradient session → (allreduce by the caller) → update session."""

    def __init__(self, backend: PlainRuntimeBackend, grad_model, update_model):
        raise OnnxLossError("data-parallel steps on backend 'onnxruntime' are not built yet")
