"""Pass infrastructure: small model transformations with one job each, composable.

A pass is called on a model and returns a :class:`PassResult`; the caller's model is never
modified (the pass works on a copy). :class:`Sequential` runs passes one after another on a
single working copy and, when one fails, says which one and which ran before it::

    result = Sequential(DecomposeForGradients(), ToFloat32(), AddLoss(MSELoss()))(model)
    result.model, result.modified, result.applied

Writing a pass: subclass :class:`Pass` and implement :meth:`Pass.apply`, which edits the
working copy in place and returns whether it changed anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..errors import OnnxLossError
from ..model_io import ModelLike, load_model


class PassError(OnnxLossError):
    """A pass failed for a reason that is not a known user error (most likely a bug)."""


@dataclass(frozen=True)
class PassResult:
    """What a pass returns.

    Attributes:
        model: the transformed model (a new object; the input is left untouched).
        modified: whether the pass changed anything.
        applied: names of the passes that changed the model, in order (a single pass gives
            its own name or nothing; a :class:`Sequential` lists its members that acted).
    """

    model: onnx.ModelProto
    modified: bool
    applied: tuple[str, ...] = ()


class Pass:
    """Base class of every pass: ``pass_(model) -> PassResult``."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, model: ModelLike) -> PassResult:
        work = onnx.ModelProto()
        work.CopyFrom(load_model(model))
        try:
            applied = tuple(self._run(work, []))
        except OnnxLossError:
            raise
        except Exception as exc:  # a bug in the pass: name it
            raise PassError(f"pass {self.name} failed: {type(exc).__name__}: {exc}") from exc
        return PassResult(work, bool(applied), applied)

    def apply(self, model: onnx.ModelProto) -> bool:
        """Transform ``model`` in place; return True if anything changed."""
        raise NotImplementedError

    def _run(self, model: onnx.ModelProto, done: list[str]) -> list[str]:
        return [self.name] if self.apply(model) else []

    def __repr__(self) -> str:
        return f"{self.name}()"


class Sequential(Pass):
    """Run ``passes`` in order on one working copy.

    A failing pass is named with the passes that ran before it: user errors keep their
    class (an :class:`~onnxloss.OpsetError` stays one), anything else becomes a
    :class:`PassError`.
    """

    def __init__(self, *passes: Pass):
        for p in passes:
            if not isinstance(p, Pass):
                raise PassError(f"Sequential takes passes, got {type(p).__name__} {p!r}")
        self.passes: Sequence[Pass] = passes

    def apply(self, model: onnx.ModelProto) -> bool:
        return bool(self._run(model, []))

    def _run(self, model: onnx.ModelProto, done: list[str]) -> list[str]:
        applied: list[str] = []
        for p in self.passes:
            try:
                applied += p._run(model, done)
            except OnnxLossError as exc:
                if getattr(exc, "_onnxloss_pass_named", False):
                    raise
                raise _named(exc, p, done) from exc
            except Exception as exc:
                err = PassError(
                    f"pass {p.name} failed (after {list(done) or 'no pass'}): "
                    f"{type(exc).__name__}: {exc}"
                )
                err._onnxloss_pass_named = True
                raise err from exc
            done.append(p.name)
        return applied

    def __repr__(self) -> str:
        return f"Sequential({', '.join(map(repr, self.passes))})"


def _named(exc: OnnxLossError, p: Pass, done: list[str]) -> OnnxLossError:
    where = f" (in pass {p.name}, after {list(done) or 'no pass'})"
    try:
        err = type(exc)(f"{exc}{where}")
    except Exception:  # a subclass with another constructor: keep the base class
        err = OnnxLossError(f"{exc}{where}")
    err._onnxloss_pass_named = True
    return err
