"""The docs runner (tests/doc_blocks.py): it finds every block of every page, does with each
what its language and marker say, and fails where a reader would."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from doc_blocks import (
    CHECK,
    RUN,
    SHOW,
    SPHINX,
    SYBIL,
    UNKNOWN,
    WRITE,
    close_page,
    commands,
    doc_pages,
    is_doc_page,
    open_page,
    page_blocks,
)
from sybil import Document

ROOT = Path(__file__).resolve().parents[1]
_FENCE_LINE = re.compile(r"^\s*(```|~~~)")


def test_pages_are_readme_and_docs():
    pages = {str(p.relative_to(ROOT)) for p in doc_pages()}
    assert {"README.md", "docs/trainer.md", "docs/plugins/tutorial.md"} <= pages
    assert all(p == "README.md" or p.startswith("docs/") for p in pages)
    assert not is_doc_page(ROOT / "plugins" / "onnxloss-focal" / "README.md")
    assert not is_doc_page(ROOT / "docs" / "_build" / "html" / "index.md")


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fenced_block_is_found(page):
    """An independent count: every block opens and closes with a fence line."""
    fences = [line for line in page.read_text().splitlines() if _FENCE_LINE.match(line)]
    blocks = page_blocks(page)
    assert len(fences) == 2 * len(blocks), [b.where for b in blocks]
    assert not [b.where for b in blocks if b.action == UNKNOWN]


def _first_line(block) -> str:
    return block.source.strip().splitlines()[0]


def test_only_install_and_publish_commands_are_not_run():
    checked = [
        (str(b.page.relative_to(ROOT)), _first_line(b))
        for page in doc_pages()
        for b in page_blocks(page)
        if b.marker == "check-only"
    ]
    assert checked == [
        ("README.md", 'pip install -e ".[train]" && onnxloss demo'),
        ("README.md", 'pip install -e ".[dev]" -e plugins/onnxloss-focal -e '
         "plugins/onnxloss-grouplasso && python -m pytest"),
        ("README.md", 'pip install -e ".[docs,train]" && python -m sphinx -W -b html docs '
         "docs/_build/html"),
        ("docs/distributed.md", 'pip install "onnxloss[train,mpi]"'),
        # MPI launchers: tests/test_distributed.py runs the page's script under mpiexec.
        ("docs/distributed.md", "mpiexec -n 2 python -m mpi4py train.py"),
        ("docs/distributed.md", "#!/bin/bash"),
        ("docs/index.md", 'pip install -e ".[train]"          # in a clone: core + trainer '
         "(CPU); [train-gpu] for CUDA"),
        ("docs/plugins/tutorial.md", "$ python -m venv .venv"),
        ("docs/plugins/tutorial.md", "$ python -m pip install build twine"),
    ]  # fmt: skip
    actions = {b.action for page in doc_pages() for b in page_blocks(page)}
    assert actions == {RUN, CHECK, WRITE, SHOW, SPHINX}


def test_tutorial_is_followed_step_by_step():
    """What tests/test_tutorial.py used to guard: the tutorial's files and commands, in
    order, so a change to the page cannot quietly drop a step from the run."""
    blocks = page_blocks(ROOT / "docs" / "plugins" / "tutorial.md")
    assert [b.caption for b in blocks if b.action == WRITE] == [
        "onnxloss_expectile.py",
        "try_it.py",
        "pyproject.toml",
        "README.md",
        "tests/test_expectile.py",
    ]
    ran = [c.line for b in blocks if b.action == RUN for c in commands(b.source)]
    assert ran[:6] == [
        "python try_it.py",
        "mkdir -p src/onnxloss_expectile tests",
        "mv onnxloss_expectile.py src/onnxloss_expectile/__init__.py",
        "pip install -e .",
        "onnxloss plugins",
        "python -m pytest -q",
    ]
    plugins = next(c for b in blocks for c in commands(b.source) if c.line == "onnxloss plugins")
    assert any("onnxloss-expectile 0.1.0" in line for line in plugins.expected)


# -- the runner on pages written for the test ----------------------------------------------


def run_page(tmp_path: Path, text: str) -> dict:
    """Evaluates every block of a page as the suite does; returns the page's namespace."""
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text))
    document = SYBIL.parse(path)
    open_page(document.namespace)
    namespace = dict(document.namespace)
    try:
        for example in document.examples():
            example.evaluate()
        namespace.update(document.namespace)
        namespace["__folder__"] = document.namespace["__doc_page__"].folder
        namespace["__files__"] = sorted(
            str(p.relative_to(namespace["__folder__"])) for p in namespace["__folder__"].rglob("*")
        )
    finally:
        close_page(document.namespace)
    return namespace


def test_blocks_share_a_namespace_and_a_folder(tmp_path):
    namespace = run_page(
        tmp_path,
        """
        ```python
        from pathlib import Path
        Path("made.txt").write_text("42\\n")
        answer = 42
        ```

        ```{code-block} python
        :caption: pkg/util.py

        VALUE = 7
        ```

        ```bash
        test "$(cat made.txt)" = 42
        cd pkg && python -c "import util; print(util.VALUE)" > ../value.txt
        ```

        ```console
        $ cat value.txt
        7
        ```

        ```python
        assert Path("value.txt").read_text() == "7\\n"
        twice = answer * 2
        ```
        """,
    )
    assert namespace["twice"] == 84
    assert {"made.txt", "pkg/util.py", "value.txt"} <= set(namespace["__files__"])
    assert Path.cwd() != namespace["__folder__"]  # restored after each block


def test_a_failing_python_block_fails_with_its_line(tmp_path):
    with pytest.raises(ZeroDivisionError) as info:
        run_page(tmp_path, "text\n\n```python\nx = 1\ny = x / 0\n```\n")
    assert info.traceback[-1].lineno + 1 == 5  # 0-based in the traceback: the page's line 5


def test_a_failing_shell_block_fails(tmp_path):
    with pytest.raises(AssertionError, match=r"page.md:2: the block exited with 3"):
        run_page(tmp_path, "\n```bash\necho start\nexit 3\n```\n")


def test_console_output_must_match(tmp_path):
    with pytest.raises(AssertionError, match="no line 'goodbye'"):
        run_page(tmp_path, "```console\n$ echo hello\ngoodbye\n```\n")


def test_check_only_blocks_are_checked_not_run(tmp_path):
    namespace = run_page(
        tmp_path,
        """
        <!-- docs: check-only -->
        ```bash
        touch ran.txt
        ```

        <!-- docs: check-only -->
        ```python
        open("ran.py.txt", "w")
        ```
        """,
    )
    assert namespace["__files__"] == []
    with pytest.raises(AssertionError, match="shell syntax error"):
        run_page(tmp_path, "<!-- docs: check-only -->\n```bash\nif true; then\n```\n")
    with pytest.raises(SyntaxError):
        run_page(tmp_path, "<!-- docs: check-only -->\n```python\ndef f(:\n```\n")


def test_needs_a_missing_tool_is_checked_and_skipped(tmp_path):
    page = "<!-- docs: needs no-such-tool-xyz -->\n```bash\ntouch ran.txt\n```\n"
    with pytest.raises(pytest.skip.Exception, match="needs 'no-such-tool-xyz'"):
        run_page(tmp_path, page)
    namespace = run_page(tmp_path, page.replace("no-such-tool-xyz", "bash"))
    assert namespace["__files__"] == ["ran.txt"]


def test_toml_is_parsed(tmp_path):
    run_page(tmp_path, '```toml\n[project]\nname = "x"\n```\n')
    with pytest.raises(ValueError):  # tomllib.TOMLDecodeError
        run_page(tmp_path, "```toml\n[project\n```\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```ruby\nputs 1\n```\n", "does not know how to check a 'ruby' block"),
        ("```{code-block} python\n:caption: ../escape.py\n\nx = 1\n```\n", "not a path inside"),
    ],
)
def test_blocks_it_cannot_handle_fail(tmp_path, text, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        run_page(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- docs: check-only -->\n\nSome prose.\n\n```bash\nls\n```\n", "not right before"),
        ("<!-- docs: skip-it -->\n```bash\nls\n```\n", "unknown marker 'docs: skip-it'"),
        ("<!-- docs: check-only -->\n```text\nls\n```\n", "on a block that never runs"),
    ],
)
def test_misplaced_markers_fail_at_collection(tmp_path, text, message):
    path = tmp_path / "page.md"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        Document.parse(str(path), *SYBIL.parsers)
