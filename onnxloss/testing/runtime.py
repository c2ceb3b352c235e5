"""Running models for the conformance suite: onnx's reference evaluator, cross-checked with
onnxruntime when it is installed, and gradients from onnxruntime-training.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from ..errors import OnnxLossError
from .models import RUNTIME_MAX_IR, RUNTIME_MAX_OPSET

#: How far onnxruntime may stray from the reference evaluator (both compute in float32).
CROSS_CHECK_RTOL = 2e-5
CROSS_CHECK_ATOL = 1e-6


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@cache
def has_onnxruntime() -> bool:
    """Whether ``import onnxruntime`` gives an inference session (any onnxruntime build)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        import onnxruntime
    except ImportError:  # a broken install: the reference evaluator still runs
        return False
    return hasattr(onnxruntime, "InferenceSession")


def runtime_can_run(model: onnx.ModelProto) -> bool:
    """Whether onnxruntime 1.19 accepts the model's opset and IR version."""
    return default_opset(model) <= RUNTIME_MAX_OPSET and model.ir_version <= RUNTIME_MAX_IR


def run_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs from :class:`onnx.reference.ReferenceEvaluator`.

    When onnxruntime is installed and runs the model's opset, its outputs must agree with
    the reference evaluator's (``rtol=2e-5``, ``atol=1e-6``), else an AssertionError says
    which output differs.
    """
    expected = ReferenceEvaluator(model).run(None, dict(feeds))
    if has_onnxruntime() and runtime_can_run(model):
        import onnxruntime

        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, dict(feeds))
        names = [o.name for o in model.graph.output]
        for name, e, g in zip(names, expected, got, strict=True):
            np.testing.assert_allclose(
                g,
                e,
                rtol=CROSS_CHECK_RTOL,
                atol=CROSS_CHECK_ATOL,
                err_msg=f"onnxruntime and onnx.reference disagree on output '{name}'",
            )
    return expected


@cache
def training_runtime_problem() -> str | None:
    """``None`` when onnxruntime-training can build gradients here, else why it cannot."""
    from ..train._runtime import load_runtime

    try:
        load_runtime()
    except OnnxLossError as exc:
        return str(exc)
    return None


def onnxruntime_gradients(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    trainables: Sequence[str],
    *,
    check: bool = True,
) -> tuple[float, dict[str, np.ndarray]]:
    """The loss (first output) and its gradient with respect to each of ``trainables``,
    computed by onnxruntime-training from the training artifacts it builds for ``model``.

    ``check=False`` skips the readiness check (to measure what the runtime itself does).
    Raises :class:`~onnxloss.OnnxLossError` when the runtime is missing or cannot build
    the gradient graph (an operator without a gradient, for example).
    """
    from ..train._runtime import load_runtime
    from ..train.artifacts import TrainingArtifacts, runtime_compatible

    rt = load_runtime()
    artifacts = TrainingArtifacts(runtime_compatible(model), list(trainables), check=check)
    try:
        state = rt.api.CheckpointState.load_checkpoint(str(artifacts.checkpoint))
        module = rt.api.Module(
            str(artifacts.training_model), state, str(artifacts.eval_model), device="cpu"
        )
        module.train()
        outputs = module(*[feeds[name] for name in module.input_names()])
        loss = outputs[0] if isinstance(outputs, tuple | list) else outputs
        if hasattr(loss, "numpy"):  # a model without inputs gets runtime values back
            loss = loss.numpy()
        grads = {name: np.array(state.parameters[name].grad, copy=True) for name in trainables}
        return float(np.asarray(loss)), grads
    finally:
        artifacts.cleanup()


def numeric_gradient(func, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``func`` at ``x`` (float64), element by
    element, with a step scaled by each element's magnitude."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        h = step * max(1.0, abs(flat_x[i]))
        saved = flat_x[i]
        flat_x[i] = saved + h
        up = float(func(x))
        flat_x[i] = saved - h
        down = float(func(x))
        flat_x[i] = saved
        flat_g[i] = (up - down) / (2 * h)
    return grad
