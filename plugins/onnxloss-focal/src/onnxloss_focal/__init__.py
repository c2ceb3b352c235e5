"""onnxloss-focal: the sigmoid focal loss (Lin et al., 2017) as an onnxloss plugin.

Installing the distribution is enough: onnxloss finds :mod:`onnxloss_focal.plugin` through
its ``onnxloss`` entry point, and ``score_name="sigmoid_focal"`` (or the class below) works.
"""

from importlib.metadata import PackageNotFoundError, version

from .loss import SigmoidFocalLoss

try:
    __version__ = version("onnxloss-focal")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["SigmoidFocalLoss", "__version__"]
