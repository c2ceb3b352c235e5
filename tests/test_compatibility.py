"""Every row of docs/compatibility.md is measured again here: a row that says "trains"
trains in CI, a row that says "does not train" carries the readiness check's message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import HAS_ORT

pytestmark = pytest.mark.skipif(not HAS_ORT, reason="needs the [train] extra")
pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "compatibility.md"


def load_script():
    spec = importlib.util.spec_from_file_location(
        "compatibility_table", ROOT / "scripts" / "compatibility_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


table = load_script()
DOCUMENTED = table.read_verdicts(DOC)


@pytest.fixture(scope="module")
def measured():
    return {case.name: table.measure(case) for case in table.cases()}


def test_the_documented_rows_are_the_measured_rows(measured):
    assert list(DOCUMENTED) == list(measured)


@pytest.mark.parametrize("model", list(DOCUMENTED))
def test_documented_verdict_holds(model, measured):
    row = measured[model]
    assert row.verdict == DOCUMENTED[model], row
    if row.trains:
        assert row.after < table.TRAINS_BELOW * row.before
    else:
        # the readiness check's own words: an error naming the culprit, with a fix
        assert row.message.startswith("error: ") and "Fix: " in row.message, row.message


def test_markdown_rendering(measured):
    text = table.markdown(list(measured.values()))
    lines = text.splitlines()
    assert lines[0] == table.HEADER.splitlines()[0]
    assert len(lines) == len(measured) + 2
    assert all(line.count(" | ") == 6 for line in lines[2:])


def test_write_replaces_only_the_table(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{table.BEGIN}\nold\n{table.END}\noutro\n")
    table.write(page, "| new |")
    assert page.read_text() == f"intro\n{table.BEGIN}\n| new |\n{table.END}\noutro\n"
