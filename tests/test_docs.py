"""The documentation builds with no warnings (examples executed), its generated tables are
complete, and the README's commands are the ones CI runs."""

from __future__ import annotations

import html
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_SPHINX = importlib.util.find_spec("sphinx") is not None


def _docs_extension():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import onnxloss_docs
    finally:
        sys.path.pop(0)
    return onnxloss_docs


def _text(page: Path) -> str:
    """The words of an HTML page: inline tags (highlighting spans...) removed, block tags
    (cells, paragraphs) turned into spaces, whitespace collapsed."""
    text = re.sub(r"</?(span|code|a|em|strong)\b[^>]*>", "", page.read_text())
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sphinx_gallery") is None, reason="needs [docs]")
def test_docs_build_without_warnings(tmp_path):
    """Sphinx with -W: any warning (broken reference, bad docstring, failing example)
    fails. Built from a copy so the source tree gets no generated files."""
    source = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", source, ignore=shutil.ignore_patterns("_build", "auto_examples"))
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(source), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    html = tmp_path / "html"
    for page in ("index", "design", "user-guide", "trainer", "losses", "api", "cli"):
        assert (html / f"{page}.html").is_file(), page
    losses = (html / "losses.html").read_text()
    import onnxloss

    for name in onnxloss.PluginRegistry(entry_points=False).registrations("loss"):
        assert name in losses
    gallery = sorted(p.stem for p in (html / "auto_examples").glob("plot_*.html"))
    assert len(gallery) == len(list((ROOT / "docs" / "examples").glob("plot_*.py")))
    # The generated tables carry the defaults: the trainer's parameters, the CLI's options.
    from onnxloss.train import OrtGradientOptimizer

    trainer = _text(html / "trainer.html")
    for name, default, _ in _docs_extension().parameter_rows(OrtGradientOptimizer):
        assert f"{name} {default}" in trainer or name in trainer and default in trainer, name
    assert "max_iter 100" in trainer and "model_onnx required" in trainer
    cli = _text(html / "cli.html")
    assert "--version" in cli and "(default: 1000)" in cli and "default: squared_error" in cli


@pytest.mark.skipif(not HAS_SPHINX, reason="needs [docs]")
def test_trainer_table_has_every_parameter_and_its_default():
    from onnxloss.train import OrtGradientOptimizer

    rows = _docs_extension().parameter_rows(OrtGradientOptimizer)
    signature = inspect.signature(OrtGradientOptimizer.__init__)
    parameters = list(signature.parameters.values())[1:]
    assert [name for name, _, _ in rows] == [p.name for p in parameters]
    for (name, default, text), p in zip(rows, parameters, strict=True):
        assert default == ("required" if p.default is p.empty else repr(p.default)), name
        assert text.strip(), name
    assert dict((n, d) for n, d, _ in rows)["max_iter"] == "100"
    grouped = {n: t for n, _, t in rows}
    assert grouped["eta0"] == grouped["alpha"]  # "eta0, power_t, alpha: ..." in the docstring


@pytest.mark.skipif(not HAS_SPHINX, reason="needs [docs]")
def test_trainer_table_refuses_an_undocumented_parameter():
    class Estimator:
        """An estimator.

        Args:
            alpha: documented.
            gamma: documented, but no parameter.
        """

        def __init__(self, alpha=1.0, beta=2.0):
            pass

    with pytest.raises(ValueError, match=r"undocumented \['beta'\].*no parameter \['gamma'\]"):
        _docs_extension().parameter_rows(Estimator)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("<!-- test-command") :].split("```")[1]
    command = block.split("\n", 1)[1].strip()
    extracted = subprocess.run(
        [str(ROOT / ".ci" / "readme-test-command")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert extracted == command and "pytest" in command
    assert ".ci/readme-test-command" in (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[train]" && onnxloss demo' in readme
