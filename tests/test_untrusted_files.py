"""Model files from someone else: external data confined to the model's folder on every
path, no file written outside the output's folder, usual permissions, empty files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from onnx.external_data_helper import set_external_data

import onnxloss
import onnxloss.passes
from onnxloss import model_io
from onnxloss.cli import main
from onnxloss.examples import linear_regression

WEIGHT = np.arange(8, dtype=np.float32).reshape(2, 4)


def external_model(path: Path, location: str) -> Path:
    """``y = X @ W`` saved at ``path``, W's bytes said to be at ``location``."""
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["X", "W"], ["y"])],
        "g",
        [oh.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [nh.from_array(WEIGHT, "W")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location)
    tensor.ClearField("raw_data")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def layout(tmp_path):
    """``outside/SECRET`` beside ``models/`` (the model's folder) and ``out/``."""
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "SECRET"
    secret.write_bytes(WEIGHT.tobytes())
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    os.symlink(secret, tmp_path / "models" / "link.bin")
    os.symlink(tmp_path / "outside", tmp_path / "models" / "linkdir")
    return tmp_path


ESCAPES = {
    "traversal": ("../outside/SECRET", "leaves the folder"),
    "deep-traversal": ("sub/../../outside/SECRET", "leaves the folder"),
    "absolute": ("{root}/outside/SECRET", "is an absolute path"),
    "windows-absolute": ("C:\\outside\\SECRET", "is an absolute path"),
    "symlink": ("link.bin", "goes through a link that leaves"),
    "symlinked-folder": ("linkdir/SECRET", "goes through a link that leaves"),
    "out-and-back": ("linkdir/../models/w.bin", "goes through a link that leaves"),
    "empty": ("", "is empty"),
}


def entry_points(model: Path, out: Path):
    """Every way onnxloss reads a model file, as a callable each."""
    return {
        "load_model": lambda: model_io.load_model(model),
        "load_model-no-data": lambda: model_io.load_model(model, load_external_data=False),
        "rewrite": lambda: onnxloss.rewrite(model, onnxloss.MSELoss()),
        "rewrite_file": lambda: onnxloss.rewrite_file(model, out, onnxloss.MSELoss()),
        "rewrite_file-no-validate": lambda: onnxloss.rewrite_file(
            model, out, onnxloss.MSELoss(), validate=False
        ),
        "check_trainable": lambda: onnxloss.check_trainable(model),
        "passes": lambda: onnxloss.passes.MakeTrainable()(model),
    }


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escaping_locations_are_refused_everywhere(layout, case, capsys):
    location, why = ESCAPES[case]
    location = location.format(root=layout)
    model = external_model(layout / "models" / "m.onnx", location)
    (layout / "models" / "w.bin").write_bytes(WEIGHT.tobytes())
    out = layout / "out" / "loss.onnx"
    before = {p: p.stat().st_mtime_ns for p in layout.rglob("*")}
    for name, call in entry_points(model, out).items():
        with pytest.raises(onnxloss.ModelFileError, match=why) as err:
            call()
        assert "tensor 'W'" in str(err.value) and repr(location) in str(err.value), name
    cli = [
        ["add-loss", str(model), str(out)],
        ["add-loss", str(model), str(out), "--no-validate"],
        ["check", str(model)],
        ["draw", str(model), "-o", str(layout / "out" / "m.dot")],
        ["draw", str(model)],
    ]
    for argv in cli:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1 and "tensor 'W'" in lines[0] and why in lines[0], argv
    # Nothing was written anywhere: no new file, no changed one.
    assert {p: p.stat().st_mtime_ns for p in layout.rglob("*")} == before


def test_the_trainer_refuses_an_escaping_model(layout):
    pytest.importorskip("onnxruntime")
    from onnxloss.train import OrtGradientOptimizer

    loss_model = layout / "models" / "loss.onnx"
    (layout / "w.bin").write_bytes(WEIGHT.tobytes())
    onnx.save(onnxloss.rewrite(external_model(layout / "x.onnx", "w.bin"), "mse"), loss_model)
    # The same loss model, its weight now said to live outside.
    model = onnx.load(loss_model)
    set_external_data(model.graph.initializer[0], "../outside/SECRET")
    model.graph.initializer[0].ClearField("raw_data")
    onnx.save(model, loss_model)
    trainer = OrtGradientOptimizer(str(loss_model), ["W"], max_iter=1)
    x, y = np.ones((4, 2), np.float32), np.ones((4, 4), np.float32)
    with pytest.raises(onnxloss.ModelFileError, match="'../outside/SECRET' leaves the folder"):
        trainer.fit(x, y)


def test_locations_inside_the_folder_still_work(layout):
    """A nested location, and a link that stays inside, are fine: the data is read and
    copied next to an output in another folder, where it runs. (onnx >= 1.20 refuses to
    load any symlinked data file itself, so the link is only copied here.)"""
    from onnx.reference import ReferenceEvaluator

    (layout / "models" / "sub" / "w.bin").write_bytes(WEIGHT.tobytes())
    os.symlink(layout / "models" / "sub" / "w.bin", layout / "models" / "inner_link.bin")
    for location in ("sub/w.bin", "inner_link.bin", "sub/../sub/w.bin"):
        model = external_model(layout / "models" / "m.onnx", location)
        if "link" not in location:
            loaded = model_io.load_model(model).graph.initializer[0]
            np.testing.assert_array_equal(nh.to_array(loaded), WEIGHT)
        out = layout / "out" / location.replace("/", "_").replace(".", "_") / "loss.onnx"
        out.parent.mkdir()
        onnxloss.rewrite_file(model, out, onnxloss.MSELoss(reduction="sum"))
        x = np.array([[1.0, 2.0]], np.float32)
        feeds = {"X": x, "label": np.zeros((1, 4), np.float32)}
        loss, pred = ReferenceEvaluator(str(out)).run(None, feeds)
        np.testing.assert_allclose(pred, x @ WEIGHT)
        np.testing.assert_allclose(loss, ((x @ WEIGHT) ** 2).sum())


def test_nothing_is_written_outside_the_output_folder(layout):
    """A location that is fine in the source folder may meet a link in the output folder:
    the copy is refused instead of written through it, and nothing is left behind."""
    (layout / "models" / "sub" / "w.bin").write_bytes(WEIGHT.tobytes())
    model = external_model(layout / "models" / "m.onnx", "sub/w.bin")
    os.symlink(layout / "outside", layout / "out" / "sub")  # out/sub leads outside
    (layout / "out2").mkdir()
    os.symlink(layout / "outside" / "planted", layout / "out2" / "sub")  # dangling link
    for folder in ("out", "out2"):
        before = sorted(p.name for p in (layout / folder).iterdir())
        with pytest.raises(onnxloss.ModelFileError, match="'sub/w.bin' goes through a link"):
            onnxloss.rewrite_file(model, layout / folder / "loss.onnx", onnxloss.MSELoss())
        assert sorted(p.name for p in (layout / folder).iterdir()) == before
    assert sorted(p.name for p in (layout / "outside").iterdir()) == ["SECRET"]


def test_a_failed_copy_leaves_no_folder_behind(tmp_path, monkeypatch):
    external_model(tmp_path / "src" / "m.onnx", "a/b/w.bin")
    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    (tmp_path / "src" / "a" / "b" / "w.bin").write_bytes(WEIGHT.tobytes())
    (tmp_path / "dst").mkdir()

    def failing_copy(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_io.shutil, "copyfile", failing_copy)
    with pytest.raises(onnxloss.ModelFileError, match="no space left on device"):
        onnxloss.rewrite_file(tmp_path / "src" / "m.onnx", tmp_path / "dst" / "l.onnx", "mse")
    assert list((tmp_path / "dst").iterdir()) == []


def test_the_output_cannot_overwrite_its_own_data(tmp_path):
    external_model(tmp_path / "src" / "loss.onnx", "loss.onnx.data")
    (tmp_path / "src" / "loss.onnx.data").write_bytes(WEIGHT.tobytes())
    model = onnx.load(tmp_path / "src" / "loss.onnx", load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "loss.onnx"
    onnx.save(model, tmp_path / "src" / "m.onnx")
    (tmp_path / "dst").mkdir()
    with pytest.raises(onnxloss.ModelFileError, match="is the output file itself"):
        onnxloss.rewrite_file(tmp_path / "src" / "m.onnx", tmp_path / "dst" / "loss.onnx", "mse")


def test_every_tensor_kind_is_confined(tmp_path):
    """Initializers of subgraphs and functions, tensor attributes and sparse initializers:
    any of them may carry a location."""
    body = oh.make_graph(
        [oh.make_node("Constant", [], ["c"], value=nh.from_array(WEIGHT, "const_w"))],
        "then",
        [],
        [oh.make_tensor_value_info("c", TensorProto.FLOAT, [2, 4])],
    )
    cond = oh.make_node("If", ["flag"], ["y"], then_branch=body, else_branch=body)
    graph = oh.make_graph(
        [cond],
        "g",
        [oh.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    tensor = model.graph.node[0].attribute[0].g.node[0].attribute[0].t
    set_external_data(tensor, "../../etc/passwd")
    tensor.ClearField("raw_data")
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(onnxloss.ModelFileError, match="tensor 'const_w'.*'../../etc/passwd'"):
        model_io.load_model(tmp_path / "m.onnx")
    sparse = onnx.SparseTensorProto()
    sparse.values.CopyFrom(nh.from_array(np.ones(2, np.float32), "sparse_values"))
    sparse.indices.CopyFrom(nh.from_array(np.array([0, 3], np.int64), "sparse_idx"))
    sparse.dims.extend([4])
    model.graph.sparse_initializer.append(sparse)
    tensor.CopyFrom(nh.from_array(WEIGHT, "const_w"))  # back to inline data
    set_external_data(model.graph.sparse_initializer[0].indices, "/etc/shadow")
    assert model_io.external_locations(model) == ["/etc/shadow"]
    with pytest.raises(onnxloss.ModelFileError, match="tensor 'sparse_idx'.*absolute"):
        model_io.confine_external_data(model, tmp_path)


AUDIT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import onnx, onnxloss, onnxloss.passes, onnxloss.draw, onnxloss.readiness
    from onnxloss.cli import main

    onnxloss.get_registry().load()  # plugins are code: imported before the hook, like onnx

    events = []
    WATCH = {"open", "os.rename", "os.remove", "os.mkdir", "shutil.copyfile", "os.symlink",
             "os.truncate", "os.chmod", "os.link"}

    def hook(event, args):
        if event in WATCH:
            events.append([event, *(os.fsdecode(a) for a in args
                                    if isinstance(a, (str, bytes, os.PathLike)))])

    root = Path(sys.argv[1])
    models, out = root / "models", root / "out"
    cases = json.loads(sys.argv[2])
    sys.addaudithook(hook)
    outcomes = []
    for location in cases:
        model = models / "m.onnx"
        m = onnx.load(models / "template.onnx", load_external_data=False)
        m.graph.initializer[0].external_data[0].value = location
        onnx.save(m, model)
        for argv in (["add-loss", str(model), str(out / "l.onnx")],
                     ["add-loss", str(model), str(out / "l.onnx"), "--no-validate"],
                     ["check", str(model)], ["draw", str(model), "-o", str(out / "m.dot")]):
            outcomes.append(main(argv))
        for call in (lambda: onnxloss.rewrite(model, "mse"),
                     lambda: onnxloss.passes.MakeTrainable()(model)):
            try:
                call()
                outcomes.append(0)
            except onnxloss.ModelFileError:
                outcomes.append(2)
    sys.stdout.write(json.dumps({"events": events, "outcomes": outcomes}))
    """
)


def test_audited_opens_stay_inside_the_folders(layout):
    """Every file opened, created, renamed or copied by the CLI and the API while they
    handle traversal, absolute and symlinked locations, recorded by an audit hook in a
    child process: none lies outside the model's and the output's folders."""
    external_model(layout / "models" / "template.onnx", "w.bin")
    cases = [ESCAPES[c][0].format(root=layout) for c in sorted(ESCAPES)]
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(layout), json.dumps(cases)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["outcomes"]) == {2}  # every case refused, by every entry point
    allowed = [(layout / "models").resolve(), (layout / "out").resolve()]
    # Imports open source files: anything on the interpreter's path is code, not data.
    code = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, *sys.path} if p]
    paths = [Path(p) for _, *args in result["events"] for p in args if os.path.isabs(p)]
    opened = [p for p in paths if not any(p.resolve().is_relative_to(c) for c in code)]
    assert opened, "the hook saw the model files being read"
    outside = [p for p in opened if not any(p.resolve().is_relative_to(a) for a in allowed)]
    assert outside == []
    assert not any("SECRET" in str(p) for p in paths)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_follow_the_umask(tmp_path, umask):
    src = tmp_path / "lr.onnx"
    onnx.save(linear_regression(2), src)
    old = os.umask(umask)
    try:
        assert main(["add-loss", str(src), str(tmp_path / "loss.onnx")]) == 0
        assert main(["draw", str(tmp_path / "loss.onnx"), "-o", str(tmp_path / "loss.dot")]) == 0
    finally:
        os.umask(old)
    assert _mode(tmp_path / "loss.onnx") == 0o666 & ~umask
    assert _mode(tmp_path / "loss.dot") == 0o666 & ~umask


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_in_place_rewrite_keeps_the_mode(tmp_path, mode):
    path = tmp_path / "m.onnx"
    onnx.save(linear_regression(2), path)
    os.chmod(path, mode)
    old = os.umask(0o077)  # a stricter umask must not narrow an existing file
    try:
        assert main(["add-loss", str(path), str(path)]) == 0
    finally:
        os.umask(old)
    assert _mode(path) == mode
    assert onnx.load(path).graph.output[0].name == "loss"


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_output_folder_is_one_line(tmp_path, capsys):
    src = tmp_path / "lr.onnx"
    onnx.save(linear_regression(2), src)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        assert main(["add-loss", str(src), str(locked / "loss.onnx")]) == 2
    finally:
        os.chmod(locked, 0o755)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0] and str(locked) in lines[0]
    assert list(locked.iterdir()) == []


def test_read_only_folder_as_the_os_reports_it(tmp_path, monkeypatch, capsys):
    """The same failure simulated, so it is tested when the suite runs as root too."""
    src = tmp_path / "lr.onnx"
    onnx.save(linear_regression(2), src)
    real_open = os.open

    def refuse(path, flags, mode=0o777, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(model_io.os, "open", refuse)
    assert main(["add-loss", str(src), str(tmp_path / "loss.onnx")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "permission denied on" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.onnx"]


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "is empty \\(0 bytes\\)"), (b"\x08\x07", "holds no graph")],
    ids=["0-byte", "no-graph"],
)
def test_empty_or_graphless_files_are_not_models(tmp_path, capsys, content, why):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(onnxloss.ModelFileError, match=why):
        onnxloss.rewrite(path, onnxloss.MSELoss())
    for argv in (["draw", str(path)], ["check", str(path)], ["add-loss", str(path), "o.onnx"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "m.onnx" in err[0]
