"""Seconds per epoch of ``OrtGradientOptimizer.fit`` against a bare loop over the same
``api.Module`` / ``api.Optimizer`` (same artifacts, same session), by threads.

Run: python bench/bench_train.py [--repeat 3] [--quick]

Workloads (issue 4): linear regression on 100,000 × 100 at batch 10, and an MLP with
hidden layers (50, 10) on the same data at batch 100. The bare loop is what a user would
write by hand: pre-converted contiguous float32 arrays, no shuffling, no bookkeeping:

    for s in range(0, n, batch):
        module(X[s:s+batch], y[s:s+batch]); optimizer.step(); module.lazy_reset_grad()

``fit`` is timed over ``--epochs`` epochs per call, with ``shuffle=False`` (the same work)
and ``shuffle=True`` (one permuted copy per epoch on top, made by a worker thread while the
loop trains). Each figure is the best of ``--repeat`` calls, in seconds per epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import onnxloss
from onnxloss.examples import linear_regression, mlp
from onnxloss.train import OrtGradientOptimizer


def bare_epoch(module, optimizer, X, y, batch) -> float:
    start = time.perf_counter()
    for s in range(0, len(X), batch):
        module(X[s : s + batch], y[s : s + batch])
        optimizer.step()
        module.lazy_reset_grad()
    return time.perf_counter() - start


def fit_epoch(trainer, X, y) -> float:
    start = time.perf_counter()
    trainer.fit(X, y)
    return (time.perf_counter() - start) / trainer.max_iter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10,000 samples instead of 100,000")
    args = parser.parse_args()

    n = 10_000 if args.quick else 100_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 100)).astype(np.float32)
    y = (X @ rng.normal(size=(100, 1)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    workloads = [
        ("linear 100 -> 1", linear_regression(100), 10),
        ("MLP 100-50-10-1", mlp((100, 50, 10, 1)), 100),
    ]
    print(f"{n} samples x 100 features; seconds per epoch, best of {args.repeat}")
    columns = ("workload", "batch", "threads", "fit", "fit+shuffle", "bare loop", "ratio")
    widths = (16, 5, 7, 9, 11, 9, 6)
    cells = [f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)]
    header = " ".join([f"{columns[0]:<{widths[0]}}", *cells[1:]])
    print(header + " " + f"{'ratio+shuffle':>13}")
    for name, model, batch in workloads:
        loss_model = onnxloss.add_loss_output(model)  # squared error, sum: the seed's default
        for threads in (1, 2):
            trainer = OrtGradientOptimizer(loss_model, learning_rate=1e-5, batch_size=batch,
                                           max_iter=1, n_threads=threads, shuffle=False,
                                           warm_start=True)  # fmt: skip
            trainer.fit(X, y)  # builds the artifacts and warms the session up
            trainer.max_iter = args.epochs
            session = trainer._session  # the same module and optimizer for the bare loop
            fit = min(fit_epoch(trainer, X, y) for _ in range(args.repeat))
            trainer.shuffle = True
            shuffled = min(fit_epoch(trainer, X, y) for _ in range(args.repeat))
            bare = min(
                sum(bare_epoch(session.module, session.optimizer, X, y, batch)
                    for _ in range(args.epochs)) / args.epochs
                for _ in range(args.repeat)
            )  # fmt: skip
            print(
                f"{name:<16} {batch:>5} {threads:>7} {fit:>9.3f} {shuffled:>11.3f} {bare:>9.3f} "
                f"{fit / bare:>6.3f} {shuffled / bare:>13.3f}"
            )


if __name__ == "__main__":
    main()
