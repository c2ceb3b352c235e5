"""The module the ``focal`` entry point names: onnxloss calls its hooks."""

import onnxloss

from .loss import SigmoidFocalLoss


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(SigmoidFocalLoss)
