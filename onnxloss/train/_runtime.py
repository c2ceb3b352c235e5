"""Importing onnxruntime-training's ``api`` and ``artifacts`` without torch.

``import onnxruntime.training`` runs a package ``__init__`` that imports torch
(microsoft/onnxruntime#22070, fixed upstream but never released in 1.19.2). The submodules
onnxloss uses (``api``, ``artifacts``, ``onnxblock``) do not need torch, so when torch is
missing, a bare package object whose ``__path__`` is the installed ``onnxruntime/training``
folder stands in for the real one while they import. With torch installed, the normal import
is used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from functools import cache

from ..errors import OnnxLossError

INSTALL_HINT = (
    "install the trainer's extra: pip install 'onnxloss[train]' (CPU) or "
    "'onnxloss[train-gpu]' (CUDA), and not plain 'onnxruntime' beside it"
)


class TrainingRuntime(types.SimpleNamespace):
    """The runtime modules: ``ort``, ``api``, ``artifacts``, ``onnxblock``."""


@cache
def load_runtime() -> TrainingRuntime:
    """Import the training runtime once, or raise an OnnxLossError saying how to get it."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        raise OnnxLossError(f"onnxruntime-training is not installed; {INSTALL_HINT}")
    folder = os.path.join(os.path.dirname(spec.origin), "training")
    if not os.path.isdir(folder):
        raise OnnxLossError(
            "the installed onnxruntime has no training support (plain 'onnxruntime' is "
            f"installed, or it was installed over the training build); {INSTALL_HINT}"
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
        raise OnnxLossError(
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
