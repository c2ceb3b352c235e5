"""The onnxloss command line: add-loss, plugins, demo; one-line errors, status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import requires_ort, run_model

import onnxloss
from onnxloss.cli import main, parse_penalty
from onnxloss.examples import linear_regression


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "lr.onnx"
    onnx.save(linear_regression(3, coef=np.array([[1.0], [2.0], [3.0]])), path)
    return path


def test_add_loss_matches_the_function(model_file, tmp_path, capsys):
    out = tmp_path / "loss.onnx"
    argv = [
        "add-loss", str(model_file), str(out), "--score-name", "elastic", "--weight-name", "weight",
        "--option", "l1_weight=0.1", "--option", "l2_weight=0.9", "--penalty", "coef:l2=0.01",
    ]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    expected = onnxloss.add_loss_output(
        onnx.load(model_file), weight_name="weight", score_name="elastic",
        l1_weight=0.1, l2_weight=0.9, penalty={"coef": {"l2": 0.01}},
    )  # fmt: skip
    assert onnx.load(out).SerializeToString() == expected.SerializeToString()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("coef:0.01", ("coef", 0.01)),
        ("coef:l1=0.1,l2=0.01", ("coef", {"l1": 0.1, "l2": 0.01})),
        ("dense/kernel:0:l2=2", ("dense/kernel:0", {"l2": 2.0})),
        ("W*:l1=1", ("W*", {"l1": 1.0})),
    ],
)
def test_penalty_syntax(text, parsed):
    assert parse_penalty(text) == parsed


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        (["--score-name", "focal"], "unknown loss 'focal'"),
        (["--penalty", "nope:0.1"], "'nope'"),
        (["--penalty", "coef:l3=1"], "'l3=1'"),
        (["--penalty", "coef"], "NAME:COEF"),
        (["--penalty", "coef:abc"], "'abc' is not a number"),
        (["--option", "gamma=1"], "no option 'gamma'"),
        (["--option", "nonsense"], "KEY=VALUE"),
        (["--label-name", "X"], "'X' is already used"),
        (["--output-index", "3"], "out of range"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(model_file, tmp_path, capsys, extra, culprit):
    out = tmp_path / "loss.onnx"
    assert main(["add-loss", str(model_file), str(out), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxloss: error: ")
    assert culprit in lines[0]
    assert captured.out == ""
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["lr.onnx"]  # no temporary file either


def test_missing_input_file(tmp_path, capsys):
    assert main(["add-loss", str(tmp_path / "none.onnx"), str(tmp_path / "o.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_and_module_entry(model_file, tmp_path):
    out = tmp_path / "m.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "onnxloss", "add-loss", str(model_file), str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got, _ = run_model(
        onnx.load(out), {"X": np.ones((2, 3), np.float32), "label": np.zeros((2, 1), np.float32)}
    )
    assert got == pytest.approx(72.0)
    bad = subprocess.run(
        [sys.executable, "-m", "onnxloss", "add-loss", str(model_file), str(out)]
        + ["--score-name", "x"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_plugins_lists_builtins(capsys, fresh_registry):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "kind", "aliases", "plugin", "distribution"]
    rows = {line.split()[0]: line.split() for line in out[1:] if line.strip()}
    assert rows["squared_error"] == ["squared_error", "loss", "l2,mse", "regression", "built-in"]
    assert rows["elastic_net"] == ["elastic_net", "regularizer", "-", "penalties", "built-in"]
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {t["name"] for t in data["terms"]} >= {"huber", "cross_entropy", "l1", "l2"}
    assert data["failures"] == []


@requires_ort
def test_demo_prints_weights_beside_least_squares(capsys):
    assert main(["demo", "--epochs", "30"]) == 0
    out = capsys.readouterr().out
    assert "lstsq" in out and "intercept" in out
    gap = float(out.strip().splitlines()[-1].split()[-1])
    assert gap < 0.02


def test_output_into_a_closed_pipe_is_not_an_error():
    """`onnxloss plugins | head -1`: the reader has left when the output comes (here the
    pipe is closed before the command starts writing); no traceback, status 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxloss", "plugins"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 0, err
    assert "Traceback" not in err
