"""Feeding data to the training module: user arrays → contiguous batches in input order.

In-memory arrays are converted to the model's dtypes once per ``fit`` and, when shuffling,
permuted once per epoch into one contiguous copy; each step then takes plain slices.
Memory-mapped arrays are never loaded whole: the order of batch-sized blocks is shuffled
and each block is read and converted when its step comes. Any iterable of ``(X, y)`` or
``(X, y, w)`` batches is used as it comes, for data larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from ..errors import OnnxLossError, ShapeError
from ..tensor_info import TensorInfo
from .artifacts import LossModelLayout

Batch = list[np.ndarray]


class Feeder:
    """Maps ``(X, y, sample_weight)`` onto the module's inputs, in the module's order."""

    def __init__(self, layout: LossModelLayout, input_order: list[str]):
        by_name = {info.name: info for info in layout.inputs}
        missing = [n for n in input_order if n not in by_name]
        if missing:
            raise OnnxLossError(f"the training model has unexpected inputs {missing}")
        self.layout = layout
        self.order = [by_name[n] for n in input_order]
        self._ones: dict[tuple[int, np.dtype], np.ndarray] = {}

    # -- whole arrays -----------------------------------------------------------------------
    def arrays(self, X, y, sample_weight, *, lazy: bool = False) -> Batch:
        """One array per module input; ``lazy`` keeps memmaps unconverted (per-batch)."""
        named = {}
        named.update(self._bind(self.layout.features, X, "X"))
        named.update(self._bind(self.layout.targets, y, "y"))
        if self.layout.weights:
            if sample_weight is None:
                n = len(next(iter(named.values())))
                w = self.layout.weights[0]
                named[w.name] = np.ones(n, dtype=w.dtype)
            else:
                named.update(self._bind(self.layout.weights, sample_weight, "sample_weight"))
        elif sample_weight is not None:
            raise OnnxLossError(
                "sample_weight was given but the loss model has no sample-weight input; build it "
                "with add_loss_output(..., weight_name='weight') or pass sample_weight_name"
            )
        arrays = [self._convert(named[info.name], info, lazy) for info in self.order]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            sizes = {info.name: len(a) for info, a in zip(self.order, arrays, strict=True)}
            raise ShapeError(f"inputs have different numbers of samples: {sizes}")
        return arrays

    def _bind(self, infos: list[TensorInfo], value, what: str) -> dict[str, object]:
        if not infos:
            if value is None:
                return {}
            raise OnnxLossError(f"{what} was given but the loss model has no input for it")
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {i.name for i in infos})
            absent = sorted({i.name for i in infos} - set(value))
            if unknown or absent:
                raise OnnxLossError(
                    f"{what} as a dict must have exactly the keys {[i.name for i in infos]}; "
                    f"unknown {unknown}, missing {absent}"
                )
            return dict(value)
        if len(infos) > 1:
            raise OnnxLossError(
                f"the loss model has {len(infos)} {what} inputs {[i.name for i in infos]}; "
                f"pass {what} as a dict name → array"
            )
        if value is None:
            raise OnnxLossError(f"{what} is required: the loss model has input '{infos[0].name}'")
        return {infos[0].name: value}

    @staticmethod
    def _convert(value, info: TensorInfo, lazy: bool) -> np.ndarray:
        if lazy and isinstance(value, np.memmap):
            array = value
        else:
            array = np.ascontiguousarray(value, dtype=info.dtype)
        return _fit_rank(array, info)

    # -- batches ----------------------------------------------------------------------------
    def from_tuple(self, item) -> Batch:
        """A batch given by the user as ``(X, y)`` or ``(X, y, w)``."""
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise OnnxLossError(
                f"each batch must be a tuple (X, y) or (X, y, sample_weight), got {type(item)}"
            )
        return self.arrays(*item, None) if len(item) == 2 else self.arrays(*item)

    def batches(
        self, arrays: Batch, batch_size: int, rng: np.random.Generator | None
    ) -> Iterator[Batch]:
        """Contiguous batches of one epoch, shuffled when ``rng`` is given."""
        n = len(arrays[0])
        starts = np.arange(0, n, batch_size)
        mapped = any(isinstance(a, np.memmap) for a in arrays)
        if rng is not None:
            if mapped:
                rng.shuffle(starts)  # shuffle blocks: never read the whole file at once
            else:
                perm = rng.permutation(n)
                arrays = [a[perm] for a in arrays]  # one contiguous copy per epoch
        if mapped:
            for s in starts:
                yield [
                    _fit_rank(np.ascontiguousarray(a[s : s + batch_size], dtype=info.dtype), info)
                    for a, info in zip(arrays, self.order, strict=True)
                ]
        else:
            for s in starts:
                yield [a[s : s + batch_size] for a in arrays]


def _fit_rank(array: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Reshape ``[N]`` ↔ ``[N, 1]`` to the declared rank; anything else must match."""
    if info.rank is None or array.ndim == info.rank:
        return array
    if array.ndim == info.rank - 1 and info.shape[-1] in (1, None):
        return array.reshape(*array.shape, 1)
    if array.ndim == info.rank + 1 and array.shape[-1] == 1:
        return array.reshape(array.shape[:-1])
    raise ShapeError(
        f"input {info.describe()} cannot take an array of shape {tuple(array.shape)}"
    )


def is_batch_iterable(X, y) -> bool:
    """True when ``X`` is an iterable of batches rather than an array (``y`` is then None)."""
    return y is None and isinstance(X, Iterable) and not isinstance(X, np.ndarray | Mapping)
