"""Fuzzing with hypothesis: whatever options, specs, command lines, models and metadata a
user or an attacker passes, the outcome is a valid model (it passes the full checker) or
an OnnxLossError; the CLI exits 0 (1 for a 'check' that finds problems) or 2 with one line
on stderr. Nothing else may escape, and the caller's model is never changed.

Each target runs a bounded number of examples (``EXAMPLES``), with no deadline: the suite
budget is shared. The examples are the same on every run; ``ONNXLOSS_FUZZ_EXAMPLES=<n>``
runs every target ``n`` times on fresh random examples instead (a longer hunt).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from conftest import identity_model
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as oh

import onnxloss
from onnxloss import draw, metadata, model_io
from onnxloss.cli import build_parser, main
from onnxloss.compat import accepted_options
from onnxloss.examples import linear_regression

#: Examples per target: about 35 s in all on one core (2.5 to 19 ms an example).
EXAMPLES = {
    "options": 1000,
    "specs": 700,
    "cli": 500,
    "models": 800,
    "metadata": 500,
    "bytes": 300,
}
_override = os.environ.get("ONNXLOSS_FUZZ_EXAMPLES")


def fuzz_settings(target: str):
    n = int(_override) if _override else EXAMPLES[target]
    return settings(
        max_examples=n,
        deadline=None,
        # The suite draws the same examples every run (a CI run never fails by chance);
        # with ONNXLOSS_FUZZ_EXAMPLES set, each run explores new ones.
        derandomize=not _override,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def two_outputs() -> onnx.ModelProto:
    graph = oh.make_graph(
        [oh.make_node("Identity", ["P"], ["first"]), oh.make_node("Softmax", ["P"], ["proba"])],
        "two",
        [oh.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 3])],
        [
            oh.make_tensor_value_info("first", TensorProto.FLOAT, ["N", 3]),
            oh.make_tensor_value_info("proba", TensorProto.FLOAT, ["N", 3]),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


MODELS = {
    "linear": linear_regression(2).SerializeToString(),
    "linear-2-targets": linear_regression(3, 2).SerializeToString(),
    "linear-float64": linear_regression(2, dtype=np.float64).SerializeToString(),
    "identity-1d": identity_model(("N",)).SerializeToString(),
    "identity-fp16": identity_model(("N", 2), elem=TensorProto.FLOAT16).SerializeToString(),
    "identity-opset13": identity_model(("N", 2), opset=13).SerializeToString(),
    "two-outputs": two_outputs().SerializeToString(),
}
LOSSES = sorted(onnxloss.available_losses())
REGULARIZERS = sorted(onnxloss.available_regularizers())
OPTION_NAMES = sorted(
    {o for reg in onnxloss.available_losses().values() for o in accepted_options(reg.cls)}
    | {"output", "gamma", "bogus", "l1", "alpha"}
)
NAMES = ["label", "X", "P", "coef", "intercept", "variable", "w", "loss", "first", "proba", ""]

numbers_ = st.one_of(
    st.integers(-3, 3),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e-60, 1e-30),
    st.floats(1e30, 1e300),
    st.sampled_from([0, 0.0, -0.0, 0.5, 1e-6, 65504.0, 7e4, 3.5e38, 1e39]),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    numbers_,
    st.text(max_size=6),
    st.sampled_from(["sum", "mean", "none", "0.5", "1e39"]),
    st.lists(numbers_, max_size=3),
    st.lists(st.integers(-3, 3), max_size=3).map(np.array),
    st.dictionaries(st.text(max_size=3), numbers_, max_size=2),
)
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=5), anything)
hashable = st.one_of(st.none(), st.booleans(), numbers_, st.text(max_size=6))
penalties = st.one_of(
    st.none(),
    anything,
    st.dictionaries(
        st.one_of(st.sampled_from(["coef", "intercept", "*", "c*", "X", "nope", ""]), hashable),
        st.one_of(
            numbers_, anything, st.dictionaries(st.sampled_from(["l1", "l2", "l3"]), anything)
        ),
        max_size=3,
    ),
)


def mostly(good, bad, out_of: int = 4):
    """``good`` in all but one of ``out_of`` draws, else ``bad`` (``one_of`` would merge
    repeated strategies, so it cannot weight them)."""
    return st.integers(1, out_of).flatmap(lambda k: good if k > 1 else bad)


def load(key: str) -> onnx.ModelProto:
    return onnx.load_from_string(MODELS[key])


def assert_valid_loss_model(result: onnx.ModelProto) -> None:
    onnx.checker.check_model(result, full_check=True)
    first = result.graph.output[0]
    assert first.type.tensor_type.shape.dim == []  # a scalar loss, first
    assert onnxloss.read_metadata(result)["loss"] == first.name


def outcome(call):
    """The call's result, or the OnnxLossError it raised; anything else fails the test.

    Each outcome is an ``event`` (``pytest --hypothesis-show-statistics`` shows how often
    each kind of result and each error type came out).
    """
    try:
        result = call()
    except onnxloss.OnnxLossError as exc:
        assert str(exc).strip(), "an error message names the culprit"
        event(type(exc).__name__)
        return exc
    event(f"ok: {type(result).__name__}")
    return result


@fuzz_settings("options")
@given(
    model_key=st.sampled_from(sorted(MODELS)),
    score_name=mostly(st.sampled_from(LOSSES), names, 8),
    loss_name=mostly(st.just("loss"), names),
    label_name=mostly(st.sampled_from(["label", "y"]), names),
    weight_name=mostly(st.sampled_from([None, "w"]), names),
    penalty=mostly(st.none(), penalties, 2),
    output_index=mostly(st.sampled_from([None, 0, -1, "variable", "proba"]), anything),
    options=st.dictionaries(st.sampled_from(OPTION_NAMES), mostly(numbers_, anything), max_size=2),
)
def test_add_loss_output_options(
    model_key, score_name, loss_name, label_name, weight_name, penalty, output_index, options
):
    model = load(model_key)
    result = outcome(
        lambda: onnxloss.add_loss_output(
            model,
            score_name=score_name,
            loss_name=loss_name,
            label_name=label_name,
            weight_name=weight_name,
            penalty=penalty,
            output_index=output_index,
            **options,
        )
    )
    assert model.SerializeToString() == MODELS[model_key]  # never mutated
    if isinstance(result, onnx.ModelProto):
        assert_valid_loss_model(result)


@st.composite
def terms(draw_):
    if draw_(st.integers(0, 2)):  # two losses for one regularizer
        cls = onnxloss.available_losses()[draw_(st.sampled_from(LOSSES))].cls
        # Values are anything; the keywords are the class's own (an unknown keyword is a
        # TypeError, as for any Python callable: add_loss_output names it, see above).
        accepted = sorted(accepted_options(cls))
        value = mostly(numbers_, anything)
        kwargs = draw_(st.dictionaries(st.sampled_from(accepted), value, max_size=2))
        args = [draw_(mostly(st.sampled_from([None, 0, -1]), names))]
    else:
        cls = onnxloss.available_regularizers()[draw_(st.sampled_from(REGULARIZERS))].cls
        tensors = st.sampled_from(["coef", "intercept", "*", "*", "X", "P", "zz*", ""])
        args = [draw_(mostly(tensors, st.one_of(st.lists(tensors, max_size=2), anything)))]
        positional = 2 if cls is onnxloss.ElasticNetPenalty else 1
        args += draw_(st.lists(mostly(st.sampled_from([0.1, 1.0]), anything), max_size=positional))
    kwargs = kwargs if cls.kind == "loss" else {}
    term = outcome(lambda: cls(*args, **kwargs))
    coef = draw_(mostly(st.sampled_from([1.0, 0.5, 2]), st.one_of(numbers_, anything)))
    if isinstance(term, onnxloss.OnnxLossError):
        return term
    return outcome(lambda: coef * term)


@fuzz_settings("specs")
@given(
    model_key=st.sampled_from(sorted(MODELS)),
    parts=st.lists(terms(), min_size=1, max_size=3),
    extra=mostly(st.none(), st.one_of(anything, st.sampled_from(LOSSES))),
    loss_name=mostly(st.just("loss"), names),
    validate=st.booleans(),
)
def test_rewrite_specs(model_key, parts, extra, loss_name, validate):
    model = load(model_key)
    built = [p for p in parts if not isinstance(p, onnxloss.OnnxLossError)]
    spec = extra if extra is not None and not built else built
    result = outcome(lambda: onnxloss.rewrite(model, spec, loss_name=loss_name, validate=validate))
    assert model.SerializeToString() == MODELS[model_key]
    if isinstance(result, onnx.ModelProto):
        assert_valid_loss_model(result)  # validate=False too: a valid input stays valid


@contextlib.contextmanager
def cli_folder():
    """A fresh folder with a model, a loss model, an empty and a garbage file, made the
    working directory, so that a relative path in a command line lands there too."""
    with tempfile.TemporaryDirectory() as folder, _working_directory(folder):
        root = Path(folder)
        onnx.save(linear_regression(2), root / "model.onnx")
        onnx.save(onnxloss.add_loss_output(linear_regression(2)), root / "loss.onnx")
        (root / "empty.onnx").write_bytes(b"")
        (root / "junk.onnx").write_bytes(b"\x0a\xff\x00junk")
        (root / "sub").mkdir()
        yield root


@contextlib.contextmanager
def _working_directory(folder: str):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def choice(good: list, bad: list, out_of: int = 4):
    """One of ``good`` in all but one of ``out_of`` draws, else one of ``bad``."""
    return mostly(st.sampled_from(good), st.sampled_from(bad), out_of)


MODELS_IN = choice(
    ["model.onnx", "model.onnx", "loss.onnx"], ["empty.onnx", "junk.onnx", "missing.onnx", "sub"]
)
OUTPUTS = choice(["out.onnx", "sub/out.onnx", "model.onnx"], ["nodir/out.onnx", "sub", "x.txt"])
PICTURES = choice(
    ["p.dot", "p.txt", "sub/p.dot"], ["p.svg", "p.pdf", "p.xyz", "nodir/p.dot", "sub"]
)
flag = st.just(None)
COMMAND_OPTIONS = {
    "add-loss": {
        "--score-name": choice(LOSSES, ["nope", "", "l3"], 6),
        "--option": choice(
            [
                "delta=0.5",
                "l2_weight=2",
                "eps=1e-7",
                "quantile=0.3",
                "reduction=sum",
                "label_smoothing=0.1",
                "target_rank=2",
                "log_input=False",
                "gamma=2",
            ],
            ["l1_weight=1e39", "eps=-1", "reduction=[1]", "target=y", "x", "=1", "delta=1e300"],
        ),  # fmt: skip
        "--penalty": choice(
            ["coef:0.1", "coef:l1=0.1,l2=0.2", "intercept:1", "*:0.01"],
            ["coef:l1=0,l2=0", "*:1e39", "nope:1", "coef:", ":1", "intercept:1e-50", "c*:l3=1"],
        ),
        "--output-index": choice(["0", "-1", "variable"], ["5", "xw", ""]),
        "--weight-name": choice(["w", "sample_weight"], ["X", "coef", "", "label"]),
        "--label-name": choice(["y", "target"], ["X", "w", "", "loss"]),
        "--loss-name": choice(["total", "objective"], ["variable", "", "label"]),
        "--no-validate": flag,
    },
    "check": {
        "--weights": choice(["coef", "coef,intercept"], [",", "nope", "X"]),
        "--loss-output": choice(["loss"], ["variable", "nope", ""]),
        "--device": choice(["cpu", "cuda"], ["gpu"]),
        "--json": flag,
    },
    "draw": {"-o": PICTURES.map(lambda name: f"@{name}"), "--loss-only": flag},
    "plugins": {"--json": flag},
    "demo": {
        "--epochs": st.sampled_from(["1", "0", "-3", "x"]),
        "--seed": st.sampled_from(["1", "-1"]),
    },
}
POSITIONALS = {"add-loss": [MODELS_IN, OUTPUTS], "check": [MODELS_IN], "draw": [MODELS_IN]}


@st.composite
def command_lines(draw_):
    """Mostly well-formed command lines, with wrong values, missing or extra arguments and
    a little noise. File names are relative to the test folder (``@`` marks them)."""
    command = draw_(st.sampled_from([*COMMAND_OPTIONS, *COMMAND_OPTIONS, "fit", ""]))
    argv = [command]
    for files in POSITIONALS.get(command, []):
        if draw_(st.integers(0, 9)):  # now and then a positional is missing
            argv.append("@" + draw_(files))
    options = COMMAND_OPTIONS.get(command, {})
    if options:
        for name in draw_(st.lists(st.sampled_from(sorted(options)), max_size=4)):
            value = draw_(options[name])
            argv += [name] if value is None else [name, value]
    noise = st.sampled_from(["--bogus", "-h", "extra", "--json", "-o"])
    argv += draw_(mostly(st.just([]), st.lists(noise, min_size=1, max_size=2)))
    if command == "demo":  # never train here: the last --samples wins and is refused
        argv += ["--samples", draw_(st.sampled_from(["-1", "0", str(10**13), "many"]))]
    return argv


@fuzz_settings("cli")
@given(argv=command_lines())
@example(argv=["add-loss", "@model.onnx", "--score-name", "huber", "extra"])  # output: 'extra'
@example(argv=["add-loss", "@model.onnx", "@model.onnx", "--penalty", "coef:1e39"])
def test_cli_argument_lists(argv):
    with cli_folder() as root:
        argv = [str(root / a[1:]) if a.startswith("@") else a for a in argv]
        before = sorted(p.name for p in root.rglob("*"))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # only --help leaves through argparse's exit
                assert exc.code == 0 and "usage:" in out.getvalue(), argv
                event("help")
                return
        command = argv[0]
        event(f"{command or '(none)'} exit {code}")
        allowed = {0, 1, 2} if command == "check" else {0, 2}
        assert code in allowed, (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue()
        if code == 2:
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith("onnxloss: error: "), (argv, lines)
            assert sorted(p.name for p in root.rglob("*")) == before  # nothing written
        if code == 0 and command == "add-loss":
            written = Path(build_parser().parse_args(argv).output)  # noise may be the output
            onnx.checker.check_model(str(written), full_check=True)
            assert_valid_loss_model(onnx.load(written))
        leftovers = [p.name for p in root.rglob(".*.tmp")]
        assert leftovers == []  # never a half-written file


# -- malformed models ----------------------------------------------------------------------
ELEM_TYPES = st.one_of(st.integers(0, 27), st.sampled_from([999, -1, 2**31 - 1]))
OP_TYPES = st.sampled_from(["Add", "MatMul", "Identity", "Sign", "NoSuchOp", "", "If", "Loop"])


def _values(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    g = model.graph
    return [*g.input, *g.output, *g.value_info]


@st.composite
def mutations(draw_):
    """A list of (description, function editing a model in place)."""
    kinds = draw_(st.lists(st.integers(0, 15), min_size=1, max_size=4))
    edits = []
    for kind in kinds:
        k = draw_(st.integers(0, 10))
        text = draw_(
            st.one_of(st.sampled_from(NAMES + ["../x", "/etc/passwd"]), st.text(max_size=4))
        )
        number = draw_(st.one_of(st.integers(-3, 30), st.sampled_from([999, -(2**31), 2**40])))
        elem = draw_(ELEM_TYPES)
        dims = draw_(
            st.lists(st.one_of(st.integers(-2, 4), st.sampled_from(["N", ""])), max_size=3)
        )
        edits.append(
            (kind, k, text, number, elem, dims, draw_(OP_TYPES), draw_(st.binary(max_size=12)))
        )
    return edits


def _pick(seq, k):
    return seq[k % len(seq)] if len(seq) else None


def apply_mutation(model: onnx.ModelProto, edit) -> None:
    kind, k, text, number, elem, dims, op_type, blob = edit
    g = model.graph
    value, node, init = _pick(_values(model), k), _pick(g.node, k), _pick(g.initializer, k)
    if kind == 0 and value is not None:
        value.type.tensor_type.elem_type = max(0, min(elem, 2**31 - 1))
    elif kind == 1 and value is not None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, int):
                shape.dim.add().dim_value = d
            else:
                shape.dim.add().dim_param = d
    elif kind == 2 and value is not None:
        value.type.tensor_type.ClearField("shape") if k % 2 else value.type.Clear()
    elif kind == 3 and value is not None:
        value.name = text
    elif kind == 4 and node is not None:
        target = node.output if k % 2 else node.input
        if len(target):
            target[k % len(target)] = text
    elif kind == 5 and model.opset_import:
        model.opset_import[0].version = number if k % 3 else model.opset_import[0].version
        if k % 3 == 0:
            model.opset_import[0].domain = text
    elif kind == 6:
        model.ir_version = number
    elif kind == 7 and node is not None:
        del g.node[k % len(g.node)]
    elif kind == 8 and node is not None:
        node.op_type = op_type
        if k % 2:
            node.domain = text
    elif kind == 9 and node is not None:
        node.attribute.append(oh.make_attribute(text or "a", number))
    elif kind == 10 and init is not None:
        init.data_type = max(0, min(elem, 2**31 - 1))
        del init.dims[:]
        init.dims.extend(d for d in dims if isinstance(d, int))
    elif kind == 11 and init is not None:
        init.raw_data = blob
    elif kind == 12 and init is not None:
        entry = init.external_data.add()
        entry.key, entry.value = ("location", text) if k % 3 else ("offset", str(number))
        init.data_location = TensorProto.EXTERNAL
    elif kind == 13:
        model.metadata_props.add(
            key=metadata.METADATA_KEY if k % 2 else text, value=blob.decode("latin-1")
        )
    elif kind == 14 and init is not None:
        init.name = text
    elif kind == 15:
        del (g.output if k % 3 == 0 else g.input)[:]


def check_everything(model: onnx.ModelProto, folder: Path) -> None:
    """Every entry point on one (possibly malformed) model: each gives its normal result
    or an OnnxLossError."""
    before = model.SerializeToString()
    result = outcome(lambda: onnxloss.rewrite(model, onnxloss.MSELoss()))
    if isinstance(result, onnx.ModelProto):
        assert_valid_loss_model(result)
    report = outcome(lambda: onnxloss.check_trainable(model))
    assert isinstance(report, onnxloss.OnnxLossError | onnxloss.TrainabilityReport)
    if isinstance(report, onnxloss.TrainabilityReport):
        assert report.format()
        assert report.ok or report.errors
    meta = outcome(lambda: onnxloss.read_metadata(model))
    if isinstance(meta, dict):
        stripped = outcome(lambda: onnxloss.strip_loss(model))
        assert isinstance(stripped, onnxloss.OnnxLossError | onnx.ModelProto)
    assert isinstance(outcome(lambda: draw.to_dot(model)), onnxloss.OnnxLossError | str)
    assert model.SerializeToString() == before
    path = folder / "m.onnx"
    path.write_bytes(before)
    outcome(lambda: model_io.load_model(path))
    result = outcome(lambda: onnxloss.rewrite_file(path, folder / "out" / "l.onnx", "mse"))
    if not isinstance(result, onnxloss.OnnxLossError):
        onnx.checker.check_model(str(folder / "out" / "l.onnx"), full_check=True)


@fuzz_settings("models")
@given(
    model_key=st.sampled_from(["linear", "two-outputs", "identity-1d", "loss"]),
    edits=mutations(),
)
def test_malformed_models(model_key, edits):
    if model_key == "loss":
        model = onnxloss.add_loss_output(load("linear"), weight_name="w")
    else:
        model = load(model_key)
    for edit in edits:
        apply_mutation(model, edit)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "out").mkdir()
        check_everything(model, Path(folder))


@fuzz_settings("bytes")
@given(
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_corrupted_model_files(cut, flips):
    data = bytearray(MODELS["linear"])
    for at, byte in flips:
        data[at % len(data)] = byte
    data = bytes(data[: max(cut, 1)] if cut < len(data) else data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(data)
        picture = str(Path(folder) / "m.dot")
        for argv in (
            ["check", str(path)],
            ["draw", str(path)],
            ["draw", str(path), "-o", picture],
            ["add-loss", str(path), str(path) + ".out"],
        ):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
            event(f"{argv[0]} exit {code}")
            assert code in {0, 1, 2}, (argv, err.getvalue())
            if code == 2:
                assert len(err.getvalue().splitlines()) == 1, err.getvalue()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@fuzz_settings("metadata")
@given(
    field=st.sampled_from(
        ["format", "loss", "nodes", "reduction", "targets", "weights", "terms", "extra", None]
    ),
    value=st.one_of(
        json_values,
        st.sampled_from(["label", "w", "loss", "variable", "sum", "mixed", 0, 1, 7, 8, 9]),
        st.dictionaries(
            st.sampled_from(["label", "w", "X", "y"]), st.sampled_from(["variable", "loss", "xw"])
        ),
        st.lists(st.sampled_from(["label", "w", "X", "coef"]), max_size=2),
    ),
    raw=st.one_of(st.none(), st.text(max_size=12)),
    weighted=st.booleans(),
)
def test_malformed_metadata(field, value, raw, weighted):
    model = onnxloss.add_loss_output(load("linear"), weight_name="w" if weighted else None)
    meta = onnxloss.read_metadata(model)
    if field is None:
        text = raw if raw is not None else json.dumps(value)
    else:
        meta[field] = value
        text = json.dumps(meta)
    model.metadata_props[-1].value = text
    read = outcome(lambda: onnxloss.read_metadata(model))
    assert isinstance(read, dict | onnxloss.MetadataError)
    stripped = outcome(lambda: onnxloss.strip_loss(model))
    if isinstance(stripped, onnx.ModelProto):
        onnx.checker.check_model(stripped, full_check=True)  # what strip gives is valid
        assert not any(p.key == metadata.METADATA_KEY for p in stripped.metadata_props)
    report = outcome(lambda: onnxloss.check_trainable(model))
    assert isinstance(report, onnxloss.TrainabilityReport | onnxloss.MetadataError)
    assert isinstance(outcome(lambda: draw.to_dot(model)), str | onnxloss.MetadataError)
