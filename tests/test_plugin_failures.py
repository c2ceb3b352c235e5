"""Plugins cannot end or corrupt the process: exits, BaseExceptions and prints while a
plugin loads are recorded failures, and a cold registry is safe for concurrent first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import onnx
import pytest
from conftest import identity_model
from plugin_dists import FOCAL, make_dist

import onnxloss
from onnxloss import registry
from onnxloss.cli import main

HOOK = '''
import sys
import onnxloss


class Boom(BaseException):
    """Not an Exception: what a careless plugin might raise."""


class DoomedLoss(onnxloss.Loss):
    """Registered by a hook that then leaves."""

    name = "doomed"

    def elementwise(self, g, p, y):
        return g.Sub(p, y)


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(DoomedLoss)
    {action}
'''


def plugin_registry(**plugins: str) -> registry.PluginRegistry:
    """A registry of the built-ins and the named entry points only."""
    return registry.PluginRegistry(allow=list(plugins))


def install(site, name: str, source: str) -> None:
    make_dist(site, name.replace("_", "-"), "1.0", {name: f"{name}_mod"}, {f"{name}_mod": source})


@pytest.mark.parametrize(
    ("source", "stage", "message"),
    [
        ("import sys\nsys.exit(0)\n", "import", "SystemExit: the plugin called sys.exit(0)"),
        ("raise SystemExit('bye')\n", "import", "sys.exit('bye')"),
        (HOOK.format(action="sys.exit(3)"), "hook onnxloss_register_losses", "sys.exit(3)"),
        (HOOK.format(action="raise Boom('hook')"), "hook onnxloss_register_losses", "Boom: hook"),
        (HOOK.format(action="raise GeneratorExit"), "hook onnxloss_register_losses", "Generator"),
    ],
    ids=["exit-0-import", "exit-msg-import", "exit-hook", "baseexception-hook", "generatorexit"],
)
def test_exiting_plugin_is_a_recorded_failure(site, source, stage, message):
    name = f"leaver_{abs(hash(source)) % 10**8}"
    install(site, name, source)
    reg = plugin_registry(**{name: ""})
    with pytest.warns(onnxloss.PluginWarning, match=f"plugin '{name}'"):
        failures = reg.failures
    assert [(f.plugin.name, f.stage) for f in failures] == [(name, stage)]
    assert message in failures[0].message
    assert "doomed" not in reg.registrations("loss")  # a hook that leaves keeps nothing
    # The built-ins still work after it.
    model = onnxloss.rewrite(identity_model(), reg.lookup("loss", "huber").cls())
    onnx.checker.check_model(model, full_check=True)


GRADIENT_HOOK = """
import sys
import onnxloss


@onnxloss.hookimpl
def onnxloss_register_gradients(register):
    register("Wiggle", lambda g, node: None, domain="my.ops")
    sys.exit(4)
"""


def test_a_gradient_hook_that_exits_is_a_recorded_failure(site):
    install(site, "wiggler", GRADIENT_HOOK)
    reg = plugin_registry(wiggler="")
    with pytest.warns(onnxloss.PluginWarning, match="plugin 'wiggler'"):
        failures = reg.failures
    assert [(f.plugin.name, f.stage) for f in failures] == [
        ("wiggler", "hook onnxloss_register_gradients")
    ]
    assert "sys.exit(4)" in failures[0].message
    assert reg.gradient_rule("Wiggle", "my.ops") is None  # it keeps nothing
    assert reg.gradient_rule("Relu") is not None  # the built-in rules still load


def test_keyboard_interrupt_still_stops_loading(site):
    install(site, "interrupter", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        plugin_registry(interrupter="").load()


def test_prints_while_loading_go_to_stderr(site, capsys):
    install(site, "chatty", "print('hello from chatty')\n" + FOCAL)
    reg = plugin_registry(chatty="")
    assert "focal" in reg.registrations("loss")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "hello from chatty" in captured.err


def test_a_term_that_exits_during_a_rewrite_is_a_plugin_error(fresh_registry):
    class ExitingLoss(onnxloss.Loss):
        """Calls sys.exit from its graph code."""

        name = "exiting"

        def elementwise(self, g, p, y):
            sys.exit(0)

    class Plugin:
        @onnxloss.hookimpl
        def onnxloss_register_losses(self, register):
            register(ExitingLoss)

    fresh_registry.add_plugin(Plugin(), "exiting_plugin")
    with pytest.raises(onnxloss.PluginError, match=r"loss 'exiting' from plugin 'exiting_pl.*Sys"):
        onnxloss.rewrite(identity_model(), ExitingLoss())


SLOW = (
    """
import os, time
with open(os.environ["ONNXLOSS_TEST_IMPORTS"], "a") as f:
    f.write("imported\\n")
time.sleep(0.3)  # a slow import: every other thread arrives while it runs
"""
    + FOCAL
)


def test_concurrent_first_use_of_a_cold_registry(site, tmp_path, monkeypatch):
    """Eight threads make their first call at once for a loss a plugin provides: each gets
    the loss, the plugin is imported once, and every result is the same model."""
    counter = tmp_path / "imports.txt"
    install(site, "slow_focal", SLOW)
    monkeypatch.setenv("ONNXLOSS_TEST_IMPORTS", str(counter))
    monkeypatch.setenv(registry.ENV_ALLOW, "slow_focal")
    previous = registry.reset_registry(None)  # cold: created from the environment on first use
    model = identity_model(("N", 1))
    start = threading.Barrier(8)
    results: dict[int, bytes | BaseException] = {}

    def first_call(k: int) -> None:
        start.wait()
        try:
            results[k] = onnxloss.add_loss_output(model, score_name="focal").SerializeToString()
        except BaseException as exc:  # recorded, asserted below
            results[k] = exc

    try:
        threads = [threading.Thread(target=first_call, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        plugins = [p.name for p in registry.get_registry().plugins]
    finally:
        registry.reset_registry(previous)
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    assert errors == [] and len(results) == 8
    assert len(set(results.values())) == 1
    assert counter.read_text().splitlines() == ["imported"]
    assert plugins.count("slow_focal") == 1


def test_add_plugin_and_lookups_from_threads(fresh_registry):
    """add_plugin takes the lock too: plugins added from several threads all register."""
    classes = []
    for k in range(6):
        cls = type(f"Loss{k}", (onnxloss.Loss,), {"name": f"threaded_{k}", "__doc__": "d."})
        cls.elementwise = lambda self, g, p, y: g.Sub(p, y)
        classes.append(cls)

    def plugin_for(cls):
        class Plugin:
            @onnxloss.hookimpl
            def onnxloss_register_losses(self, register):
                register(cls)

        return Plugin()

    threads = [
        threading.Thread(target=fresh_registry.add_plugin, args=(plugin_for(c), c.name))
        for c in classes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert fresh_registry.failures == []
    assert {f"threaded_{k}" for k in range(6)} <= set(fresh_registry.registrations("loss"))


def test_cli_beside_exiting_and_printing_plugins(site, tmp_path):
    """The issue's reproduction, as a user runs it: a plugin calling sys.exit(0) on import
    no longer ends 'add-loss' silently, and a chatty plugin leaves 'plugins --json' valid."""
    install(site, "quitter", "import sys\nsys.exit(0)\n")
    install(site, "talker", "print('loading talker...')\n" + FOCAL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXLOSS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env[registry.ENV_ALLOW] = "quitter,talker"
    source, out = tmp_path / "m.onnx", tmp_path / "m_loss.onnx"
    onnx.save(identity_model(), source)

    def cli(*args):
        cmd = [sys.executable, "-m", "onnxloss", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env)

    done = cli("add-loss", str(source), str(out), "--score-name", "focal")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}\n"
    assert "plugin 'quitter' (quitter 1.0) failed at import: SystemExit" in done.stderr
    onnx.checker.check_model(str(out), full_check=True)
    listed = cli("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)  # the print went to stderr
    assert "loading talker..." in listed.stderr
    assert [f["plugin"] for f in data["failures"]] == ["quitter"]
    assert "focal" in {t["name"] for t in data["terms"]}


def test_plugins_json_in_process_stays_valid(site, capsys, monkeypatch):
    install(site, "talker2", "print('{not json')\n" + FOCAL.replace('"focal"', '"focal2"'))
    monkeypatch.setenv(registry.ENV_ALLOW, "talker2")
    previous = registry.reset_registry(None)
    try:
        assert main(["plugins", "--json"]) == 0
    finally:
        registry.reset_registry(previous)
    captured = capsys.readouterr()
    assert "focal2" in {t["name"] for t in json.loads(captured.out)["terms"]}
    assert "{not json" in captured.err
