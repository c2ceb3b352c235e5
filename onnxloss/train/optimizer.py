"""``OrtGradientOptimizer``: fit the weights of a loss model with onnxruntime-training.

Gradients and weight updates come from onnxruntime-training only (``generate_artifacts``,
``api.Module``, ``api.Optimizer``, ``api.CheckpointState``); this class feeds data,
schedules the learning rate and keeps the books.

Update rule
-----------
Whatever reduction the loss model uses, each step is

    W ← update(W, η_t · ∇ mean_loss_batch)

where ``mean_loss_batch = (1/B) Σ_i w_i l_i (+ penalties)`` over the ``B`` samples of the
batch: a sum-reduced loss is divided by ``B`` inside the graph before the runtime
differentiates it, so SGD (``W -= η_t·g``) and AdamW see the same objective. Penalties in a
sum-reduced loss model are divided by ``B`` with it (they are part of the same sum).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx

from ..errors import ConvergenceError, OnnxLossError, ShapeError
from ..model_io import atomic_output, load_model
from ..readiness import check_trainable, default_trainables
from ..rewrite import read_metadata, strip_loss
from ..terms import check_number
from ._runtime import load_runtime
from .artifacts import (
    TrainingArtifacts,
    describe_layout,
    per_sample_mean,
    runtime_compatible,
)
from .data import ArrayEpochs, Feeder, is_batch_iterable
from .schedules import LearningRateSchedule, make_schedule

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
#: Parameters the runtime session is built from; changing one starts a new run.
_SESSION_PARAMS = (
    "weights_to_train",
    "loss_output_name",
    "optimizer",
    "optimizer_params",
    "max_grad_norm",
    "sample_weight_name",
    "loss_reduction",
    "device",
    "n_threads",
)
_CHECKPOINT_KEY = "onnxloss_trainer"


class OrtGradientOptimizer:
    """Train the weights of a loss model (first output = scalar loss) with mini-batch SGD
    or AdamW, on CPU or CUDA, through onnxruntime-training.

    Args:
        model_onnx: the loss model (``ModelProto`` or path), e.g. from ``add_loss_output``.
        weights_to_train: names of the float32 initializers to train; ``None`` trains every
            float32 initializer of rank >= 1 (scalars are usually constants).
        loss_output_name: name of the loss output, which must be the first output.
        max_iter: number of epochs.
        batch_size: samples per step.
        learning_rate: a positive number (constant rate), ``'constant'``, ``'invscaling'``,
            ``'optimal'`` (scikit-learn's formulas, see :mod:`onnxloss.train.schedules`),
            or a :class:`~onnxloss.train.schedules.LearningRateSchedule`.
        eta0, power_t, alpha: parameters of the named schedules.
        optimizer: ``'sgd'`` (plain ``W -= η·g``) or ``'adamw'``.
        optimizer_params: AdamW's ``betas``, ``eps`` (runtime default 1e-6), ``weight_decay``.
        max_grad_norm: clip the gradients' global norm to this value (None: no clipping).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        n_threads: intra-op threads of the runtime (1 is fastest for small models on small
            machines; see ``bench/bench_train.py``).
        warm_start: a new ``fit`` continues from the current weights instead of the model's
            (unless a parameter the runtime session is built from changed since: the model,
            ``weights_to_train``, ``optimizer``, ``device``... then a new run starts).
        verbose: 0 silent; 1 a progress bar over epochs with the running loss.
        validation_every: compute the validation loss every this many epochs.
        sample_weight_name: the sample-weight input, when the model's metadata does not say.
        shuffle: shuffle the samples at every epoch.
        random_state: seed of the shuffling.
        tol, n_iter_no_change: stop when the monitored loss (validation if given, else
            training) has not improved by ``tol`` for ``n_iter_no_change`` epochs in a row
            (scikit-learn's rule); ``tol=None`` never stops early.
        loss_reduction: ``'auto'`` reads the reduction from the metadata ``add_loss_output``
            writes (``'mean'`` when absent); ``'sum'`` or ``'mean'`` overrides it.

    Attributes:
        train_losses_: one float per epoch, the mean per-sample loss over the epoch.
        validation_losses_: mean per-sample validation loss, one per validated epoch.
        n_iter_: epochs run; ``t_``: samples seen plus one (the schedule's clock).
        trained_: the names of the trained tensors.
    """

    def __init__(
        self,
        model_onnx: onnx.ModelProto | str | os.PathLike,
        weights_to_train: list[str] | None = None,
        loss_output_name: str = "loss",
        max_iter: int = 100,
        batch_size: int = 10,
        learning_rate: float | str | LearningRateSchedule = 1e-3,
        *,
        eta0: float = 0.01,
        power_t: float = 0.25,
        alpha: float = 1e-4,
        optimizer: str = "sgd",
        optimizer_params: dict | None = None,
        max_grad_norm: float | None = None,
        device: str = "cpu",
        n_threads: int = 1,
        warm_start: bool = False,
        verbose: int = 0,
        validation_every: int = 1,
        sample_weight_name: str | None = None,
        shuffle: bool = True,
        random_state: int | None = None,
        tol: float | None = None,
        n_iter_no_change: int = 5,
        loss_reduction: str = "auto",
    ):
        self.model_onnx = model_onnx
        self.weights_to_train = weights_to_train
        self.loss_output_name = loss_output_name
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.alpha = alpha
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.n_threads = n_threads
        self.warm_start = warm_start
        self.verbose = verbose
        self.validation_every = validation_every
        self.sample_weight_name = sample_weight_name
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.loss_reduction = loss_reduction
        self._session = None  # set up on first fit / load_checkpoint
        self._resume = False

    # -- set-up -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("max_iter", "batch_size", "n_threads", "validation_every", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise OnnxLossError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise OnnxLossError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.tol is not None:
            check_number("tol", self.tol)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)
        if self.loss_reduction not in ("auto", "sum", "mean"):
            raise OnnxLossError(
                f"loss_reduction must be 'auto', 'sum' or 'mean', got {self.loss_reduction!r}"
            )
        self._schedule = make_schedule(self.learning_rate, self.eta0, self.power_t, self.alpha)

    # -- scikit-learn estimator habits -------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters
        return [name for name in params if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, object]:
        """The constructor parameters (scikit-learn's protocol; ``clone`` works)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> OrtGradientOptimizer:
        """Set constructor parameters; unknown names are an error naming the valid ones."""
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise OnnxLossError(f"unknown parameter(s) {unknown}; valid: {valid}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        shown = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if name != "model_onnx" and value != defaults[name].default
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- set-up -----------------------------------------------------------------------------
    def _session_key(self) -> tuple:
        """What the runtime session is built from: when it changes, a new session (and a
        new run) is needed. The model counts by identity (a path by value)."""
        model = self.model_onnx
        ident = os.fspath(model) if isinstance(model, str | os.PathLike) else id(model)
        return (ident, *(repr(getattr(self, name)) for name in _SESSION_PARAMS))

    def _setup(self) -> bool:
        """Build the artifacts unless the current ones fit the parameters; True if built."""
        self._check_params()
        key = self._session_key()
        if self._session is not None and self._session.key == key:
            return False
        self._session = None
        rt = load_runtime()
        if self.device != "cpu" and "CUDAExecutionProvider" not in rt.ort.get_available_providers():
            raise OnnxLossError(
                f"device={self.device!r} needs onnxruntime-training's CUDA build "
                "(pip install 'onnxloss[train-gpu]', CUDA 11.8 and cuDNN 8) and a GPU; the "
                f"installed build offers {rt.ort.get_available_providers()}"
            )
        model = load_model(self.model_onnx)
        layout = describe_layout(
            model, self.loss_output_name, self.sample_weight_name, self.loss_reduction
        )
        trainables = self.weights_to_train
        if trainables is None:
            trainables = default_trainables(model)
        trainables = list(trainables)
        if not trainables:
            raise OnnxLossError(
                "there is nothing to train: the model has no float initializer of rank >= 1 "
                "and weights_to_train names none"
            )
        # The readiness check on the caller's model (so messages name its loss output),
        # before the runtime sees it: every problem at once, each with its fix.
        check_trainable(
            model, trainables, loss_output=layout.loss_name, device=self.device.split(":")[0]
        ).raise_for_errors()
        prepared = runtime_compatible(model)
        if layout.reduction == "sum":
            prepared = per_sample_mean(prepared, layout)
        artifacts = TrainingArtifacts(
            prepared,
            trainables,
            self.optimizer,
            self.optimizer_params,
            self.max_grad_norm,
            check=False,
        )
        self._session = _Session(rt, artifacts, model, layout, trainables, key)
        return True

    def _open(self, state) -> None:
        """(Re)create module and optimizer on a loaded ``CheckpointState``."""
        rt, art = self._session.rt, self._session.artifacts
        options = rt.ort.SessionOptions()
        options.intra_op_num_threads = int(self.n_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            module = rt.api.Module(
                str(art.training_model), state, str(art.eval_model), self.device, options
            )
        except Exception as exc:
            raise OnnxLossError(
                f"onnxruntime-training could not start on device {self.device!r}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from exc
        optimizer = rt.api.Optimizer(str(art.optimizer_model), module)
        self._session.bind(state, module, optimizer)

    def _reset_run(self) -> None:
        session = self._session
        self._open(
            session.rt.api.CheckpointState.load_checkpoint(str(session.artifacts.checkpoint))
        )
        self.train_losses_: list[float] = []
        self.validation_losses_: list[float] = []
        self.n_iter_ = 0
        self.t_ = 1
        self._epochs_run = 0  # epochs of this run, warm starts included: orders the shuffles
        self._seed = _seed_from(self.random_state)
        self._best = math.inf
        self._no_improvement = 0
        self.trained_ = list(self._session.trainables)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None, X_val=None, y_val=None, sample_weight_val=None):
        """Train for ``max_iter`` epochs (fewer if early stopping triggers).

        Args:
            X: features: an array (float64 is converted to the model's type), a memmap, a
                dict input name → array for several inputs, or an iterable of ``(X, y)`` /
                ``(X, y, sample_weight)`` batches (then ``y`` is None).
            y: targets, shaped ``[N]`` or like the target input.
            sample_weight: per-sample weights ``[N]`` (ones when the model has a weight input
                and none is given).
            X_val, y_val, sample_weight_val: validation data (same forms).

        Returns:
            self. After ``load_checkpoint``, ``fit`` continues the saved run up to
            ``max_iter`` epochs in all.
        """
        rebuilt = self._setup()
        if self._resume and not rebuilt:
            self._resume = False
        elif rebuilt or not (self.warm_start and getattr(self, "n_iter_", 0) > 0):
            self._resume = False
            self._reset_run()
        else:
            self.n_iter_ = 0  # warm start: a new run of max_iter epochs from these weights
        session = self._session
        feeder = Feeder(session.layout, session.module.input_names())
        train = self._epoch_source(feeder, X, y, sample_weight, shuffle=self.shuffle)
        val = None
        if X_val is not None:
            val = self._epoch_source(feeder, X_val, y_val, sample_weight_val, shuffle=False)
        epochs = range(self.n_iter_, self.max_iter)
        if self.verbose:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="fit", unit="epoch")
        session.module.lazy_reset_grad()
        session.module.train()
        try:
            for epoch in epochs:
                batches = train(self._epochs_run, epoch + 1 < self.max_iter)
                loss = self._train_epoch(session, batches, epoch)
                self.train_losses_.append(loss)
                self.n_iter_ = epoch + 1
                self._epochs_run += 1
                monitored = loss
                if val is not None and (epoch + 1) % self.validation_every == 0:
                    monitored = self._evaluate(session, val(0, False))
                    self.validation_losses_.append(monitored)
                if self.verbose:
                    epochs.set_postfix(loss=f"{loss:.6g}")
                if self._should_stop(monitored):
                    break
        finally:
            session.module.train()  # a Ctrl-C inside validation must not leave eval mode on
            for source in (train, val):
                getattr(source, "close", lambda: None)()
            if self.verbose:
                epochs.close()
        return self

    def _epoch_source(self, feeder: Feeder, X, y, w, *, shuffle: bool):
        """A callable ``(epoch, prefetch_next) -> batches`` for one data set."""
        if is_batch_iterable(X, y):
            if w is not None:
                raise OnnxLossError("with an iterable of batches, put the weights in the batches")

            def iterate(epoch: int, prefetch_next: bool):
                empty = True
                for item in X:
                    empty = False
                    yield feeder.from_tuple(item)
                if empty:
                    raise OnnxLossError(
                        "the batch iterable yielded nothing; if it is a generator it was used up "
                        "by an earlier epoch: pass a list or an object whose __iter__ restarts"
                    )

            return iterate
        arrays = feeder.arrays(X, y, w, lazy=True)
        if len(arrays[0]) == 0:
            raise ShapeError("X has no samples")
        seed = self._seed if shuffle else None
        return _Source(ArrayEpochs(arrays, feeder.order, int(self.batch_size), seed))

    def _train_epoch(self, session: _Session, batches: Iterable, epoch: int) -> float:
        module, optimizer, schedule = session.module, session.optimizer, self._schedule
        total, seen = 0.0, 0
        current = None
        for b, batch in enumerate(batches):
            rows = len(batch[0])
            lr = schedule.rate(self.t_)
            if lr != current:  # the runtime keeps the rate: set it only when it changes
                optimizer.set_learning_rate(lr)
                current = lr
            out = module(*batch)
            loss = float(out[0] if isinstance(out, tuple) else out)
            if not math.isfinite(loss):
                raise ConvergenceError(
                    f"the loss is {loss} at epoch {epoch + 1}, batch {b + 1} (learning rate "
                    f"{lr:g}); the step was not applied. Lower the learning rate, clip "
                    "gradients (max_grad_norm) or scale the data"
                )
            optimizer.step()
            module.lazy_reset_grad()
            total += loss * rows
            seen += rows
            self.t_ += rows
        if seen == 0:
            raise OnnxLossError(f"epoch {epoch + 1} had no batches")
        return total / seen

    def _evaluate(self, session: _Session, batches: Iterable) -> float:
        module = session.module
        module.eval()
        total, seen = 0.0, 0
        for batch in batches:
            out = module(*batch)
            loss = float(out[0] if isinstance(out, tuple) else out)
            rows = len(batch[0])
            total += loss * rows
            seen += rows
        module.train()
        return total / seen

    def _should_stop(self, loss: float) -> bool:
        if self.tol is None:
            return False
        if loss > self._best - self.tol:
            self._no_improvement += 1
        else:
            self._no_improvement = 0
        self._best = min(self._best, loss)
        return self._no_improvement >= self.n_iter_no_change

    # -- state ------------------------------------------------------------------------------
    def _require_fitted(self) -> _Session:
        if self._session is None or self._session.state is None:
            raise OnnxLossError(
                "this OrtGradientOptimizer is not fitted yet; call fit() or load_checkpoint()"
            )
        return self._session

    def get_state(self) -> dict[str, np.ndarray]:
        """The trained tensors: name → a copy of the current value."""
        session = self._require_fitted()
        params = session.state.parameters
        return {name: params[name].data.copy() for name in session.trainables}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Overwrite trained tensors with the given arrays (same shapes; cast to float32)."""
        session = self._require_fitted()
        params = session.state.parameters
        unknown = sorted(set(state) - set(session.trainables))
        if unknown:
            raise OnnxLossError(
                f"set_state: {unknown} are not trained tensors {session.trainables}"
            )
        for name, value in state.items():
            current = params[name].data
            array = np.ascontiguousarray(value, dtype=current.dtype)
            if array.shape != current.shape:
                raise ShapeError(
                    f"set_state: '{name}' has shape {current.shape}, got {array.shape}"
                )
            params[name].data = array

    def get_trained_onnx(self, model: onnx.ModelProto | str | os.PathLike | None = None):
        """An inference model with the trained weights.

        Args:
            model: the inference model to put the weights into; ``None`` takes the loss
                model without its loss output, nodes, label and weight inputs (possible when
                it was made by onnxloss).
        """
        session = self._require_fitted()
        if model is None:
            if read_metadata(session.loss_model) is None:
                raise OnnxLossError(
                    "the loss model was not made by onnxloss, so its loss part cannot be told "
                    "apart; pass the inference model: get_trained_onnx(model)"
                )
            result = strip_loss(session.loss_model)
        else:
            result = onnx.ModelProto()
            result.CopyFrom(load_model(model))
        inits = {t.name: t for t in result.graph.initializer}
        missing = [n for n in session.trainables if n not in inits]
        if missing:
            raise OnnxLossError(f"the inference model has no initializer(s) {missing}")
        for name, value in self.get_state().items():
            inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
        return result

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Save weights, optimizer state, counters, losses and the shuffling RNG.

        A checkpoint saved between epochs (after ``fit`` returns) resumes exactly: load it
        into an estimator with the same parameters and call ``fit`` with the same data.
        """
        session = self._require_fitted()
        rt = session.rt
        session.state.properties[_CHECKPOINT_KEY] = json.dumps(
            {
                "format": 1,
                "n_iter": self.n_iter_,
                "t": self.t_,
                "train_losses": self.train_losses_,
                "validation_losses": self.validation_losses_,
                "best": None if math.isinf(self._best) else self._best,
                "no_improvement": self._no_improvement,
                "seed": str(self._seed),
                "epochs_run": self._epochs_run,
                "trained": self.trained_,
            }
        )
        with atomic_output(path, "checkpoint file") as tmp:
            rt.api.CheckpointState.save_checkpoint(session.state, tmp, include_optimizer_state=True)

    def load_checkpoint(self, path: str | os.PathLike) -> OrtGradientOptimizer:
        """Restore a run saved by :meth:`save_checkpoint`; the next ``fit`` continues it."""
        if not Path(path).is_file():
            raise OnnxLossError(f"checkpoint '{path}' does not exist")
        self._setup()
        try:
            state = self._session.rt.api.CheckpointState.load_checkpoint(str(path))
        except Exception as exc:
            raise OnnxLossError(f"cannot read checkpoint '{path}': {exc}") from exc
        if _CHECKPOINT_KEY not in state.properties:
            raise OnnxLossError(f"'{path}' is not a checkpoint saved by OrtGradientOptimizer")
        saved = json.loads(state.properties[_CHECKPOINT_KEY])
        if saved["trained"] != self._session.trainables:
            raise OnnxLossError(
                f"checkpoint '{path}' trains {saved['trained']}, this estimator "
                f"{self._session.trainables}"
            )
        self._open(state)
        self.n_iter_ = saved["n_iter"]
        self.t_ = saved["t"]
        self.train_losses_ = list(saved["train_losses"])
        self.validation_losses_ = list(saved["validation_losses"])
        self._best = math.inf if saved["best"] is None else saved["best"]
        self._no_improvement = saved["no_improvement"]
        self._seed = int(saved["seed"])
        self._epochs_run = saved["epochs_run"]
        self.trained_ = list(saved["trained"])
        self._resume = True
        return self


def _seed_from(random_state: int | None) -> int:
    """The run's shuffling seed: ``random_state``, or fresh entropy when it is None."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise OnnxLossError(f"random_state must be an int or None, got {random_state!r}")
    return int(random_state)


class _Source:
    """Calls ``ArrayEpochs.batches``; ``close`` joins its prefetch thread."""

    def __init__(self, epochs: ArrayEpochs):
        self._epochs = epochs

    def __call__(self, epoch: int, prefetch_next: bool):
        return self._epochs.batches(epoch, prefetch_next)

    def close(self) -> None:
        self._epochs.close()


class _Session:
    """Runtime objects of one estimator: artifacts, state, module, optimizer."""

    def __init__(self, rt, artifacts: TrainingArtifacts, loss_model, layout, trainables, key):
        self.key = key
        self.rt = rt
        self.artifacts = artifacts
        self.loss_model = loss_model
        self.layout = layout
        self.trainables = trainables
        self.state = self.module = self.optimizer = None

    def bind(self, state, module, optimizer) -> None:
        self.state, self.module, self.optimizer = state, module, optimizer
