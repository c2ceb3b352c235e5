"""How long add_loss_output takes on a 9,000-node model, against onnx.load of that model.

Run: python bench/bench_rewrite.py [--layers 3000] [--repeat 7]

Prints one table: each figure, its baseline and the ratio. Times are the best of
``--repeat`` runs (the least disturbed by the machine's other work).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss


def chain_model(layers: int, width: int = 16) -> onnx.ModelProto:
    """``layers`` × (MatMul, Add, Relu): 3 nodes a layer, small weights."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "X"
    for i in range(layers):
        inits.append(nh.from_array(rng.normal(size=(width, width)).astype(np.float32), f"W{i}"))
        inits.append(nh.from_array(np.zeros(width, np.float32), f"b{i}"))
        nodes += [
            oh.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"], name=f"mm{i}"),
            oh.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"add{i}"),
            oh.make_node("Relu", [f"add{i}"], [f"h{i}"], name=f"relu{i}"),
        ]
        prev = f"h{i}"
    graph = oh.make_graph(
        nodes,
        "chain",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", width])],
        [oh.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", width])],
        inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    model = chain_model(args.layers)
    folder = tempfile.mkdtemp(prefix="onnxloss-bench-")
    path = os.path.join(folder, "chain.onnx")
    onnx.save(model, path)
    out = os.path.join(folder, "chain_loss.onnx")
    seed = dict(score_name="squared_error", penalty={"W0": 1e-4})  # one penalised tensor
    every = dict(score_name="squared_error", penalty={"W*": 1e-4})  # all 3,000 weights
    spec = onnxloss.compat.seed_spec(**seed)
    add, add_file = onnxloss.add_loss_output, onnxloss.compat.add_loss_output_file

    load = best(lambda: onnx.load(path), args.repeat)
    rows = [
        ("add_loss_output(proto), 1 penalty", lambda: add(model, **seed)),
        (
            "rewrite(proto, validate=False), 1 penalty",
            lambda: onnxloss.rewrite(model, spec, validate=False),
        ),
        ("add_loss_output(path), 1 penalty", lambda: add(path, **seed)),
        ("add_loss_output_file(path->path), 1 penalty", lambda: add_file(path, out, **seed)),
        (f"add_loss_output(proto), {args.layers} penalised", lambda: add(model, **every)),
        (
            "onnx.checker.check_model(full_check=True)",
            lambda: onnx.checker.check_model(model, full_check=True),
        ),
    ]
    print(
        f"model: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
        f"{os.path.getsize(path) / 1e6:.1f} MB; best of {args.repeat}; validation (full "
        "checker) is on unless said"
    )
    print(f"{'figure':<46} {'seconds':>9} {'baseline (onnx.load)':>21} {'ratio':>7}")
    for name, fn in rows:
        seconds = best(fn, args.repeat)
        print(f"{name:<46} {seconds:>9.4f} {load:>21.4f} {seconds / load:>7.2f}")


if __name__ == "__main__":
    main()
