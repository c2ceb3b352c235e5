"""A training run's state, independent of the backend, and the checkpoint file that holds it.

:class:`RunState` is what both backends export and import: the trained tensors, the
optimizer's moments and step count, and the estimator's own counters (epochs, samples
seen, losses, early-stopping bookkeeping, shuffling seed). A checkpoint written by one
backend therefore resumes on the other.

File format: a ``.npz`` archive (numpy's zip of ``.npy`` files, read with
``allow_pickle=False``) holding ``header`` (UTF-8 JSON: format, optimizer, step, the
estimator's counters, and for every array its role and tensor name) and the arrays
``a0, a1, ...``. Tensor names never become file names inside the archive. Checkpoints are
untrusted input: the header is validated, and each array's size is checked against what
the model needs before it is read.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxLossError

FORMAT = "onnxloss-checkpoint"
VERSION = 2
#: AdamW's moments, in the order onnxruntime-training stores them (momentum0, momentum1).
ADAMW_MOMENTS = ("exp_avg", "exp_avg_sq")
MOMENTS = {"sgd": (), "adamw": ADAMW_MOMENTS}


@dataclass
class RunState:
    """Everything needed to continue a run.

    Attributes:
        optimizer: ``"sgd"`` or ``"adamw"``.
        step: updates applied so far (AdamW's bias correction counts them).
        weights: trained tensor name → value.
        moments: trained tensor name → moment name (``exp_avg``, ``exp_avg_sq``) → value.
        trainer: the estimator's counters (JSON-compatible).
    """

    optimizer: str
    step: int
    weights: dict[str, np.ndarray]
    moments: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)

    def check_against(self, shapes: dict[str, tuple[int, ...]], optimizer: str, where: str):
        """An OnnxLossError unless this state fits trained tensors of ``shapes`` and the
        estimator's ``optimizer``."""
        if list(self.weights) != list(shapes):
            raise OnnxLossError(
                f"{where} trains {list(self.weights)}, this estimator {list(shapes)}: load it "
                "into an estimator with the same model and weights_to_train"
            )
        for name, shape in shapes.items():
            got = tuple(self.weights[name].shape)
            if got != tuple(shape):
                raise OnnxLossError(
                    f"{where}: '{name}' has shape {list(got)} but the model's has {list(shape)};"
                    " the checkpoint comes from another model"
                )
        if self.optimizer != optimizer:
            raise OnnxLossError(
                f"{where} was written with optimizer={self.optimizer!r}, this estimator uses "
                f"{optimizer!r}; set optimizer={self.optimizer!r} to resume it"
            )


def to_bytes(state: RunState) -> bytes:
    """The checkpoint file's content."""
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for name, value in state.weights.items():
        entries.append({"role": "weight", "tensor": name})
        arrays[f"a{len(arrays)}"] = np.ascontiguousarray(value)
    for name, moments in state.moments.items():
        for moment, value in moments.items():
            entries.append({"role": moment, "tensor": name})
            arrays[f"a{len(arrays)}"] = np.ascontiguousarray(value)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "optimizer": state.optimizer,
        "step": int(state.step),
        "arrays": entries,
        "trainer": state.trainer,
    }
    buffer = io.BytesIO()
    text = json.dumps(header, sort_keys=True).encode()
    np.savez(buffer, header=np.frombuffer(text, np.uint8), **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes, expected: dict[str, tuple[int, ...]], where: str) -> RunState:
    """Parse a checkpoint made by :func:`to_bytes`; ``expected`` gives the trained tensors'
    shapes (float32), so that no array bigger than the model needs is ever read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise OnnxLossError(f"{where} is not an onnxloss checkpoint (not a zip archive)") from exc
    with archive:
        header = _header(archive, where)
        entries = header["arrays"]
        moments = MOMENTS.get(header["optimizer"])
        if moments is None:
            raise OnnxLossError(f"{where}: unknown optimizer {header['optimizer']!r}")
        biggest = max((int(np.prod(s)) for s in expected.values()), default=0) * 8 + 4096
        state = RunState(header["optimizer"], header["step"], {}, {}, header["trainer"])
        for k, entry in enumerate(entries):
            member = f"a{k}.npy"
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise OnnxLossError(f"{where}: array {member} is missing") from None
            if info.file_size > biggest:
                raise OnnxLossError(
                    f"{where}: array for '{entry['tensor']}' is {info.file_size} bytes, more "
                    "than any trained tensor of this model needs"
                )
            with archive.open(member) as f:
                try:
                    array = np.lib.format.read_array(f, allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:
                    raise OnnxLossError(f"{where}: array {member} is damaged: {exc}") from exc
            if array.dtype.kind != "f":
                raise OnnxLossError(f"{where}: array for '{entry['tensor']}' is not floating")
            role, tensor = entry["role"], entry["tensor"]
            if role == "weight":
                state.weights[tensor] = array
            elif role in moments:
                state.moments.setdefault(tensor, {})[role] = array
            else:
                raise OnnxLossError(f"{where}: unknown array role {role!r}")
    for name, values in state.moments.items():
        if name not in state.weights or set(values) != set(moments):
            raise OnnxLossError(f"{where}: the optimizer state of '{name}' is incomplete")
        for value in values.values():
            if value.shape != state.weights[name].shape:
                raise OnnxLossError(f"{where}: a moment of '{name}' has the wrong shape")
    return state


def _header(archive: zipfile.ZipFile, where: str) -> dict:
    try:
        with archive.open("header.npy") as f:
            raw = np.lib.format.read_array(f, allow_pickle=False)
        header = json.loads(raw.tobytes().decode())
    except (KeyError, ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise OnnxLossError(f"{where} is not an onnxloss checkpoint (no readable header)") from exc
    ok = (
        isinstance(header, dict)
        and header.get("format") == FORMAT
        and isinstance(header.get("version"), int)
        and isinstance(header.get("optimizer"), str)
        and isinstance(header.get("step"), int)
        and isinstance(header.get("trainer"), dict)
        and isinstance(header.get("arrays"), list)
        and all(
            isinstance(e, dict)
            and isinstance(e.get("role"), str)
            and isinstance(e.get("tensor"), str)
            for e in header["arrays"]
        )
    )
    if not ok:
        raise OnnxLossError(f"{where} is not an onnxloss checkpoint (malformed header)")
    if header["version"] > VERSION:
        raise OnnxLossError(
            f"{where} was written by a newer onnxloss (checkpoint version {header['version']}); "
            "upgrade onnxloss to read it"
        )
    return header


def read_file(path: str | Path, expected: dict[str, tuple[int, ...]]) -> RunState:
    """A checkpoint file: onnxloss's format, or the onnxruntime-training format that
    onnxloss 0.1 wrote (read through :mod:`onnxloss.train.ort_checkpoint`)."""
    from . import ort_checkpoint

    where = f"checkpoint '{path}'"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = Path(path).stat().st_size
    except OSError as exc:
        raise OnnxLossError(f"cannot read {where}: {exc.strerror or exc}") from exc
    # At most float64 weights and two moments each, plus the header.
    limit = sum(int(np.prod(s)) for s in expected.values()) * 8 * 4 + (1 << 20)
    if size > limit:
        raise OnnxLossError(
            f"{where} is {size} bytes, far more than this model's weights and optimizer state "
            "need; it comes from another model"
        )
    if ort_checkpoint.is_ort_checkpoint(head):
        return _from_ort(ort_checkpoint.read(path), where)
    return from_bytes(Path(path).read_bytes(), expected, where)


#: Where onnxloss 0.1 kept the estimator's counters inside a runtime checkpoint.
LEGACY_PROPERTY = "onnxloss_trainer"


def _from_ort(ckpt, where: str) -> RunState:
    if LEGACY_PROPERTY not in ckpt.properties:
        raise OnnxLossError(f"{where} is a runtime checkpoint not saved by OrtGradientOptimizer")
    try:
        trainer = json.loads(ckpt.properties[LEGACY_PROPERTY])
    except ValueError as exc:
        raise OnnxLossError(f"{where}: its onnxloss properties are not JSON") from exc
    if not isinstance(trainer, dict) or not isinstance(trainer.get("trained"), list):
        raise OnnxLossError(f"{where}: its onnxloss properties are malformed")
    trained = [n for n in trainer["trained"] if isinstance(n, str)]
    missing = [n for n in trained if n not in ckpt.params]
    if missing:
        raise OnnxLossError(f"{where} lacks the trained tensors {missing}")
    moments = {}
    counts = {len(m) for m in ckpt.momentums.values()}
    optimizer = "adamw" if counts == {2} else "sgd"
    if optimizer == "adamw":
        moments = {n: dict(zip(ADAMW_MOMENTS, ckpt.momentums[n], strict=True)) for n in trained}
    weights = {n: ckpt.params[n] for n in trained}
    return RunState(optimizer, int(ckpt.step or 0), weights, moments, trainer)
