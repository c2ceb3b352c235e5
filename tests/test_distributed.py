"""Data-parallel training under ``mpiexec`` (issue 17): equal to one process on the same
global batches, uneven shards, checkpoints across rank counts, a dying rank."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAIN_BACKENDS

#: The mpiexec beside this interpreter (the mpich wheel's), else the one on PATH.
MPIEXEC = shutil.which(
    "mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)
HAS_MPI = importlib.util.find_spec("mpi4py") is not None and MPIEXEC is not None
pytestmark = [
    pytest.mark.skipif(
        not (HAS_MPI and TRAIN_BACKENDS), reason="needs the [mpi] and [train] extras"
    ),
]
WORKER = Path(__file__).parent / "mpi" / "worker.py"
sys.path.insert(0, str(WORKER.parent))


def mpirun(ranks: int, scenario: str, outdir: Path, wait=120, flags=(), **opts) -> None:
    args = [f"{k}={v}" for k, v in opts.items()]
    cmd = [MPIEXEC, *flags, "-n", str(ranks), sys.executable, str(WORKER), scenario, str(outdir)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=wait)
    if scenario not in ("die", "hang"):
        assert done.returncode == 0, done.stdout + done.stderr


def result(outdir: Path):
    with np.load(outdir / "result.npz") as f:
        state = {k: f[k] for k in f.files}
    return state, json.loads((outdir / "result.json").read_text())


def single_process(ranks: int, epochs: int, backend: str, **opts):
    """The same global batches in one process: step k takes batch k of every rank's shard."""
    from worker import data, model

    from onnxloss.train import OrtGradientOptimizer, shard

    n, batch = int(opts.get("n", 50)), int(opts.get("batch", 7))
    shards = [shard(data(n), rank=r, size=ranks) for r in range(ranks)]
    steps = max(-(-len(s[0]) // batch) for s in shards)
    batches = []
    for k in range(steps):
        parts = [[a[k * batch : (k + 1) * batch] for a in s] for s in shards]
        parts = [p for p in parts if len(p[0])]
        batches.append(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)))
    trainer = OrtGradientOptimizer(
        model(opts.get("reduction", "mean")),
        learning_rate=float(opts.get("lr", 0.05)),
        optimizer=opts.get("optimizer", "sgd"),
        max_iter=epochs,
        backend=backend,
    )
    if "checkpoint" in opts:
        trainer.load_checkpoint(opts["checkpoint"])
    trainer.fit(batches)
    return trainer


@pytest.mark.parametrize("backend", TRAIN_BACKENDS)
@pytest.mark.parametrize("ranks, optimizer", [(2, "sgd"), (2, "adamw"), (3, "sgd")])
def test_ranks_take_the_single_process_step(tmp_path, backend, ranks, optimizer):
    mpirun(ranks, "fit", tmp_path, backend=backend, optimizer=optimizer, epochs=3)
    state, meta = result(tmp_path)
    reference = single_process(ranks, 3, backend, optimizer=optimizer)
    for name, value in reference.get_state().items():
        np.testing.assert_allclose(state[name], value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(meta["losses"], reference.train_losses_, rtol=1e-6)
    assert meta["t"] == reference.t_ == 1 + 3 * 50


def test_checkpoint_from_two_ranks_resumes_on_one_and_three(tmp_path):
    """Rank 0 writes the checkpoint; any number of ranks continue it: equal to one process
    that loads it and takes that rank count's global batches."""
    ckpt = tmp_path / "ckpt.npz"
    first = tmp_path / "first"
    first.mkdir()
    mpirun(2, "fit", first, epochs=2, save=ckpt, optimizer="adamw")
    for ranks in (1, 3):
        out = tmp_path / f"on{ranks}"
        out.mkdir()
        mpirun(ranks, "resume", out, checkpoint=ckpt, epochs=4, optimizer="adamw")
        state, meta = result(out)
        reference = single_process(ranks, 4, TRAIN_BACKENDS[0], optimizer="adamw", checkpoint=ckpt)
        assert meta["n_iter"] == reference.n_iter_ == 4
        np.testing.assert_allclose(meta["losses"], reference.train_losses_, rtol=1e-6)
        for name, value in reference.get_state().items():
            np.testing.assert_allclose(state[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scenario", ["die", "hang"])
def test_a_dead_or_stuck_rank_makes_the_others_fail_clearly(tmp_path, scenario):
    """Rank 1 dies (with the launcher's clean-up off: MPICH's mpiexec would otherwise kill
    every rank at once) or hangs; rank 0 raises DistributedError after the timeout."""
    flags = ["-disable-auto-cleanup"] if scenario == "die" else []
    mpirun(2, scenario, tmp_path, 90, flags, timeout=3, sleep=15)
    text = (tmp_path / "error.txt").read_text()
    assert "rank 0: no answer from the other ranks for 3 s" in text


def test_the_docs_script_runs_under_mpiexec(tmp_path):
    """docs/distributed.md's train.py, as printed, on two ranks."""
    import re

    page = (Path(__file__).parents[1] / "docs" / "distributed.md").read_text()
    script = re.search(r"```\{code-block\} python\n:caption: train.py\n\n(.*?)```", page, re.S)
    (tmp_path / "train.py").write_text(script.group(1))
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "train.py"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 1e-3  # rank 0 prints the last epoch's loss


def test_demo_runs_distributed():
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "onnxloss", "demo", "--distributed"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 ranks, batch 16 each" in done.stdout
    assert done.stdout.count("largest difference from least squares") == 1  # rank 0 only
    gap = float(done.stdout.rsplit(":", 1)[1])
    assert gap < 5e-3
