"""How long the gradient pass takes on the 9,000-node model of bench_rewrite.py, against
onnx.load of that model; and (``--coverage``) which operators of the exported PyTorch models
lie on the gradient path and whether every one has a rule.

Run: python bench/bench_autodiff.py [--layers 3000] [--repeat 5]
     python bench/bench_autodiff.py --coverage

Prints one table: each figure, its baseline and the ratio. Times are the best of
``--repeat`` runs (the least disturbed by the machine's other work).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import warnings
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_rewrite import best, chain_model  # noqa: E402

import onnxloss  # noqa: E402
from onnxloss.autodiff import gradient, training_step  # noqa: E402

DATA = HERE.parent / "tests" / "data" / "autodiff"


def timings(layers: int, repeat: int) -> None:
    model = onnxloss.rewrite(chain_model(layers), onnxloss.MSELoss())
    folder = tempfile.mkdtemp(prefix="onnxloss-bench-")
    path = os.path.join(folder, "chain_loss.onnx")
    onnx.save(model, path)
    load = best(lambda: onnx.load(path), repeat)
    grad = gradient(model, validate=False)
    rows = [
        ("gradient(proto), validated (full checker)", lambda: gradient(model)),
        ("gradient(proto, validate=False)", lambda: gradient(model, validate=False)),
        ("training_step(proto, 'adamw', validate=False)",
         lambda: training_step(model, optimizer="adamw", validate=False)),  # fmt: skip
        ("gradient(path, validate=False)", lambda: gradient(path, validate=False)),
    ]
    print(
        f"model: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
        f"{os.path.getsize(path) / 1e6:.1f} MB; gradient model: {len(grad.graph.node)} nodes; "
        f"best of {repeat}"
    )
    print(f"{'figure':<48} {'seconds':>9} {'baseline (onnx.load)':>21} {'ratio':>7}")
    for name, fn in rows:
        seconds = best(fn, repeat)
        print(f"{name:<48} {seconds:>9.4f} {load:>21.4f} {seconds / load:>7.2f}")


def coverage() -> None:
    """One row per exported model: the operators on its gradient path, whether the pass
    has a rule for each, and whether onnxruntime-training's readiness check passes."""
    from onnxloss.readiness import check_trainable

    rows = collections.OrderedDict()
    for path in sorted(DATA.glob("*.onnx")):
        name = path.stem.split("-")[0]
        loss_model = onnxloss.rewrite(onnx.load(str(path)), onnxloss.MSELoss())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = check_trainable(loss_model, backend="onnxruntime")
            theirs = check_trainable(loss_model)
        names = set(ours.path_nodes)
        ops = {n.op_type for n in loss_model.graph.node if (n.name or n.op_type) in names}
        rule_errors = [p for p in ours.errors if p.kind in ("no-gradient-rule", "gradient-form")]
        blocked = sorted({p.kind for p in theirs.errors if p.kind != "trainable-unreachable"})
        row = rows.setdefault(name, {"ops": set(), "covered": 0, "files": 0, "runtime": set()})
        row["ops"] |= ops
        row["files"] += 1
        row["covered"] += not rule_errors
        row["runtime"].update(blocked or ["ok"])
    print("| model | operators on the gradient path | every operator covered | "
          "training build's readiness check |")  # fmt: skip
    print("|---|---|---|---|")
    for name, row in rows.items():
        runtime = ", ".join(sorted(row["runtime"]))
        print(
            f"| {name} | {', '.join(sorted(row['ops']))} | {row['covered']}/{row['files']} | "
            f"{runtime} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--coverage", action="store_true", help="print the coverage table")
    args = parser.parse_args()
    if args.coverage:
        coverage()
    else:
        timings(args.layers, args.repeat)


if __name__ == "__main__":
    main()
