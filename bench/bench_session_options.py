"""What the runtime's session options do for the wide MLP, against PyTorch, in one run.

Run: python bench/bench_session_options.py [--epochs 2] [--repeat 2] [--backend auto]

Workload: MLP 100-512-512-1 (ReLU) on 100,000 × 100 float32 samples, SGD, batch 1000, one
long ``fit`` per measurement (shuffling on), the settings measured in turn, ``--repeat``
rounds. Each row changes one setting from the default
(``n_threads`` and ``session_config`` of ``OrtGradientOptimizer``); the last rows are
PyTorch's own loop at the same thread counts, when torch is importable. Figures are seconds
per epoch, best of ``--repeat``, with the ratio to the default at 2 threads and to PyTorch.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

import onnxloss
from onnxloss.examples import mlp
from onnxloss.train import OrtGradientOptimizer

N, D, BATCH, LR = 100_000, 100, 1000, 1e-4
SETTINGS = [
    ("default, 1 thread", 1, {}),
    ("default, 2 threads", 2, {}),
    ("no spinning", 2, {"session.intra_op.allow_spinning": "0"}),
    ("graph optimisation: basic", 2, {"graph_optimization_level": "ORT_ENABLE_BASIC"}),
    ("graph optimisation: off", 2, {"graph_optimization_level": "ORT_DISABLE_ALL"}),
    ("no memory pattern", 2, {"enable_mem_pattern": False}),
    ("no CPU memory arena", 2, {"enable_cpu_mem_arena": False}),
    ("parallel execution", 2, {"execution_mode": "ORT_PARALLEL"}),
    ("denormals as zero", 2, {"session.set_denormal_as_zero": "1"}),
]


def trainer_for(model, X, y, threads, config, epochs, backend):
    trainer = OrtGradientOptimizer(
        model, batch_size=BATCH, learning_rate=LR, max_iter=epochs, n_threads=threads,
        session_config=config, random_state=0, backend=backend,
    )  # fmt: skip
    trainer.fit(X[:BATCH], y[:BATCH])  # builds the session
    return trainer


def fit_seconds(trainer, X, y, epochs) -> float:
    start = time.perf_counter()
    trainer.fit(X, y)
    return (time.perf_counter() - start) / epochs


def torch_seconds(X, y, threads, epochs, repeat) -> float:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(D, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 1),
    )  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    lossf = torch.nn.MSELoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch():
        start = time.perf_counter()
        for idx in torch.randperm(len(Xt)).split(BATCH):
            opt.zero_grad()
            lossf(net(Xt[idx]), yt[idx]).backward()
            opt.step()
        return time.perf_counter() - start

    epoch()
    return min(sum(epoch() for _ in range(epochs)) / epochs for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X @ rng.normal(size=(D, 1))).astype(np.float32)
    model = onnxloss.rewrite(mlp((D, 512, 512, 1), seed=0), onnxloss.MSELoss(reduction="mean"))
    # Round-robin over the settings, best of the rounds: the machine drifts between runs.
    trainers = [trainer_for(model, X, y, t, c, args.epochs, args.backend) for _, t, c in SETTINGS]
    best = [float("inf")] * len(SETTINGS)
    for _ in range(args.repeat):
        for k, trainer in enumerate(trainers):
            best[k] = min(best[k], fit_seconds(trainer, X, y, args.epochs))
    rows = [(name, seconds) for (name, _, _), seconds in zip(SETTINGS, best, strict=True)]
    torch_rows = []
    if importlib.util.find_spec("torch") is not None:
        for threads in (1, 2):
            torch_rows.append((f"PyTorch, {threads} thread(s)", threads,
                               torch_seconds(X, y, threads, args.epochs, args.repeat)))  # fmt: skip
    base = rows[1][1]
    torch2 = next((s for _, t, s in torch_rows if t == 2), None)
    print(f"\nMLP 100-512-512-1, batch {BATCH}, SGD, backend {args.backend}, s/epoch")
    print("| setting | s/epoch | vs default 2 threads | vs PyTorch 2 threads |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        vs_torch = f"{seconds / torch2:.2f}×" if torch2 else "-"
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f}× | {vs_torch} |")
    for name, _, seconds in torch_rows:
        vs_torch = f"{seconds / torch2:.2f}×" if torch2 else "-"
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f}× | {vs_torch} |")


if __name__ == "__main__":
    main()
