"""The hook reference (docs/plugins/hooks.md) documents every hook, in step with the code.

Rule: every hook pluggy knows from ``onnxloss.hookspecs`` has a heading
``name(parameters)`` (in backticks or not) in hooks.md, and every paragraph of its
docstring appears in that heading's section, in order, after converting the RST inline
markup to MyST (``x`` → `x`, :role:`x` → {role}`x`) and normalising whitespace. Headings
that look like hooks but name none are stale and fail too.

Changing a hook's docstring therefore means changing the page (copying the paragraph is
enough), and adding a hook means documenting it.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from onnxloss import hookspecs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "hooks.md"
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


def hooks() -> dict[str, object]:
    """The hooks as pluggy sees them (not merely the module's functions)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    names = [n for n in vars(pm.hook) if n.startswith(f"{hookspecs.PROJECT}_")]
    return {name: getattr(hookspecs, name) for name in sorted(names)}


def signature(func) -> str:
    return f"{func.__name__}({', '.join(inspect.signature(func).parameters)})"


def sections(markdown: str) -> dict[str, str]:
    """Heading text (backticks removed) → the text up to the next heading of its level
    or above. Fenced code is skipped when looking for headings."""
    lines = markdown.splitlines()
    headings, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            headings.append((i, len(match[1]), match[2].replace("`", "")))
    found = {}
    for k, (start, level, title) in enumerate(headings):
        end = next((i for i, lv, _ in headings[k + 1 :] if lv <= level), len(lines))
        found[title] = "\n".join(lines[start + 1 : end])
    return found


def as_myst(paragraph: str) -> str:
    text = re.sub(r":(\w+):`([^`]+)`", r"{\1}`\2`", paragraph)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return " ".join(text.split())


def docstring_paragraphs(func) -> list[str]:
    doc = inspect.cleandoc(func.__doc__ or "")
    return [as_myst(p) for p in re.split(r"\n\s*\n", doc) if p.strip()]


def test_the_hooks_are_the_ones_pluggy_registers():
    assert list(hooks()) == [
        "onnxloss_register_gradients",
        "onnxloss_register_losses",
        "onnxloss_register_regularizers",
    ]


@pytest.mark.parametrize("name", list(hooks()))
def test_hook_is_documented_with_signature_and_docstring(name):
    func = hooks()[name]
    page = sections(PAGE.read_text(encoding="utf-8"))
    title = signature(func)
    assert title in page, f"hooks.md has no heading '{title}' (headings: {list(page)})"
    paragraphs = docstring_paragraphs(func)
    assert paragraphs, f"{name} has no docstring: it is the hook's reference text"
    section = " ".join(page[title].split())
    position = 0
    for paragraph in paragraphs:
        found = section.find(paragraph, position)
        assert found >= 0, f"hooks.md, section '{title}', lacks (in order):\n{paragraph}"
        position = found + len(paragraph)


def test_no_stale_hook_headings():
    known = {signature(f) for f in hooks().values()}
    page = sections(PAGE.read_text(encoding="utf-8"))
    stale = [t for t in page if t.startswith(f"{hookspecs.PROJECT}_") and t not in known]
    assert not stale, f"hooks.md documents hooks that do not exist: {stale}"


def test_the_rule_catches_a_drifted_docstring():
    """The check is not vacuous: a changed word in a docstring is reported."""
    func = hooks()["onnxloss_register_losses"]
    section = " ".join(sections(PAGE.read_text(encoding="utf-8"))[signature(func)].split())
    drifted = [p.replace("once", "twice") for p in docstring_paragraphs(func)]
    assert any(p not in section for p in drifted)
    assert as_myst(":class:`onnxloss.Loss` and ``x``") == "{class}`onnxloss.Loss` and `x`"
