"""Run by tests/test_distributed.py under ``mpiexec -n N``: one data-parallel training job.

Usage: python worker.py SCENARIO OUTDIR [key=value ...]

Every rank takes its shard of one data set (onnxloss.train.shard) and fits; rank 0 writes
what it got to OUTDIR/result.npz (weights, losses, t_) for the test to compare with a
single-process run on the same global batches.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import onnxloss
from onnxloss.examples import linear_regression
from onnxloss.train import DistributedError, OrtGradientOptimizer, shard


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.7 + rng.normal(scale=0.1, size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, w


def model(reduction: str):
    terms = onnxloss.MSELoss(weight="w", reduction=reduction) + onnxloss.L2Penalty("coef", 0.01)
    return onnxloss.rewrite(linear_regression(3), terms)


def main() -> None:
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    opts = dict(kv.split("=", 1) for kv in sys.argv[3:])
    comm = MPI.COMM_WORLD
    n = int(opts.get("n", 50))
    X, y, w = shard(data(n), comm)
    params = dict(
        learning_rate=float(opts.get("lr", 0.05)),
        batch_size=int(opts.get("batch", 7)),
        optimizer=opts.get("optimizer", "sgd"),
        shuffle=False,
        backend=opts.get("backend", "auto"),
        communicator=comm,
        communicator_timeout=float(opts.get("timeout", 30)),
    )
    trainer = OrtGradientOptimizer(model(opts.get("reduction", "mean")), **params)
    if scenario in ("die", "hang"):
        if comm.Get_rank() == 1:
            if scenario == "hang":
                time.sleep(float(opts.get("sleep", 20)))  # a rank stuck elsewhere
            os._exit(3)  # a rank that dies before the first step
        try:
            trainer.set_params(max_iter=1).fit(X, y, w)
        except DistributedError as exc:
            (outdir / "error.txt").write_text(str(exc))
        os._exit(0)  # the world is broken: skip MPI_Finalize
    if scenario == "resume":
        trainer.load_checkpoint(opts["checkpoint"])
    trainer.set_params(max_iter=int(opts.get("epochs", 3))).fit(X, y, w)
    if "save" in opts:
        trainer.save_checkpoint(opts["save"])
    if comm.Get_rank() == 0:
        state = trainer.get_state()
        np.savez(outdir / "result.npz", **state)
        meta = {"losses": trainer.train_losses_, "t": trainer.t_, "n_iter": trainer.n_iter_}
        (outdir / "result.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
