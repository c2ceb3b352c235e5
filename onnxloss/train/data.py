"""Feeding data to a backend: user arrays → checked, typed batches in the model's input order.

Arrays are checked against the model's declared inputs (element type, rank, fixed
dimensions) at every call, and their values (NaN and infinities, class labels that are
whole numbers and within the model's classes) before the first step; an array object that
was already checked and is passed again (the same object, same memory) is not scanned
again, and a non-finite loss always makes the trainer look at the batch that produced it,
so a bad value is named (array and row) rather than reported as divergence. Arrays are
never converted as a whole: a batch is converted to the model's element type when it is
copied into the batch buffers.

Batches:

* without shuffling, a batch is a slice of the arrays when they already have the model's
  element type and are C-contiguous: no copy at all (else it is converted into the buffers);
* with shuffling, epoch ``e`` visits the samples in the order
  ``default_rng([seed, e]).permutation(N)``; each batch's rows are gathered into one set of
  preallocated ``[batch_size, ...]`` buffers (``np.take(..., out=)``), so the extra memory
  is one batch per input, never a permuted copy of the data. The buffers keep their
  address, so a backend makes its runtime values over them once and reuses them
  (:attr:`Batch.key`);
* memory-mapped arrays are never loaded whole: the order of batch-sized blocks is shuffled
  and each block is read, checked and converted into the buffers when its step comes;
* any iterable of ``(X, y)`` or ``(X, y, w)`` batches is checked and converted batch by
  batch, for data larger than memory.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DtypeError, OnnxLossError, ShapeError
from ..tensor_info import TensorInfo
from .layout import LossModelLayout


@dataclass(frozen=True)
class Batch:
    """One step's inputs.

    Attributes:
        arrays: one C-contiguous array per model input, in the backend's input order.
        rows: the number of samples.
        key: ``None`` for arrays that live only for this step; otherwise the same key always
            means the same memory and shapes (preallocated buffers), so runtime values made
            over them can be kept.
    """

    arrays: list[np.ndarray]
    rows: int
    key: tuple | None = None
    origin: int | np.ndarray | None = None  # first row, or the rows, in the user's arrays

    def row(self, k: int) -> int | None:
        """Where row ``k`` of the batch comes from in the user's arrays (None: unknown)."""
        if self.origin is None:
            return None
        if isinstance(self.origin, np.ndarray):
            return int(self.origin[k])
        return self.origin + k


class CheckedArrays:
    """The array objects whose values were checked, held by weak reference: passing the
    same array again (same object, memory, shape and type) skips the scan."""

    def __init__(self):
        self._seen: list[tuple] = []

    @staticmethod
    def _signature(array: np.ndarray) -> tuple:
        return (array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)

    def seen(self, array: np.ndarray) -> bool:
        signature = self._signature(array)
        self._seen = [(ref, sig) for ref, sig in self._seen if ref() is not None]
        return any(ref() is array and sig == signature for ref, sig in self._seen)

    def add(self, array: np.ndarray) -> None:
        try:
            ref = weakref.ref(array)
        except TypeError:  # an array type without weak references: always scanned
            return
        self._seen.append((ref, self._signature(array)))
        del self._seen[:-16]


class Feeder:
    """Maps ``(X, y, sample_weight)`` onto the model's inputs, in the backend's order."""

    def __init__(self, layout: LossModelLayout, input_order: list[str]):
        by_name = {info.name: info for info in layout.inputs}
        missing = [n for n in input_order if n not in by_name]
        if missing:
            raise OnnxLossError(f"the training model has unexpected inputs {missing}")
        self.layout = layout
        self.order = [by_name[n] for n in input_order]
        self.label_ranges: dict[str, tuple[int, int, int | None]] = {}
        self.checked = CheckedArrays()

    # -- whole arrays -----------------------------------------------------------------------
    def arrays(self, X, y, sample_weight, *, lazy: bool = False, what: str = "") -> list:
        """One checked array per input. ``lazy``: as given, converted per batch (memmaps
        are checked per batch too); else converted to the inputs' element types."""
        named = {}
        named.update(self._bind(self.layout.features, X, f"X{what}"))
        named.update(self._bind(self.layout.targets, y, f"y{what}"))
        if self.layout.weights:
            if sample_weight is None:
                n = len(next(iter(named.values())))
                w = self.layout.weights[0]
                named[w.name] = np.ones(n, dtype=w.dtype)
            else:
                named.update(self._bind(self.layout.weights, sample_weight, f"sample_weight{what}"))
        elif sample_weight is not None:
            raise OnnxLossError(
                "sample_weight was given but the loss model has no sample-weight input; build it "
                "with add_loss_output(..., weight_name='weight') or pass sample_weight_name"
            )
        labels = self._labels(what)
        arrays = [self._convert(named[info.name], info, labels[info], lazy) for info in self.order]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            sizes = {labels[info]: len(a) for info, a in zip(self.order, arrays, strict=True)}
            raise ShapeError(f"the inputs have different numbers of samples: {sizes}")
        return arrays

    def features(self, X) -> dict[str, np.ndarray]:
        """The feature inputs alone (``predict``): name → checked, converted array."""
        labels = self._labels()
        named = self._bind(self.layout.features, X, "X")
        arrays = {
            info.name: self._convert(named[info.name], info, labels[info], lazy=False)
            for info in self.layout.features
        }
        if len({len(a) for a in arrays.values()}) > 1:
            raise ShapeError(
                f"the inputs have different numbers of samples: "
                f"{ {k: len(a) for k, a in arrays.items()} }"
            )
        return arrays

    def _labels(self, suffix: str = "") -> dict[TensorInfo, str]:
        """How error messages call each input: ``X``, ``y``, ``sample_weight`` or a name."""
        names = {}
        for infos, what in (
            (self.layout.features, "X"),
            (self.layout.targets, "y"),
            (self.layout.weights, "sample_weight"),
        ):
            for info in infos:
                what_ = what + suffix
                names[info] = what_ if len(infos) == 1 else f"{what_}['{info.name}']"
        return names

    def _bind(self, infos: list[TensorInfo], value, what: str) -> dict[str, object]:
        if not infos:
            if value is None:
                return {}
            raise OnnxLossError(f"{what} was given but the loss model has no input for it")
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {i.name for i in infos}, key=str)
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

    def _convert(self, value, info: TensorInfo, what: str, lazy: bool) -> np.ndarray:
        if isinstance(value, np.memmap):
            array = value
        else:
            try:
                array = np.asarray(value)
            except (ValueError, TypeError) as exc:
                raise DtypeError(f"{what} cannot be read as an array: {exc}") from None
        _check_kind(array, info, what)
        if not isinstance(array, np.memmap) and not self.checked.seen(array):
            check_values(array, info, what, self.label_ranges.get(info.name))
            self.checked.add(array)
        if not lazy:
            array = np.ascontiguousarray(array, dtype=info.dtype)
        return _fit_rank(array, info, what)

    def check_batch(self, batch: Batch, what: str = "") -> None:
        """Value checks of one batch; rows are named as in the user's arrays."""
        labels = self._labels(what)
        for array, info in zip(batch.arrays, self.order, strict=True):
            check_values(array, info, labels[info], self.label_ranges.get(info.name), batch)

    def from_tuple(self, item) -> list[np.ndarray]:
        """A batch given by the user as ``(X, y)`` or ``(X, y, w)``."""
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise OnnxLossError(
                "each batch must be a tuple (X, y) or (X, y, sample_weight), got "
                f"{type(item).__name__}"
            )
        return self.arrays(*item, None) if len(item) == 2 else self.arrays(*item)


def _check_kind(array: np.ndarray, info: TensorInfo, what: str) -> None:
    """The element kind must convert to the input's type without losing its meaning."""
    want = info.dtype
    kind = array.dtype.kind
    ok = (
        kind in "biuf" if want.kind == "f" else kind in "biu" or (kind == "f" and want.kind in "iu")
    )
    if want.kind == "b":
        ok = kind == "b"
    if not ok:
        raise DtypeError(
            f"{what} has dtype {array.dtype}; the model input {info.describe()} takes "
            f"{'numbers' if want.kind == 'f' else 'integers (class indices)'}"
        )
    if array.ndim == 0:
        raise ShapeError(
            f"{what} is a scalar; the model input {info.describe()} takes one row per sample"
        )
    if info.rank is not None:
        rank_ok = array.ndim == info.rank or (
            abs(array.ndim - info.rank) == 1 and _rank_fix_possible(array, info)
        )
        if not rank_ok:
            raise ShapeError(
                f"{what} has shape {list(array.shape)}; the model input {info.describe()} takes "
                f"{info.rank} dimension(s)"
            )
        shape = array.shape if array.ndim == info.rank else _fitted_shape(array, info)
        for axis, (got, want_dim) in enumerate(zip(shape, info.shape, strict=True)):
            if axis and isinstance(want_dim, int) and got != want_dim:
                raise ShapeError(
                    f"{what} has {got} values along axis {axis} (shape {list(array.shape)}); "
                    f"the model input {info.describe()} takes {want_dim}"
                )


def check_values(
    array: np.ndarray,
    info: TensorInfo,
    what: str,
    label_range: tuple | None = None,
    batch: Batch | None = None,
) -> None:
    """NaN and infinities in float data, fractions in class labels, labels out of range."""
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        rows = array.reshape(len(array), -1)
        bad = ~np.isfinite(rows).all(axis=1)
        row = int(np.flatnonzero(bad)[0])
        value = rows[row][~np.isfinite(rows[row])][0]
        if batch is None:
            where = f"at row {row} ({int(bad.sum())} row(s) in all)"
        else:
            origin = batch.row(row)
            where = f"at row {origin}" if origin is not None else f"in a batch (its row {row})"
        raise OnnxLossError(
            f"{what} holds {value} {where}; remove or impute non-finite values before training"
        )
    if info.dtype.kind in "iu" and array.dtype.kind == "f" and array.size:
        if not np.array_equal(array, np.round(array)):
            raise DtypeError(
                f"{what} holds fractional values but the model input {info.describe()} takes "
                "class indices; pass integer labels"
            )
    if label_range is not None and array.size:
        low, high, ignore = label_range
        flat = array.reshape(-1)
        bad = (flat < low) | (flat >= high)
        if ignore is not None:
            bad &= flat != ignore
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise OnnxLossError(
                f"{what} holds the label {flat[k]} (element {k}); the model has classes "
                f"{low}..{high - 1}"
                + (f" (and {ignore} as a marker)" if ignore is not None else "")
            )


_BUFFER_SETS = itertools.count()


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that orders epoch ``epoch`` of a run seeded with ``seed``."""
    return np.random.default_rng([seed, epoch])


class ArrayEpochs:
    """The batches of every epoch over whole arrays (in memory or memory-mapped).

    Args:
        arrays: one array per model input (checked and converted; memmaps: per batch).
        feeder: for the per-batch conversion and checks of memmaps.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        seed: shuffling seed, or None to keep the arrays' order.
        what: suffix of the arrays' names in messages (``"_val"``).
    """

    def __init__(
        self, arrays: list, feeder: Feeder, batch_size: int, seed: int | None, what: str = ""
    ):
        self.arrays = arrays
        self.what = what
        self.feeder = feeder
        self.batch_size = batch_size
        self.seed = seed
        self.n = len(arrays[0])
        self.mapped = any(isinstance(a, np.memmap) for a in arrays)
        # Slices can go to the runtime as they are: the model's type, C order.
        self.direct = all(
            a.dtype == info.dtype and a.flags.c_contiguous
            for a, info in zip(arrays, feeder.order, strict=True)
        )
        self._buffers: list[np.ndarray] | None = None
        self._token = next(_BUFFER_SETS)  # part of Batch.key: one per set of buffers

    @property
    def n_batches(self) -> int:
        return -(-self.n // self.batch_size)

    def _buffer_set(self) -> list[np.ndarray]:
        if self._buffers is None:
            rows = min(self.batch_size, self.n)
            self._buffers = [
                np.empty((rows, *_fitted_shape(a, info)[1:]), dtype=info.dtype)
                for a, info in zip(self.arrays, self.feeder.order, strict=True)
            ]
        return self._buffers

    def batches(self, epoch: int) -> Iterator[Batch]:
        b, n = self.batch_size, self.n
        if self.mapped:
            starts = np.arange(0, n, b)
            if self.seed is not None:
                epoch_rng(self.seed, epoch).shuffle(starts)  # blocks: never read the whole file
            buffers = self._buffer_set()
            for s in starts:
                rows = min(b, n - s)
                views = [buf[:rows] for buf in buffers]
                for a, view in zip(self.arrays, views, strict=True):
                    view[...] = np.asarray(a[s : s + rows]).reshape(view.shape)
                batch = Batch(views, rows, (self._token, rows), int(s))
                self.feeder.check_batch(batch, self.what)
                yield batch
        elif self.seed is None and self.direct:
            for s in range(0, n, b):
                views = [a[s : s + b] for a in self.arrays]
                yield Batch(views, len(views[0]), None, s)
        elif self.seed is None:
            buffers = self._buffer_set()
            for s in range(0, n, b):
                rows = min(b, n - s)
                views = [buf[:rows] for buf in buffers]
                for a, view in zip(self.arrays, views, strict=True):
                    view[...] = a[s : s + rows]
                yield Batch(views, rows, (self._token, rows), s)
        else:
            perm = epoch_rng(self.seed, epoch).permutation(n)
            buffers = self._buffer_set()
            same = [a.dtype == buf.dtype for a, buf in zip(self.arrays, buffers, strict=True)]
            for s in range(0, n, b):
                index = perm[s : s + b]
                rows = len(index)
                views = [buf[:rows] for buf in buffers]
                for a, view, take in zip(self.arrays, views, same, strict=True):
                    # mode="clip": the indices come from a permutation, so never out of
                    # range, and numpy's default bounds-checking gather is ~1.7x slower.
                    if take:
                        a.take(index, axis=0, out=view, mode="clip")
                    else:  # converted while copied: the data is never converted as a whole
                        view[...] = a.take(index, axis=0, mode="clip")
                yield Batch(views, rows, (self._token, rows), index)


class IterableEpochs:
    """Batches from a re-iterable of ``(X, y)`` / ``(X, y, w)`` tuples, checked one by one."""

    def __init__(self, source: Iterable, feeder: Feeder):
        self.source = source
        self.feeder = feeder

    n_batches = None
    what = ""

    def batches(self, epoch: int) -> Iterator[Batch]:
        empty = True
        for k, item in enumerate(self.source):
            empty = False
            try:
                arrays = self.feeder.from_tuple(item)
            except OnnxLossError as exc:
                raise type(exc)(f"batch {k + 1} of the iterable: {exc}") from None
            yield Batch(arrays, len(arrays[0]), None, None)
        if empty:
            raise OnnxLossError(
                "the batch iterable yielded nothing; if it is a generator it was used up by an "
                "earlier epoch: pass a list or an object whose __iter__ restarts"
            )


def _rank_fix_possible(array: np.ndarray, info: TensorInfo) -> bool:
    if array.ndim == info.rank - 1:
        return info.shape[-1] in (1, None) or isinstance(info.shape[-1], str)
    return array.ndim == info.rank + 1 and array.shape[-1] == 1


def _fitted_shape(array: np.ndarray, info: TensorInfo) -> tuple[int, ...]:
    """``array``'s shape after :func:`_fit_rank`."""
    if info.rank is None or array.ndim == info.rank:
        return tuple(array.shape)
    if array.ndim == info.rank - 1:
        return (*array.shape, 1)
    return tuple(array.shape[:-1])


def _fit_rank(array: np.ndarray, info: TensorInfo, what: str = "an array") -> np.ndarray:
    """Reshape ``[N]`` ↔ ``[N, 1]`` to the declared rank; anything else must match."""
    if info.rank is None or array.ndim == info.rank:
        return array
    if _rank_fix_possible(array, info):
        return array.reshape(_fitted_shape(array, info))
    raise ShapeError(
        f"{what} has shape {list(array.shape)}; the model input {info.describe()} cannot take it"
    )


def is_batch_iterable(X, y) -> bool:
    """True when ``X`` is an iterable of batches rather than an array (``y`` is then None)."""
    return (
        y is None
        and isinstance(X, Iterable)
        and not isinstance(X, np.ndarray | Mapping | str | bytes)
    )
