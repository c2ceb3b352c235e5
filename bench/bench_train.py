"""Seconds per epoch of ``OrtGradientOptimizer`` against a bare onnxruntime-training loop and
PyTorch (when importable), on 100,000 × 100 float32 samples with SGD, in one run.

Run: python bench/bench_train.py [--repeat 3] [--epochs 3] [--quick] [--only linear10,...]

Workloads (rows of the table):

* ``linear1000``: linear regression 100 → 1, batch 1000;
* ``linear10``: the same at batch 10;
* ``mlp100``: MLP 100-50-10-1 (ReLU), batch 100;
* ``mlp512``: MLP 100-512-512-1 (ReLU), batch 1000;

each at 1 and 2 runtime threads. Columns:

* ``bare``: what a user writes by hand over the same artifacts (``api.Module`` and
  ``api.Optimizer`` of the training build, numpy slices of pre-converted float32 arrays, no
  shuffling): ``module(X[s:s+B], y[s:s+B]); optimizer.step(); module.lazy_reset_grad()``;
* ``fit-1``: ``fit`` called once per epoch (``max_iter=1, warm_start=True``), shuffling on;
* ``fit-1 noshuf``: the same without shuffling;
* ``fit-long``: one ``fit`` over ``--epochs`` epochs, shuffling on;
* ``partial``: ``partial_fit`` once per epoch, shuffling on;
* ``torch``: PyTorch's usual loop (``randperm`` batches, ``nn.MSELoss``, ``torch.optim.SGD``)
  with the same threads, when torch is importable (it is no dependency).

Every ``fit`` figure is given for each backend available here (``onnxruntime-training`` and
``onnxruntime``, the plain-runtime backend on whatever onnxruntime is installed). Ratios are
to the bare loop (and, for the torch column, torch / bare). Each figure is the best of
``--repeat`` measurements, in seconds per epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

import onnxloss
from onnxloss.examples import linear_regression, mlp
from onnxloss.train import OrtGradientOptimizer

N, D = 100_000, 100
WORKLOADS = {
    "linear1000": ("linear", (), 1000),
    "linear10": ("linear", (), 10),
    "mlp100": ("mlp", (50, 10), 100),
    "mlp512": ("mlp", (512, 512), 1000),
}
LR = 1e-3


def loss_model(kind: str, hidden: tuple):
    inference = linear_regression(D) if kind == "linear" else mlp((D, *hidden, 1), seed=0)
    return onnxloss.rewrite(inference, onnxloss.MSELoss(reduction="mean"))


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def bare_loop(model, X, y, batch, threads, repeat, epochs):
    from onnxloss.readiness import default_trainables
    from onnxloss.train._runtime import load_runtime
    from onnxloss.train.artifacts import TrainingArtifacts

    rt = load_runtime()
    art = TrainingArtifacts(model, default_trainables(model))
    state = rt.api.CheckpointState.load_checkpoint(str(art.checkpoint))
    options = rt.ort.SessionOptions()
    options.intra_op_num_threads = threads
    module = rt.api.Module(str(art.training_model), state, str(art.eval_model), "cpu", options)
    optimizer = rt.api.Optimizer(str(art.optimizer_model), module)
    optimizer.set_learning_rate(LR)

    def epoch():
        start = time.perf_counter()
        for s in range(0, len(X), batch):
            module(X[s : s + batch], y[s : s + batch])
            optimizer.step()
            module.lazy_reset_grad()
        return time.perf_counter() - start

    epoch()  # warm-up
    return best(lambda: sum(epoch() for _ in range(epochs)) / epochs, repeat)


def fit_figures(model, X, y, batch, threads, repeat, epochs, backend):
    params = dict(
        batch_size=batch, learning_rate=LR, n_threads=threads, random_state=0, backend=backend
    )

    def one_epoch_calls(shuffle: bool):
        trainer = OrtGradientOptimizer(
            model, max_iter=1, warm_start=True, shuffle=shuffle, **params
        )
        trainer.fit(X, y)  # builds the session

        def run():
            start = time.perf_counter()
            for _ in range(epochs):
                trainer.fit(X, y)
            return (time.perf_counter() - start) / epochs

        return best(run, repeat)

    def long_fit():
        trainer = OrtGradientOptimizer(model, max_iter=epochs, **params)
        trainer.fit(X[:batch], y[:batch])  # builds the session

        def run():
            start = time.perf_counter()
            trainer.fit(X, y)
            return (time.perf_counter() - start) / epochs

        return best(run, repeat)

    def partial():
        trainer = OrtGradientOptimizer(model, **params)
        trainer.partial_fit(X[:batch], y[:batch])

        def run():
            start = time.perf_counter()
            for _ in range(epochs):
                trainer.partial_fit(X, y)
            return (time.perf_counter() - start) / epochs

        return best(run, repeat)

    return {
        "fit-1": one_epoch_calls(True),
        "fit-1 noshuf": one_epoch_calls(False),
        "fit-long": long_fit(),
        "partial": partial(),
    }


def torch_loop(kind, hidden, X, y, batch, threads, repeat, epochs):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sizes = (D, *hidden, 1) if kind == "mlp" else (D, 1)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    lossf = torch.nn.MSELoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch():
        start = time.perf_counter()
        for idx in torch.randperm(len(Xt)).split(batch):
            opt.zero_grad()
            lossf(net(Xt[idx]), yt[idx]).backward()
            opt.step()
        return time.perf_counter() - start

    epoch()
    return best(lambda: sum(epoch() for _ in range(epochs)) / epochs, repeat)


def backends() -> list[str]:
    from onnxloss.train._runtime import has_training_build

    found = ["onnxruntime-training"] if has_training_build() else []
    return [*found, "onnxruntime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure (best)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement")
    parser.add_argument("--quick", action="store_true", help="10,000 samples, 1 repeat")
    parser.add_argument("--only", default="", help="comma-separated workloads to run")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--backends", default="", help="comma-separated backends (default: all)")
    args = parser.parse_args()
    n = 10_000 if args.quick else N
    repeat = 1 if args.quick else args.repeat
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, D)).astype(np.float32)
    y = (X @ rng.normal(size=(D, 1)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    has_torch = importlib.util.find_spec("torch") is not None
    names = [w for w in args.only.split(",") if w] or list(WORKLOADS)
    threads_list = [int(t) for t in args.threads.split(",")]
    available = [b for b in args.backends.split(",") if b] or backends()
    has_bare = "onnxruntime-training" in available
    print(f"{n} samples x {D} features, SGD lr {LR}, seconds per epoch (best of {repeat})")
    columns = ["workload", "threads", "bare"]
    for b in available:
        columns += [f"{c} [{b}]" for c in ("fit-1", "fit-1 noshuf", "fit-long", "partial")]
    columns += ["torch"]
    rows = []
    for name in names:
        kind, hidden, batch = WORKLOADS[name]
        model = loss_model(kind, hidden)
        for threads in threads_list:
            bare = bare_loop(model, X, y, batch, threads, repeat, args.epochs) if has_bare else None
            row = {"workload": name, "threads": threads, "bare": bare}
            for b in available:
                figures = fit_figures(model, X, y, batch, threads, repeat, args.epochs, b)
                row.update({f"{k} [{b}]": v for k, v in figures.items()})
            row["torch"] = (
                torch_loop(kind, hidden, X, y, batch, threads, repeat, args.epochs)
                if has_torch
                else None
            )
            rows.append(row)
            print(_format_row(row, columns), flush=True)
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print(_format_row(row, columns))
    if not has_torch:
        print("(torch is not importable here: no torch column)")


def _format_row(row: dict, columns: list[str]) -> str:
    bare = row.get("bare")
    cells = []
    for c in columns:
        v = row.get(c)
        if c in ("workload", "threads"):
            cells.append(str(v))
        elif v is None:
            cells.append("-")
        elif c == "bare" or bare is None:
            cells.append(f"{v:.4f}")
        else:
            cells.append(f"{v:.4f} ({v / bare:.2f}×)")
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
