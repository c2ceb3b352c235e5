"""The command line explains itself: --version, help on every option, defaults shown."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys

import pytest

import onnxloss
from onnxloss.cli import build_parser, main


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("onnxloss", parser)] + [(f"onnxloss {n}", p) for n, p in sub.choices.items()]


def options() -> list[tuple[str, argparse.Action]]:
    return [
        (f"{prog} {'/'.join(a.option_strings) or a.dest}", a)
        for prog, parser in parsers()
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def test_version_is_the_distribution_version(capsys):
    assert onnxloss.__version__ == importlib.metadata.version("onnxloss")
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"onnxloss {onnxloss.__version__}\n"


def test_python_m_onnxloss_version():
    done = subprocess.run(
        [sys.executable, "-m", "onnxloss", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"onnxloss {onnxloss.__version__}\n",
        "",
    )


def test_every_command_has_the_options_it_is_known_for():
    """Guards the walk below: it sees every command and their options."""
    names = {name for name, _ in options()}
    assert {"onnxloss --version", "onnxloss demo --samples", "onnxloss add-loss model"} <= names
    assert [prog for prog, _ in parsers()] == [
        "onnxloss",
        "onnxloss add-loss",
        "onnxloss plugins",
        "onnxloss draw",
        "onnxloss check",
        "onnxloss train-graph",
        "onnxloss demo",
    ]


@pytest.mark.parametrize(("name", "action"), options(), ids=[n for n, _ in options()])
def test_every_option_has_help(name, action):
    assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), name


@pytest.mark.parametrize(("name", "action"), options(), ids=[n for n, _ in options()])
def test_help_shows_every_meaningful_default(name, action):
    """A default other than "nothing" (None, False, an empty list) is in the help text, as
    argparse expands it (``%(default)s`` and friends)."""
    if action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
        return
    expanded = action.help % dict(vars(action), prog=name.rsplit(" ", 1)[0])
    assert f"default: {action.default}" in expanded, (name, expanded)
