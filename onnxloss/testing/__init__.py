"""onnxloss.testing: the conformance kit for loss and regularizer plugins, as a pytest plugin.

PYTEST_DONT_REWRITE

The plugin is opt-in, like pytest's own ``pytester``: it is never loaded for every pytest
user. Activate it in a plugin's top-level ``conftest.py`` or test module::

    pytest_plugins = ["onnxloss.testing"]

or on the command line with ``pytest -p onnxloss.testing``. It then

* parametrizes the checks of the :class:`LossConformance` and
  :class:`RegularizerConformance` classes a test module subclasses (toy model kinds,
  opsets, reductions, weighting, option sets);
* provides the ``onnxloss_registry`` fixture: a fresh registry that loads the built-ins and
  every installed ``onnxloss`` entry point, installed as the process-wide one for the test;
* marks every check ``onnxloss_conformance`` (and the gradient checks
  ``onnxloss_gradients``), so ``-m "not onnxloss_gradients"`` deselects them;
* reports in pytest's header which runtimes the checks will use.

The kit's checks raise plain ``AssertionError`` with full messages, so it needs no assertion
rewriting (hence the marker above, as in pytester).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from .. import __version__, registry
from ..errors import PluginWarning
from ..model_index import MAX_OPSET, MIN_OPSET
from .checks import (
    BUILTIN,
    assert_deterministic,
    assert_names_unique,
    assert_registered,
    assert_untouched,
    assert_valid_loss_model,
)
from .conformance import (
    Conformance,
    LossCase,
    LossConformance,
    RegularizerCase,
    RegularizerConformance,
    Variant,
)
from .models import crowded_copy, toy_model
from .runtime import (
    has_onnxruntime,
    numeric_gradient,
    onnxruntime_gradients,
    run_model,
    training_runtime_problem,
)

__all__ = [
    "BUILTIN",
    "LossCase",
    "LossConformance",
    "RegularizerCase",
    "RegularizerConformance",
    "Variant",
    "assert_deterministic",
    "assert_names_unique",
    "assert_registered",
    "assert_untouched",
    "assert_valid_loss_model",
    "crowded_copy",
    "numeric_gradient",
    "onnxruntime_gradients",
    "run_model",
    "toy_model",
    "training_runtime_problem",
]

MARKERS = {
    "onnxloss_conformance": "a check of the onnxloss.testing conformance suite",
    "onnxloss_gradients": "a conformance check that needs onnxruntime-training",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = metafunc.cls
    if cls is not None and issubclass(cls, Conformance):
        cls._onnxloss_parametrize(metafunc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not issubclass(cls, Conformance):
            continue
        item.add_marker("onnxloss_conformance")
        if item.name.startswith("test_gradient"):
            item.add_marker("onnxloss_gradients")


def pytest_report_header(config: pytest.Config) -> list[str]:
    problem = training_runtime_problem()
    gradients = "gradient checks run" if problem is None else "gradient checks skipped"
    runtime = "cross-checked with onnxruntime" if has_onnxruntime() else "onnx.reference only"
    return [
        f"onnxloss {__version__} conformance kit: opsets {MIN_OPSET} and {MAX_OPSET}, "
        f"{runtime}, {gradients}"
    ]


@pytest.fixture
def onnxloss_registry() -> Iterator[registry.PluginRegistry]:
    """A fresh plugin registry loaded from the built-ins and every installed ``onnxloss``
    entry point (the ``ONNXLOSS_*`` switches are ignored: the fixture checks what is
    installed), made the process-wide registry for the test and replaced afterwards.

    Problems of other plugins are recorded in ``registry.failures`` rather than warned.
    """
    fresh = registry.PluginRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        fresh.load()
    previous = registry.reset_registry(fresh)
    try:
        yield fresh
    finally:
        registry.reset_registry(previous)
