"""Finding and importing the runtimes the trainer's two backends use.

* ``"onnxruntime-training"``: the training build 1.19.2 (``onnxruntime-training-cpu`` or
  ``onnxruntime-training``), through its ``api``/``artifacts``/``onnxblock`` modules.
  ``import onnxruntime.training`` runs a package ``__init__`` that imports torch
  (microsoft/onnxruntime#22070, fixed upstream but never released in 1.19.2). The submodules
  onnxloss uses do not need torch, so when torch is missing, a bare package object whose
  ``__path__`` is the installed ``onnxruntime/training`` folder stands in for the real one
  while they import. With torch installed, the normal import is used.
* ``"onnxruntime"``: any build that offers ``onnxruntime.InferenceSession`` (the maintained
  ``onnxruntime`` / ``onnxruntime-gpu``, or the training build itself), running the
  training-step graph of :mod:`onnxloss.autodiff`.

Both kinds of package install into the same ``onnxruntime/`` folder and break each other,
so finding both installed is an error that says how to repair the environment.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from functools import cache

from ..errors import OnnxLossError

TRAINING = "onnxruntime-training"
PLAIN = "onnxruntime"
BACKENDS = ("auto", TRAINING, PLAIN)

#: Distributions of the training build, and of builds without training (any of them
#: provides ``onnxruntime.InferenceSession``).
TRAINING_DISTRIBUTIONS = ("onnxruntime-training-cpu", "onnxruntime-training")
PLAIN_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
)

INSTALL_HINT = (
    "install one runtime: pip install 'onnxloss[train]' (onnxruntime-training where it has "
    "wheels, else onnxruntime), 'onnxloss[train-gpu]' (the CUDA training build), "
    "'onnxloss[train-onnxruntime]' or 'onnxloss[train-onnxruntime-gpu]'"
)


class OnnxRuntimeMissing(OnnxLossError):
    """No usable onnxruntime is installed (or two that clash are)."""


class TrainingRuntime(types.SimpleNamespace):
    """The training build's modules: ``ort``, ``api``, ``artifacts``, ``onnxblock``."""


def _installed(names: tuple[str, ...]) -> list[str]:
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


@cache
def installed_runtimes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(training distributions, plain distributions)`` installed, as ``name version``."""
    return tuple(_installed(TRAINING_DISTRIBUTIONS)), tuple(_installed(PLAIN_DISTRIBUTIONS))


def check_environment() -> None:
    """An :class:`OnnxRuntimeMissing` when no runtime is installed or two clash; cheap (reads
    package metadata, imports nothing)."""
    training, plain = installed_runtimes()
    if training and plain:
        names = [n.split()[0] for n in (*training, *plain)]
        raise OnnxRuntimeMissing(
            f"both {', '.join(training)} and {', '.join(plain)} are installed; they share the "
            "onnxruntime/ folder and break each other. Repair the environment: pip uninstall -y "
            f"{' '.join(names)}, then {INSTALL_HINT}"
        )
    if not training and not plain and importlib.util.find_spec("onnxruntime") is None:
        raise OnnxRuntimeMissing(
            f"the trainer needs onnxruntime and none is installed; {INSTALL_HINT}"
        )


def has_training_build() -> bool:
    """Whether the training build's modules are there (without importing them)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return False
    return os.path.isfile(
        os.path.join(os.path.dirname(spec.origin), "training", "api", "module.py")
    )


#: Environment variable naming the backend ``"auto"`` stands for (tests, whole programs).
ENV_BACKEND = "ONNXLOSS_BACKEND"


def resolve_backend(backend: str) -> str:
    """``"auto"`` → ``$ONNXLOSS_BACKEND`` when set, else the training build when it is
    installed, else the plain runtime."""
    if backend not in BACKENDS:
        raise OnnxLossError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_environment()
    if backend == "auto":
        chosen = os.environ.get(ENV_BACKEND, "").strip()
        if chosen:
            if chosen not in BACKENDS[1:]:
                raise OnnxLossError(f"{ENV_BACKEND}={chosen!r} is not one of {BACKENDS[1:]}")
            return chosen
        return TRAINING if has_training_build() else PLAIN
    return backend


@cache
def load_plain_runtime():
    """``import onnxruntime`` (any build with an InferenceSession), or a clear error."""
    check_environment()
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise OnnxRuntimeMissing(f"onnxruntime failed to import ({exc}); {INSTALL_HINT}") from exc
    if not hasattr(ort, "InferenceSession"):
        raise OnnxRuntimeMissing(
            "the installed onnxruntime package is broken (no InferenceSession): a runtime was "
            f"uninstalled over another; reinstall it: {INSTALL_HINT}"
        )
    return ort


@cache
def load_runtime() -> TrainingRuntime:
    """Import the training build once, or raise an OnnxLossError saying how to get it."""
    check_environment()
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        raise OnnxRuntimeMissing(f"onnxruntime-training is not installed; {INSTALL_HINT}")
    folder = os.path.join(os.path.dirname(spec.origin), "training")
    if not os.path.isdir(folder):
        raise OnnxRuntimeMissing(
            "backend 'onnxruntime-training' needs the training build, and the installed "
            "onnxruntime has no training support; use backend='onnxruntime' (or 'auto'), or "
            "install 'onnxloss[train]' on Python < 3.13 in an environment without plain "
            "onnxruntime"
        )
    ort = importlib.import_module("onnxruntime")
    if "onnxruntime.training" not in sys.modules and importlib.util.find_spec("torch") is None:
        bare = types.ModuleType("onnxruntime.training")
        bare.__path__ = [folder]
        bare.__file__ = os.path.join(folder, "__init__.py")
        sys.modules["onnxruntime.training"] = bare
    try:
        api = importlib.import_module("onnxruntime.training.api")
        artifacts = importlib.import_module("onnxruntime.training.artifacts")
        onnxblock = importlib.import_module("onnxruntime.training.onnxblock")
    except ImportError as exc:
        raise OnnxRuntimeMissing(
            f"onnxruntime's training modules failed to import ({exc}); {INSTALL_HINT}"
        ) from exc
    return TrainingRuntime(ort=ort, api=api, artifacts=artifacts, onnxblock=onnxblock)


@contextlib.contextmanager
def quiet_python_logging() -> Iterator[None]:
    """Hide the INFO records ``generate_artifacts`` sends to the root logger ("Saved
    training model to ...") while it runs; warnings and errors still pass."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def native_log_filter() -> Iterator[list[str]]:
    """Capture what C++ code writes to file descriptor 2 while the block runs.

    The gradient-graph builder of onnxruntime-training 1.19.2 prints INFO lines for every
    graph transformer whatever ``set_default_logger_severity`` says. Those are dropped;
    warnings and errors are written back to stderr, and the captured lines are yielded so
    a caller can quote them in an error message.
    """
    kept: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to filter
        yield kept
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield kept
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if " [I:" in line or " [V:" in line:
                    continue
                kept.append(line)
                print(line, file=sys.stderr)
