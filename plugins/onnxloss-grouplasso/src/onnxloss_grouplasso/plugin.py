"""The module the ``grouplasso`` entry point names: onnxloss calls its hooks."""

import onnxloss

from .penalty import GroupLassoPenalty


@onnxloss.hookimpl
def onnxloss_register_regularizers(register):
    register(GroupLassoPenalty)
