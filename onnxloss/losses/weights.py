"""PyTorch's ``weight=`` beside onnxloss's ``weight=``.

PyTorch's losses take ``weight`` as a tensor of numbers (class or element weights);
onnxloss's take ``weight`` as the name of a per-sample weight input. The built-in losses
that have a PyTorch ``weight`` accept both: a list of numbers is PyTorch's, a constant of
the graph; a string is the input's name; ``sample_weight`` names the input when both are
given.
"""

from __future__ import annotations

import numpy as np

from ..builder import GraphBuilder, Value
from ..errors import OutputSelectionError
from ..terms import Loss, check_numbers


class TorchWeight(Loss):
    """A loss with PyTorch's ``weight`` beside onnxloss's per-sample ``weight`` input."""

    def __init__(self, output=None, *, weight=None, sample_weight=None, **kwargs):
        if weight is None or isinstance(weight, str):
            if weight is not None and sample_weight is not None:
                raise OutputSelectionError(
                    f"{self.name}: weight={weight!r} and sample_weight={sample_weight!r} both "
                    "name a per-sample weight input; give one"
                )
            super().__init__(output, weight=weight or sample_weight, **kwargs)
            self.torch_weight: tuple[float, ...] | None = None
        else:
            super().__init__(output, weight=sample_weight, **kwargs)
            self.torch_weight = check_numbers(f"{self.name} weight", weight, low=0.0)

    def options(self):
        opts = super().options()
        if self.torch_weight is not None:
            name = opts.pop("weight", None)
            opts["weight"] = list(self.torch_weight)
            if name is not None:
                opts["sample_weight"] = name
        return opts

    def _weight_const(self, g: GraphBuilder, rank: int, axis: int) -> Value:
        """The weight as a constant broadcasting along ``axis`` of a rank-``rank`` tensor."""
        shape = [1] * (rank - axis)
        shape[0] = len(self.torch_weight)
        return g.const(np.asarray(self.torch_weight, dtype=g.dtype).reshape(shape))
