"""Backend ``"onnxruntime-training"``: gradients and updates by onnxruntime-training 1.19.2.

``artifacts.generate_artifacts`` builds the training, eval and optimizer models;
``api.Module`` runs forward and backward, ``api.Optimizer`` applies SGD or AdamW, and
``api.CheckpointState`` holds the weights, gradients and moments. onnxloss writes no
gradient code here.

Steps go through the runtime's native ``train_step_with_ort_values`` with runtime values
made once over the batch buffers, rather than ``Module.__call__``, which converts every
numpy input again at every step (the cost the bare loop pays).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OnnxLossError
from . import ort_checkpoint
from ._runtime import TRAINING, load_runtime
from .artifacts import TrainingArtifacts, runtime_compatible
from .backend import Backend, RunConfig, session_options
from .data import Batch
from .state import ADAMW_MOMENTS, RunState

#: Batch feeds kept (two batch sizes per data set: the full one and the last, ragged one).
_CACHED_FEEDS = 8


class TrainingBuildBackend(Backend):
    name = TRAINING

    def __init__(self, config: RunConfig):
        super().__init__(config)
        rt = load_runtime()
        self.rt = rt
        self._capi = rt.ort.capi._pybind_state
        if (
            config.device != "cpu"
            and "CUDAExecutionProvider" not in rt.ort.get_available_providers()
        ):
            raise OnnxLossError(
                f"device={config.device!r} needs onnxruntime-training's CUDA build "
                "(pip install 'onnxloss[train-gpu]', CUDA 11.8 and cuDNN 8) and a GPU, or "
                "backend='onnxruntime' with onnxruntime-gpu; the installed build offers "
                f"{rt.ort.get_available_providers()}"
            )
        self.artifacts = TrainingArtifacts(
            runtime_compatible(config.loss_model),
            self.trainables,
            config.optimizer,
            config.optimizer_params,
            config.max_grad_norm,
            check=False,
        )
        self._cpu = self._capi.OrtDevice(
            self._capi.OrtDevice.cpu(), self._capi.OrtDevice.default_memory(), 0
        )
        self._open(rt.api.CheckpointState.load_checkpoint(str(self.artifacts.checkpoint)))

    def runtime_module(self):
        return self.rt.ort

    def inference_source(self):
        return runtime_compatible(super().inference_source())

    def _open(self, state) -> None:
        """(Re)create module and optimizer on a loaded ``CheckpointState``."""
        rt, art, config = self.rt, self.artifacts, self.config
        try:
            module = rt.api.Module(
                str(art.training_model),
                state,
                str(art.eval_model),
                config.device,
                session_options(rt.ort, config),
            )
        except Exception as exc:
            text = str(exc).strip()
            raise OnnxLossError(
                f"onnxruntime-training could not start on device {config.device!r}: "
                f"{text.splitlines()[0] if text else repr(exc)}"
            ) from exc
        optimizer = rt.api.Optimizer(str(art.optimizer_model), module)
        self.state, self.module, self.optimizer = state, module, optimizer
        self._native = module._model  # the C++ module: steps without per-call conversions
        self._native_optimizer = optimizer._optimizer
        self.input_names = list(module.input_names())
        eval_names = list(self._native.input_names(False))
        if eval_names != self.input_names:
            raise OnnxLossError(
                f"the runtime's eval model takes inputs {eval_names}, its training model "
                f"{self.input_names}"
            )
        self._values: dict[tuple, object] = {}
        self._learning_rate = None
        self._native.lazy_reset_grad()

    # -- steps ------------------------------------------------------------------------------
    def _feed(self, batch: Batch):
        """The runtime values over the batch's arrays (kept for buffers that stay put)."""
        cached = self._values.get(batch.key) if batch.key is not None else None
        if cached is not None:
            return cached[0]
        values = self._capi.OrtValueVector()
        values.reserve(len(batch.arrays))
        for array in batch.arrays:
            values.push_back(self._capi.OrtValue.ortvalue_from_numpy(array, self._cpu))
        if batch.key is not None:
            # The runtime values do not own the memory: keep the arrays with them.
            if len(self._values) >= _CACHED_FEEDS:
                self._values.pop(next(iter(self._values)))
            self._values[batch.key] = (values, batch.arrays)
        return values

    def _forward_backward(self, batch: Batch) -> float:
        fetches = self._capi.OrtValueVector()
        self._native.train_step_with_ort_values(self._feed(batch), fetches)
        return float(fetches[0].numpy())

    def _set_learning_rate(self, learning_rate: float) -> None:
        if learning_rate != self._learning_rate:  # the runtime keeps it: set only on change
            self._native_optimizer.set_learning_rate(learning_rate)
            self._learning_rate = learning_rate

    def train_step(self, batch: Batch, learning_rate: float) -> float:
        loss = self._forward_backward(batch)
        if math.isfinite(loss):
            self._set_learning_rate(learning_rate)
            self._native_optimizer.optimizer_step()
        self._native.lazy_reset_grad()
        return loss

    def evaluate(self, batch: Batch) -> float:
        fetches = self._capi.OrtValueVector()
        self._native.eval_step_with_ort_values(self._feed(batch), fetches)
        return float(fetches[0].numpy())

    def compute_gradients(self, batch: Batch) -> float:
        return self._forward_backward(batch)

    def gradient_buffers(self) -> list[np.ndarray]:
        params = self.state.parameters
        return [params[name].grad for name in self.trainables]

    def apply_gradients(self, learning_rate: float) -> None:
        self._set_learning_rate(learning_rate)
        self._native_optimizer.optimizer_step()
        self._native.lazy_reset_grad()

    # -- state ------------------------------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        params = self.state.parameters
        return {name: params[name].data.copy() for name in self.trainables}

    def _dtype(self, name: str) -> np.dtype:
        return self.state.parameters[name].data.dtype

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        params = self.state.parameters
        for name, value in values.items():
            params[name].data = value

    def export_state(self) -> RunState:
        with tempfile.TemporaryDirectory(prefix="onnxloss-state-") as tmp:
            path = Path(tmp) / "checkpoint"
            self.rt.api.CheckpointState.save_checkpoint(
                self.state, str(path), include_optimizer_state=True
            )
            ckpt = ort_checkpoint.read(path)
        moments = {}
        if self.config.optimizer == "adamw":
            moments = {
                name: dict(zip(ADAMW_MOMENTS, ckpt.momentums[name], strict=True))
                for name in self.trainables
            }
        weights = {name: ckpt.params[name] for name in self.trainables}
        return RunState(self.config.optimizer, int(ckpt.step or 0), weights, moments)

    def import_state(self, state: RunState) -> None:
        if self.config.optimizer == "sgd":  # nothing but the weights: no new session
            self.set_weights(
                {n: np.asarray(state.weights[n], self._dtype(n)) for n in self.trainables}
            )
            self._native.lazy_reset_grad()
            return
        # The runtime takes moments only from a checkpoint file: write one in its format,
        # starting from the artifacts' own initial checkpoint (same parameters and order).
        ckpt = ort_checkpoint.read(self.artifacts.checkpoint)
        for name in self.trainables:
            ckpt.params[name] = np.asarray(state.weights[name], dtype=ckpt.params[name].dtype)
        ckpt.step = int(state.step)
        if self.config.optimizer == "adamw":
            ckpt.momentums = {
                name: [
                    np.asarray(state.moments[name][m], dtype=ckpt.params[name].dtype)
                    for m in ADAMW_MOMENTS
                ]
                for name in self.trainables
            }
        else:  # the runtime's SGD keeps one momentum buffer per weight, always zero
            ckpt.momentums = {name: [np.zeros_like(ckpt.params[name])] for name in self.trainables}
        with tempfile.TemporaryDirectory(prefix="onnxloss-state-") as tmp:
            path = Path(tmp) / "checkpoint"
            ort_checkpoint.write(path, ckpt)
            loaded = self.rt.api.CheckpointState.load_checkpoint(str(path))
        self._open(loaded)

    def close(self) -> None:
        self.artifacts.cleanup()
