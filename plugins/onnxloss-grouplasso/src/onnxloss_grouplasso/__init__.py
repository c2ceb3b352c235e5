"""onnxloss-grouplasso: the group lasso penalty as an onnxloss plugin.

Installing the distribution is enough: onnxloss finds :mod:`onnxloss_grouplasso.plugin`
through its ``onnxloss`` entry point and registers the regularizer ``group_lasso``.
"""

from importlib.metadata import PackageNotFoundError, version

from .penalty import GroupLassoPenalty

try:
    __version__ = version("onnxloss-grouplasso")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["GroupLassoPenalty", "__version__"]
