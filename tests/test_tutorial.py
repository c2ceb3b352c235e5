"""The plugin tutorial, followed literally in a fresh virtual environment.

Files come from the tutorial's ``{code-block}`` blocks with a ``:caption:`` (the caption is
the path); commands from its ``console`` blocks marked ``:class: tutorial-run``, run in
document order, each line after ``$ `` through bash. Output lines shown under a command
(other than ``...``) must appear in what the command prints.

The environment: a new venv whose ``.pth`` layers the running interpreter's site-packages
under its own (as ``--system-site-packages`` would for a base interpreter), so onnxloss and
pytest come from here and nothing is downloaded. Two substitutions keep the run offline and
inside that venv, and are the only departures from the text:

* ``pip install -e .`` runs as ``python -m pip install --no-deps --no-build-isolation -e .``
  (dependencies are already there; the build backend comes from this environment);
* ``onnxloss ...`` runs as ``python -m onnxloss ...`` (the ``onnxloss`` script belongs to
  this environment's interpreter, which does not see the new venv's packages).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import site
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "plugins" / "tutorial.md"
RUN_CLASS = "tutorial-run"

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\{code-block\}\s*(?P<lang>\S*)\s*$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")


@dataclass
class Block:
    lang: str
    options: dict[str, str]
    text: str
    line: int

    @property
    def path(self) -> str | None:
        return self.options.get("caption")

    @property
    def runs(self) -> bool:
        return RUN_CLASS in self.options.get("class", "").split()


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


def code_blocks(markdown: str) -> list[Block]:
    """The ``{code-block}`` directives of a MyST page, with their options and text."""
    lines = markdown.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match["fence"], i
        i += 1
        options = {}
        while i < len(lines) and (option := _OPTION.match(lines[i])):
            options[option["key"]] = option["value"].strip()
            i += 1
        if i < len(lines) and not lines[i].strip():  # the blank line after the options
            i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"tutorial.md:{start + 1}: code block never closed")
        blocks.append(Block(match["lang"], options, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def commands(block: Block) -> list[Command]:
    """``$ command`` lines of a console block, each with the output lines shown under it."""
    found: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:].strip()))
        elif found and line.strip() and line.strip() != "...":
            found[-1].expected.append(line)
    return found


def offline(command: str) -> str:
    """The two substitutions described in the module docstring."""
    if command == "pip install -e .":
        return "python -m pip install --no-deps --no-build-isolation -e ."
    if command.startswith("onnxloss "):
        return "python -m " + command
    return command


def layered_venv(path: Path) -> Path:
    """A venv without pip whose interpreter also sees this interpreter's site-packages."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    scripts = path / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    parents += [p for p in site.getsitepackages() if p not in parents]
    # addsitedir (not a bare path) so the parents' own .pth files, editable installs
    # included, are processed too; appended, so the venv's packages come first.
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (Path(purelib) / "_parent_environment.pth").write_text("\n".join(lines) + "\n")
    return scripts


def normalized(text: str) -> str:
    return " ".join(text.split())


def _version(distribution: str) -> tuple[int, ...] | None:
    # Read from the metadata: importing setuptools here would patch distutils for the run.
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _can_build_editable_offline() -> bool:
    # PEP 660 editable wheels: setuptools >= 70.1 builds them alone, older ones need wheel.
    setuptools = _version("setuptools")
    if _version("pip") is None or setuptools is None:
        return False
    return setuptools >= (70, 1) or _version("wheel") is not None


@pytest.mark.skipif(
    not _can_build_editable_offline(),
    reason="installing the tutorial's package offline needs pip and setuptools>=70.1 (or "
    "wheel) in this environment",
)
def test_tutorial_steps_produce_a_working_plugin(tmp_path):
    blocks = code_blocks(TUTORIAL.read_text(encoding="utf-8"))
    scripts = layered_venv(tmp_path / "venv")
    project = tmp_path / "onnxloss-expectile"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONNXLOSS_", "PYTHON"))}
    env["PATH"] = os.pathsep.join([str(scripts), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(scripts.parent)
    ran: list[str] = []
    for block in blocks:
        if block.path:
            target = project / block.path
            assert not Path(block.path).is_absolute() and ".." not in Path(block.path).parts
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.runs:
            for command in commands(block):
                done = subprocess.run(
                    ["bash", "-c", offline(command.line)],
                    cwd=project,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                where = f"tutorial.md:{block.line}: $ {command.line}"
                assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
                printed = {normalized(line) for line in done.stdout.splitlines()}
                for line in command.expected:
                    assert normalized(line) in printed, (
                        f"{where}: no line {line!r} in\n{done.stdout}"
                    )
                ran.append(command.line)
    # The steps the issue asks for were all run, not skipped by a change to the page.
    assert {"pip install -e .", "onnxloss plugins", "python -m pytest -q"} <= set(ran), ran
    # The venv's package really is the one installed, discovered through its entry point.
    done = subprocess.run(
        [
            "python",
            "-c",
            "import onnxloss_expectile, onnxloss; "
            "print(onnxloss_expectile.__file__); "
            "print(onnxloss.available_losses()['expectile'].plugin.describe())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    module_file, plugin = done.stdout.splitlines()
    assert Path(module_file).resolve() == (project / "src/onnxloss_expectile/__init__.py").resolve()
    assert plugin == "plugin 'expectile' (onnxloss-expectile 0.1.0)"


def test_extraction_sees_every_file_and_run_block():
    """Guards the parser: the tutorial's files and commands are all found."""
    blocks = code_blocks(TUTORIAL.read_text(encoding="utf-8"))
    files = [b.path for b in blocks if b.path]
    assert files == [
        "onnxloss_expectile.py",
        "try_it.py",
        "pyproject.toml",
        "README.md",
        "tests/test_expectile.py",
    ]
    runs = [c.line for b in blocks if b.runs for c in commands(b)]
    assert runs == [
        "python try_it.py",
        "mkdir -p src/onnxloss_expectile tests",
        "mv onnxloss_expectile.py src/onnxloss_expectile/__init__.py",
        "pip install -e .",
        "onnxloss plugins",
        "python -m pytest -q",
    ]
    assert shlex.split(offline("onnxloss plugins")) == ["python", "-m", "onnxloss", "plugins"]
