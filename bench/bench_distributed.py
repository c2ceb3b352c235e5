"""Data-parallel training: samples per second on 1 and 2 ranks, and the share of each step
spent in the gradient allreduce, in one run.

Run: python bench/bench_distributed.py [--epochs 2] [--ranks 1,2] [--backend auto]

Workloads: linear regression 100 → 1 and MLP 100-512-512-1, both at batch 1000 per rank,
on 100,000 × 100 float32 samples split between the ranks (so 2 ranks take half as many
steps, each on twice the samples). The script launches itself under ``mpiexec -n R`` for each
rank count R; rank 0 reports. With 2 cores, 2 ranks of 1 thread each use the whole machine:
compare with 1 rank at 2 threads (the single-process alternative), also printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

N, D, BATCH = 100_000, 100, 1000
WORKLOADS = {"linear": (), "mlp512": (512, 512)}


def mpiexec() -> str:
    """The mpiexec beside this interpreter (the mpich wheel's), else the one on PATH."""
    here = os.path.dirname(sys.executable)
    found = shutil.which("mpiexec", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        raise SystemExit("no mpiexec: pip install 'onnxloss[mpi]'")
    return found


def worker(args) -> None:
    from mpi4py import MPI

    import onnxloss
    from onnxloss.examples import linear_regression, mlp
    from onnxloss.train import OrtGradientOptimizer, shard

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X @ rng.normal(size=(D, 1))).astype(np.float32)
    Xs, ys = shard((X, y), comm)
    results = {}
    for name, hidden in WORKLOADS.items():
        inference = linear_regression(D) if not hidden else mlp((D, *hidden, 1), seed=0)
        model = onnxloss.rewrite(inference, onnxloss.MSELoss(reduction="mean"))
        trainer = OrtGradientOptimizer(
            model, batch_size=BATCH, learning_rate=1e-4, max_iter=1, warm_start=True,
            n_threads=args.threads, backend=args.backend, random_state=0,
            communicator=comm if comm.Get_size() > 1 else None,
        )  # fmt: skip
        trainer.fit(Xs, ys)  # warm-up: builds the session
        coll = trainer._collective
        comm_before = coll.seconds if coll else 0.0
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(args.epochs):
            trainer.fit(Xs, ys)
        comm.Barrier()
        seconds = (time.perf_counter() - start) / args.epochs
        share = ((coll.seconds - comm_before) / args.epochs / seconds) if coll else 0.0
        results[name] = {"samples_per_s": N / seconds, "epoch_s": seconds, "comm_share": share}
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps(results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = [(int(r), 1) for r in args.ranks.split(",")] + [(1, 2)]
    rows = []
    for ranks, threads in runs:
        options = [f"--epochs={args.epochs}", f"--backend={args.backend}", f"--threads={threads}"]
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", *options]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))  # noqa: E741
        rows.append((ranks, threads, json.loads(line[7:])))
    base = {name: rows[0][2][name]["samples_per_s"] for name in WORKLOADS}
    print(f"{N} samples x {D}, batch {BATCH} per rank, SGD, backend {args.backend}")
    print("| workload | ranks × threads | samples/s | epoch s | speed-up | allreduce share |")
    print("|---|---|---|---|---|---|")
    for name in WORKLOADS:
        for ranks, threads, res in rows:
            r = res[name]
            print(f"| {name} | {ranks} × {threads} | {r['samples_per_s']:,.0f} | "
                  f"{r['epoch_s']:.4f} | {r['samples_per_s'] / base[name]:.2f}× | "
                  f"{100 * r['comm_share']:.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
