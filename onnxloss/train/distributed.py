"""Data-parallel training over MPI (mpi4py): what each step and each epoch exchange.

Every rank holds a shard of the data and the same weights. At each step every rank computes
the gradient of its local batch's mean loss (``b_r`` samples), and one allreduce over a
single contiguous buffer sums ``b_r·g_r``, ``b_r`` and ``b_r·loss_r``; every rank then
applies the same update with

    g = Σ_r b_r g_r / Σ_r b_r,

the gradient of the mean loss over the global batch (the union of the local batches),
sample weights included: exactly the step one process would take on that global batch.
``batch_size`` is per rank (as in Horovod or PyTorch's DDP), and the schedule's clock ``t_``
counts the samples of every rank. A rank whose shard is used up takes part with ``b_r = 0``
until every rank's is, so uneven shards and ragged last batches work; an epoch ends when a
step finds no samples anywhere.

In a sum-reduced loss model a penalty is part of each rank's per-sample mean, so it is
counted once per rank; with ``reduction="mean"`` (where the penalty is added once to the
mean) the distributed step equals the single-process one.

Faults: every collective is non-blocking and waited for at most ``timeout`` seconds; a rank
that died or hangs makes the others raise :class:`DistributedError` instead of waiting
forever. Run scripts with ``mpiexec -n N python -m mpi4py script.py`` so that an uncaught
error on one rank aborts all of them.
"""

from __future__ import annotations

import pickle
import time

import numpy as np

from ..errors import OnnxLossError

#: Seconds a collective may wait for the other ranks before giving up.
DEFAULT_TIMEOUT = 300.0


class DistributedError(OnnxLossError):
    """Another rank did not answer in time (it died, hangs or runs different code)."""


class Collective:
    """The collectives one ``fit`` needs, on an mpi4py communicator, with a timeout."""

    def __init__(self, comm, timeout: float = DEFAULT_TIMEOUT):
        for attr in ("Iallreduce", "Ibcast", "Get_rank", "Get_size"):
            if not hasattr(comm, attr):
                raise OnnxLossError(
                    f"communicator must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
                    f"{type(comm).__name__}"
                )
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = float(timeout)
        self._buffer: np.ndarray | None = None
        #: Seconds spent in collectives so far (for benchmarks: the communication share).
        self.seconds = 0.0

    def _wait(self, request, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not request.Test():
            spins += 1
            if spins > 2000:  # a long wait: stop burning the core the others need
                time.sleep(0.0005)
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"rank {self.rank}: no answer from the other ranks for {self.timeout:g} s "
                    f"during {what}; a rank died, hangs, or runs different code (the timeout "
                    "is the estimator's communicator_timeout)"
                )

    def allreduce_sum(self, values: np.ndarray, what: str) -> np.ndarray:
        """``Σ_ranks values`` (a new array), waiting at most ``timeout``."""
        from mpi4py import MPI

        out = np.empty_like(values)
        start = time.perf_counter()
        self._wait(self.comm.Iallreduce(values, out, op=MPI.SUM), what)
        self.seconds += time.perf_counter() - start
        return out

    def broadcast(self, value, what: str):
        """Rank 0's ``value`` (any picklable object) on every rank: its pickled length, then
        its bytes, each a non-blocking broadcast waited for at most ``timeout``."""
        data = pickle.dumps(value) if self.rank == 0 else b""
        length = np.array([len(data)], np.int64)
        self._wait(self.comm.Ibcast(length, root=0), what)
        buffer = np.frombuffer(data, np.uint8).copy() if self.rank == 0 else None
        if buffer is None:
            buffer = np.empty(int(length[0]), np.uint8)
        self._wait(self.comm.Ibcast(buffer, root=0), what)
        # Only rank 0's own pickle is loaded: every rank runs the same trusted program.
        return value if self.rank == 0 else pickle.loads(buffer.tobytes())

    def step_buffer(self, size: int) -> np.ndarray:
        """The one contiguous float64 buffer a step sends (reused between steps)."""
        if self._buffer is None or self._buffer.size != size:
            self._buffer = np.empty(size, np.float64)
        return self._buffer


def shard(arrays, comm=None, *, rank: int | None = None, size: int | None = None):
    """This rank's contiguous share of one data set: rows ``[r·N/P, (r+1)·N/P)`` (the first
    ``N mod P`` ranks get one row more), the same split on every run.

    Args:
        arrays: an array, or a tuple/list of arrays with the same number of rows (``(X, y)``
            or ``(X, y, w)``); ``None`` entries stay ``None``.
        comm: an mpi4py communicator giving ``rank`` and ``size`` (or pass them).

    Returns:
        The rows of this rank, in the same structure.
    """
    if comm is not None:
        rank, size = comm.Get_rank(), comm.Get_size()
    if rank is None or size is None or not 0 <= rank < size:
        raise OnnxLossError("shard needs a communicator, or rank and size with 0 <= rank < size")
    single = not isinstance(arrays, tuple | list)
    items = [arrays] if single else list(arrays)
    lengths = {len(a) for a in items if a is not None}
    if len(lengths) != 1:
        raise OnnxLossError(f"shard: the arrays have different numbers of rows {sorted(lengths)}")
    (n,) = lengths
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    stop = start + base + (rank < extra)
    parts = [None if a is None else a[start:stop] for a in items]
    return parts[0] if single else type(arrays)(parts)
