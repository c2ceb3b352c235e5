"""Reading models given as protos or paths, and writing them atomically.

Models whose weights live in external data files are read and rewritten without loading
those weights: the rewritten model points at the same files, which are copied (streamed,
never held in memory) next to the output when it goes to another folder.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from .errors import ModelFileError
from .model_index import iter_graphs

ModelLike = onnx.ModelProto | str | os.PathLike

_PROTOBUF_LIMIT = 2**31 - 1


def load_model(model: ModelLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """The model itself if it is a proto, else the model read from the path."""
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, str | os.PathLike):
        raise ModelFileError(
            f"expected an onnx.ModelProto or a path to a .onnx file, got {type(model).__name__}"
        )
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError, missing external files...
        raise ModelFileError(f"cannot read '{path}' as an ONNX model: {exc}") from exc


def external_locations(model: onnx.ModelProto) -> list[str]:
    """Relative paths of the external data files the model's tensors point to."""
    found: dict[str, None] = {}
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    found[entry.value] = None
    return list(found)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for graph in iter_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "file") -> Iterator[str]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block ends
    without an exception, so readers see either the old file or the whole new one."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ModelFileError(f"cannot write '{target}': folder '{folder}' does not exist")
    if target.is_dir():
        raise ModelFileError(f"cannot write '{target}': it is a folder; give a {what} path")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp_name
        os.replace(tmp_name, target)
    except OSError as exc:
        raise ModelFileError(f"cannot write '{target}': {exc}") from exc
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def save_model_atomic(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    source_dir: Path | None = None,
    verify: Callable[[str], None] | None = None,
) -> None:
    """Write ``model`` to ``path`` so that readers see either nothing or the whole file.

    ``source_dir`` is the folder the model's external data locations are relative to; the
    files are copied next to ``path`` when it is another folder. ``verify`` is
    called with the path of the complete temporary file before it replaces ``path`` (the
    checker needs a file beside the external data). On any failure nothing is left behind:
    not the temporary file, not a half-copied data file.
    """
    target = Path(path)
    size = model.ByteSize()
    if size > _PROTOBUF_LIMIT:
        raise ModelFileError(
            f"cannot write '{target}': the model is {size} bytes, over protobuf's 2 GiB limit; "
            "store its weights as external data (onnx.save(..., save_as_external_data=True))"
        )
    created: list[Path] = []
    try:
        with atomic_output(target, "model file (.onnx)") as tmp_name:
            _bring_external_data(external_locations(model), target.parent, source_dir, created)
            with open(tmp_name, "wb") as f:
                f.write(model.SerializeToString())
            if verify is not None:
                verify(tmp_name)
    except BaseException:  # KeyboardInterrupt too: never leave a half-copied data file
        for p in created:
            p.unlink(missing_ok=True)
        raise


def _bring_external_data(
    locations: list[str], dest: Path, source: Path | None, created: list[Path]
) -> None:
    """Make each external data file reachable from ``dest``; appends the files it creates."""
    if not locations:
        return
    if source is None:
        raise ModelFileError(
            "the model refers to external data files "
            f"{locations} but was not read from a file; load it with its external data "
            "or pass its path instead"
        )
    for location in locations:
        src = source / location
        dst = dest / location
        if not src.is_file():
            raise ModelFileError(f"external data file '{src}' referenced by the model is missing")
        if dst.exists():
            if os.path.samefile(src, dst) or filecmp.cmp(src, dst, shallow=False):
                continue
            raise ModelFileError(
                f"cannot write the model's external data to '{dst}': a different file is "
                "already there; choose another output folder"
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        created.append(dst)
        # A copy, not a hard link: onnx refuses hard-linked data files ("potential hardlink
        # attack"). copyfile streams it (sendfile on Linux), never the whole file in memory.
        shutil.copyfile(src, dst)
