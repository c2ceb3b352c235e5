"""Every code block of README.md and docs/ runs as a test, through Sybil.

This module is a pytest plugin (``-p doc_blocks`` in pyproject.toml): its
``pytest_collect_file`` hands README.md and every ``docs/**/*.md`` page (not ``_build`` or
``auto_examples``) to :data:`SYBIL`, so the plain ``python -m pytest`` collects one test per
block. A page runs top to bottom in a temporary folder of its own; its Python blocks share
one namespace, as a reader's session would.

What happens to a block depends on its language:

============================  =============================================================
block                         what the runner does
============================  =============================================================
``python``                    runs in the page's namespace, the page folder as current dir
``bash``, ``sh``, ``shell``   runs as one script, ``bash -euo pipefail``, in the page folder
``console``                   runs each ``$ `` line with bash; every line shown under a
                              command (but ``...``) must be a line of what it prints
``toml``                      parsed
``{code-block}`` with         written to that path in the page folder (python compiled and
``:caption: PATH``            toml parsed first): how a page makes the files it needs
``text``, ``markdown``, none  shown only (output, formulas, trees): nothing to run
``{directive}`` (toctree,     rendered by Sphinx, not code
eval-rst, onnxloss-cli...)
anything else                 fails: say here how such a block is checked
============================  =============================================================

A marker, an HTML comment alone on the line right before a block, changes that:

``<!-- docs: check-only -->``
    the block is only checked for syntax (``bash -n``, ``compile``), never run: for
    commands that install or publish packages, which a test run must not do.
``<!-- docs: needs TOOL -->``
    the block runs when ``TOOL`` is on the PATH, and is only syntax-checked otherwise.

Shell commands run in a virtual environment of the page's own, made on its first command:
without pip, over this interpreter's site-packages (as ``--system-site-packages`` does),
so nothing is downloaded and nothing a page installs reaches the environment running the
tests. Two wrappers in its ``bin`` are the only departures from the text: ``onnxloss``
runs ``python -m onnxloss`` with the page's interpreter (the installed script belongs to
the outer environment, which does not see what the page installed), and ``pip install``
adds ``--no-deps --no-build-isolation --no-index`` (dependencies are already there).

``python tests/doc_blocks.py`` prints every block with what the runner does with it.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer
from sybil.parsers.myst.lexers import DirectiveLexer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Folders of docs/ that hold build output, not pages.
GENERATED = {"_build", "auto_examples"}

SHELLS = {"bash", "sh", "shell"}
SHOWN = {"", "text", "markdown", "md"}
CODE_DIRECTIVES = {"code-block", "code", "sourcecode"}
COMMAND_TIMEOUT_S = 600

RUN, CHECK, WRITE, SHOW, SPHINX, UNKNOWN = (
    "run",
    "check syntax",
    "write file",
    "show",
    "sphinx directive",
    "unknown",
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it is, what it holds, what the runner does."""

    page: Path
    line: int  #: line of the opening fence (1-based)
    source_line: int  #: line of the block's first source line
    language: str  #: ``python``, ``bash``...; ``{name}`` for a directive other than code
    source: str
    caption: str | None = None
    marker: str | None = None  #: ``check-only`` or ``needs TOOL``

    @property
    def action(self) -> str:
        """What the runner does with the block (one of the module's constants)."""
        if self.language.startswith("{"):
            return SPHINX
        if self.caption:
            return WRITE
        if self.language in SHOWN:
            return SHOW
        if self.language not in SHELLS | {"console", "python", "toml"}:
            return UNKNOWN
        if self.language == "toml" or self.marker == "check-only":
            return CHECK
        if self.missing_tool:
            return CHECK
        return RUN

    @property
    def missing_tool(self) -> str | None:
        """The tool of a ``needs TOOL`` marker when it is not on the PATH."""
        if self.marker and self.marker.startswith("needs "):
            tool = self.marker.split(None, 1)[1]
            return None if shutil.which(tool) else tool
        return None

    @property
    def where(self) -> str:
        return f"{_relative(self.page)}:{self.line}"


@dataclass
class Command:
    """A ``$ `` line of a console block and the output lines shown under it."""

    line: str
    expected: list[str] = field(default_factory=list)


def commands(source: str) -> list[Command]:
    """The ``$ command`` lines of a console block, each with the lines shown under it."""
    found: list[Command] = []
    for line in source.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:].strip()))
        elif found and line.strip() and line.strip() != "...":
            found[-1].expected.append(line)
    return found


# -- finding the blocks --------------------------------------------------------------------

_FENCES = FencedCodeBlockLexer(language=r"[\w+-]*")
_DIRECTIVES = DirectiveLexer(directive=r"[\w-]+", arguments=r".*")
_MARKERS = DirectiveInHTMLCommentLexer(directive="docs", arguments=r"[^\n]*?")


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def lex_blocks(document: Document) -> Iterator[tuple[Region, Block]]:
    """Every fenced block of a page with its marker, in document order.

    Raises ValueError for a marker that is unknown, or not right before a block that can
    run: a marker that silently does nothing would hide a block from the runner.
    """
    text, page = document.text, Path(document.path)
    found: list[tuple[Region, str, str, dict]] = []
    for region in _FENCES(document):
        found.append((region, region.lexemes["language"], region.lexemes["source"], {}))
    for region in _DIRECTIVES(document):
        name, argument = region.lexemes["directive"], region.lexemes["arguments"].strip()
        if name in CODE_DIRECTIVES:
            found.append((region, argument, region.lexemes["source"], region.lexemes["options"]))
        else:  # toctree, eval-rst, onnxloss-cli...: their options are not a file's
            found.append((region, "{" + name + "}", region.lexemes["source"], {}))
    found.sort(key=lambda item: item[0].start)
    marker_of: dict[int, str] = {}  # block start -> marker
    for marker in _MARKERS(document):
        argument = " ".join(marker.lexemes["arguments"].split())
        where = f"{_relative(page)}:{_line(text, marker.start)}"
        if argument != "check-only" and not re.fullmatch(r"needs [\w.+-]+", argument):
            raise ValueError(
                f"{where}: unknown marker 'docs: {argument}': use 'docs: check-only' or "
                "'docs: needs TOOL'"
            )
        end = text.index("-->", marker.start) + 3  # the lexed region stops before "-->"
        target = next((f[0] for f in found if f[0].start >= end), None)
        if target is None or text[end : target.start].strip():
            raise ValueError(f"{where}: marker 'docs: {argument}' is not right before a block")
        marker_of[target.start] = argument
    for region, language, source, options in found:
        start = region.start + source.offset
        block = Block(
            page=page,
            line=_line(text, region.start),
            source_line=_line(text, start),
            language=language,
            source=str(source),
            caption=options.get("caption") or None,
            marker=marker_of.get(region.start),
        )
        if block.marker and block.action not in (RUN, CHECK):
            raise ValueError(f"{block.where}: a 'docs:' marker on a block that never runs")
        yield region, block


def page_blocks(path: Path) -> list[Block]:
    """The blocks of one page, as the runner sees them."""
    document = Document(path.read_text(encoding="utf-8"), str(path))
    return [block for _, block in lex_blocks(document)]


def parse_blocks(document: Document) -> Iterable[Region]:
    """The Sybil parser: one region per block that is run, checked or written."""
    for region, block in lex_blocks(document):
        if block.action not in (SHOW, SPHINX):
            yield Region(region.start, region.end, block, evaluate_block)


# -- running them ---------------------------------------------------------------------------

PAGE_KEY = "__doc_page__"


class Page:
    """A page's working folder and, once a command needs it, its virtual environment."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="onnxloss-docs-"))
        self.folder = self.root / "page"
        self.folder.mkdir()
        self._environment: dict[str, str] | None = None

    def environment(self) -> dict[str, str]:
        if self._environment is None:
            scripts = layered_venv(self.root / "venv")
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("ONNXLOSS_", "PYTHON", "PYTEST_"))
            }
            env["PATH"] = os.pathsep.join([str(scripts), env.get("PATH", "")])
            env["VIRTUAL_ENV"] = str(scripts.parent)
            self._environment = env
        return self._environment

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.folder,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def open_page(namespace: dict) -> None:
    """Sybil's per-page setup."""
    namespace[PAGE_KEY] = Page()


def close_page(namespace: dict) -> None:
    """Sybil's per-page teardown."""
    page = namespace.pop(PAGE_KEY, None)
    if page is not None:
        page.close()


_WRAPPERS = {
    "onnxloss": '#!/bin/sh\nexec "{python}" -m onnxloss "$@"\n',
    "pip": (
        "#!/bin/sh\n"
        'if [ "$1" = install ]; then\n'
        "    shift\n"
        '    set -- install --no-deps --no-build-isolation --no-index "$@"\n'
        "fi\n"
        'exec "{python}" -m pip "$@"\n'
    ),
}


def layered_venv(path: Path) -> Path:
    """A venv without pip whose interpreter also sees this interpreter's site-packages,
    with the ``onnxloss`` and ``pip`` wrappers; returns its scripts folder."""
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
    # included, are processed too; appended, so the venv's own packages come first.
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (Path(purelib) / "_parent_environment.pth").write_text("\n".join(lines) + "\n")
    for name, text in _WRAPPERS.items():
        wrapper = scripts / name
        wrapper.write_text(text.format(python=python))
        wrapper.chmod(0o755)
    return scripts


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _tail(done: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{done.stdout[-3000:]}--- stderr ---\n{done.stderr[-3000:]}"


def _compile(block: Block, source: str | None = None):
    padded = "\n" * (block.source_line - 1) + (block.source if source is None else source)
    return compile(padded, str(block.page), "exec", dont_inherit=True)


def _check_shell(block: Block, script: str) -> None:
    done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, f"{block.where}: shell syntax error\n{done.stderr}"


def _page(example: Example) -> Page:
    page = example.namespace.get(PAGE_KEY)
    if page is None:  # evaluated outside Sybil's setup (a direct call)
        open_page(example.namespace)
        page = example.namespace[PAGE_KEY]
    return page


def evaluate_block(example: Example) -> None:
    """Run, check or write one block (see the module docstring)."""
    __tracebackhide__ = True
    block: Block = example.parsed
    page = _page(example)
    action = block.action
    if action == UNKNOWN:
        raise AssertionError(
            f"{block.where}: the docs runner does not know how to check a "
            f"'{block.language}' block; teach tests/doc_blocks.py, or make it 'text'"
        )
    if action == WRITE:
        _write_file(block, page)
    elif block.language == "toml":
        tomllib.loads(block.source)
    elif block.language == "python":
        code = _compile(block)
        if action == RUN:
            previous = Path.cwd()
            os.chdir(page.folder)
            try:
                exec(code, example.namespace)
            finally:
                os.chdir(previous)
                example.namespace.pop("__builtins__", None)
    elif block.language == "console":
        found = commands(block.source)
        assert found, f"{block.where}: a console block without a '$ ' command"
        _check_shell(block, "\n".join(c.line for c in found))
        if action == RUN:
            for command in found:
                _run_command(block, page, command)
    else:
        _check_shell(block, block.source)
        if action == RUN:
            done = page.run(block.source)
            assert done.returncode == 0, (
                f"{block.where}: the block exited with {done.returncode}\n{_tail(done)}"
            )
    if block.missing_tool:  # checked, but not run: say so in the report
        pytest.skip(f"{block.where} needs {block.missing_tool!r}: only its syntax was checked")


def _run_command(block: Block, page: Page, command: Command) -> None:
    done = page.run(command.line)
    where = f"{block.where}: $ {command.line}"
    assert done.returncode == 0, f"{where}\nexited with {done.returncode}\n{_tail(done)}"
    printed = {_normalized(line) for line in done.stdout.splitlines()}
    for line in command.expected:
        assert _normalized(line) in printed, f"{where}\nno line {line!r} in\n{done.stdout}"


def _write_file(block: Block, page: Page) -> None:
    relative = Path(block.caption)
    assert not relative.is_absolute() and ".." not in relative.parts, (
        f"{block.where}: the caption {block.caption!r} is not a path inside the page's folder"
    )
    if block.language == "python":
        _compile(block)
    elif block.language == "toml":
        tomllib.loads(block.source)
    target = page.folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.source, encoding="utf-8")


# -- which files are pages --------------------------------------------------------------------


def is_doc_page(path: Path) -> bool:
    """README.md, or a Markdown page of docs/ outside the build folders."""
    path = Path(path).resolve()
    if path == ROOT / "README.md":
        return True
    if path.suffix != ".md" or DOCS not in path.parents:
        return False
    return not GENERATED.intersection(path.relative_to(DOCS).parts)


def doc_pages() -> list[Path]:
    return [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if is_doc_page(p))


class DocPages(Sybil):
    """Sybil over the pages :func:`is_doc_page` accepts, wherever pytest finds them."""

    def should_parse(self, path: Path) -> bool:
        return is_doc_page(path)


SYBIL = DocPages(parsers=[parse_blocks], setup=open_page, teardown=close_page, name="docs")
#: The pytest hook of this plugin.
pytest_collect_file = SYBIL.pytest()


def inventory() -> Iterator[str]:
    """One line per block of every page: where, language, marker, action."""
    for page in doc_pages():
        for block in page_blocks(page):
            extra = f" [{block.marker}]" if block.marker else ""
            extra += f" -> {block.caption}" if block.caption else ""
            yield f"{block.where}\t{block.language or '(none)'}{extra}\t{block.action}"


if __name__ == "__main__":
    print("\n".join(inventory()))
