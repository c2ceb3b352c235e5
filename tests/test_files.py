"""Paths, atomic writes and models whose weights live in external data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxloss
from onnxloss import model_io
from onnxloss.examples import linear_regression


def big_external_model(folder, n_rows: int) -> str:
    """A linear model whose [n_rows, 4] weight is stored in an external data file."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(n_rows, 4)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["X", "W"], ["y"])],
        "big",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_rows])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [nh.from_array(weight, "W")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    path = os.path.join(folder, "big.onnx")
    onnx.save(model, path, save_as_external_data=True, location="big.data", size_threshold=0)
    return path


def test_external_data_is_never_loaded(tmp_path, monkeypatch):
    src = big_external_model(tmp_path, 1000)

    def refuse(*args, **kwargs):
        raise AssertionError("external data was loaded")

    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_tensor", refuse)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", refuse)
    monkeypatch.setattr(onnx, "load_external_data_for_model", refuse)
    dst = tmp_path / "big_loss.onnx"
    onnxloss.rewrite_file(src, dst, onnxloss.MSELoss() + onnxloss.L2Penalty("W", 0.1))
    monkeypatch.undo()
    result = onnx.load(str(dst), load_external_data=False)
    assert result.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert os.path.getsize(dst) < 10_000  # the weights stayed outside
    onnx.checker.check_model(str(dst), full_check=True)


def test_external_data_written_elsewhere_still_runs(tmp_path):
    from onnx.reference import ReferenceEvaluator

    src = big_external_model(tmp_path, 50)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "loss.onnx"
    onnxloss.rewrite_file(src, dst, onnxloss.MSELoss(reduction="sum"))
    assert (out_dir / "big.data").is_file()
    # writing again into the same folder is fine: the data file there is the same
    onnxloss.rewrite_file(src, dst, onnxloss.MSELoss(reduction="sum"))
    model = onnx.load(str(dst))
    weight = nh.to_array(model.graph.initializer[0])
    x = np.ones((2, 50), np.float32)
    y = np.zeros((2, 4), np.float32)
    loss, pred = ReferenceEvaluator(model).run(None, {"X": x, "label": y})
    np.testing.assert_allclose(pred, x @ weight, rtol=1e-5)
    np.testing.assert_allclose(loss, ((x @ weight) ** 2).sum(), rtol=1e-4)


def test_different_data_file_in_the_way_is_refused(tmp_path):
    src = big_external_model(tmp_path, 20)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "big.data").write_bytes(b"something else")
    with pytest.raises(onnxloss.ModelFileError, match="a different file is already there"):
        onnxloss.rewrite_file(src, out_dir / "loss.onnx", onnxloss.MSELoss())
    assert sorted(os.listdir(out_dir)) == ["big.data"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_peak_memory_stays_below_the_weights(tmp_path):
    """Rewriting a model with 256 MB of external weights raises the peak memory by a few
    MB. The same child then loads the weights, to show the meter would have seen them.

    VmHWM, not ru_maxrss: a child inherits its parent's ru_maxrss, so a big parent would
    hide the child's own peak.
    """
    src = big_external_model(tmp_path, 16_000_000)  # 16e6 x 4 float32 = 256 MB
    script = textwrap.dedent(
        f"""
        import json, onnx, onnxloss

        def peak_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

        base = peak_mb()
        onnxloss.rewrite_file({src!r}, {str(tmp_path / "out.onnx")!r}, onnxloss.MSELoss())
        rewrite = peak_mb()
        onnx.load({src!r})
        print(json.dumps({{"rewrite_mb": rewrite - base, "load_mb": peak_mb() - base}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    mem = json.loads(out.stdout)
    assert mem["load_mb"] > 200, mem  # the meter sees a full load of the weights
    assert mem["rewrite_mb"] < 32, mem


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    dst = tmp_path / "out.onnx"

    def broken_replace(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(model_io.os, "replace", broken_replace)
    with pytest.raises(onnxloss.ModelFileError, match="disk full"):
        model_io.save_model_atomic(linear_regression(2), dst)
    assert os.listdir(tmp_path) == []


def test_existing_output_survives_a_failed_rewrite(tmp_path):
    src = tmp_path / "lr.onnx"
    onnx.save(linear_regression(2), src)
    dst = tmp_path / "out.onnx"
    dst.write_bytes(b"previous result")
    with pytest.raises(onnxloss.UnknownTermError):
        onnxloss.compat.add_loss_output_file(src, dst, score_name="nope")
    assert dst.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["lr.onnx", "out.onnx"]


def test_output_folder_must_exist(tmp_path):
    src = tmp_path / "lr.onnx"
    onnx.save(linear_regression(2), src)
    with pytest.raises(onnxloss.ModelFileError, match="does not exist"):
        onnxloss.rewrite_file(src, tmp_path / "missing" / "out.onnx", onnxloss.MSELoss())
