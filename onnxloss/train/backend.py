"""What the estimator asks of a backend, and what both backends share.

A backend owns the runtime objects of one training run: it takes a step on a
:class:`~onnxloss.train.data.Batch`, evaluates the loss, hands out and takes in the
weights and the optimizer state (:class:`~onnxloss.train.state.RunState`), and runs the
inference outputs for ``predict``. The estimator
(:class:`~onnxloss.train.OrtGradientOptimizer`) does everything else: data, schedules,
bookkeeping, checkpoints.

Data-parallel training splits a step in three: :meth:`Backend.compute_gradients`, an
allreduce over :meth:`Backend.gradient_buffers`, then :meth:`Backend.apply_gradients`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import onnx

from .data import Batch
from .layout import LossModelLayout
from .state import RunState


@dataclass(frozen=True)
class RunConfig:
    """What a backend is built from (everything the estimator validated)."""

    loss_model: onnx.ModelProto  # first output: the per-sample mean loss
    inference_model: onnx.ModelProto | None  # the caller's outputs, for predict
    layout: LossModelLayout
    trainables: tuple[str, ...]
    optimizer: str
    optimizer_params: dict
    max_grad_norm: float | None
    device: str
    n_threads: int
    session_config: dict

    @property
    def providers(self) -> list:
        """Execution providers for ``device`` (``cuda:N`` picks the N-th GPU)."""
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def session_options(ort, config: RunConfig):
    """Session options from the estimator's parameters: thread counts and the
    ``session_config`` entries (``graph_optimization_level``, ``enable_mem_pattern``,
    ``enable_cpu_mem_arena``, ``execution_mode`` or any ``session.*`` config key)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(config.n_threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in config.session_config.items():
        if key == "graph_optimization_level":
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, value)
        elif key == "execution_mode":
            options.execution_mode = getattr(ort.ExecutionMode, value)
        elif key in ("enable_mem_pattern", "enable_cpu_mem_arena"):
            setattr(options, key, bool(value))
        else:
            options.add_session_config_entry(key, str(value))
    return options


class Backend(abc.ABC):
    """The runtime side of one training run."""

    #: ``"onnxruntime-training"`` or ``"onnxruntime"``.
    name: str
    #: The model inputs a batch holds, in order.
    input_names: list[str]

    def __init__(self, config: RunConfig):
        self.config = config
        self.trainables = list(config.trainables)
        self._predictor = None

    # -- steps ------------------------------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, batch: Batch, learning_rate: float) -> float:
        """Forward, backward and update on one batch; returns the batch's loss. The update
        is applied only when the loss is finite."""

    @abc.abstractmethod
    def evaluate(self, batch: Batch) -> float:
        """The loss on one batch, with the current weights, changing nothing."""

    @abc.abstractmethod
    def compute_gradients(self, batch: Batch) -> float:
        """Forward and backward only; the gradients land in :meth:`gradient_buffers`."""

    @abc.abstractmethod
    def gradient_buffers(self) -> list[np.ndarray]:
        """Writable arrays holding the last gradients, one per trained tensor, in order;
        what is written there is what :meth:`apply_gradients` applies."""

    @abc.abstractmethod
    def apply_gradients(self, learning_rate: float) -> None:
        """The optimizer's update from :meth:`gradient_buffers`."""

    # -- state ------------------------------------------------------------------------------
    @abc.abstractmethod
    def weights(self) -> dict[str, np.ndarray]:
        """Trained tensor name → a copy of its current value."""

    @abc.abstractmethod
    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite trained tensors (already checked and cast by the caller)."""

    @abc.abstractmethod
    def export_state(self) -> RunState:
        """Weights, moments and step count (the estimator fills in ``trainer``)."""

    @abc.abstractmethod
    def import_state(self, state: RunState) -> None:
        """Continue from ``state`` (checked against the model by the caller)."""

    # -- inference --------------------------------------------------------------------------
    def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inference outputs (name → array) for feature arrays, with the current
        weights."""
        from .inference import InferenceRunner

        if self._predictor is None:
            self._predictor = InferenceRunner(
                self.runtime_module(), self.config, self.inference_source()
            )
        return self._predictor.run(arrays, self.weights())

    def inference_source(self) -> onnx.ModelProto:
        """The model ``predict`` is cut from (the caller's loss model)."""
        return self.config.inference_model or self.config.loss_model

    @abc.abstractmethod
    def runtime_module(self):
        """The ``onnxruntime`` module the backend runs on."""

    def close(self) -> None:  # noqa: B027  (most backends have nothing to release)
        """Release runtime objects and temporary files."""
