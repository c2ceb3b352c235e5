"""The conformance kit catches what it promises to catch.

Each test installs a small plugin through a real entry point (a fake distribution on
sys.path), writes a test module that inherits the suite, runs pytest on it in-process
(pytest's own ``pytester``) and checks which of the kit's checks pass and which fail.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter, defaultdict

import pytest
from conftest import HAS_ORT
from plugin_dists import make_dist

pytest_plugins = ["pytester"]

CUBE = '''
import numpy as np
import onnxloss
from onnxloss.terms import check_number


class CubeLoss(onnxloss.Loss):
    """Cubed absolute error: scale · |f - y|³."""

    name = "{name}"

    def __init__(self, output=None, *, scale=1.0, **kwargs):
        super().__init__(output, **kwargs)
        self.scale = check_number("cube scale", scale, low=0.0, low_open=True)

    def hyperparameters(self):
        return {{"scale": self.scale}}

    def elementwise(self, g, p, y):
        a = {abs}
        return g.Mul(g.Mul(g.Mul(a, a), a), {scale})


@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(CubeLoss)
'''

SUITE = """
import numpy as np
from {module} import CubeLoss
from onnxloss.testing import LossConformance
{activate}

class TestCube(LossConformance):
    term = CubeLoss
    distribution = "{dist}"
    options = {options}
    invalid_options = [{{"scale": 0.0}}]
    {extra}

    def reference(self, prediction, target, scale=1.0):
        return {reference}
"""

GOOD_ABS = "g.Abs(g.Sub(p, y))"
GOOD_SCALE = "self.scale"
GOOD_REFERENCE = "scale * np.abs(prediction - target) ** 3"
ACTIVATE = 'pytest_plugins = ["onnxloss.testing"]'
#: Inner runs: no cache, no unrelated plugins, short tracebacks (formatting dominates).
FAST = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--tb=short")


def install_cube(site, module, dist="onnxloss-cube", name="cube", abs_=GOOD_ABS, scale=GOOD_SCALE):
    source = CUBE.format(name=name, abs=abs_, scale=scale)
    make_dist(site, dist, "1.0", {module: module}, {module: source})


def write_suite(
    pytester,
    module,
    dist="onnxloss-cube",
    reference=GOOD_REFERENCE,
    extra="",
    activate=ACTIVATE,
    options='[{"scale": 0.5}]',
):
    source = SUITE.format(
        module=module,
        dist=dist,
        reference=reference,
        extra=extra,
        activate=activate,
        options=options,
    )
    pytester.makepyfile(**{f"test_{module}": textwrap.dedent(source)})


def run(pytester, *args):
    """Run the suite; outcomes per check name (``{check: Counter({outcome: n})}``)."""
    reprec = pytester.inline_run(*FAST, *args)
    by_check: dict[str, Counter] = defaultdict(Counter)
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            by_check[report.nodeid.split("::")[-1].split("[")[0]][report.outcome] += 1
    return by_check, reprec


def failed_checks(by_check) -> set[str]:
    return {check for check, outcomes in by_check.items() if outcomes["failed"]}


def failure_text(reprec, check: str) -> str:
    return "\n".join(
        str(r.longrepr)
        for r in reprec.getreports("pytest_runtest_logreport")
        if r.failed and f"::{check}" in r.nodeid
    )


def test_a_correct_plugin_passes_every_check(pytester, site):
    install_cube(site, "cube_ok")
    write_suite(pytester, "cube_ok", options='[{}, {"scale": 0.5}]')
    by_check, reprec = run(pytester)
    assert failed_checks(by_check) == set(), failure_text(reprec, "")
    passed = {check for check, outcomes in by_check.items() if outcomes["passed"]}
    expected = {
        "test_registered_through_entry_point",
        "test_rejects_invalid_options",
        "test_builds_valid_model",
        "test_matches_reference",
        "test_names_unique_and_deterministic",
        "test_caller_model_untouched",
        "test_composes_with_other_terms",
    }
    if HAS_ORT:
        expected.add("test_gradient_matches_reference")
    assert expected <= passed
    # 3 model kinds x 2 opsets x 3 reductions x 2 weightings (+ 2 float64) per option set.
    assert by_check["test_matches_reference"]["passed"] == 2 * 38
    assert by_check["test_gradient_matches_reference"] == (
        Counter(passed=4) if HAS_ORT else Counter(skipped=4)
    )
    assert by_check["test_rejects_invalid_options"]["passed"] == 2  # listed + reduction


def test_a_wrong_formula_fails_the_numeric_checks_only(pytester, site):
    install_cube(site, "cube_square", abs_="g.Abs(g.Sub(p, y))", scale="g.Div(self.scale, a)")
    write_suite(pytester, "cube_square")  # the graph computes scale·d², the reference |d|³
    by_check, reprec = run(pytester)
    numeric = {"test_matches_reference", "test_composes_with_other_terms"}
    if HAS_ORT:
        numeric.add("test_gradient_matches_reference")
    assert failed_checks(by_check) == numeric
    assert "graph loss vs reference" in failure_text(reprec, "test_matches_reference")


def test_a_plugin_that_is_not_installed_fails_registration_with_a_hint(pytester, site):
    make_dist(site, "unrelated", "1.0", {}, {})
    (site / "cube_loose.py").write_text(CUBE.format(name="cube", abs=GOOD_ABS, scale=GOOD_SCALE))
    write_suite(pytester, "cube_loose")
    by_check, reprec = run(pytester)
    assert failed_checks(by_check) == {"test_registered_through_entry_point"}
    text = failure_text(reprec, "test_registered_through_entry_point")
    assert "no plugin registers a loss named 'cube'" in text
    assert "pip install -e ." in text and "'onnxloss' group" in text


def test_registration_by_another_distribution_is_refused(pytester, site):
    install_cube(site, "cube_other", dist="someone-else")
    write_suite(pytester, "cube_other", dist="onnxloss-cube")
    by_check, reprec = run(pytester, "-k", "registered")
    assert failed_checks(by_check) == {"test_registered_through_entry_point"}
    text = failure_text(reprec, "test_registered_through_entry_point")
    assert "plugin 'cube_other' (someone-else 1.0)" in text
    assert "expected the distribution 'onnxloss-cube'" in text


def test_a_name_clash_with_a_builtin_fails_registration(pytester, site):
    install_cube(site, "cube_clash", name="huber")
    write_suite(pytester, "cube_clash")
    by_check, reprec = run(pytester, "-k", "registered")
    assert failed_checks(by_check) == {"test_registered_through_entry_point"}
    text = failure_text(reprec, "test_registered_through_entry_point")
    assert "already registered by plugin 'regression' (built-in)" in text


@pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime-training")
def test_an_operator_without_gradient_fails_the_gradient_check(pytester, site):
    # |d| as d·Sign(d): same numbers, but onnxruntime-training has no gradient for Sign.
    install_cube(site, "cube_sign", abs_="(lambda d: g.Mul(d, g.Sign(d)))(g.Sub(p, y))")
    write_suite(pytester, "cube_sign")
    by_check, reprec = run(pytester)
    assert failed_checks(by_check) == {"test_gradient_matches_reference"}
    assert "Sign" in failure_text(reprec, "test_gradient_matches_reference")


def test_float32_constants_fail_the_float64_cases(pytester, site):
    install_cube(site, "cube_f32", scale="g.const(np.array(self.scale, np.float32))")
    write_suite(pytester, "cube_f32")
    by_check, reprec = run(pytester, "-k", "valid_model or matches_reference")
    failures = [r.nodeid for r in reprec.getreports("pytest_runtest_logreport") if r.failed]
    assert failures and all("float64" in nodeid for nodeid in failures)
    assert by_check["test_matches_reference"]["passed"] == 36  # every float32 case
    assert "emitted an invalid graph" in failure_text(reprec, "test_builds_valid_model")


def test_nondeterministic_names_fail(pytester, site):
    # A constant whose value changes at every build, times zero: numbers stay right.
    install_cube(site, "cube_counter", scale="g.Add(self.scale, g.Mul(float(next(COUNTER)), 0.0))")
    (site / "cube_counter.py").write_text(
        "import itertools\nCOUNTER = itertools.count()\n" + (site / "cube_counter.py").read_text()
    )
    write_suite(pytester, "cube_counter")
    by_check, reprec = run(pytester, "-k", "names or matches_reference")
    assert failed_checks(by_check) == {"test_names_unique_and_deterministic"}
    assert "two identical rewrites gave different models" in failure_text(
        reprec, "test_names_unique_and_deterministic"
    )


def test_options_that_are_not_validated_fail(pytester, site):
    install_cube(site, "cube_lax")
    write_suite(pytester, "cube_lax", extra='invalid_options = [{"scale": 0.0}, {"power": 2}]')
    by_check, reprec = run(pytester, "-k", "invalid")
    assert by_check["test_rejects_invalid_options"] == Counter(passed=2, failed=1)
    assert "power" in failure_text(reprec, "test_rejects_invalid_options")


def test_a_reference_of_the_wrong_shape_is_explained(pytester, site):
    install_cube(site, "cube_shape")
    write_suite(pytester, "cube_shape", reference="np.zeros(3)")
    by_check, reprec = run(pytester, "-k", "matches_reference")
    text = failure_text(reprec, "test_matches_reference")
    assert "reference() returned shape (3,)" in text


def test_without_the_plugin_every_check_says_how_to_activate_it(pytester, site):
    install_cube(site, "cube_inactive")
    write_suite(pytester, "cube_inactive", activate="")
    by_check, reprec = run(pytester, "-k", "registered or invalid")
    assert failed_checks(by_check) == {
        "test_registered_through_entry_point",
        "test_rejects_invalid_options",
        "test_rejects_invalid_prediction",
    }
    text = failure_text(reprec, "test_registered_through_entry_point")
    assert "the onnxloss.testing pytest plugin is not active" in text
    assert "-p onnxloss.testing" in text


def test_activation_from_the_command_line_and_markers(pytester, site):
    install_cube(site, "cube_cli")
    write_suite(pytester, "cube_cli", activate="")
    result = pytester.runpytest("-p", "onnxloss.testing", *FAST, "-m", "onnxloss_gradients")
    result.assert_outcomes(**({"passed": 2} if HAS_ORT else {"skipped": 2}), deselected=86)
    result.stdout.fnmatch_lines(["onnxloss * conformance kit: opsets 13 and *"])
    result = pytester.runpytest(
        "-p",
        "onnxloss.testing",
        *FAST,
        "-k",
        "registered",
        "-m",
        "onnxloss_conformance and not onnxloss_gradients",
    )
    result.assert_outcomes(passed=1, deselected=87)


REGULARIZER = '''
import numpy as np
import onnxloss


class MaxNormPenalty(onnxloss.Regularizer):
    """Sum of squared row norms scaled by the rank: alpha · Σ_t rank(t) · Σ t²."""

    name = "rank_scaled"

    def __init__(self, tensors, alpha=1.0):
        super().__init__(tensors)
        self.alpha = alpha

    def hyperparameters(self):
        return {"alpha": self.alpha}

    def penalty(self, g, tensors):
        # Reads the static rank, also on float64 weights the core casts.
        parts = [g.Mul(g.reduce_sum(g.square(t)), float(len(t.shape))) for t in tensors]
        return g.Mul(g.add_all(parts), self.alpha)


@onnxloss.hookimpl
def onnxloss_register_regularizers(register):
    register(MaxNormPenalty)
'''

REGULARIZER_SUITE = """
import numpy as np
from rank_penalty import MaxNormPenalty
from onnxloss.testing import RegularizerConformance

pytest_plugins = ["onnxloss.testing"]


class TestRankScaled(RegularizerConformance):
    term = MaxNormPenalty
    distribution = "onnxloss-rank"
    options = [{"alpha": 0.5}]

    def reference(self, weights, alpha=1.0):
        return alpha * sum(w.ndim * float((w ** 2).sum()) for w in weights)
"""


def test_a_regularizer_reading_static_shapes_works_on_cast_weights(pytester, site):
    """The kit hands regularizers float64 weights, which the core casts to the loss's
    type; the cast keeps the static shape, so a penalty that reads ``t.shape`` passes every
    check (it failed the float64 cases before GraphBuilder.cast kept shapes)."""
    make_dist(site, "onnxloss-rank", "0.3", {"rank": "rank_penalty"}, {"rank_penalty": REGULARIZER})
    pytester.makepyfile(test_rank=REGULARIZER_SUITE)
    by_check, reprec = run(pytester, "-k", "not gradient")
    failures = [r.nodeid for r in reprec.getreports("pytest_runtest_logreport") if r.failed]
    assert failures == []
    assert by_check["test_matches_reference"] == Counter(passed=18)
    assert by_check["test_registered_through_entry_point"] == Counter(passed=1)
    assert by_check["test_rejects_invalid_options"] == Counter(passed=1)  # tensors=[]


def test_without_onnxruntime_gradients_skip_and_the_rest_runs(pytester, site, monkeypatch):
    """A fake, unimportable ``onnxruntime`` first on the path stands for an environment
    without it: the gradient checks skip with the reason, the others still pass."""
    install_cube(site, "cube_noort")
    fake = pytester.mkdir("no_runtime") / "onnxruntime"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    write_suite(pytester, "cube_noort")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), str(site)]))
    result = pytester.runpytest_subprocess(
        "-p", "onnxloss.testing", *FAST, "-rs", "-k", "gradient or registered or opset13-mean"
    )
    # registration 1 + builds and numbers at opset 13 with "mean" (3 models x 2 weightings,
    # + 1 float64 case) x 2 = 15, and the 2 gradient checks skipped.
    result.assert_outcomes(passed=15, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "onnxloss * conformance kit: *, onnx.reference only, gradient checks skipped",
            "SKIPPED [[]2[]] * onnxruntime-training is not usable here: *",
        ]
    )
