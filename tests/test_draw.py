"""Graph pictures: DOT source, Graphviz rendering when present, text format otherwise."""

from __future__ import annotations

import os

import onnx
import pytest

import onnxloss
from onnxloss import draw as draw_module
from onnxloss.cli import main
from onnxloss.draw import draw, to_dot
from onnxloss.examples import linear_regression


@pytest.fixture
def loss_model():
    return onnxloss.add_loss_output(linear_regression(2), penalty={"coef": 0.1})


def test_dot_marks_the_nodes_onnxloss_added(loss_model):
    dot = to_dot(loss_model)
    assert dot.startswith("digraph onnx {") and dot.rstrip().endswith("}")
    filled = [line for line in dot.splitlines() if "fillcolor" in line]
    meta = onnxloss.read_metadata(loss_model)
    assert len(filled) == meta["nodes"]
    assert 'label="MatMul\\nmatmul", shape=box];' in dot  # the original node, not filled
    assert "shape=ellipse, style=bold" in dot  # outputs
    only = to_dot(loss_model, loss_only=True)
    assert "MatMul" not in only and only.count("fillcolor") == meta["nodes"]


def test_loss_only_needs_a_loss_model():
    with pytest.raises(onnxloss.OnnxLossError, match="made by onnxloss.rewrite"):
        to_dot(linear_regression(2), loss_only=True)


def test_dot_and_text_files_need_no_graphviz(tmp_path, loss_model, monkeypatch):
    monkeypatch.setattr(draw_module.shutil, "which", lambda name: None)
    draw(loss_model, tmp_path / "g.dot")
    draw(loss_model, tmp_path / "g.txt")
    assert (tmp_path / "g.dot").read_text() == to_dot(loss_model)
    text = (tmp_path / "g.txt").read_text()
    assert text == onnx.printer.to_text(loss_model) and "loss" in text
    with pytest.raises(onnxloss.OnnxLossError, match="'dot' is not installed"):
        draw(loss_model, tmp_path / "g.svg")
    assert sorted(os.listdir(tmp_path)) == ["g.dot", "g.txt"]


@pytest.mark.skipif(not draw_module.has_graphviz(), reason="Graphviz 'dot' not installed")
@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf"])
def test_rendered_with_graphviz(tmp_path, loss_model, suffix):
    path = draw(loss_model, tmp_path / f"g{suffix}")
    data = path.read_bytes()
    magic = {".svg": b"<svg", ".png": b"\x89PNG", ".pdf": b"%PDF"}[suffix]
    assert magic in data[:400]
    if suffix == ".svg":
        assert b"squared_error_Sub" in data


def test_unknown_suffix(tmp_path, loss_model):
    with pytest.raises(onnxloss.ModelFileError, match=r"\.svg, \.png or \.pdf"):
        draw(loss_model, tmp_path / "g.bmp")


def test_cli_draw(tmp_path, loss_model, capsys):
    model_path = tmp_path / "m.onnx"
    onnx.save(loss_model, model_path)
    assert main(["draw", str(model_path)]) == 0
    assert capsys.readouterr().out.strip() == onnx.printer.to_text(onnx.load(model_path)).strip()
    assert main(["draw", str(model_path), "-o", str(tmp_path / "g.dot"), "--loss-only"]) == 0
    assert "MatMul" not in (tmp_path / "g.dot").read_text()
    assert main(["draw", str(model_path), "-o", str(tmp_path / "g.gif")]) == 2
    assert "g.gif" in capsys.readouterr().err
