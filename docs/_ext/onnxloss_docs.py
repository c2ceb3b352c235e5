"""Sphinx directives that generate reference pages from the code, so they cannot drift.

``onnxloss-terms``
    every registered loss and regularizer (from the plugin registry): name, aliases,
    class, plugin, and the class docstring with its formula.
``onnxloss-cli``
    the ``--help`` text of the ``onnxloss`` command and each of its subcommands.
``onnxloss-parameters:: module.Class``
    a table of the constructor's parameters: name, default (from the signature) and
    meaning (from the class docstring's ``Args:`` section, read by napoleon). A parameter
    the docstring does not describe, or a description of no parameter, fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import re

from docutils import nodes
from docutils.parsers.rst import Directive, Parser, directives
from docutils.utils import new_document
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

from onnxloss.cli import build_parser
from onnxloss.registry import PluginRegistry

#: The field napoleon writes for each documented parameter (grouped names come one each).
_PARAM_FIELD = re.compile(r"^:param (?P<name>\w+):\s*(?P<text>.*)$")


def parse_rst(directive: Directive, lines: list[str], source: str) -> list[nodes.Node]:
    """The nodes of reStructuredText ``lines`` (docstrings are reST), for a directive used in
    a MyST page: there ``state.nested_parse`` would read them as Markdown, leaving roles
    and section underlines as text. Parsed like MyST's own ``eval-rst``, in a document that
    shares the page's settings (so Sphinx roles resolve) and reporter (so -W sees warnings).
    """
    page = directive.state.document
    document = new_document(source, page.settings)
    document.reporter = page.reporter
    Parser().parse("\n".join(lines), document)
    return document.children


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
        return parse_rst(self, lines, "onnxloss-terms")


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


def parameter_docs(cls: type) -> dict[str, str]:
    """``{parameter: description}`` from the ``Args:`` section of ``cls``'s docstring.

    napoleon turns the Google-style section into ``:param name: text`` fields, one per
    name (``eta0, power_t: ...`` gives two), text continued on indented lines.
    """
    lines = GoogleDocstring(inspect.getdoc(cls) or "", Config(napoleon_use_param=True)).lines()
    docs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        match = _PARAM_FIELD.match(line)
        if match:
            current = docs.setdefault(match["name"], [])
            current.append(match["text"])
        elif current is not None and line.startswith(" ") and line.strip():
            current.append(line.strip())
        else:
            current = None
    return {name: " ".join(text) for name, text in docs.items()}


def parameter_rows(cls: type) -> list[tuple[str, str, str]]:
    """``(name, default, description)`` for every constructor parameter, in signature
    order; the default is the ``repr`` of the signature's, or ``required``.

    Raises ValueError naming the parameters the docstring leaves out, and the documented
    names that are no parameter.
    """
    signature = inspect.signature(cls.__init__)
    parameters = [
        p
        for p in list(signature.parameters.values())[1:]
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    docs = parameter_docs(cls)
    names = [p.name for p in parameters]
    missing = [n for n in names if n not in docs]
    unknown = [n for n in docs if n not in names]
    if missing or unknown:
        raise ValueError(
            f"{cls.__qualname__}'s docstring (Args:) does not match its signature: "
            f"undocumented {missing}, documented but no parameter {unknown}"
        )
    return [
        (p.name, "required" if p.default is p.empty else repr(p.default), docs[p.name])
        for p in parameters
    ]


class ParametersDirective(Directive):
    """``.. onnxloss-parameters:: onnxloss.train.OrtGradientOptimizer``."""

    required_arguments = 1

    def run(self):
        module_name, _, class_name = self.arguments[0].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        try:
            rows = parameter_rows(cls)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 20 15 65", ""]
        lines += ["   * - parameter", "     - default", "     - meaning"]
        # Parameters described together (``eta0, power_t, alpha: ...``) share one row.
        for text, group in itertools.groupby(rows, key=lambda row: row[2]):
            group = list(group)
            names = ", ".join(f"``{name}``" for name, _, _ in group)
            defaults = ", ".join(f"``{default}``" for _, default, _ in group)
            lines += [f"   * - {names}", f"     - {defaults}", f"     - {text}"]
        return parse_rst(self, lines, "onnxloss-parameters")


def setup(app):
    app.add_directive("onnxloss-terms", TermsDirective)
    app.add_directive("onnxloss-cli", CliDirective)
    app.add_directive("onnxloss-parameters", ParametersDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
