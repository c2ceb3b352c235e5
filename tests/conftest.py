"""Shared fixtures and helpers: run graphs with the reference evaluator and onnxruntime."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx.reference import ReferenceEvaluator

from onnxloss import registry

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
#: onnxruntime 1.19.2 runs opsets up to 21 and IR versions up to 10.
ORT_MAX_OPSET = 21

requires_ort = pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra (onnxruntime)")


def _train_backends() -> list[str]:
    """The trainer backends this environment can run."""
    if not HAS_ORT:
        return []
    from onnxloss.train._runtime import has_training_build

    found = ["onnxruntime-training"] if has_training_build() else []
    if importlib.util.find_spec("onnxloss.autodiff") is not None:
        found.append("onnxruntime")
    return found


#: Backends of OrtGradientOptimizer available here ("onnxruntime-training" needs the
#: training build; "onnxruntime" runs on any onnxruntime).
TRAIN_BACKENDS = _train_backends()
HAS_TRAINING_BUILD = "onnxruntime-training" in TRAIN_BACKENDS
requires_training_build = pytest.mark.skipif(
    not HAS_TRAINING_BUILD, reason="needs onnxruntime-training"
)


@pytest.fixture(params=TRAIN_BACKENDS)
def backend(request, monkeypatch):
    """Runs a test once per trainer backend: ``backend='auto'`` resolves to it."""
    monkeypatch.setenv("ONNXLOSS_BACKEND", request.param)
    return request.param


#: The built-in terms only, whatever third-party plugins are installed.
BUILTIN_LOSSES = registry.PluginRegistry(entry_points=False).registrations("loss")
BUILTIN_REGULARIZERS = registry.PluginRegistry(entry_points=False).registrations("regularizer")


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs from onnx.reference, checked against onnxruntime when it can run the model."""
    expected = ReferenceEvaluator(model).run(None, feeds)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if HAS_ORT and opset <= ORT_MAX_OPSET and model.ir_version <= 10:
        import onnxruntime as ort

        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, feeds)
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-6)
    return expected


def identity_model(
    shape=("N", 1), elem=TensorProto.FLOAT, opset: int = 17, name: str = "pred"
) -> onnx.ModelProto:
    """``pred = Identity(P)``: feed predictions directly to test a loss."""
    graph = oh.make_graph(
        [oh.make_node("Identity", ["P"], [name], name="identity")],
        "identity",
        [oh.make_tensor_value_info("P", elem, list(shape))],
        [oh.make_tensor_value_info(name, elem, list(shape))],
    )
    return oh.make_model(
        graph,
        opset_imports=[oh.make_opsetid("", opset)],
        ir_version=ir_for(opset),
    )


def ir_for(opset: int) -> int:
    """IR version for an opset: 8 for what onnxruntime 1.19.2 runs, else the minimum."""
    if opset <= ORT_MAX_OPSET:
        return 8
    return onnx.helper.find_min_ir_version_for([oh.make_opsetid("", opset)])


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where a test installs fake distributions (see plugin_dists)."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def fresh_registry():
    """A registry with the built-ins only, restored after the test."""
    reg = registry.PluginRegistry(entry_points=False)
    previous = registry.reset_registry(reg)
    yield reg
    registry.reset_registry(previous)
