"""``OrtGradientOptimizer``: fit the weights of a loss model with onnxruntime.

One estimator, two backends (:mod:`onnxloss.train.backend`):

* ``"onnxruntime-training"``: gradients and updates by onnxruntime-training 1.19.2
  (``generate_artifacts``, ``api.Module``, ``api.Optimizer``, ``api.CheckpointState``);
* ``"onnxruntime"``: the training-step graph of :mod:`onnxloss.autodiff` (forward, backward
  and update in standard ONNX) run by a plain ``onnxruntime.InferenceSession``;
* ``"auto"`` (default): the training build when it is installed, else the plain runtime.

This class feeds data, schedules the learning rate and keeps the books; both backends give
the same numbers.

Update rule
-----------
Whatever reduction the loss model uses, each step is

    W ← update(W, η_t · ∇ mean_loss_batch)

where ``mean_loss_batch = (1/B) Σ_i w_i l_i (+ penalties)`` over the ``B`` samples of the
batch: a sum-reduced loss is divided by ``B`` inside the graph before it is differentiated,
so SGD (``W -= η_t·g``) and AdamW see the same objective. Penalties in a sum-reduced loss
model are divided by ``B`` with it (they are part of the same sum).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from ..errors import CoefficientError, ConvergenceError, OnnxLossError, ShapeError
from ..model_io import atomic_output, load_model
from ..readiness import check_trainable, default_trainables
from ..rewrite import read_metadata, strip_loss
from ..terms import check_number
from . import state as run_state
from ._runtime import BACKENDS, TRAINING, check_environment, resolve_backend
from .artifacts import per_sample_mean
from .backend import Backend, RunConfig
from .data import ArrayEpochs, CheckedArrays, Feeder, IterableEpochs, is_batch_iterable
from .distributed import DEFAULT_TIMEOUT, Collective
from .layout import describe_layout
from .progress import Progress
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
    "backend",
    "session_config",
)
_ADAMW_PARAMS = ("betas", "eps", "weight_decay")
_SESSION_CONFIG_KEYS = (
    "graph_optimization_level",
    "execution_mode",
    "enable_mem_pattern",
    "enable_cpu_mem_arena",
)


class OrtGradientOptimizer:
    """Train the weights of a loss model (first output = scalar loss) with mini-batch SGD
    or AdamW, on CPU or CUDA, through onnxruntime.

    Args:
        model_onnx: the loss model (``ModelProto`` or path), e.g. from ``add_loss_output``.
        weights_to_train: names of the float initializers to train; ``None`` trains what
            :func:`onnxloss.readiness.default_trainables` picks (the float initializers of
            rank >= 1 that are weights).
        loss_output_name: name of the loss output, which must be the first output.
        max_iter: number of epochs.
        batch_size: samples per step.
        learning_rate: a positive number (constant rate), ``'constant'``, ``'invscaling'``,
            ``'optimal'`` (scikit-learn's formulas, see :mod:`onnxloss.train.schedules`),
            or a :class:`~onnxloss.train.schedules.LearningRateSchedule`.
        eta0, power_t, alpha: parameters of the named schedules.
        optimizer: ``'sgd'`` (plain ``W -= η·g``) or ``'adamw'``.
        optimizer_params: AdamW's ``betas`` (default ``(0.9, 0.999)``), ``eps`` (1e-6) and
            ``weight_decay`` (1e-2), onnxruntime-training's defaults.
        max_grad_norm: clip the gradients' global norm to this value (None: no clipping).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        n_threads: intra-op threads of the runtime (1 is fastest for small models on small
            machines; see ``bench/bench_train.py``).
        warm_start: a new ``fit`` continues from the current weights instead of the model's
            (unless a parameter the runtime session is built from changed since: the model,
            ``weights_to_train``, ``optimizer``, ``device``, ``backend``... then a new run
            starts).
        verbose: 0 silent; 1 a progress bar over epochs with the running loss; 2 also a bar
            over the batches of the current epoch (on a terminal, see
            :mod:`onnxloss.train.progress`).
        validation_every: compute the validation loss every this many epochs.
        sample_weight_name: the sample-weight input, when the model's metadata does not say.
        shuffle: shuffle the samples at every epoch.
        random_state: seed of the shuffling (an int >= 0, or None for a fresh seed).
        tol, n_iter_no_change: stop when the monitored loss (validation if given, else
            training) has not improved by ``tol`` for ``n_iter_no_change`` epochs in a row
            (scikit-learn's rule); ``tol=None`` never stops early.
        loss_reduction: ``'auto'`` reads the reduction from the metadata ``add_loss_output``
            writes (``'mean'`` when absent); ``'sum'`` or ``'mean'`` overrides it.
        backend: ``'auto'``, ``'onnxruntime-training'`` or ``'onnxruntime'`` (see the module
            docstring).
        session_config: runtime session settings: ``graph_optimization_level``
            (``'ORT_ENABLE_ALL'``...), ``execution_mode``, ``enable_mem_pattern``,
            ``enable_cpu_mem_arena``, or any ``session.*`` configuration key of onnxruntime
            (e.g. ``{'session.intra_op.allow_spinning': '0'}``).
        communicator: an mpi4py communicator (e.g. ``MPI.COMM_WORLD``) for data-parallel
            training: each rank passes its shard of the data (see
            :func:`onnxloss.train.shard`); ``batch_size`` is per rank; see
            :mod:`onnxloss.train.distributed`.
        communicator_timeout: seconds a rank waits for the others before raising
            :class:`~onnxloss.train.distributed.DistributedError` (a rank died or hangs).

    Attributes:
        train_losses_: one float per epoch, the mean per-sample loss over the epoch.
        validation_losses_: mean per-sample validation loss, one per validated epoch.
        n_iter_: epochs run; ``t_``: samples seen plus one (the schedule's clock).
        trained_: the names of the trained tensors.
        backend_: the backend in use (``'onnxruntime-training'`` or ``'onnxruntime'``).
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
        backend: str = "auto",
        session_config: dict | None = None,
        communicator=None,
        communicator_timeout: float = DEFAULT_TIMEOUT,
    ):
        # The missing runtime is reported now, not at the first fit.
        check_environment()
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
        self.backend = backend
        self.session_config = session_config
        self.communicator = communicator
        self.communicator_timeout = communicator_timeout
        self._session: _Session | None = None  # set up on first fit / load_checkpoint
        self._resume = False
        self._pending: bytes | None = None  # a fitted state carried by pickle
        self._partial = False

    # -- parameters -------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("max_iter", "batch_size", "n_threads", "validation_every", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise OnnxLossError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise OnnxLossError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.backend not in BACKENDS:
            raise OnnxLossError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise OnnxLossError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        if self.tol is not None:
            check_number("tol", self.tol)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)
        if self.loss_reduction not in ("auto", "sum", "mean"):
            raise OnnxLossError(
                f"loss_reduction must be 'auto', 'sum' or 'mean', got {self.loss_reduction!r}"
            )
        if not isinstance(self.loss_output_name, str) or not self.loss_output_name:
            raise OnnxLossError(
                "loss_output_name must be the name of the loss output, got "
                f"{self.loss_output_name!r}"
            )
        _check_names(self.weights_to_train)
        _seed_from(self.random_state, check_only=True)
        _check_optimizer(self.optimizer, self.optimizer_params)
        _check_session_config(self.session_config)
        check_number("communicator_timeout", self.communicator_timeout, low=0.0, low_open=True)
        coll = getattr(self, "_collective", None)
        if self.communicator is None:
            self._collective = None
        elif coll is None or coll.comm is not self.communicator:
            self._collective = Collective(self.communicator, self.communicator_timeout)
        else:
            coll.timeout = float(self.communicator_timeout)
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
            if name != "model_onnx" and not _same(value, defaults[name].default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __getstate__(self) -> dict:
        """Pickling: the parameters and fitted attributes, and a fitted run's weights and
        optimizer state as checkpoint bytes (the runtime session is rebuilt from them on
        first use after unpickling)."""
        skip = ("_session", "_schedule", "_collective")
        state = {k: v for k, v in self.__dict__.items() if k not in skip}
        state["communicator"] = None  # a live MPI communicator does not travel
        if isinstance(self.model_onnx, onnx.ModelProto):
            state["model_onnx"] = self.model_onnx.SerializeToString()
            state["_model_is_proto"] = True
        if self._session is not None and getattr(self, "n_iter_", None) is not None:
            state["_pending"] = run_state.to_bytes(self._run_state())
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if state.pop("_model_is_proto", False):
            state["model_onnx"] = onnx.load_from_string(state["model_onnx"])
        self.__dict__.update(state)
        self._session = None
        self._resume = self._partial = False

    # -- set-up -----------------------------------------------------------------------------
    def _session_key(self) -> tuple:
        """What the runtime session is built from: when it changes, a new session (and a
        new run) is needed. The model counts by identity (a path by value)."""
        model = self.model_onnx
        ident = os.fspath(model) if isinstance(model, str | os.PathLike) else id(model)
        return (ident, *(repr(getattr(self, name)) for name in _SESSION_PARAMS))

    def _setup(self) -> bool:
        """Build the backend unless the current one fits the parameters; True if built."""
        self._check_params()
        key = self._session_key()
        if self._session is not None and self._session.key == key:
            return False
        if self._session is not None:
            self._session.backend.close()
        self._session = None
        backend_name = resolve_backend(self.backend)
        model = load_model(self.model_onnx)
        layout = describe_layout(
            model, self.loss_output_name, self.sample_weight_name, self.loss_reduction
        )
        trainables = self.weights_to_train
        if trainables is None:
            trainables = default_trainables(model)
        trainables = list(dict.fromkeys(trainables))
        if not trainables:
            raise OnnxLossError(
                "there is nothing to train: the model has no float initializer of rank >= 1 "
                "and weights_to_train names none"
            )
        # The readiness check on the caller's model (so messages name its loss output),
        # before the runtime sees it: every problem at once, each with its fix.
        check_trainable(
            model,
            trainables,
            loss_output=layout.loss_name,
            device=self.device.split(":")[0],
            backend=backend_name,
        ).raise_for_errors()
        prepared = per_sample_mean(model, layout) if layout.per_sample_sum else model
        config = RunConfig(
            loss_model=prepared,
            inference_model=model,
            layout=layout,
            trainables=tuple(trainables),
            optimizer=self.optimizer,
            optimizer_params=dict(self.optimizer_params or {}),
            max_grad_norm=self.max_grad_norm,
            device=self.device,
            n_threads=int(self.n_threads),
            session_config=dict(self.session_config or {}),
        )
        backend = _make_backend(backend_name, config)
        shapes = {n: _initializer_shape(model, n) for n in trainables}
        self._session = _Session(
            key, backend, model, layout, trainables, shapes, _label_ranges(model)
        )
        self.backend_ = backend.name
        return True

    def _reset_run(self) -> None:
        session = self._session
        if not session.fresh:  # a session just built already holds the initial state
            session.backend.import_state(session.initial)
        session.fresh = False
        self.train_losses_: list[float] = []
        self.validation_losses_: list[float] = []
        self.n_iter_ = 0
        self.t_ = 1
        self._epochs_run = 0  # epochs of this run, warm starts included: orders the shuffles
        self._seed = _seed_from(self.random_state)
        self._best = math.inf
        self._no_improvement = 0
        self.trained_ = list(session.trainables)
        if self._collective is not None:  # every rank starts from rank 0's weights and seed
            start = self._collective.broadcast((self._seed, session.backend.weights()), "start")
            self._seed, weights = start
            session.backend.set_weights(weights)

    def _begin(self, continue_run: bool) -> _Session:
        """Set up the backend and decide whether this call continues the current run:
        ``continue_run`` (warm start, ``partial_fit``) keeps the weights and counters; a
        loaded checkpoint is continued once by the next call."""
        rebuilt = self._setup()
        restored = self._restore_pending()
        if self._resume and not rebuilt:
            self._resume = False
        elif (rebuilt and not restored) or not (continue_run and getattr(self, "n_iter_", 0) > 0):
            self._resume = False
            self._reset_run()
        elif not self._partial:
            self.n_iter_ = 0  # warm start: a new run of max_iter epochs from these weights
        return self._session

    def _restore_pending(self) -> bool:
        """Put back the fitted state an unpickled estimator carries; True if there was one."""
        if self._pending is None:
            return False
        if self._session is None:
            self._setup()
        data, self._pending = self._pending, None
        where = "the pickled estimator's state"
        self._apply(run_state.from_bytes(data, self._session.shapes, where), where)
        return True

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
        self._partial = False
        session = self._begin(self.warm_start)
        feeder = session.feeder()
        train = self._epochs(feeder, X, y, sample_weight, shuffle=self.shuffle)
        val = None
        if X_val is not None:
            val = self._epochs(feeder, X_val, y_val, sample_weight_val, shuffle=False, what="_val")
        progress = Progress(self.verbose, self.max_iter, self.n_iter_)
        try:
            for epoch in range(self.n_iter_, self.max_iter):
                loss = self._train_epoch(session, train, epoch, progress)
                monitored = loss
                if val is not None and (epoch + 1) % self.validation_every == 0:
                    monitored = self._evaluate(session, val)
                    self.validation_losses_.append(monitored)
                progress.epoch_done(loss)
                if self._should_stop(monitored):
                    break
        finally:
            progress.close()
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """One pass over ``X`` (scikit-learn's habit), continuing the current run: the
        weights, the optimizer state, the schedule's clock ``t_`` and the epoch count.

        The first call starts a run (as ``fit`` would); ``max_iter`` and early stopping do not
        apply. Returns self.
        """
        self._partial = True
        try:
            session = self._begin(True)
            train = self._epochs(session.feeder(), X, y, sample_weight, shuffle=self.shuffle)
            self._train_epoch(session, train, self.n_iter_, Progress(0, 1))
        finally:
            self._partial = False
        return self

    def _epochs(self, feeder: Feeder, X, y, w, *, shuffle: bool, what: str = ""):
        """An object whose ``batches(epoch)`` gives one epoch of ``Batch``es."""
        if is_batch_iterable(X, y):
            if w is not None:
                raise OnnxLossError("with an iterable of batches, put the weights in the batches")
            return IterableEpochs(X, feeder)
        arrays = feeder.arrays(X, y, w, lazy=True, what=what)
        if len(arrays[0]) == 0:
            raise ShapeError(f"X{what} has no samples")
        seed = self._seed if shuffle else None
        return ArrayEpochs(arrays, feeder, int(self.batch_size), seed, what)

    def _train_epoch(self, session: _Session, source, epoch: int, progress: Progress) -> float:
        if self._collective is not None:
            return self._train_epoch_distributed(session, source, epoch, progress)
        backend, schedule = session.backend, self._schedule
        total, seen, t = 0.0, 0, self.t_
        progress.start_epoch(source.n_batches)
        try:
            for b, batch in enumerate(source.batches(self._epochs_run)):
                lr = schedule.rate(t)
                loss = backend.train_step(batch, lr)
                if not math.isfinite(loss):
                    source.feeder.check_batch(batch, source.what)  # bad data is named as such
                    raise ConvergenceError(
                        f"the loss is {loss} at epoch {epoch + 1}, batch {b + 1} (learning rate "
                        f"{lr:g}); the step was not applied. The batch's data is finite, so "
                        "lower the learning rate, clip gradients (max_grad_norm) or scale the "
                        "data"
                    )
                total += loss * batch.rows
                seen += batch.rows
                t += batch.rows
                progress.batch_done(total / seen)
        finally:
            self.t_ = t
        if seen == 0:
            raise OnnxLossError(f"epoch {epoch + 1} had no batches")
        mean = total / seen
        self.train_losses_.append(mean)
        self.n_iter_ = epoch + 1
        self._epochs_run += 1
        return mean

    def _train_epoch_distributed(self, session, source, epoch: int, progress) -> float:
        """One epoch where every step's gradient is averaged over the ranks (see
        :mod:`onnxloss.train.distributed`)."""
        backend, schedule, coll = session.backend, self._schedule, self._collective
        sizes = [g.size for g in backend.gradient_buffers()]
        count = sum(sizes)
        send = coll.step_buffer(count + 2)
        batches = iter(source.batches(self._epochs_run))
        total, seen, t, step = 0.0, 0, self.t_, 0
        progress.start_epoch(source.n_batches)
        try:
            while True:
                step += 1
                batch = next(batches, None)
                if batch is None:
                    send[:] = 0.0  # this rank's shard is used up: it adds nothing
                else:
                    loss = backend.compute_gradients(batch)
                    offset = 0
                    for g in backend.gradient_buffers():
                        np.multiply(g.reshape(-1), batch.rows, out=send[offset : offset + g.size])
                        offset += g.size
                    send[count], send[count + 1] = batch.rows, loss * batch.rows
                got = coll.allreduce_sum(send, f"epoch {epoch + 1}, step {step}")
                rows = int(round(got[count]))
                if rows == 0:
                    break
                loss = got[count + 1] / rows
                lr = schedule.rate(t)
                if not math.isfinite(loss):
                    if batch is not None:
                        source.feeder.check_batch(batch, source.what)
                    raise ConvergenceError(
                        f"the loss is {loss} at epoch {epoch + 1}, step {step} (learning rate "
                        f"{lr:g}, all ranks); the step was not applied"
                    )
                offset = 0
                for g in backend.gradient_buffers():
                    g[...] = (got[offset : offset + g.size] / rows).reshape(g.shape)
                    offset += g.size
                backend.apply_gradients(lr)
                total += got[count + 1]
                seen += rows
                t += rows
                progress.batch_done(total / seen)
        finally:
            self.t_ = t
        mean = total / seen
        self.train_losses_.append(mean)
        self.n_iter_ = epoch + 1
        self._epochs_run += 1
        return mean

    def _evaluate(self, session: _Session, source) -> float:
        total, seen = 0.0, 0
        for batch in source.batches(0):
            total += session.backend.evaluate(batch) * batch.rows
            seen += batch.rows
        if self._collective is not None:  # the mean over every rank's validation shard
            total, seen = self._collective.allreduce_sum(np.array([total, seen], float), "eval")
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

    # -- inference --------------------------------------------------------------------------
    def predict(self, X):
        """The model's outputs for ``X`` with the current weights, run by the runtime (no file
        is written). One output (besides the loss): its array; several: a dict name → array.
        """
        session = self._require_fitted()
        outputs = session.backend.predict(session.feeder().features(X))
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the mean per-sample loss on ``(X, y)`` (greater is better, as scikit-learn's
        ``score`` wants): ``-(1/N) Σ_i w_i l_i`` with the model's penalties counted per
        batch of ``batch_size`` as in training."""
        session = self._require_fitted()
        source = self._epochs(session.feeder(), X, y, sample_weight, shuffle=False)
        return -self._evaluate(session, source)

    # -- state ------------------------------------------------------------------------------
    def _require_fitted(self) -> _Session:
        self._restore_pending()
        if self._session is None or getattr(self, "n_iter_", None) is None:
            raise OnnxLossError(
                "this OrtGradientOptimizer is not fitted yet; call fit() or load_checkpoint()"
            )
        return self._session

    def get_state(self) -> dict[str, np.ndarray]:
        """The trained tensors: name → a copy of the current value."""
        return self._require_fitted().backend.weights()

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Overwrite trained tensors with the given arrays (same shapes; cast to the
        weights' type)."""
        session = self._require_fitted()
        if not isinstance(state, Mapping):
            raise OnnxLossError(f"set_state takes a dict name → array, got {type(state).__name__}")
        unknown = sorted(set(state) - set(session.trainables), key=str)
        if unknown:
            raise OnnxLossError(
                f"set_state: {unknown} are not trained tensors {session.trainables}"
            )
        current = session.backend.weights()
        values = {}
        for name, value in state.items():
            try:
                array = np.array(value, dtype=current[name].dtype, copy=True, order="C")
            except (TypeError, ValueError) as exc:
                raise OnnxLossError(f"set_state: '{name}' is not numeric: {exc}") from None
            if array.shape != current[name].shape:
                raise ShapeError(
                    f"set_state: '{name}' has shape {current[name].shape}, got {array.shape}"
                )
            if not np.isfinite(array).all():
                raise OnnxLossError(f"set_state: '{name}' holds NaN or infinite values")
            values[name] = array
        session.backend.set_weights(values)

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
            if tuple(inits[name].dims) != value.shape:
                raise ShapeError(
                    f"the inference model's '{name}' has shape {list(inits[name].dims)}, the "
                    f"trained one {list(value.shape)}"
                )
            inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
        return result

    # -- checkpoints ------------------------------------------------------------------------
    def _run_state(self) -> run_state.RunState:
        state = self._session.backend.export_state()
        state.trainer = {
            "n_iter": self.n_iter_,
            "t": self.t_,
            "train_losses": list(self.train_losses_),
            "validation_losses": list(self.validation_losses_),
            "best": None if math.isinf(self._best) else self._best,
            "no_improvement": self._no_improvement,
            "seed": str(self._seed),
            "epochs_run": self._epochs_run,
            "trained": list(self.trained_),
            "backend": self._session.backend.name,
        }
        return state

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Save weights, optimizer state, counters, losses and the shuffling seed.

        A checkpoint saved between epochs (after ``fit`` returns) resumes exactly, on either
        backend: load it into an estimator with the same parameters and call ``fit`` with
        the same data. The file is onnxloss's ``.npz`` format (:mod:`onnxloss.train.state`).
        """
        self._require_fitted()
        if self._collective is not None and self._collective.rank != 0:
            return  # every rank holds the same state: rank 0 writes it
        data = run_state.to_bytes(self._run_state())
        with atomic_output(path, "checkpoint file") as tmp:
            Path(tmp).write_bytes(data)

    def load_checkpoint(self, path: str | os.PathLike) -> OrtGradientOptimizer:
        """Restore a run saved by :meth:`save_checkpoint` (by either backend, or by onnxloss
        0.1 in onnxruntime-training's format); the next ``fit`` continues it."""
        self._setup()
        self._pending = None
        coll = self._collective
        state = error = None
        if coll is None or coll.rank == 0:  # under MPI, rank 0 reads and sends it to all
            try:
                if not isinstance(path, str | os.PathLike) or not Path(path).is_file():
                    raise OnnxLossError(f"checkpoint '{path}' does not exist")
                state = run_state.read_file(path, self._session.shapes)
            except OnnxLossError as exc:
                error = exc
        if coll is not None:
            state, message = coll.broadcast((state, None if error is None else str(error)), "load")
            if message is not None:
                error = error or OnnxLossError(message)
        if error is not None:
            raise error
        self._apply(state, f"checkpoint '{path}'")
        self._resume = True
        return self

    def _apply(self, state: run_state.RunState, where: str) -> None:
        session = self._session
        state.check_against(session.shapes, self.optimizer, where)
        saved = state.trainer
        try:
            counters = {
                "n_iter": int(saved["n_iter"]),
                "t": int(saved["t"]),
                "train_losses": [float(v) for v in saved["train_losses"]],
                "validation_losses": [float(v) for v in saved["validation_losses"]],
                "best": math.inf if saved["best"] is None else float(saved["best"]),
                "no_improvement": int(saved["no_improvement"]),
                "seed": int(saved["seed"]),
                "epochs_run": int(saved["epochs_run"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise OnnxLossError(f"{where}: its trainer counters are malformed ({exc})") from None
        if counters["seed"] < 0 or counters["t"] < 1 or counters["n_iter"] < 0:
            raise OnnxLossError(f"{where}: its trainer counters are out of range")
        for name, value in state.weights.items():
            state.weights[name] = value.astype(session.initial.weights[name].dtype, copy=False)
        session.backend.import_state(state)
        session.fresh = False
        self.n_iter_ = counters["n_iter"]
        self.t_ = counters["t"]
        self.train_losses_ = counters["train_losses"]
        self.validation_losses_ = counters["validation_losses"]
        self._best = counters["best"]
        self._no_improvement = counters["no_improvement"]
        self._seed = counters["seed"]
        self._epochs_run = counters["epochs_run"]
        self.trained_ = list(session.trainables)


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):  # arrays and other values without a plain truth value
        return False


def _make_backend(name: str, config: RunConfig) -> Backend:
    if name == TRAINING:
        from .backend_training import TrainingBuildBackend

        return TrainingBuildBackend(config)
    from .backend_plain import PlainRuntimeBackend

    return PlainRuntimeBackend(config)


def _initializer_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...]:
    for t in model.graph.initializer:
        if t.name == name:
            return tuple(int(d) for d in t.dims)
    raise OnnxLossError(f"no initializer named '{name}'")


def _label_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int, int | None]]:
    """The class-label ranges the rewriter recorded (metadata ``labels``: target →
    ``{"classes": C, "ignore_index": k}`` or ``{"classes": C, "end": -1}``), as
    ``(0, C, k)``: labels in ``[0, C)``, or ``k``; read_metadata checked them."""
    meta = read_metadata(model) or {}
    return {
        target: (0, info["classes"], info.get("ignore_index", info.get("end")))
        for target, info in meta.get("labels", {}).items()
        if info.get("classes") is not None
    }


def _check_names(weights) -> None:
    if weights is None:
        return
    if isinstance(weights, str):
        raise OnnxLossError(
            f"weights_to_train must be a list of tensor names, got the string {weights!r} "
            f"(did you mean [{weights!r}]?)"
        )
    if not isinstance(weights, list | tuple) or not all(isinstance(w, str) and w for w in weights):
        raise OnnxLossError(f"weights_to_train must be a list of tensor names, got {weights!r}")


def _check_optimizer(optimizer, params) -> None:
    if optimizer not in ("sgd", "adamw"):
        raise OnnxLossError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if params is not None and not isinstance(params, Mapping):
        raise OnnxLossError(f"optimizer_params must be a dict, got {type(params).__name__}")
    params = dict(params or {})
    if optimizer == "sgd":
        if params:
            raise OnnxLossError(
                f"optimizer 'sgd' takes no optimizer_params (got {sorted(params)}): its update is "
                "plain W -= lr·grad"
            )
        return
    unknown = sorted(set(params) - set(_ADAMW_PARAMS), key=str)
    if unknown:
        raise OnnxLossError(
            f"optimizer 'adamw' has no parameter(s) {unknown}; it takes {list(_ADAMW_PARAMS)}"
        )
    if "betas" in params:
        betas = params["betas"]
        if isinstance(betas, str) or not isinstance(betas, list | tuple) or len(betas) != 2:
            raise CoefficientError(f"adamw betas must be two numbers in [0, 1), got {betas!r}")
        for k, beta in enumerate(betas):
            check_number(f"adamw betas[{k}]", beta, low=0.0, high=1.0, high_open=True)
    if "eps" in params:
        check_number("adamw eps", params["eps"], low=0.0, low_open=True)
    if "weight_decay" in params:
        check_number("adamw weight_decay", params["weight_decay"], low=0.0)


def _check_session_config(config) -> None:
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise OnnxLossError(f"session_config must be a dict, got {type(config).__name__}")
    for key in config:
        if not isinstance(key, str) or not (
            key in _SESSION_CONFIG_KEYS or key.startswith("session.")
        ):
            raise OnnxLossError(
                f"session_config key {key!r} is not one of {list(_SESSION_CONFIG_KEYS)} nor an "
                "onnxruntime 'session.*' configuration key"
            )


def _seed_from(random_state, check_only: bool = False) -> int | None:
    """The run's shuffling seed: ``random_state``, or fresh entropy when it is None."""
    if random_state is None:
        return None if check_only else int(np.random.SeedSequence().entropy)
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise OnnxLossError(f"random_state must be an int >= 0 or None, got {random_state!r}")
    if random_state < 0:
        raise OnnxLossError(f"random_state must be >= 0 (a numpy seed), got {random_state}")
    return int(random_state)


class _Session:
    """One backend with what the estimator keeps beside it."""

    def __init__(self, key, backend: Backend, loss_model, layout, trainables, shapes, labels):
        self.key = key
        self.backend = backend
        self.loss_model = loss_model
        self.layout = layout
        self.trainables = trainables
        self.shapes = shapes
        self.label_ranges = labels
        # The run's starting point, so that a new run never rebuilds the runtime objects.
        self.initial = backend.export_state()
        self.fresh = True  # still at ``initial``: the first run needs no import
        self.checked = CheckedArrays()

    def feeder(self) -> Feeder:
        feeder = Feeder(self.layout, self.backend.input_names)
        feeder.label_ranges = self.label_ranges
        feeder.checked = self.checked  # arrays checked by earlier calls of this run
        return feeder
