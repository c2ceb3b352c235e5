"""The trainer's suite and the demo in a second virtual environment that has only the plain
``onnxruntime`` (no training build), so that both backends are tested on every change
(issue 12). Skipped inside that environment, and with ``ONNXLOSS_SKIP_PLAIN_ENV=1``.

The environment is built with the interpreter running the tests (``ONNXLOSS_PLAIN_PYTHON``
picks another one, e.g. python3.13) from the repository's ``train-onnxruntime`` extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import HAS_TRAINING_BUILD

ROOT = Path(__file__).resolve().parents[1]
SUITE = [
    "tests/test_train.py",
    "tests/test_train_api.py",
    "tests/test_train_inputs.py",
    "tests/test_plain_runtime.py",
    "tests/test_distributed.py",
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_TRAINING_BUILD, reason="this is the plain-runtime environment"),
    pytest.mark.skipif(os.environ.get("ONNXLOSS_SKIP_PLAIN_ENV") == "1", reason="asked to skip"),
]


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def test_trainer_suite_and_demo_on_the_plain_runtime(tmp_path):
    env_dir = tmp_path / "plain-venv"
    python = os.environ.get("ONNXLOSS_PLAIN_PYTHON")
    if python:
        _run([python, "-m", "venv", str(env_dir)])
    else:
        venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = str(bin_dir / "python")
    _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], timeout=600)
    _run(
        [py, "-m", "pip", "install", "-q", "-e", f"{ROOT}[train-onnxruntime,mpi]",
         "pytest", "hypothesis", "scikit-learn", "skl2onnx", "joblib", "sybil>=10",
         "tomli; python_version < '3.11'"],
        timeout=1200,
    )  # fmt: skip
    listing = _run([py, "-m", "pip", "list", "--format=freeze"])
    assert "onnxruntime-training" not in listing and "onnxruntime==" in listing
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ONNXLOSS_BACKEND", None)
    demo = _run([str(bin_dir / "onnxloss"), "demo"], env=env, timeout=600)
    assert "largest difference from least squares" in demo
    out = _run(
        [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE],
        cwd=ROOT, env=env, timeout=1800,
    )  # fmt: skip
    assert " passed" in out and " failed" not in out
    print(out.splitlines()[-1], file=sys.stderr)
