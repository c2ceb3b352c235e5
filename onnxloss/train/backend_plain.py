"""Backend ``"onnxruntime"``: the whole step as one standard-ONNX graph on a plain runtime.

:func:`onnxloss.autodiff.training_step` writes forward, backward and the SGD/AdamW update
(with onnxruntime-training's formulas) as one model; any ``onnxruntime.InferenceSession``
runs it, the maintained ``onnxruntime`` and ``onnxruntime-gpu`` included.

The weights and the optimizer state live in two sets of runtime values that take turns:
a step reads set ``k`` and writes set ``1 - k`` through an ``IOBinding`` prepared once per
set and batch buffer, so nothing goes through numpy between steps and nothing is
allocated. A step whose loss is not finite is simply not adopted (the sets do not swap).

Data-parallel training uses two more sessions built on first use: the gradient graph
(:func:`onnxloss.autodiff.gradient`), whose gradients land in numpy buffers the caller
all-reduces, and the update alone (:func:`onnxloss.autodiff.optimizer_update`).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import onnx

from ..errors import OnnxLossError
from ._runtime import PLAIN, load_plain_runtime
from .artifacts import _runtime_reason
from .backend import Backend, RunConfig, session_options
from .data import Batch
from .inference import inference_model
from .state import RunState

_MAX_IR = re.compile(r"max supported IR version: (\d+)")
#: IOBindings kept per session and weight set (a data set gives two batch shapes: the full
#: one and the last, ragged one).
_CACHED_BINDINGS = 8


def _autodiff():
    from .. import autodiff

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
        self._options = session_options(ort, config)
        self._device = config.device.split(":")[0]
        self._device_id = int(config.device.split(":")[1]) if ":" in config.device else 0
        self._cpu = self._capi.OrtDevice(
            self._capi.OrtDevice.cpu(), self._capi.OrtDevice.default_memory(), 0
        )
        step_model = _autodiff().training_step(
            config.loss_model,
            list(self.trainables),
            optimizer=config.optimizer,
            optimizer_params=dict(config.optimizer_params),
            max_grad_norm=config.max_grad_norm,
        )
        spec = _autodiff().describe_training_step(step_model)
        self.input_names = list(spec.data_inputs)
        initial = {t.name: t for t in config.loss_model.graph.initializer}
        self._dtypes = {
            n: onnx.helper.tensor_dtype_to_np_dtype(initial[n].data_type) for n in self.trainables
        }
        self._shapes = {n: tuple(int(d) for d in initial[n].dims) for n in self.trainables}
        # Every tensor carried from step to step: the weights, then the optimizer state.
        self._keys = [("weight", w.name) for w in spec.trained]
        self._keys += [(s.role, s.weight) for s in spec.state]
        # Two sets of them: a step reads one and writes the other.
        self._sets = [self._allocate(), self._allocate()]
        self._current = 0
        self.steps = 0
        self._lr = np.zeros((), np.float32)
        self._step = np.zeros((), np.int64)
        self._loss = np.zeros((), self._dtypes[self.trainables[0]])
        self._step_run = _BoundSession(
            self, self._session(_only_outputs(step_model, _carried_outputs(spec))), spec
        )
        self._eval = None
        self._split = None
        for name in self.trainables:
            self._write(("weight", name), onnx.numpy_helper.to_array(initial[name]))

    def runtime_module(self):
        return self.ort

    # -- runtime values ---------------------------------------------------------------------
    def _session(self, model: onnx.ModelProto):
        try:
            return self._new_session(model)
        except Exception as exc:
            # An older onnxruntime refuses newer IR versions; lower it when nothing needs it.
            found = _MAX_IR.search(str(exc))
            if found is None or model.ir_version <= int(found.group(1)):
                raise OnnxLossError(
                    f"onnxruntime {self.ort.__version__} cannot load the training-step model: "
                    f"{_runtime_reason(exc)}"
                ) from exc
            from ..passes.versions import LowerIRVersion

            return self._new_session(LowerIRVersion(int(found.group(1)))(model).model)

    def _new_session(self, model: onnx.ModelProto):
        return self.ort.InferenceSession(
            model.SerializeToString(), sess_options=self._options, providers=self.config.providers
        )

    def _allocate(self) -> dict:
        """One set of runtime values for the weights and the state (zeros)."""
        values = {}
        for key in self._keys:
            weight = key[1]
            values[key] = self._new_value(np.zeros(self._shapes[weight], self._dtypes[weight]))
        return values

    def _new_value(self, array: np.ndarray):
        """``(runtime value, holder)`` on the backend's device; on the CPU the value views
        the numpy ``holder``, so reading and writing need no copy."""
        if self._device == "cpu":
            array = np.ascontiguousarray(array)
            return self._capi.OrtValue.ortvalue_from_numpy(array, self._cpu), array
        value = self.ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)
        return value._ortvalue, value

    def cpu_value(self, array: np.ndarray):
        """A runtime value viewing a numpy array (the caller keeps the array alive)."""
        return self._capi.OrtValue.ortvalue_from_numpy(array, self._cpu)

    def _read(self, key, which: int | None = None) -> np.ndarray:
        _, holder = self._sets[self._current if which is None else which][key]
        return holder.copy() if isinstance(holder, np.ndarray) else holder.numpy()

    def _write(self, key, array: np.ndarray) -> None:
        _, holder = self._sets[self._current][key]
        if isinstance(holder, np.ndarray):
            holder[...] = array
        else:
            holder.update_inplace(np.ascontiguousarray(array, dtype=holder.data_type_np()))

    def _adopt(self) -> None:
        """The set just written becomes the current one."""
        self._current = 1 - self._current
        self.steps += 1

    # -- steps ------------------------------------------------------------------------------
    def train_step(self, batch: Batch, learning_rate: float) -> float:
        self._lr[...] = learning_rate
        self._step[...] = self.steps + 1
        self._step_run.run(batch)
        loss = float(self._loss)
        if math.isfinite(loss):
            self._adopt()
        return loss

    def evaluate(self, batch: Batch) -> float:
        if self._eval is None:
            loss = self.config.loss_model.graph.output[0].name
            model = inference_model(self.config.loss_model, [loss], list(self.trainables))
            self._eval = self._session(model)
            self._eval_inputs = [i.name for i in self._eval.get_inputs()]
        feeds = dict(zip(self.input_names, batch.arrays, strict=True))
        feeds.update(self.weights())
        return float(self._eval.run(None, {n: feeds[n] for n in self._eval_inputs})[0])

    # -- data-parallel steps ----------------------------------------------------------------
    def _split_step(self) -> _SplitStep:
        if self._split is None:
            self._split = _SplitStep(self)
        return self._split

    def compute_gradients(self, batch: Batch) -> float:
        return self._split_step().gradients(batch)

    def gradient_buffers(self) -> list[np.ndarray]:
        return self._split_step().grad_arrays

    def apply_gradients(self, learning_rate: float) -> None:
        self._split_step().update(learning_rate)

    # -- state ------------------------------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        return {n: self._read(("weight", n)) for n in self.trainables}

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self._write(("weight", name), value)

    def export_state(self) -> RunState:
        moments: dict[str, dict[str, np.ndarray]] = {}
        for role, weight in self._keys:
            if role != "weight":
                moments.setdefault(weight, {})[role] = self._read((role, weight))
        return RunState(self.config.optimizer, self.steps, self.weights(), moments)

    def import_state(self, state: RunState) -> None:
        self.set_weights(state.weights)
        for role, weight in self._keys:
            if role != "weight":
                value = state.moments.get(weight, {}).get(role)
                if value is None:
                    value = np.zeros(self._shapes[weight], self._dtypes[weight])
                self._write((role, weight), value)
        self.steps = int(state.step)


class _BoundSession:
    """A session over the backend's two sets of values, with one IOBinding per (set, batch
    buffer): inputs read the current set, outputs write the other one.

    ``spec`` (from :func:`onnxloss.autodiff.describe_training_step`) names the inputs and
    outputs; ``extra`` binds more CPU values (the gradient buffers) by name.
    """

    def __init__(self, backend: PlainRuntimeBackend, session, spec, extra=(), data=True):
        self.backend = backend
        self.session = session
        self.spec = spec
        self.extra = list(extra)  # (name, value, is_input)
        self.data = data
        self._cache: list[dict] = [{}, {}]

    def _new_binding(self, which: int):
        b, spec = self.backend, self.spec
        binding = self.session.io_binding()._iobinding
        reads, writes = b._sets[which], b._sets[1 - which]
        carried = {("weight", w.name): (w.input, w.output) for w in spec.trained}
        carried.update({(s.role, s.weight): (s.input, s.output) for s in spec.state})
        for key, (input_name, output_name) in carried.items():
            if input_name:
                binding.bind_ortvalue_input(input_name, reads[key][0])
            if output_name:
                binding.bind_ortvalue_output(output_name, writes[key][0])
        if spec.learning_rate_input:
            binding.bind_ortvalue_input(spec.learning_rate_input, b.cpu_value(b._lr))
            binding.bind_ortvalue_input(spec.step_input, b.cpu_value(b._step))
        if spec.loss_output:
            binding.bind_ortvalue_output(spec.loss_output, b.cpu_value(b._loss))
        for name, value, is_input in self.extra:
            if is_input:
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_ortvalue_output(name, value)
        return binding

    def run(self, batch: Batch | None = None) -> None:
        b = self.backend
        cache = self._cache[b._current]
        key = batch.key if batch is not None and batch.key is not None else None
        entry = cache.get(key)
        if entry is None:
            binding = self._new_binding(b._current)
            values = None
            if key is not None:  # buffers that stay put: bind their values once
                values = [b.cpu_value(a) for a in batch.arrays]
                for name, value in zip(b.input_names, values, strict=True):
                    binding.bind_ortvalue_input(name, value)
                if len(cache) >= _CACHED_BINDINGS:
                    cache.pop(next(k for k in cache if k is not None))
            entry = cache[key] = (binding, values, batch.arrays if key is not None else None)
        binding = entry[0]
        if self.data and key is None:  # arrays that live for this step only
            for name, array in zip(b.input_names, batch.arrays, strict=True):
                binding.bind_ortvalue_input(name, b.cpu_value(array))
        self.session._sess.run_with_iobinding(binding, None)


class _SplitStep:
    """Gradient session → (allreduce by the caller) → update session, on the backend's
    weight sets; the gradients live in numpy buffers both sessions view."""

    def __init__(self, backend: PlainRuntimeBackend):
        autodiff = _autodiff()
        config = backend.config
        trainables = list(backend.trainables)
        full = autodiff.gradient(config.loss_model, trainables)
        grad_spec = autodiff.describe_training_step(full)
        grad_names = {t.name: t.gradient for t in grad_spec.trained}
        outputs = [grad_spec.loss_output, *(grad_names[n] for n in trainables)]
        # The weights stay initializers in the gradient model: feed them as inputs.
        grad_model = inference_model(full, outputs, trainables)
        self.grad_arrays = [np.zeros(backend._shapes[n], backend._dtypes[n]) for n in trainables]
        self._grad_values = [backend.cpu_value(a) for a in self.grad_arrays]
        # Bound like a step: the weights read from the current set (as inputs now), the
        # loss out; the gradients are bound as extra outputs, and nothing is written back.
        gradient_run = replace(
            grad_spec,
            trained=tuple(replace(t, input=t.name, output=None) for t in grad_spec.trained),
        )
        self._gradients = _BoundSession(
            backend,
            backend._session(grad_model),
            gradient_run,
            [(grad_names[n], v, False) for n, v in zip(trainables, self._grad_values, strict=True)],
        )
        update_model = autodiff.optimizer_update(
            full,
            trainables,
            optimizer=config.optimizer,
            optimizer_params=dict(config.optimizer_params),
            max_grad_norm=config.max_grad_norm,
        )
        update_spec = autodiff.describe_training_step(update_model)
        inputs = {t.name: t.gradient for t in update_spec.trained}
        self._update = _BoundSession(
            backend,
            backend._session(update_model),
            update_spec,
            [(inputs[n], v, True) for n, v in zip(trainables, self._grad_values, strict=True)],
            data=False,
        )
        self.backend = backend

    def gradients(self, batch: Batch) -> float:
        self._gradients.run(batch)
        return float(self.backend._loss)

    def update(self, learning_rate: float) -> None:
        b = self.backend
        b._lr[...] = learning_rate
        b._step[...] = b.steps + 1
        self._update.run(None)
        b._adopt()


def _carried_outputs(spec) -> list[str]:
    return [spec.loss_output, *(w.output for w in spec.trained), *(s.output for s in spec.state)]


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
