"""Pictures of loss graphs: Graphviz DOT source, rendered by ``dot`` when it is installed,
or the ONNX text format when it is not.

The nodes :func:`onnxloss.rewrite` appended (counted in the model's metadata) are drawn
filled, so the loss part stands out from the original graph.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import onnx

from .errors import ModelFileError, OnnxLossError
from .model_io import atomic_output
from .rewrite import read_metadata

#: Output suffixes ``dot`` renders; ``.dot`` and ``.txt`` need no Graphviz.
RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def _quote(text: str) -> str:
    """A DOT string literal; real newlines become DOT's ``\\n`` line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(model: onnx.ModelProto, *, loss_only: bool = False, rankdir: str = "TB") -> str:
    """Graphviz DOT source of the main graph.

    Boxes are nodes (op type, then node name), ellipses graph inputs and outputs, and
    edges carry tensor names. With ``loss_only`` only the nodes onnxloss added are drawn,
    with the tensors they read from the original graph: the picture of a big model's loss.
    """
    graph = model.graph
    meta = read_metadata(model) or {}
    added = int(meta.get("nodes", 0))
    first_added = len(graph.node) - added
    nodes = list(enumerate(graph.node))
    if loss_only:
        if not added:
            raise OnnxLossError("loss_only=True needs a model made by onnxloss.rewrite")
        nodes = nodes[first_added:]
    producer = {out: f"n{i}" for i, node in nodes for out in node.output}
    inits = {t.name for t in graph.initializer}
    lines = [
        "digraph onnx {",
        f"  rankdir={rankdir};",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555"];',
    ]
    sources: dict[str, str] = {}

    def source(name: str) -> str:
        if name in producer:
            return producer[name]
        if name not in sources:
            sources[name] = f"t{len(sources)}"
            shape = "box, style=dashed" if name in inits else "ellipse"
            lines.append(f"  {sources[name]} [label={_quote(name)}, shape={shape}];")
        return sources[name]

    for i, node in nodes:
        fill = ', style=filled, fillcolor="#ffe3b3"' if i >= first_added and added else ""
        label = node.op_type if not node.name else f"{node.op_type}\n{node.name}"
        lines.append(f"  n{i} [label={_quote(label)}, shape=box{fill}];")
    node_names = {node.name for _, node in nodes}
    for i, node in nodes:
        for name in node.input:
            if name:
                # onnxloss names a node like its output: no need to print that twice
                label = "" if name in node_names else f" [label={_quote(name)}]"
                lines.append(f"  {source(name)} -> n{i}{label};")
    for k, out in enumerate(graph.output):
        if out.name in producer:
            lines.append(f"  o{k} [label={_quote(out.name)}, shape=ellipse, style=bold];")
            lines.append(f"  {producer[out.name]} -> o{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(model: onnx.ModelProto, path: str | os.PathLike, *, loss_only: bool = False) -> Path:
    """Write a picture of ``model`` to ``path``, chosen by its suffix.

    ``.svg``, ``.png``, ``.pdf``: rendered by Graphviz's ``dot`` (an OnnxLossError says so
    when it is not installed); ``.dot``: the DOT source; ``.txt``: the ONNX text format.
    The file appears whole or not at all.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".txt":
        data = model_text(model).encode()
    elif suffix == ".dot":
        data = to_dot(model, loss_only=loss_only).encode()
    elif suffix in RENDERED:
        data = render(to_dot(model, loss_only=loss_only), RENDERED[suffix])
    else:
        raise ModelFileError(
            f"cannot draw to '{target}': use a .svg, .png or .pdf file (needs Graphviz), "
            ".dot (Graphviz source) or .txt (ONNX text format)"
        )
    with atomic_output(target, "picture file") as tmp:
        Path(tmp).write_bytes(data)
    return target


def model_text(model: onnx.ModelProto) -> str:
    """The ONNX text format of ``model`` (``onnx.printer``); an OnnxLossError naming the
    problem when the printer cannot read the model (a malformed file)."""
    try:
        return onnx.printer.to_text(model)
    except Exception as exc:  # InferenceError on inconsistent tensors, undecodable text...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxLossError(
            f"cannot print the model as ONNX text, it is malformed: {first}"
        ) from exc


def has_graphviz() -> bool:
    """Whether Graphviz's ``dot`` is on the PATH."""
    return shutil.which("dot") is not None


def render(dot_source: str, fmt: str = "svg") -> bytes:
    """Render DOT source with Graphviz's ``dot`` into ``fmt`` bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise OnnxLossError(
            "Graphviz's 'dot' is not installed (apt install graphviz, brew install graphviz, "
            "conda install graphviz); draw to a .dot or .txt file instead"
        )
    done = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise OnnxLossError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
