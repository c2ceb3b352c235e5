"""Checking gradients against finite differences: for the built-in rules' tests and for
authors of third-party rules.

``check_gradient(model, feeds, wrt)`` differentiates ``model`` with :func:`gradient`, runs
the result with :class:`onnx.reference.ReferenceEvaluator` and compares each gradient with
central finite differences of the forward graph. Use float64 models: float32 differences
are too coarse to check anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from ..testing.runtime import numeric_gradient
from .gradient_model import gradient


def as_inputs(model: onnx.ModelProto, names: Sequence[str]) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``model`` where the initializers ``names`` are graph inputs, and their
    values (so a test can feed, and perturb, them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {}
    kept = []
    for tensor in out.graph.initializer:
        if tensor.name in names:
            values[tensor.name] = onnx.numpy_helper.to_array(tensor)
            out.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
        else:
            kept.append(tensor)
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, values


def _evaluator(model: onnx.ModelProto, runtime: str):
    if runtime == "reference":
        return ReferenceEvaluator(model)
    import onnxruntime

    return onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )


def gradients_and_differences(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    *,
    loss_output: str | None = None,
    step: float = 1e-6,
    runtime: str = "reference",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each tensor of ``wrt``: (the gradient from the gradient graph, the central finite
    differences of the forward graph), both computed by ``runtime``: ``"reference"``
    (onnx.reference) or ``"onnxruntime"``."""
    model, values = as_inputs(model, wrt)
    feeds = {**values, **feeds}
    grad_model = gradient(model, list(wrt), loss_output=loss_output)
    names = [o.name for o in grad_model.graph.output]
    run = _evaluator(grad_model, runtime).run(None, dict(feeds))
    results = dict(zip(names, run, strict=True))
    loss = loss_output or model.graph.output[0].name
    forward = _evaluator(model, runtime)
    found = {}
    for name in wrt:

        def objective(w, name=name):
            out = forward.run([loss], {**feeds, name: w.astype(feeds[name].dtype)})
            return float(np.sum(out[0]))

        numeric = numeric_gradient(objective, np.array(feeds[name], np.float64), step)
        found[name] = (results[_gradient_name(grad_model, name)], numeric)
    return found


def _gradient_name(grad_model: onnx.ModelProto, name: str) -> str:
    from .description import describe_training_step

    info = describe_training_step(grad_model)
    return next(t.gradient for t in info.trained if t.name == name)


def check_gradient(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    *,
    loss_output: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    step: float = 1e-6,
    runtime: str = "reference",
) -> None:
    """Assert that the gradient graph of ``model`` agrees with finite differences; an
    AssertionError names the tensor and shows both."""
    for name, (got, expected) in gradients_and_differences(
        model, feeds, wrt, loss_output=loss_output, step=step, runtime=runtime
    ).items():
        np.testing.assert_allclose(
            got, expected, rtol=rtol, atol=atol, err_msg=f"gradient with respect to '{name}'"
        )
