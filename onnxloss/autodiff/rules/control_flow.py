"""Placeholder."""

from __future__ import annotations

from ...hookspecs import hookimpl
from . import RuleTable

rules = RuleTable()


@hookimpl
def onnxloss_register_gradients(register):
    rules.register_all(register)
