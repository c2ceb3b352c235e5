"""Reading models given as protos or paths, and writing them atomically.

Models whose weights live in external data files are read and rewritten without loading
those weights: the rewritten model points at the same files, which are copied (streamed,
never held in memory) next to the output when it goes to another folder.

A model file comes from someone else, and so do the external-data locations inside it.
Every location is resolved (symlinks included) against the model's folder by
:func:`confine_external_data` before any data file is opened, and must stay inside it; on
the way out, every file is written inside the output's folder. New files follow the
umask; a file rewritten in place keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import Message
from onnx.external_data_helper import load_external_data_for_model

from .errors import ModelFileError
from .model_index import iter_graphs, model_graphs

ModelLike = onnx.ModelProto | str | os.PathLike

_PROTOBUF_LIMIT = 2**31 - 1


def load_model(model: ModelLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """The model itself if it is a proto, else the model read from the path.

    From a path, the model is read without its external data first; every external-data
    location is then confined to the model's folder (:func:`confine_external_data`), and
    only then, with ``load_external_data``, are the data files read.
    """
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, str | os.PathLike):
        raise ModelFileError(
            f"expected an onnx.ModelProto or a path to a .onnx file, got {type(model).__name__}"
        )
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file '{path}' is empty (0 bytes): not an ONNX model")
    try:
        loaded = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, unreadable file...
        raise ModelFileError(f"cannot read '{path}' as an ONNX model: {exc}") from exc
    if not loaded.HasField("graph"):
        raise ModelFileError(
            f"'{path}' holds no graph: it is not an ONNX model (or only a fragment of one)"
        )
    field = _undecodable_text(loaded)
    if field is not None:
        raise ModelFileError(
            f"'{path}' is not a valid ONNX model: its field {field} holds text that is not "
            "UTF-8 (the file is corrupted, or not an ONNX model)"
        )
    folder = model_folder(path)
    located = confine_external_data(loaded, folder)
    if load_external_data and located:
        try:
            load_external_data_for_model(loaded, str(folder))
        except Exception as exc:  # a missing or short data file
            raise ModelFileError(f"cannot read the external data of '{path}': {exc}") from exc
    return loaded


def _undecodable_text(message: Message) -> str | None:
    """The name of the first string field of ``message`` (or of a message inside it) that
    is not UTF-8, else None.

    protobuf's upb parser hands such a field to Python as ``bytes`` instead of refusing
    the file; names that are bytes would then break every later step in its own way.
    """
    if isinstance(message, onnx.TensorProto):  # never materialise the weights' bytes
        if isinstance(message.name, bytes) or isinstance(message.doc_string, bytes):
            return "onnx.TensorProto.name"
        entries = [*message.external_data, *getattr(message, "metadata_props", ())]
        return next(filter(None, map(_undecodable_text, entries)), None)
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
        if field.type == field.TYPE_MESSAGE:
            for item in value if repeated else (value,):
                found = _undecodable_text(item)
                if found is not None:
                    return found
        elif field.type == field.TYPE_STRING:
            if any(isinstance(item, bytes) for item in (value if repeated else (value,))):
                return field.full_name
    return None


def model_folder(path: str | os.PathLike) -> Path:
    """The folder a model file's external-data locations are relative to: the folder of
    the path as given (like ``onnx.load``), resolved."""
    return Path(path).parent.resolve()


def confine_external_data(model: onnx.ModelProto, folder: str | os.PathLike) -> dict[str, Path]:
    """Every external-data location of ``model``, resolved inside ``folder``.

    Nothing is opened. A location that is empty, absolute (POSIX or Windows), leaves the
    folder (``..``), or goes through a symbolic link that leaves it, even on the way back
    in, is a :class:`~onnxloss.ModelFileError` naming the tensor and the location.

    Returns:
        location → resolved path, in the order the tensors come.
    """
    root = Path(folder).resolve()
    found: dict[str, Path] = {}
    for tensor in _all_tensors(model):
        location = _external_location(tensor)
        if location is not None and location not in found:
            found[location] = resolve_inside(root, location, f"tensor '{tensor.name}'")
    return found


def resolve_inside(root: Path, location: str, owner: str) -> Path:
    """``root / location`` resolved one component at a time, each step inside ``root``
    (which must be resolved already); else a ModelFileError naming ``owner``."""

    def refuse(why: str) -> ModelFileError:
        return ModelFileError(
            f"{owner}: external data location {location!r} {why}; onnxloss reads and "
            f"writes external data only inside the model's folder '{root}' (give a path "
            "relative to it, without '..' or links that lead out)"
        )

    if not location or "\0" in location:
        raise refuse("is empty or holds a NUL character")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).anchor:
        raise refuse("is an absolute path")
    path = root
    for part in Path(location).parts:
        step = path / part
        try:
            # resolve() follows a link at this step, so each hop is checked where it lands.
            path = step.resolve()
        except (OSError, RuntimeError) as exc:  # a link loop
            raise refuse(f"cannot be resolved ({exc})") from None
        if not path.is_relative_to(root):
            via = "goes through a link that leaves" if step.is_symlink() else "leaves"
            raise refuse(f"{via} the folder (it reaches '{path}')")
    return path


def external_locations(model: onnx.ModelProto) -> list[str]:
    """Relative paths of the external data files the model's tensors point to."""
    found: dict[str, None] = {}
    for tensor in _all_tensors(model):
        location = _external_location(tensor)
        if location is not None:
            found[location] = None
    return list(found)


def _external_location(tensor: onnx.TensorProto) -> str | None:
    """The tensor's external-data location; ``""`` for an external tensor without one."""
    locations = [e.value for e in tensor.external_data if e.key == "location"]
    if tensor.data_location == onnx.TensorProto.EXTERNAL or locations:
        return locations[-1] if locations else ""
    return None


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model that may hold external data: initializers (dense and
    sparse) and tensor attributes, in every graph, subgraph, function and training graph."""
    graphs = model_graphs(model, functions=True)
    for info in model.training_info:
        graphs += [*iter_graphs(info.initialization), *iter_graphs(info.algorithm)]
    node_lists = [g.node for g in graphs] + [f.node for f in model.functions]
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for nodes in node_lists:
        for node in nodes:
            for attr in node.attribute:
                # Whatever attr.type says: onnx's loader looks at the fields themselves.
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
                for s in [*sparse, *attr.sparse_tensors]:
                    yield from (s.values, s.indices)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "file") -> Iterator[str]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block ends
    without an exception, so readers see either the old file or the whole new one.

    The new file's mode follows the umask, like any file a program creates; when ``path``
    exists already, it keeps that file's permission bits.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ModelFileError(f"cannot write '{target}': folder '{folder}' does not exist")
    if target.is_dir():
        raise ModelFileError(f"cannot write '{target}': it is a folder; give a {what} path")
    try:
        tmp_name = _new_file_beside(target)
    except OSError as exc:  # a read-only folder, a full disk
        raise ModelFileError(f"cannot write '{target}': {_reason(exc)}") from exc
    try:
        yield tmp_name
        os.replace(tmp_name, target)
    except OSError as exc:
        raise ModelFileError(f"cannot write '{target}': {_reason(exc)}") from exc
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _new_file_beside(target: Path) -> str:
    """Create an empty, uniquely named hidden file in ``target``'s folder.

    ``tempfile.mkstemp`` would create it 0600 whatever the umask; ``os.open`` with 0666
    lets the umask decide, and an existing ``target`` lends its permission bits (set-id
    bits left out).
    """
    try:
        keep = stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except FileNotFoundError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = str(target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(name, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        if keep is not None:
            os.chmod(name, keep)
        return name
    raise FileExistsError(f"no free temporary name beside '{target}'")


def _reason(exc: OSError) -> str:
    """``permission denied on '/out'``: the OS error without its errno prefix."""
    where = f" on '{exc.filename}'" if exc.filename else ""
    return f"{(exc.strerror or str(exc)).lower()}{where}"


def save_model_atomic(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    source_dir: Path | None = None,
    verify: Callable[[str], None] | None = None,
) -> None:
    """Write ``model`` to ``path`` so that readers see either nothing or the whole file.

    ``source_dir`` is the folder the model's external data locations are relative to; the
    files are copied next to ``path`` when it is another folder. Every location is
    confined to ``source_dir`` on the way in and to ``path``'s folder on the way out
    (:func:`confine_external_data`), before anything is opened. ``verify`` is called with
    the path of the complete temporary file before it replaces ``path`` (the checker needs
    a file beside the external data). On any failure nothing is left behind: not the
    temporary file, not a half-copied data file.
    """
    target = Path(path)
    size = model.ByteSize()
    if size > _PROTOBUF_LIMIT:
        raise ModelFileError(
            f"cannot write '{target}': the model is {size} bytes, over protobuf's 2 GiB limit; "
            "store its weights as external data (onnx.save(..., save_as_external_data=True))"
        )
    copies = _external_copies(model, target, source_dir)
    created: list[Path] = []
    try:
        with atomic_output(target, "model file (.onnx)") as tmp_name:
            _bring_external_data(copies, created)
            with open(tmp_name, "wb") as f:
                f.write(model.SerializeToString())
            if verify is not None:
                verify(tmp_name)
    except BaseException:  # KeyboardInterrupt too: never leave a half-copied data file
        for p in reversed(created):  # files, then the folders made for them
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        raise


def _external_copies(
    model: onnx.ModelProto, target: Path, source: Path | None
) -> list[tuple[str, Path, Path]]:
    """``(location, source file, destination file)`` for every external data file, both
    ends confined to their folders; nothing is opened."""
    locations = external_locations(model)
    if not locations:
        return []
    if source is None:
        raise ModelFileError(
            "the model refers to external data files "
            f"{locations} but was not read from a file; load it with its external data "
            "or pass its path instead"
        )
    sources = confine_external_data(model, source)
    dest = model_folder(target)
    final = dest / target.name
    copies = []
    for location, src in sources.items():
        dst = resolve_inside(dest, location, f"the output's external data file {location!r}")
        if dst == final:
            raise ModelFileError(
                f"cannot write '{target}': the model's external data location {location!r} is "
                "the output file itself; choose another output name"
            )
        copies.append((location, src, dst))
    return copies


def _bring_external_data(copies: list[tuple[str, Path, Path]], created: list[Path]) -> None:
    """Make each external data file reachable from the output; appends the folders and
    files it creates, in the order it creates them."""
    for _, src, dst in copies:
        if not src.is_file():
            raise ModelFileError(f"external data file '{src}' referenced by the model is missing")
        if dst.exists():
            if os.path.samefile(src, dst) or filecmp.cmp(src, dst, shallow=False):
                continue
            raise ModelFileError(
                f"cannot write the model's external data to '{dst}': a different file is "
                "already there; choose another output folder"
            )
        missing = [d for d in (dst.parent, *dst.parent.parents) if not d.exists()]
        dst.parent.mkdir(parents=True, exist_ok=True)
        created.extend(reversed(missing))
        created.append(dst)
        # A copy, not a hard link: onnx refuses hard-linked data files ("potential hardlink
        # attack"). copyfile streams it (sendfile on Linux), never the whole file in memory.
        shutil.copyfile(src, dst)
