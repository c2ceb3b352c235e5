"""Sphinx directives that generate reference pages from the code, so they cannot drift.

``onnxloss-terms``
    every registered loss and regularizer (from the plugin registry): name, aliases,
    class, plugin, and the class docstring with its formula.
``onnxloss-cli``
    the ``--help`` text of the ``onnxloss`` command and each of its subcommands.
"""

from __future__ import annotations

import inspect
import os

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

from onnxloss.cli import build_parser
from onnxloss.registry import PluginRegistry


class TermsDirective(Directive):
    """``.. onnxloss-terms:: loss`` (or ``regularizer``)."""

    required_arguments = 1
    option_spec = {"builtin-only": directives.flag}

    def run(self):
        kind = self.arguments[0]
        # Built-ins only: the docs must not depend on what else is installed.
        registry = PluginRegistry(entry_points=False)
        lines: list[str] = []
        for name, reg in registry.registrations(kind).items():
            cls = reg.cls
            title = f"``{name}``"
            lines += [title, "~" * len(title), ""]
            aliases = ", ".join(f"``{a}``" for a in reg.aliases)
            path = f"{cls.__module__.split('.losses')[0]}.{cls.__qualname__}"
            facts = [f"class :class:`{path}`", f"plugin ``{reg.plugin.name}``"]
            if aliases:
                facts.insert(0, f"aliases {aliases}")
            lines += ["; ".join(facts) + ".", ""]
            lines += inspect.cleandoc(cls.__doc__ or "").splitlines()
            lines.append("")
        return self._parse(lines)

    def _parse(self, lines):
        container = nodes.section()
        container.document = self.state.document
        self.state.nested_parse(StringList(lines, source="onnxloss-terms"), 0, container)
        return container.children


class CliDirective(Directive):
    """``.. onnxloss-cli::``: the help of every command, as literal blocks."""

    def run(self):
        os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width
        parser = build_parser()
        result = []
        sub_action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        pages = [("onnxloss", parser)] + [
            (f"onnxloss {name}", sub) for name, sub in sub_action.choices.items()
        ]
        for title, sub in pages:
            section = nodes.section(ids=[nodes.make_id(title)])
            section += nodes.title(text=title)
            text = sub.format_help()
            section += nodes.literal_block(text, text)
            result.append(section)
        return result


def setup(app):
    app.add_directive("onnxloss-terms", TermsDirective)
    app.add_directive("onnxloss-cli", CliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
