"""How far onnxloss is from PyTorch, loss by loss: the table of the losses note.

    python bench/torch_loss_differences.py

Reads ``tests/data/torch_losses.npz`` (PyTorch 2.13's numbers, see
``tests/data/make_torch_losses.py``) and prints, for each loss class, the largest
difference over all its cases of

* the value of the float64 and float32 graphs (onnx.reference and onnxruntime),
* the float64 gradient by central differences of the graph (edge batches excluded),
* onnxruntime-training's float32 gradient (edge batches included),

against PyTorch's float64 numbers, as ``|got - want| / (|want| + s)``: relative, with ``s``
the magnitude of the terms (``scale`` for a value, the mean ``|gradient|`` for a gradient),
the measure the tests bound by 1e-6 (float64) and 1e-5 (float32). The last column compares
PyTorch's own float32 value with its float64 one the same way, for scale.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_torch_losses as t  # noqa: E402

from onnxloss.testing.runtime import numeric_gradient, onnxruntime_gradients  # noqa: E402


def difference(got, want, floor: float) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want) / (np.abs(want) + floor))) if want.size else 0.0


def main() -> None:
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for case in t.CASES:
        row, want = table[case["loss"]], t.expected(case)
        counts[case["loss"]] += 1
        scale = float(want["scale64"])
        for dtype, tag in ((np.float64, "value64"), (np.float32, "value32")):
            model, feeds = t.model_for([case], dtype, trainable=False)
            for evaluator, loss in t.evaluate_both(model, feeds).items():
                if evaluator == "onnx.reference" and dtype == np.float32:
                    if case["batch"] in t.REFERENCE_UNDERFLOWS:
                        continue
                row[tag] = max(row[tag], difference(loss, want["value64"], scale))
        row["torch32"] = max(row["torch32"], difference(want["value32"], want["value64"], scale))
        gradients = [a for a in case["gradients"] if a not in case["skip_gradients"]]
        if case in t.FD_CASES:
            model, feeds = t.model_for([case], np.float64, trainable=False)
            run = t.loss_runner(model)
            for arg in gradients:
                name = f"X_{arg}"
                fd = numeric_gradient(
                    lambda x, name=name, run=run, feeds=feeds: run({**feeds, name: x}), feeds[name]
                )
                g = want[f"grad64/{arg}"]
                row["fd64"] = max(row["fd64"], difference(fd, g, float(np.mean(np.abs(g)))))
    for cases in t._groups():
        model, feeds = t.model_for(cases, np.float32, trainable=True)
        _, grads = onnxruntime_gradients(model, feeds, [i.name for i in model.graph.initializer])
        for k, case in enumerate(cases):
            for arg in case["gradients"]:
                if arg in case["skip_gradients"]:
                    continue
                g = t.expected(case)[f"grad64/{arg}"]
                got = grads[f"c{k}_offset_{arg}"]
                row = table[case["loss"]]
                row["ort32"] = max(row["ort32"], difference(got, g, float(np.mean(np.abs(g)))))
    columns = ("value64", "fd64", "value32", "ort32", "torch32")
    print(f"PyTorch {t.INDEX['torch']}, {len(t.CASES)} cases")
    header = ("value f64", "gradient f64 (FD)", "value f32", "gradient f32 (ORT-training)",
              "PyTorch f32 vs f64")  # fmt: skip
    print("| loss | cases | " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted(table):
        cells = " | ".join(f"{table[name][c]:.1e}" for c in columns)
        print(f"| `{name}` | {counts[name]} | {cells} |")


if __name__ == "__main__":
    main()
