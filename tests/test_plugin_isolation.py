"""Broken plugins never break a user's pipeline, proven end to end through the CLI.

Four fake distributions are installed through real entry points (dist-info folders on
PYTHONPATH): one good, one whose import fails, one whose hook raises and one that claims a
built-in's name. ``onnxloss`` runs in a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import identity_model, run_model
from plugin_dists import make_dist

from onnxloss import registry

GOOD = '''
import onnxloss


class PseudoHuberLoss(onnxloss.Loss):
    """Pseudo-Huber loss: sqrt(1 + d²) - 1."""

    name = "pseudo_huber"

    def elementwise(self, g, p, y):
        d = g.Sub(p, y)
        return g.Sub(g.Sqrt(g.Add(g.Mul(d, d), 1.0)), 1.0)


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(PseudoHuberLoss)
'''

RAISING = '''
import onnxloss


class NeverRegistered(onnxloss.Loss):
    """Registered by a hook that raises afterwards: dropped."""

    name = "never_registered"

    def elementwise(self, g, p, y):
        return g.Sub(p, y)


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(NeverRegistered)
    raise RuntimeError("registry exploded")
'''

CLASH = '''
import onnxloss


class FakeHuber(onnxloss.Loss):
    """Claims the built-in name 'huber'."""

    name = "huber"

    def elementwise(self, g, p, y):
        return g.Sub(p, y)


class ClashSurvivor(onnxloss.Loss):
    """The same plugin's other loss, which keeps working: |d|."""

    name = "clash_survivor"

    def elementwise(self, g, p, y):
        return g.Abs(g.Sub(p, y))


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(FakeHuber)
    register(ClashSurvivor)
'''

PROBLEMS = [
    "plugin 'broken_import' (broken-import 0.3) failed at import: ModuleNotFoundError: "
    "No module named 'not_a_real_module_for_onnxloss'",
    "plugin 'raising' (raising-hook 1.4) failed at hook onnxloss_register_losses: "
    "RuntimeError: registry exploded",
    "plugin 'clash' (clashing-name 0.9) failed at registering loss 'huber': the name is "
    "already registered by plugin 'regression' (built-in); keeping regression's, refusing "
    "this one",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_dist(root, "good-losses", "2.1", {"good": "good_losses"}, {"good_losses": GOOD})
    make_dist(
        root,
        "broken-import",
        "0.3",
        {"broken_import": "broken_import_mod"},
        {"broken_import_mod": "import not_a_real_module_for_onnxloss\n"},
    )
    make_dist(root, "raising-hook", "1.4", {"raising": "raising_mod"}, {"raising_mod": RAISING})
    make_dist(root, "clashing-name", "0.9", {"clash": "clash_mod"}, {"clash_mod": CLASH})
    return root


def onnxloss_cli(site, *args, cwd=None, **switches):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXLOSS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(switches)
    return subprocess.run(
        [sys.executable, "-m", "onnxloss", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()}


def test_plugins_command_lists_good_plugins_and_every_problem(site):
    done = onnxloss_cli(site, "plugins")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert rows["pseudo_huber"] == ["pseudo_huber", "loss", "-", "good", "good-losses", "2.1"]
    assert rows["clash_survivor"][3:] == ["clash", "clashing-name", "0.9"]
    assert rows["huber"][3:] == ["regression", "built-in"]  # the built-in kept its name
    assert "never_registered" not in rows  # a raising hook keeps none of its registrations
    # The plugins table: every loaded plugin with its distribution and version.
    assert rows["good"] == ["good", "good-losses", "2.1", "good_losses"]
    assert rows["clash"] == ["clash", "clashing-name", "0.9", "clash_mod"]
    assert "broken_import" not in rows and "raising" in done.stdout
    problems = done.stdout.split("plugin problem(s):")[1]
    for problem in PROBLEMS:
        assert problem in problems
    assert "3 plugin problem(s)" in done.stdout
    assert "Warning" not in done.stderr  # listed once, on stdout, not warned again


def test_plugins_command_json_carries_distribution_version_and_error(site):
    done = onnxloss_cli(site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    failures = {f["plugin"]: f for f in data["failures"]}
    assert failures["broken_import"] == {
        "plugin": "broken_import",
        "distribution": "broken-import",
        "version": "0.3",
        "stage": "import",
        "error": "ModuleNotFoundError: No module named 'not_a_real_module_for_onnxloss'",
    }
    assert failures["raising"]["stage"] == "hook onnxloss_register_losses"
    assert failures["clash"]["error"].startswith("the name is already registered by plugin")
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["good"] == {
        "name": "good",
        "module": "good_losses",
        "distribution": "good-losses",
        "version": "2.1",
    }
    assert plugins["regression"]["distribution"] == "built-in"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "model.onnx"
    onnx.save(identity_model(("N", 2)), path)
    return path


def _loss(path, p, y):
    return float(run_model(onnx.load(path), {"P": p, "label": y})[0])


def test_pipeline_keeps_working_beside_broken_plugins(site, model_file, tmp_path):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(6, 2)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    d = p.astype(np.float64) - y
    expected = {
        "pseudo_huber": (np.sqrt(1 + d**2) - 1).sum(axis=1).mean(),
        "clash_survivor": np.abs(d).sum(axis=1).mean(),
        "huber": np.where(np.abs(d) <= 1, 0.5 * d**2, np.abs(d) - 0.5).sum(axis=1).mean(),
    }
    for name, value in expected.items():
        out = tmp_path / f"{name}.onnx"
        done = onnxloss_cli(site, "add-loss", str(model_file), str(out), "--score-name", name)
        assert done.returncode == 0, done.stderr
        assert _loss(out, p, y) == pytest.approx(value, rel=1e-5), name
        # Each problem is still reported, as a warning naming plugin and distribution, and
        # located at the plugin's module rather than at onnxloss's own code.
        assert "raising_mod:0: PluginWarning: plugin 'raising' (raising-hook 1.4)" in done.stderr
        assert "plugin 'broken_import' (broken-import 0.3) failed at import" in done.stderr
        assert "registry.py" not in done.stderr


def test_a_loss_of_a_failed_plugin_is_an_error_naming_it(site, model_file, tmp_path):
    done = onnxloss_cli(
        site,
        "add-loss",
        str(model_file),
        str(tmp_path / "x.onnx"),
        "--score-name",
        "never_registered",
    )
    assert done.returncode == 2
    error = [line for line in done.stderr.splitlines() if line.startswith("onnxloss: error:")]
    assert len(error) == 1
    assert "unknown loss 'never_registered'" in error[0]
    assert "plugin 'raising' (raising-hook 1.4) failed at hook" in error[0]
    assert not (tmp_path / "x.onnx").exists()


def test_switches_block_allow_disable_and_trace(site):
    blocked = onnxloss_cli(site, "plugins", ONNXLOSS_BLOCK_PLUGINS="broken_import,raising,clash")
    assert "plugin problem" not in blocked.stdout and "pseudo_huber" in blocked.stdout
    allowed = onnxloss_cli(site, "plugins", "--json", ONNXLOSS_PLUGINS="good")
    data = json.loads(allowed.stdout)
    assert data["failures"] == []
    builtins = {module.rsplit(".", 1)[-1] for module in registry.BUILTIN_PLUGINS}
    assert {p["name"] for p in data["plugins"]} == builtins | {"good"}
    disabled = onnxloss_cli(site, "plugins", "--json", ONNXLOSS_DISABLE_PLUGIN_AUTOLOAD="1")
    data = json.loads(disabled.stdout)
    assert data["failures"] == [] and all(p["distribution"] == "built-in" for p in data["plugins"])
    traced = onnxloss_cli(site, "plugins", ONNXLOSS_PLUGINS="good", ONNXLOSS_TRACE_HOOKS="1")
    assert traced.returncode == 0
    calls = [line for line in traced.stderr.splitlines() if "onnxloss_register_losses" in line]
    assert len(calls) >= 8  # a call and its result per plugin (3 built-ins and 'good')
    assert (
        "onnxloss: plugin 'good' (good-losses 2.1) from good_losses registered loss "
        "'pseudo_huber'" in traced.stderr
    )
    traced = onnxloss_cli(site, "plugins", ONNXLOSS_PLUGINS="raising", ONNXLOSS_TRACE_HOOKS="1")
    assert "onnxloss: plugin 'raising' (raising-hook 1.4) failed at hook" in traced.stderr
