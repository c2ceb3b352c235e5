"""Feeding data to the training module: user arrays → contiguous batches in input order.

In-memory arrays are converted to the model's dtypes once per ``fit``. When shuffling, each
epoch's samples are permuted once into a contiguous buffer and each step takes a plain
slice. The permutation of epoch ``e`` comes from ``default_rng([seed, e])``, so it is known
in advance: a worker thread makes epoch ``e + 1``'s permuted copy while epoch ``e`` trains
(``np.take`` releases the GIL), at the price of two copies of the data in memory.

Memory-mapped arrays are never loaded whole: the order of batch-sized blocks is shuffled
and each block is read and converted when its step comes. Any iterable of ``(X, y)`` or
``(X, y, w)`` batches is used as it comes, for data larger than memory.
"""

from __future__ import annotations

import threading
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

    def from_tuple(self, item) -> Batch:
        """A batch given by the user as ``(X, y)`` or ``(X, y, w)``."""
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise OnnxLossError(
                f"each batch must be a tuple (X, y) or (X, y, sample_weight), got {type(item)}"
            )
        return self.arrays(*item, None) if len(item) == 2 else self.arrays(*item)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that orders epoch ``epoch`` of a run seeded with ``seed``."""
    return np.random.default_rng([seed, epoch])


class ArrayEpochs:
    """The batches of every epoch over whole arrays (in memory or memory-mapped).

    Args:
        arrays: one array per module input, converted (memmaps: converted per batch).
        order: input infos, for the per-batch conversion of memmaps.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        seed: shuffling seed, or None to keep the arrays' order.
    """

    def __init__(self, arrays: Batch, order: list[TensorInfo], batch_size: int, seed: int | None):
        self.arrays = arrays
        self.order = order
        self.batch_size = batch_size
        self.seed = seed
        self.n = len(arrays[0])
        self.mapped = any(isinstance(a, np.memmap) for a in arrays)
        self._copies: dict[int, _PermutedCopy] = {}

    def batches(self, epoch: int, prefetch_next: bool = False) -> Iterator[Batch]:
        if self.seed is not None and not self.mapped:
            data = self._permuted(epoch, prefetch_next)
        else:
            data = self.arrays
        starts = np.arange(0, self.n, self.batch_size)
        if self.seed is not None and self.mapped:
            epoch_rng(self.seed, epoch).shuffle(starts)  # blocks: never read the whole file
        b = self.batch_size
        if self.mapped:
            for s in starts:
                yield [
                    _fit_rank(np.ascontiguousarray(a[s : s + b], dtype=info.dtype), info)
                    for a, info in zip(data, self.order, strict=True)
                ]
        else:
            for s in starts:
                yield [a[s : s + b] for a in data]

    def _permuted(self, epoch: int, prefetch_next: bool) -> Batch:
        copy = self._copies.pop(epoch, None)
        if copy is None:  # not prefetched (first epoch): copy now
            copy = _PermutedCopy(self.arrays, self._buffers(epoch), self._perm(epoch), start=False)
        data = copy.result()
        if prefetch_next:
            nxt = epoch + 1
            self._copies[nxt] = _PermutedCopy(self.arrays, self._buffers(nxt), self._perm(nxt))
        return data

    def _perm(self, epoch: int) -> np.ndarray:
        return epoch_rng(self.seed, epoch).permutation(self.n)

    def _buffers(self, epoch: int) -> Batch:
        # Two sets, alternating: epoch e + 1 is written while epoch e is read.
        slot = f"_slot{epoch % 2}"
        buffers = getattr(self, slot, None)
        if buffers is None:
            buffers = [np.empty_like(a) for a in self.arrays]
            setattr(self, slot, buffers)
        return buffers

    def close(self) -> None:
        """Wait for a prefetch still running (early stop, interruption)."""
        for copy in self._copies.values():
            copy.join()
        self._copies.clear()


class _PermutedCopy:
    """``buffers[i][:] = arrays[i][perm]``, in a worker thread unless ``start=False``."""

    def __init__(self, arrays: Batch, buffers: Batch, perm: np.ndarray, start: bool = True):
        self._args = (arrays, buffers, perm)
        self._buffers = buffers
        self._error: BaseException | None = None
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._run, name="onnxloss-shuffle", daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        arrays, buffers, perm = self._args
        try:
            for a, b in zip(arrays, buffers, strict=True):
                np.take(a, perm, axis=0, out=b)  # one call: the GIL is taken once per array
        except BaseException as exc:  # reported to the training loop, not lost in a thread
            self._error = exc

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> Batch:
        self.join()
        if self._error is not None:
            raise self._error
        return self._buffers


def _fit_rank(array: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Reshape ``[N]`` ↔ ``[N, 1]`` to the declared rank; anything else must match."""
    if info.rank is None or array.ndim == info.rank:
        return array
    if array.ndim == info.rank - 1 and info.shape[-1] in (1, None):
        return array.reshape(*array.shape, 1)
    if array.ndim == info.rank + 1 and array.shape[-1] == 1:
        return array.reshape(array.shape[:-1])
    raise ShapeError(f"input {info.describe()} cannot take an array of shape {tuple(array.shape)}")


def is_batch_iterable(X, y) -> bool:
    """True when ``X`` is an iterable of batches rather than an array (``y`` is then None)."""
    return y is None and isinstance(X, Iterable) and not isinstance(X, np.ndarray | Mapping)
