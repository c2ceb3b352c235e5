"""``AddLoss``: :func:`onnxloss.rewrite` as a pass, the last step of a training pipeline."""

from __future__ import annotations

import onnx

from ..rewrite import SpecLike, compile_spec, rewrite
from .base import Pass


class AddLoss(Pass):
    """Add the scalar loss ``spec`` as the model's first output (see :func:`onnxloss.rewrite`).

    Args:
        spec: a term (``MSELoss()``), a sum of scaled terms, a registered loss name or a list
            of terms.
        loss_name: name of the new scalar output.
        validate: run ``onnx.checker.check_model(full_check=True)`` on the result.
    """

    def __init__(self, spec: SpecLike, *, loss_name: str = "loss", validate: bool = True):
        self.spec = compile_spec(spec)
        self.loss_name = loss_name
        self.validate = validate

    def apply(self, model: onnx.ModelProto) -> bool:
        model.CopyFrom(rewrite(model, self.spec, loss_name=self.loss_name, validate=self.validate))
        return True

    def __repr__(self) -> str:
        return f"AddLoss({self.spec!r})"
