"""Plugin discovery through real entry points, isolation of broken plugins, switches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import identity_model, run_model
from plugin_dists import FOCAL, make_dist

import onnxloss
from onnxloss import registry
from onnxloss.registry import PluginRegistry


@pytest.fixture
def use_registry():
    """Install a registry as the process-wide one for the test."""
    saved = []

    def install(reg):
        saved.append(registry.reset_registry(reg))
        return reg

    yield install
    for previous in saved[:1]:
        registry.reset_registry(previous)


def focal_reference(p, y, gamma=2.0):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    p_t = y * p + (1 - y) * (1 - p)
    return -((1 - p_t) ** gamma) * np.log(p_t)


def test_third_party_loss_via_entry_point(site, use_registry):
    make_dist(
        site,
        "onnxloss-focal",
        "1.2.0",
        {"focal": "onnxloss_focal_mod"},
        {"onnxloss_focal_mod": FOCAL},
    )
    reg = use_registry(PluginRegistry())
    entry = reg.registrations("loss")["focal"]
    assert (entry.plugin.name, entry.plugin.distribution, entry.plugin.version) == (
        "focal", "onnxloss-focal", "1.2.0"
    )  # fmt: skip
    assert not entry.plugin.builtin
    assert reg.failures == []
    model = onnxloss.add_loss_output(identity_model(("N", 1)), score_name="focal", gamma=1.5)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=(6, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=(6, 1)).astype(np.float32)
    got, _ = run_model(model, {"P": p, "label": y})
    np.testing.assert_allclose(got, focal_reference(p.astype(float), y, 1.5).mean(), rtol=1e-5)


def test_builtins_listed_with_their_plugins(fresh_registry):
    losses = onnxloss.available_losses()
    assert losses["squared_error"].plugin.name == "regression"
    assert losses["squared_error"].plugin.builtin
    assert losses["squared_error"].aliases == ("l2", "mse")
    assert losses["cross_entropy"].plugin.name == "classification"
    assert sorted(onnxloss.available_regularizers()) == ["elastic_net", "l1", "l2"]
    # Built-ins are registered through pluggy exactly like third-party plugins.
    names = {
        fresh_registry.plugin_manager.get_name(p)
        for p in fresh_registry.plugin_manager.get_plugins()
    }
    assert names == {m.rsplit(".", 1)[-1] for m in registry.BUILTIN_PLUGINS}
    assert {
        "regression",
        "classification",
        "margin",
        "ranking",
        "penalties",
        "elementwise",
    } <= names


def test_broken_import_is_reported_and_others_load(site):
    make_dist(
        site,
        "broken-dist",
        "0.1",
        {"broken": "broken_mod"},
        {"broken_mod": "import no_such_module_xyz\n"},
    )
    make_dist(site, "onnxloss-focal", "1.0", {"focal": "focal_mod"}, {"focal_mod": FOCAL})
    with pytest.warns(
        onnxloss.PluginWarning, match="plugin 'broken' \\(broken-dist 0.1\\) failed at import"
    ):
        reg = PluginRegistry().load()
    assert "focal" in reg.registrations("loss")
    assert "squared_error" in reg.registrations("loss")
    [failure] = reg.failures
    assert (failure.plugin.name, failure.plugin.distribution, failure.stage) == (
        "broken",
        "broken-dist",
        "import",
    )
    assert "no_such_module_xyz" in failure.message


def test_raising_hook_loses_its_registrations_only(site):
    source = (
        FOCAL
        + "\n@onnxloss.hookimpl\n"
        + "def onnxloss_register_regularizers(register):\n    raise RuntimeError('boom')\n"
    )
    make_dist(site, "half-broken", "2.0", {"half": "half_mod"}, {"half_mod": source})
    with pytest.warns(
        onnxloss.PluginWarning, match="half-broken 2.0.*onnxloss_register_regularizers.*boom"
    ):
        reg = PluginRegistry().load()
    assert "focal" in reg.registrations("loss")  # its other hook worked
    assert reg.failures[0].stage == "hook onnxloss_register_regularizers"


def test_partial_registrations_of_a_failing_hook_are_dropped(site):
    source = FOCAL.replace(
        "    register(FocalLoss)", "    register(FocalLoss)\n    raise ValueError('late')"
    )
    make_dist(site, "late-fail", "1.0", {"late": "late_mod"}, {"late_mod": source})
    with pytest.warns(onnxloss.PluginWarning, match="late"):
        reg = PluginRegistry().load()
    assert "focal" not in reg.registrations("loss")


def test_name_clash_with_builtin_names_both_plugins(site):
    source = FOCAL.replace('name = "focal"', 'name = "huber"')
    make_dist(site, "evil-huber", "6.6", {"evil": "evil_mod"}, {"evil_mod": source})
    with pytest.warns(onnxloss.PluginWarning) as record:
        reg = PluginRegistry().load()
    message = str(record[0].message)
    assert "plugin 'evil' (evil-huber 6.6)" in message
    assert "plugin 'regression' (built-in)" in message
    assert reg.registrations("loss")["huber"].plugin.name == "regression"  # built-in kept
    with pytest.raises(onnxloss.PluginError, match="evil-huber.*regression"):
        raise reg.failures[0].as_error()


def test_name_clash_between_third_parties(site):
    make_dist(site, "aaa-focal", "1.0", {"focal_a": "focal_a"}, {"focal_a": FOCAL})
    make_dist(site, "bbb-focal", "1.0", {"focal_b": "focal_b"}, {"focal_b": FOCAL})
    with pytest.warns(
        onnxloss.PluginWarning, match="'focal_b' \\(bbb-focal 1.0\\).*'focal_a' \\(aaa-focal 1.0\\)"
    ):
        reg = PluginRegistry().load()
    assert reg.registrations("loss")["focal"].plugin.name == "focal_a"


def test_alias_clash_drops_only_the_alias(site):
    source = FOCAL.replace('name = "focal"', 'name = "focal"\n    aliases = ("mse", "fl")')
    make_dist(site, "alias-dist", "1.0", {"aliased": "aliased_mod"}, {"aliased_mod": source})
    with pytest.warns(onnxloss.PluginWarning, match="alias 'mse'"):
        reg = PluginRegistry().load()
    assert reg.registrations("loss")["focal"].aliases == ("fl",)
    assert reg.lookup("loss", "mse").name == "squared_error"


def test_registering_something_that_is_not_a_loss(site):
    source = (
        "import onnxloss\n@onnxloss.hookimpl\n"
        "def onnxloss_register_losses(register):\n    register(dict)\n"
    )
    make_dist(site, "wrong-type", "1.0", {"wrong": "wrong_mod"}, {"wrong_mod": source})
    with pytest.warns(onnxloss.PluginWarning, match="not a subclass of onnxloss.Loss"):
        PluginRegistry().load()


def test_misspelled_hook_is_caught(site):
    source = (
        "import onnxloss\n@onnxloss.hookimpl\ndef onnxloss_register_loss(register):\n    pass\n"
    )
    make_dist(site, "typo-dist", "1.0", {"typo": "typo_mod"}, {"typo_mod": source})
    with pytest.warns(onnxloss.PluginWarning, match="typo-dist.*onnxloss_register_loss"):
        reg = PluginRegistry(allow={"typo"}).load()
    assert [p.name for p in reg.plugins] == [m.rsplit(".", 1)[-1] for m in registry.BUILTIN_PLUGINS]


def test_unknown_name_mentions_the_failed_plugin(site):
    source = FOCAL.replace("import onnxloss", "import onnxloss\nimport missing_dependency_abc")
    make_dist(site, "onnxloss-focal", "1.0", {"focal": "focal_mod2"}, {"focal_mod2": source})
    with pytest.warns(onnxloss.PluginWarning):
        reg = PluginRegistry().load()
    with pytest.raises(
        onnxloss.UnknownTermError, match="unknown loss 'focal'.*missing_dependency_abc"
    ):
        reg.lookup("loss", "focal")


def test_switch_disable_autoload(site):
    make_dist(site, "onnxloss-focal", "1.0", {"focal": "focal_mod3"}, {"focal_mod3": FOCAL})
    reg = PluginRegistry.from_environment({"ONNXLOSS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "focal" not in reg.registrations("loss")
    assert "squared_error" in reg.registrations("loss")


def test_switch_allow_and_block(site):
    make_dist(site, "aaa-focal", "1.0", {"focal_a": "focal_a2"}, {"focal_a2": FOCAL})
    make_dist(
        site,
        "broken-dist",
        "0.1",
        {"broken": "broken_mod2"},
        {"broken_mod2": "raise ImportError('x')\n"},
    )
    allowed = PluginRegistry.from_environment({"ONNXLOSS_PLUGINS": "focal_a"})
    assert allowed.failures == [] and "focal" in allowed.registrations("loss")
    blocked = PluginRegistry.from_environment({"ONNXLOSS_BLOCK_PLUGINS": "broken, focal_a"})
    assert blocked.failures == [] and "focal" not in blocked.registrations("loss")


def test_switch_trace_hooks(capsys):
    PluginRegistry.from_environment(
        {"ONNXLOSS_TRACE_HOOKS": "1", "ONNXLOSS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ).load()
    err = capsys.readouterr().err
    assert "onnxloss_register_losses" in err and "register" in err


def test_add_plugin_programmatically(use_registry):
    import types

    module = types.ModuleType("my_losses")
    exec(FOCAL, module.__dict__)
    reg = use_registry(PluginRegistry(entry_points=False))
    info = reg.add_plugin(module, "mine")
    assert reg.lookup("loss", "focal").plugin == info
    # Added twice under the same name: refused, reported.
    with pytest.warns(onnxloss.PluginWarning, match="already loaded"):
        reg.add_plugin(module, "mine")


def test_faulty_plugin_graph_is_attributed(use_registry):
    import types

    bad = FOCAL.replace("return g.Neg(", "return g.ReduceSum(g.Neg(").replace(
        "g.Log(p_t)))", "g.Log(p_t))), keepdims=0)"
    )
    module = types.ModuleType("bad_losses")
    exec(bad, module.__dict__)
    reg = use_registry(PluginRegistry(entry_points=False))
    reg.add_plugin(module, "badplugin", distribution="bad-dist", version="0.0.1")
    with pytest.raises(
        onnxloss.PluginError, match="'focal' from plugin 'badplugin' \\(bad-dist 0.0.1\\)"
    ):
        onnxloss.add_loss_output(identity_model(), score_name="focal")


def test_plugin_code_raising_is_attributed(use_registry):
    import types

    bad = FOCAL.replace("p = g.clip(p, 1e-6, 1 - 1e-6)", "raise ZeroDivisionError('oops')")
    module = types.ModuleType("raising_losses")
    exec(bad, module.__dict__)
    reg = use_registry(PluginRegistry(entry_points=False))
    reg.add_plugin(module, "raiser")
    with pytest.raises(
        onnxloss.PluginError,
        match="plugin 'raiser'.*pass 'attach:FocalLoss.*after \\['bind'\\].*oops",
    ):
        onnxloss.add_loss_output(identity_model(), score_name="focal")
