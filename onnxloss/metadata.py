"""The record :func:`onnxloss.rewrite` leaves in a loss model's metadata, and its reader.

The entry ``onnxloss`` of ``model.metadata_props`` holds a JSON object::

    {"format": 1, "loss": "loss", "nodes": 7, "reduction": "sum",
     "targets": {"label": "variable"}, "weights": ["weight"], "terms": ["MSELoss(...)"]}

``nodes`` counts the nodes the rewriter appended (the last ones of the main graph),
``targets`` maps each new target input to the output its loss binds, ``weights`` lists the
new sample-weight inputs. The trainer, :func:`onnxloss.strip_loss`, ``onnxloss check`` and
``onnxloss draw`` rely on it, and a model file is someone else's: :func:`read_metadata`
checks every field before anyone uses it.
"""

from __future__ import annotations

import json
import numbers

import onnx

from .errors import MetadataError

#: Key of the model metadata entry in which the rewriter records what it added.
METADATA_KEY = "onnxloss"
METADATA_FORMAT = 1
#: What ``reduction`` may say: one reduction for every loss term, or "mixed".
REDUCTIONS = ("sum", "mean", "elementwise_mean", "mixed")


def read_metadata(model: onnx.ModelProto) -> dict | None:
    """The record :func:`onnxloss.rewrite` left in a loss model's metadata, or None.

    Raises:
        MetadataError: the entry is not a JSON object with the fields above, of the right
            types, consistent with the model (its inputs, its node count).
    """
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return _parse(prop.value, model)
    return None


def _parse(text: str, model: onnx.ModelProto) -> dict:
    try:
        meta = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or a number too big for a float
        raise _malformed(f"it is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _malformed(f"it holds a JSON {_json_kind(meta)}, not an object")
    missing = [k for k in ("format", "loss", "nodes", "reduction", "targets", "weights")
               if k not in meta]  # fmt: skip
    if missing:
        raise _malformed(f"it lacks the field(s) {missing}")
    fmt = meta["format"]
    if not _is_int(fmt) or fmt < 1:
        raise _malformed(f"'format' must be a positive integer, got {fmt!r}")
    if fmt > METADATA_FORMAT:
        raise _malformed(
            f"it has format {fmt}, newer than this onnxloss reads ({METADATA_FORMAT}); "
            "upgrade onnxloss"
        )
    if not isinstance(meta["loss"], str) or not meta["loss"]:
        raise _malformed(f"'loss' must be the loss output's name, got {meta['loss']!r}")
    nodes, available = meta["nodes"], len(model.graph.node)
    if not _is_int(nodes) or not 0 <= nodes <= available:
        raise _malformed(
            f"'nodes' must be the number of nodes the rewrite appended, an integer from 0 to "
            f"{available} (the graph's node count), got {nodes!r}"
        )
    if meta["reduction"] not in REDUCTIONS:
        raise _malformed(f"'reduction' must be one of {REDUCTIONS}, got {meta['reduction']!r}")
    targets, weights = meta["targets"], meta["weights"]
    if not isinstance(targets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in targets.items()
    ):
        raise _malformed(f"'targets' must map target input names to output names, got {targets!r}")
    if not isinstance(weights, list) or not all(isinstance(w, str) for w in weights):
        raise _malformed(f"'weights' must be a list of input names, got {weights!r}")
    terms = meta.get("terms", [])
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise _malformed(f"'terms' must be a list of strings, got {terms!r}")
    _check_later_keys(meta)
    inputs = {i.name for i in model.graph.input}
    absent = [n for n in (*targets, *weights) if n not in inputs]
    if absent:
        raise _malformed(
            f"it names the input(s) {absent} as targets or weights, but the model's inputs "
            f"are {sorted(inputs)}"
        )
    return meta


def _check_later_keys(meta: dict) -> None:
    """The keys added after the first format (older models lack them): ``reductions``,
    ``labels`` (target → ``{"classes": C or null, "ignore_index": k}``, or ``"end": -1`` for
    a list of classes ended by -1) and ``losses``."""
    reductions = meta.get("reductions", [])
    if not isinstance(reductions, list) or not all(r in REDUCTIONS[:-1] for r in reductions):
        raise _malformed(
            f"'reductions' must list reductions of {REDUCTIONS[:-1]}, got {reductions!r}"
        )
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        raise _malformed(f"'labels' must map target inputs to class counts, got {labels!r}")
    for target, info in labels.items():
        ok = (
            target in meta["targets"]
            and isinstance(info, dict)
            and (info.get("classes") is None or (_is_int(info["classes"]) and info["classes"] > 0))
            and all(info.get(k) is None or _is_int(info[k]) for k in ("ignore_index", "end"))
        )
        if not ok:
            raise _malformed(
                f"'labels' entry {target!r} must be a target input with "
                f"{{'classes': <positive int>, 'ignore_index': <int>}}, got {info!r}"
            )
    losses = meta.get("losses", [])
    if not isinstance(losses, list) or not all(isinstance(item, dict) for item in losses):
        raise _malformed(f"'losses' must be a list of objects, got {losses!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _json_kind(value: object) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null")


def _malformed(why: str) -> MetadataError:
    return MetadataError(
        f"the model's '{METADATA_KEY}' metadata entry is malformed: {why}. onnxloss.rewrite "
        "writes it; remove the entry, or add the loss again to the inference model"
    )
