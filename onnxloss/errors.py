"""Exceptions and warnings raised by onnxloss.

Every error a user can cause derives from :class:`OnnxLossError`, itself a
:class:`ValueError`, so ``except ValueError`` keeps working for callers that do not know
onnxloss. Messages name the culprit (the output, tensor, plugin or opset) and say what
would be right.
"""

from __future__ import annotations


class OnnxLossError(ValueError):
    """Base class of every error a user of onnxloss can cause."""


class UnknownTermError(OnnxLossError):
    """A loss or regularizer name that no loaded plugin registers."""


class OutputSelectionError(OnnxLossError):
    """The output a loss should bind to is missing, ambiguous or of the wrong kind."""


class TensorNotFoundError(OnnxLossError):
    """A tensor named in a penalty (or a glob) matches nothing in the model."""


class NameCollisionError(OnnxLossError):
    """A name onnxloss must add (loss, label, weight) already exists in the model."""


class DtypeError(OnnxLossError):
    """A tensor has an element type the requested term cannot work with."""


class ShapeError(OnnxLossError):
    """A tensor has a shape the requested term cannot work with."""


class OpsetError(OnnxLossError):
    """The model's opset or IR version is outside what onnxloss (or the runtime) supports."""


class CoefficientError(OnnxLossError):
    """A coefficient or hyper-parameter is not a finite number in its allowed range."""


class PenaltyError(OnnxLossError):
    """A penalty specification that adds nothing or cannot be understood."""


class PluginError(OnnxLossError):
    """A plugin failed to import, raised from a hook, clashed on a name or built a bad graph."""


class ModelFileError(OnnxLossError):
    """A model file that cannot be read, or an output path that cannot be written."""


class MetadataError(ModelFileError):
    """A model's ``onnxloss`` metadata entry is not what :func:`onnxloss.rewrite` writes."""


class ConvergenceError(OnnxLossError):
    """Training produced a loss that is NaN or infinite."""


class PluginWarning(UserWarning):
    """A plugin was skipped (failed import, failing hook, duplicate name); others still load."""
