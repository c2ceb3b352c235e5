"""The documentation builds with no warnings (examples executed), and the README's
commands are the ones CI runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
