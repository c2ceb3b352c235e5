"""The conformance suite: base classes whose ``test_*`` methods every loss or regularizer
plugin inherits.

A plugin's test module subclasses :class:`LossConformance` or
:class:`RegularizerConformance`, states the term class, its distribution, a few option
sets and a numpy reference, and gets every check as a pytest test, parametrized by the
``onnxloss.testing`` plugin (which must be active: see :mod:`onnxloss.testing`).
"""

from __future__ import annotations

import itertools
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import pytest

from ..errors import OnnxLossError
from ..losses import L1Penalty, L2Penalty, MSELoss
from ..model_index import MAX_OPSET, MIN_OPSET
from ..rewrite import rewrite
from ..terms import Loss, Regularizer, Spec, Term
from . import checks
from .models import RUNTIME_MAX_OPSET, STATIC_BATCH, crowded_copy, toy_model
from .runtime import (
    numeric_gradient,
    onnxruntime_gradients,
    run_model,
    training_runtime_problem,
)

#: Batch sizes the ``dynamic`` toy model is run with (one model, several batch sizes).
DYNAMIC_BATCHES = (1, 6)
SAMPLE_WEIGHT = "sample_weight"
OPTIONS = dict[str, object]


def _options_id(options: Mapping[str, object]) -> str:
    if not options:
        return "defaults"
    return ",".join(f"{k}={v!r}" for k, v in options.items())


@dataclass(frozen=True)
class Variant:
    """One ``opset`` × option set, for the checks that need no more."""

    opset: int
    options: OPTIONS = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"opset{self.opset}-{_options_id(self.options)}"


@dataclass(frozen=True)
class LossCase:
    """One build of a loss: toy model kind, opset, reduction, weighting, dtype, options."""

    model: str
    opset: int
    reduction: str
    weighted: bool
    options: OPTIONS = field(default_factory=dict)
    dtype: str = "float32"

    @property
    def id(self) -> str:
        weighted = "weighted" if self.weighted else "unweighted"
        parts = [self.model, f"opset{self.opset}", self.reduction, weighted]
        if self.dtype != "float32":
            parts.append(self.dtype)
        return "-".join([*parts, _options_id(self.options)])


@dataclass(frozen=True)
class RegularizerCase:
    """One build of a regularizer: toy model kind, opset, tensor selection, options.

    Selections: ``one`` (an exact name), ``glob`` (``"w*"``, every float32 weight),
    ``mixed`` (an exact float32 name and a glob over float64 weights, which the core casts
    to the loss's type before the term sees them).
    """

    model: str
    opset: int
    selection: str
    options: OPTIONS = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "-".join(
            [self.model, f"opset{self.opset}", self.selection, _options_id(self.options)]
        )


def _rng(*parts: object) -> np.random.Generator:
    # Stable across processes (unlike hash()), so a failing case replays exactly.
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def _allclose(got, expected, rtol: float, atol: float, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(got, np.float64), expected, rtol=rtol, atol=atol, err_msg=what
    )


class Conformance:
    """What the loss and regularizer suites share. Subclass one of those two instead."""

    #: The class every :attr:`term` must derive from (set by each suite).
    _base_term: ClassVar[type[Term]] = Term

    #: The term class under test (a subclass of :class:`onnxloss.Loss` or
    #: :class:`onnxloss.Regularizer`).
    term: ClassVar[type[Term]]
    #: The distribution whose ``onnxloss`` entry point registers :attr:`term`
    #: (e.g. ``"onnxloss-focal"``); :data:`onnxloss.testing.BUILTIN` for the built-ins.
    distribution: ClassVar[str]
    #: Option sets (keyword arguments of :attr:`term`) every check runs with.
    options: ClassVar[Sequence[Mapping[str, object]]] = ({},)
    #: Option sets the term must refuse with an :class:`onnxloss.OnnxLossError` whose
    #: message names one of the offending options.
    invalid_options: ClassVar[Sequence[Mapping[str, object]]] = ()
    #: ``ai.onnx`` opsets every build is checked at: the lowest and highest supported.
    opsets: ClassVar[tuple[int, ...]] = (MIN_OPSET, MAX_OPSET)
    #: Opsets the gradient check runs at (onnxruntime-training builds gradients up to 21).
    gradient_opsets: ClassVar[tuple[int, ...]] = (MIN_OPSET, RUNTIME_MAX_OPSET)
    #: Tolerances of the graph's value against the numpy reference (graph in float32).
    rtol: ClassVar[float] = 1e-5
    atol: ClassVar[float] = 1e-6
    #: Tolerances of onnxruntime-training's gradient against finite differences of the
    #: reference.
    gradient_rtol: ClassVar[float] = 1e-3
    gradient_atol: ClassVar[float] = 1e-5
    #: Seed of every random draw (each case derives its own stream from it).
    seed: ClassVar[int] = 0

    #: Which parametrization each argument name receives (see :meth:`_onnxloss_cases`).
    _PARAMETERS: ClassVar[tuple[str, ...]] = (
        "onnxloss_case",
        "onnxloss_variant",
        "onnxloss_gradient_variant",
        "onnxloss_invalid_options",
    )

    # -- parametrization (called by the onnxloss.testing plugin's pytest_generate_tests) -----
    @classmethod
    def _onnxloss_parametrize(cls, metafunc: pytest.Metafunc) -> None:
        """Parametrize a test method's ``onnxloss_*`` arguments from the class attributes."""
        cls._check_declaration()
        for name in cls._PARAMETERS:
            if name in metafunc.fixturenames:
                values = cls._onnxloss_cases(name)
                ids = [getattr(v, "id", None) or _options_id(v) for v in values]
                metafunc.parametrize(name, values, ids=ids)

    @classmethod
    def _onnxloss_cases(cls, parameter: str) -> list:
        """The values of one ``onnxloss_*`` parameter."""
        options = [dict(o) for o in cls.options]
        if parameter == "onnxloss_variant":
            return [Variant(opset, o) for o in options for opset in cls.opsets]
        if parameter == "onnxloss_gradient_variant":
            return [Variant(opset, o) for o in options for opset in cls.gradient_opsets]
        if parameter == "onnxloss_invalid_options":
            return [dict(o) for o in (*cls.invalid_options, *cls._generic_invalid_options())]
        if parameter == "onnxloss_case":
            return cls._build_cases(options)
        raise ValueError(f"unknown conformance parameter {parameter!r}")

    @classmethod
    def _build_cases(cls, options: list[OPTIONS]) -> list:
        raise NotImplementedError

    @classmethod
    def _generic_invalid_options(cls) -> list[OPTIONS]:
        return []

    @classmethod
    def _check_declaration(cls) -> None:
        base = cls._base_term
        term = getattr(cls, "term", None)
        if not (isinstance(term, type) and issubclass(term, base)):
            raise TypeError(
                f"{cls.__name__}.term must be the {base.__name__} subclass under test, got {term!r}"
            )
        if not isinstance(getattr(cls, "distribution", None), str):
            raise TypeError(
                f"{cls.__name__}.distribution must name the distribution that registers "
                f"{term.__name__} (e.g. 'onnxloss-focal'), or be onnxloss.testing.BUILTIN"
            )
        if not cls.options or not all(isinstance(o, Mapping) for o in cls.options):
            raise TypeError(f"{cls.__name__}.options must be a non-empty list of dicts")

    # -- the plugin must be active ------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _onnxloss_kit_active(self, request: pytest.FixtureRequest) -> None:
        # Without the plugin the onnxloss_* arguments are unknown fixtures; say why first.
        kit = sys.modules[__package__]
        if not request.config.pluginmanager.is_registered(kit):
            pytest.fail(
                "the onnxloss.testing pytest plugin is not active: add "
                "pytest_plugins = ['onnxloss.testing'] to your top-level conftest.py or test "
                "module, or run pytest -p onnxloss.testing",
                pytrace=False,
            )

    # -- checks shared by both suites ---------------------------------------------------------
    def test_registered_through_entry_point(self, onnxloss_registry) -> None:
        """The term is registered under its name (and aliases) by :attr:`distribution`'s
        entry point, which loaded without a problem."""
        checks.assert_registered(onnxloss_registry, self.term, self.distribution)

    def test_rejects_invalid_options(self, onnxloss_invalid_options: OPTIONS) -> None:
        """Invalid options raise an OnnxLossError naming the option."""
        with pytest.raises(OnnxLossError) as info:
            self._construct(**onnxloss_invalid_options)
        message = str(info.value)
        if not any(str(key) in message for key in onnxloss_invalid_options):
            raise AssertionError(
                f"{self.term.__name__}({_options_id(onnxloss_invalid_options)}) raised "
                f"{type(info.value).__name__}: {message!r}, which names none of the options "
                f"{sorted(onnxloss_invalid_options)}"
            )

    def _construct(self, **kwargs: object) -> Term:
        """An instance of :attr:`term` (overridden by each suite)."""
        return self.term(**kwargs)

    def _check_model(
        self, model: onnx.ModelProto, spec: Spec | Term, new_inputs
    ) -> onnx.ModelProto:
        """Rewrite ``model`` with ``spec`` and check the result is sound and the model
        untouched; return the result."""
        before = model.SerializeToString(deterministic=True)
        result = rewrite(model, spec)
        checks.assert_untouched(before, model)
        checks.assert_valid_loss_model(model, result, new_inputs=new_inputs)
        checks.assert_names_unique(model, result)
        return result

    def _check_names(self, model: onnx.ModelProto, spec: Spec, feeds: dict) -> None:
        """Deterministic names, unique against the model, even when the model already uses
        every name the term would pick."""
        first = rewrite(model, spec)
        checks.assert_deterministic(first, rewrite(model, spec))
        checks.assert_names_unique(model, first)
        crowded = crowded_copy(model, checks.new_names(model, first))
        again = rewrite(crowded, spec)
        checks.assert_valid_loss_model(crowded, again)
        checks.assert_names_unique(crowded, again)
        expected = run_model(first, feeds)[0]
        got = run_model(again, feeds)[0]
        _allclose(got, expected, 0, 0, "the loss changed when the model already held its names")

    def _check_untouched(self, model: onnx.ModelProto, spec: Spec) -> None:
        before = model.SerializeToString(deterministic=True)
        result = rewrite(model, spec)
        checks.assert_untouched(before, model)
        # The result shares nothing with the caller's model: editing it changes nothing.
        result.graph.node[0].name = "edited"
        result.graph.initializer[0].name = "edited"
        result.graph.input[0].name = "edited"
        del result.graph.output[:]
        checks.assert_untouched(before, model, "the caller's model, after editing the result,")

    @staticmethod
    def _require_training_runtime() -> None:
        problem = training_runtime_problem()
        if problem:
            pytest.skip(f"onnxruntime-training is not usable here: {problem}")


@dataclass
class _Draw:
    """One batch for a loss model: what is fed, and what the reference sees (float64)."""

    feeds: dict[str, np.ndarray]
    prediction: np.ndarray
    target: np.ndarray | None
    others: dict[str, np.ndarray]


class LossConformance(Conformance):
    """The conformance suite of a loss. Set :attr:`term`, :attr:`distribution`, and
    implement :meth:`reference`; override :meth:`sample` when the loss needs predictions or
    targets of a particular domain (probabilities, class indices, counts...).

    A loss that compares several predictions (its ``extra_predictions``) is bound to toy
    outputs ``pred`` and ``pred_<role>`` (shapes :attr:`extra_prediction_shapes`); its
    :meth:`sample` returns the others as a third item and :meth:`reference` receives them as
    keywords. A loss without a target gets ``target=None``.

    Example::

        pytest_plugins = ["onnxloss.testing"]

        class TestMyLoss(LossConformance):
            term = MyLoss
            distribution = "onnxloss-myloss"
            options = [{}, {"delta": 0.5}]
            invalid_options = [{"delta": -1.0}]

            def reference(self, prediction, target, delta=1.0):
                return np.abs(prediction - target) ** delta
    """

    _base_term: ClassVar[type[Term]] = Loss
    term: ClassVar[type[Loss]]
    #: Shape of one sample of the prediction: the output is ``[N, *prediction_shape]``.
    prediction_shape: ClassVar[tuple[int, ...]] = (3,)
    #: Shape of one sample of each extra prediction, by role (default: the prediction's).
    extra_prediction_shapes: ClassVar[Mapping[str, tuple[int, ...]]] = {}
    #: Per-sample shapes :meth:`Loss.check_prediction` must refuse (with an OnnxLossError
    #: naming the output).
    invalid_prediction_shapes: ClassVar[Sequence[tuple[int, ...]]] = ()
    #: Float types checked besides float32 (on a few cases only).
    extra_dtypes: ClassVar[tuple[str, ...]] = ("float64",)
    #: Reductions every build is checked with.
    reductions: ClassVar[tuple[str, ...]] = ("sum", "mean", "elementwise_mean")

    # -- what an author writes ------------------------------------------------------------------
    def reference(self, prediction: np.ndarray, target: np.ndarray, **options) -> np.ndarray:
        """The loss in numpy (float64), unreduced: elementwise, shaped like ``prediction``,
        or any ``[N, ...]`` array (``[N]``: per sample), as PyTorch's ``reduction="none"``.
        The suite sums per sample, weights and reduces; ``"elementwise_mean"`` divides by the
        number of elements of this array (see :meth:`reference_counts`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reference()")

    def reference_counts(
        self, prediction: np.ndarray, target: np.ndarray, **options
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """For a loss that skips or weights elements (``ignore_index``, class weights):
        ``(mask, counts)``, both ``[N]``: which samples ``"mean"`` counts (1/0) and what
        each adds to the denominator of ``"elementwise_mean"``. Default None: every sample
        counts, and every element of :meth:`reference`'s array once."""
        return None

    def sample(
        self, rng: np.random.Generator, shape: tuple[int, ...], **options
    ) -> tuple[np.ndarray, np.ndarray]:
        """A prediction of ``shape`` and a valid target for it (None for a loss without
        one), and for a loss with extra predictions a dict of them (role → array of
        ``[N, *extra_prediction_shapes[role]]``). Default: all standard normal. The suite
        casts them to the model's types."""
        others = {
            role: rng.normal(size=(shape[0], *self._extra_shape(role)))
            for role in self._roles(options)
        }
        target = rng.normal(size=shape) if self.term.has_target else None
        return (
            (rng.normal(size=shape), target, others) if others else (rng.normal(size=shape), target)
        )

    # -- helpers ------------------------------------------------------------------------------
    def _construct(self, **kwargs: object) -> Loss:
        return self.term(**kwargs)

    def _roles(self, options: OPTIONS) -> list[str]:
        """The extra predictions a term with these options binds."""
        return list(self.term(**options).predictions)

    def _extra_shape(self, role: str) -> tuple[int, ...]:
        return tuple(self.extra_prediction_shapes.get(role, self.prediction_shape))

    def _output(self, kind: str, options: OPTIONS) -> str | None:
        """``output=`` for a toy model: None when ``pred`` is its only output, else the
        name (the ``multi`` kind, or extra predictions as further outputs)."""
        return "pred" if kind == "multi" or self._roles(options) else None

    def _bindings(self, options: OPTIONS) -> dict[str, str]:
        return {role: f"pred_{role}" for role in self._roles(options)}

    @classmethod
    def _generic_invalid_options(cls) -> list[OPTIONS]:
        # Handled by onnxloss.Loss itself: proves the term passes its keywords on.
        return [{"reduction": "median"}]

    @classmethod
    def _build_cases(cls, options: list[OPTIONS]) -> list[LossCase]:
        cases = []
        for o in options:
            for kind, opset, reduction, weighted in itertools.product(
                ("single", "multi", "dynamic"), cls.opsets, cls.reductions, (False, True)
            ):
                cases.append(LossCase(kind, opset, reduction, weighted, o))
            for dtype in cls.extra_dtypes:  # two cases per extra dtype are enough
                cases.append(LossCase("single", cls.opsets[0], "mean", True, o, dtype))
                cases.append(LossCase("dynamic", cls.opsets[-1], "sum", False, o, dtype))
        return cases

    def _term(self, output: str | None, options: OPTIONS, **kwargs) -> Loss:
        """The term under test on ``output``, its extra predictions on ``pred_<role>``.

        When the options hold a ``weight`` of their own (PyTorch's class weights), the
        sample-weight input goes to ``sample_weight``, the built-in losses' convention."""
        if "weight" in options:
            weight = kwargs.pop("weight", None)
            if weight is not None:
                kwargs["sample_weight"] = weight
        return self.term(output, **self._bindings(options), **kwargs, **options)

    def _loss(self, case: LossCase, output: str | None = None) -> Loss:
        weight = SAMPLE_WEIGHT if case.weighted else None
        return self._term(output, case.options, weight=weight, reduction=case.reduction)

    def _new_inputs(self, target: str, weighted: bool) -> set[str]:
        inputs = {target} if self.term.has_target else set()
        return inputs | ({SAMPLE_WEIGHT} if weighted else set())

    def _toy(self, case: LossCase | Variant, kind: str | None = None, **kwargs) -> onnx.ModelProto:
        kind = kind or case.model
        dtype = getattr(case, "dtype", "float32")
        extra = {f"pred_{r}": self._extra_shape(r) for r in self._roles(case.options)}
        return toy_model(
            kind, case.opset, self.prediction_shape, dtype=dtype, extra_outputs=extra, **kwargs
        )

    def _draw(
        self, rng: np.random.Generator, batch: int, options: OPTIONS, model: onnx.ModelProto
    ) -> _Draw:
        """A batch as fed to ``model``, and as the reference sees it."""
        shape = (batch, *self.prediction_shape)
        drawn = self.sample(rng, shape, **options)
        prediction, target = np.asarray(drawn[0]), drawn[1]
        others = dict(drawn[2]) if len(drawn) > 2 else {}
        if prediction.shape != shape:
            raise AssertionError(
                f"sample() returned a prediction of shape {prediction.shape}, expected {shape}"
            )
        types = {
            i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in model.graph.input
        }
        feeds = {"P": prediction.astype(types["P"])}
        ref_others = {}
        for role in self._roles(options):
            fed = np.asarray(others[role]).astype(types[f"P_pred_{role}"])
            feeds[f"P_pred_{role}"] = fed
            ref_others[role] = fed.astype(np.float64)
        ref_t = None
        target_input = next((n for n in ("label", "pred_label") if n in types), None)
        if target_input is not None:
            fed_t = np.asarray(target).astype(types[target_input])
            feeds[target_input] = fed_t
            # The reference sees exactly what the graph sees, in float64 (or int64 labels).
            ref_t = fed_t.astype(np.float64) if np.issubdtype(fed_t.dtype, np.floating) else fed_t
        return _Draw(feeds, feeds["P"].astype(np.float64), ref_t, ref_others)

    def _unreduced(self, d: _Draw, options: OPTIONS) -> np.ndarray:
        value = np.asarray(
            self.reference(d.prediction, d.target, **options, **d.others), dtype=np.float64
        )
        n = len(d.prediction)
        if value.ndim == 0 or value.shape[0] != n:
            raise AssertionError(
                f"reference() returned shape {value.shape}; expected an [N, ...] array "
                f"(N = {n}), e.g. the prediction's {d.prediction.shape} or ({n},)"
            )
        return value.reshape(n, -1)

    def _expected(self, d: _Draw, w, reduction: str, options: OPTIONS) -> float:
        unreduced = self._unreduced(d, options)
        v = unreduced.sum(axis=1) * (1.0 if w is None else w)
        if reduction == "sum":
            return float(v.sum())
        counts = self.reference_counts(d.prediction, d.target, **options, **d.others)
        if counts is None:
            mask = np.ones(len(v))
            count = np.full(len(v), float(unreduced.shape[1]))
        else:
            mask, count = (np.asarray(c, np.float64) for c in counts)
        if reduction == "mean":
            return float(v.sum() / max(mask.sum(), 1.0))
        return float(v.sum() / count.sum()) if count.sum() > 0 else 0.0

    # -- the checks ---------------------------------------------------------------------------
    def test_builds_valid_model(self, onnxloss_case: LossCase) -> None:
        """Checker, strict shape inference, loss first and scalar, original graph kept."""
        case = onnxloss_case
        model = self._toy(case)
        # One loss, so its target is "label" whichever output it binds.
        new_inputs = self._new_inputs("label", case.weighted)
        self._check_model(
            model, self._loss(case, self._output(case.model, case.options)), new_inputs
        )

    def test_matches_reference(self, onnxloss_case: LossCase) -> None:
        """The loss equals the numpy reference, summed per sample, weighted and reduced."""
        case = onnxloss_case
        model = self._toy(case)
        result = rewrite(model, self._loss(case, self._output(case.model, case.options)))
        batches = DYNAMIC_BATCHES if case.model == "dynamic" else (STATIC_BATCH,)
        rng = _rng(self.seed, type(self).__name__, case.id)
        for batch in batches:
            d = self._draw(rng, batch, case.options, result)
            feeds = dict(d.feeds)
            w = None
            dtype = d.feeds["P"].dtype
            if case.weighted:
                w = rng.uniform(0.25, 2.0, size=batch).astype(dtype)
                feeds[SAMPLE_WEIGHT] = w
            outputs = run_model(result, feeds)
            loss = outputs[0]
            if loss.shape != () or loss.dtype != dtype:
                raise AssertionError(
                    f"the loss is {loss.dtype}{list(loss.shape)}, expected a {dtype} scalar"
                )
            position = 1 + [o.name for o in model.graph.output].index("pred")
            np.testing.assert_array_equal(
                outputs[position], d.feeds["P"], err_msg="the prediction changed"
            )
            expected = self._expected(
                d, None if w is None else w.astype(np.float64), case.reduction, case.options
            )
            _allclose(
                loss,
                expected,
                self.rtol,
                self.atol,
                f"{case.id}, batch {batch}: graph loss vs reference",
            )

    def test_names_unique_and_deterministic(self, onnxloss_variant: Variant) -> None:
        """Two rewrites give identical bytes; new names clash with nothing, even in a model
        that already uses every name the term picks."""
        v = onnxloss_variant
        model = self._toy(v, "multi")
        spec = self._term("pred", v.options) + 2.0 * self._term("pred", v.options, reduction="sum")
        rng = _rng(self.seed, type(self).__name__, "names", v.id)
        d = self._draw(rng, STATIC_BATCH, v.options, rewrite(model, spec))
        self._check_names(model, spec, d.feeds)

    def test_caller_model_untouched(self, onnxloss_variant: Variant) -> None:
        """The caller's model is only read, whatever the model kind."""
        for kind in ("single", "multi", "dynamic"):
            model = self._toy(onnxloss_variant, kind)
            output = self._output(kind, onnxloss_variant.options)
            self._check_untouched(
                model, self._term(output, onnxloss_variant.options, weight=SAMPLE_WEIGHT)
            )

    def test_composes_with_other_terms(self, onnxloss_variant: Variant) -> None:
        """Scaled, repeated, beside a built-in loss on another output and a penalty: the
        total is the sum of the parts."""
        v = onnxloss_variant
        rng = _rng(self.seed, type(self).__name__, "compose", v.id)
        extra = rng.normal(size=(3, 2)).astype(np.float32)
        model = self._toy(v, "multi", weights={"w_extra": extra})
        spec = (
            1.5 * self._term("pred", v.options, reduction="mean")
            + self._term("pred", v.options, reduction="sum", weight=SAMPLE_WEIGHT)
            + 0.5 * MSELoss("aux", reduction="mean")
            + L2Penalty("w_extra", 0.25)
        )
        new_inputs = self._new_inputs("pred_label", True) | {"aux_label"}
        result = self._check_model(model, spec, new_inputs)
        d = self._draw(rng, STATIC_BATCH, v.options, result)
        aux_label = rng.normal(size=d.feeds["P"].shape).astype(np.float32)
        w = rng.uniform(0.25, 2.0, size=STATIC_BATCH).astype(np.float32)
        feeds = {**d.feeds, "aux_label": aux_label, SAMPLE_WEIGHT: w}
        loss = run_model(result, feeds)[0]
        aux = 2.0 * d.prediction
        mse = ((aux - aux_label).reshape(STATIC_BATCH, -1) ** 2).sum(axis=1).mean()
        expected = (
            1.5 * self._expected(d, None, "mean", v.options)
            + self._expected(d, w.astype(np.float64), "sum", v.options)
            + 0.5 * mse
            + 0.25 * float((extra.astype(np.float64) ** 2).sum())
        )
        _allclose(loss, expected, self.rtol, self.atol, "composed loss vs sum of references")

    def test_gradient_matches_reference(self, onnxloss_gradient_variant: Variant) -> None:
        """onnxruntime-training builds the gradient graph, and its gradient with respect to
        every prediction matches finite differences of the reference (skipped without
        onnxruntime-training)."""
        self._require_training_runtime()
        v = onnxloss_gradient_variant
        model = self._toy(v, "single", full_batch_offset=True)
        output = self._output("single", v.options)
        result = rewrite(model, self._term(output, v.options, weight=SAMPLE_WEIGHT))
        rng = _rng(self.seed, type(self).__name__, "gradient", v.id)
        d = self._draw(rng, STATIC_BATCH, v.options, result)
        w = rng.uniform(0.25, 2.0, size=STATIC_BATCH).astype(np.float32)
        roles = self._roles(v.options)
        offsets = {"offset": None, **{f"offset_pred_{r}": r for r in roles}}
        loss, grads = onnxruntime_gradients(result, {**d.feeds, SAMPLE_WEIGHT: w}, list(offsets))
        w64 = w.astype(np.float64)
        _allclose(
            loss, self._expected(d, w64, "mean", v.options), self.rtol, self.atol,
            "onnxruntime-training's loss",
        )  # fmt: skip
        for offset, role in offsets.items():

            def objective(x: np.ndarray, role: str | None = role) -> float:
                if role is None:
                    moved = _Draw(d.feeds, x, d.target, d.others)
                else:
                    moved = _Draw(d.feeds, d.prediction, d.target, {**d.others, role: x})
                return self._expected(moved, w64, "mean", v.options)

            point = d.prediction if role is None else d.others[role]
            _allclose(
                grads[offset],
                numeric_gradient(objective, point),
                self.gradient_rtol,
                self.gradient_atol,
                f"gradient w.r.t. {'the prediction' if role is None else role} vs finite "
                "differences",
            )

    def test_rejects_invalid_prediction(self) -> None:
        """Outputs of a shape the loss cannot use are refused, naming the output."""
        if not self.invalid_prediction_shapes:
            pytest.skip(f"{type(self).__name__}.invalid_prediction_shapes is empty")
        options = dict(self.options[0])
        for shape in self.invalid_prediction_shapes:
            extra = {f"pred_{r}": tuple(shape) for r in self._roles(options)}
            model = toy_model("single", self.opsets[0], shape, extra_outputs=extra)
            output = "pred" if extra else None
            with pytest.raises(OnnxLossError, match="pred"):
                rewrite(model, self._term(output, options))


class RegularizerConformance(Conformance):
    """The conformance suite of a regularizer. Set :attr:`term`, :attr:`distribution`,
    and implement :meth:`reference`; override :meth:`sample_weights` for weights of a
    particular domain and :attr:`weight_shapes` for other shapes.

    Example::

        pytest_plugins = ["onnxloss.testing"]

        class TestMyPenalty(RegularizerConformance):
            term = MyPenalty
            distribution = "onnxloss-mypenalty"
            options = [{"alpha": 0.1}]

            def reference(self, weights, alpha=1.0):
                return alpha * sum(float(np.abs(w).max()) for w in weights)
    """

    _base_term: ClassVar[type[Term]] = Regularizer
    term: ClassVar[type[Regularizer]]
    #: Shapes of the float32 weights ``w0, w1, ...`` (and float64 ``f64_0, ...``) the toy
    #: models hold.
    weight_shapes: ClassVar[Sequence[tuple[int, ...]]] = ((4, 3), (3,), (2, 2, 3))
    selections: ClassVar[tuple[str, ...]] = ("one", "glob", "mixed")

    # -- what an author writes ------------------------------------------------------------------
    def reference(self, weights: list[np.ndarray], **options) -> float:
        """The penalty in numpy (float64) of the tensors ``weights``, in the order given."""
        raise NotImplementedError(f"{type(self).__name__} must implement reference()")

    def sample_weights(self, rng: np.random.Generator, shape: tuple[int, ...], **options):
        """A weight tensor of ``shape``. Default: standard normal."""
        return rng.normal(size=shape)

    # -- helpers ------------------------------------------------------------------------------
    def _construct(self, **kwargs: object) -> Regularizer:
        kwargs.setdefault("tensors", "w0")
        return self.term(**kwargs)

    @classmethod
    def _generic_invalid_options(cls) -> list[OPTIONS]:
        return [{"tensors": []}]

    @classmethod
    def _build_cases(cls, options: list[OPTIONS]) -> list[RegularizerCase]:
        return [
            RegularizerCase(kind, opset, selection, o)
            for o in options
            for kind, opset, selection in itertools.product(
                ("single", "multi", "dynamic"), cls.opsets, cls.selections
            )
        ]

    def _weights(self, rng: np.random.Generator, options: OPTIONS) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, shape in enumerate(self.weight_shapes):
            out[f"w{i}"] = np.asarray(self.sample_weights(rng, tuple(shape), **options), np.float32)
        for i, shape in enumerate(self.weight_shapes):
            out[f"f64_{i}"] = np.asarray(
                self.sample_weights(rng, tuple(shape), **options), np.float64
            )
        return out

    @staticmethod
    def _selected(selection: str, weights: dict[str, np.ndarray]) -> tuple[object, list[str]]:
        """The ``tensors`` argument of a selection and the names it matches, in order."""
        floats = [n for n in weights if n.startswith("w")]
        doubles = [n for n in weights if n.startswith("f64_")]
        if selection == "one":
            return floats[0], floats[:1]
        if selection == "glob":
            return "w*", floats
        if selection == "mixed":
            return [floats[0], "f64_*"], [floats[0], *doubles]
        raise ValueError(f"unknown selection {selection!r}")

    def _penalty(self, names: list[str], weights: dict[str, np.ndarray], options: OPTIONS):
        # The core casts each weight to the loss's float type before the term sees it.
        arrays = [weights[n].astype(np.float32).astype(np.float64) for n in names]
        return float(self.reference(arrays, **options))

    def _spec(self, output: str | None, tensors, options: OPTIONS) -> Spec:
        # Fed target == prediction, the squared error is exactly 0: the loss is the penalty.
        return MSELoss(output, reduction="sum") + self.term(tensors, **options)

    def _run(self, result: onnx.ModelProto, batch: int, rng, target: str = "label") -> float:
        p = rng.normal(size=(batch, 3)).astype(np.float32)
        return run_model(result, {"P": p, target: p})[0]

    # -- the checks ---------------------------------------------------------------------------
    def test_builds_valid_model(self, onnxloss_case: RegularizerCase) -> None:
        """Checker, strict shape inference, loss first and scalar, original graph kept."""
        case = onnxloss_case
        weights = self._weights(_rng(self.seed, type(self).__name__, case.id), case.options)
        model = toy_model(case.model, case.opset, weights=weights)
        tensors, _ = self._selected(case.selection, weights)
        output = "pred" if case.model == "multi" else None
        self._check_model(model, self._spec(output, tensors, case.options), {"label"})

    def test_matches_reference(self, onnxloss_case: RegularizerCase) -> None:
        """The penalty equals the numpy reference, whatever the batch."""
        case = onnxloss_case
        rng = _rng(self.seed, type(self).__name__, case.id)
        weights = self._weights(rng, case.options)
        model = toy_model(case.model, case.opset, weights=weights)
        tensors, names = self._selected(case.selection, weights)
        output = "pred" if case.model == "multi" else None
        result = rewrite(model, self._spec(output, tensors, case.options))
        expected = self._penalty(names, weights, case.options)
        batches = DYNAMIC_BATCHES if case.model == "dynamic" else (STATIC_BATCH,)
        for batch in batches:
            _allclose(
                self._run(result, batch, rng),
                expected,
                self.rtol,
                self.atol,
                f"{case.id}, batch {batch}: graph penalty vs reference",
            )

    def test_names_unique_and_deterministic(self, onnxloss_variant: Variant) -> None:
        """Two rewrites give identical bytes; new names clash with nothing, even in a model
        that already uses every name the term picks."""
        v = onnxloss_variant
        rng = _rng(self.seed, type(self).__name__, "names", v.id)
        weights = self._weights(rng, v.options)
        model = toy_model("multi", v.opset, weights=weights)
        spec = self._spec("pred", "w*", v.options) + 2.0 * self.term(["w0", "f64_*"], **v.options)
        p = rng.normal(size=(STATIC_BATCH, 3)).astype(np.float32)
        self._check_names(model, spec, {"P": p, "label": p})

    def test_caller_model_untouched(self, onnxloss_variant: Variant) -> None:
        """The caller's model is only read, whatever the model kind."""
        v = onnxloss_variant
        weights = self._weights(_rng(self.seed, "untouched", v.id), v.options)
        for kind in ("single", "multi", "dynamic"):
            model = toy_model(kind, v.opset, weights=weights)
            output = "pred" if kind == "multi" else None
            self._check_untouched(model, self._spec(output, ["w*", "f64_*"], v.options))

    def test_composes_with_other_terms(self, onnxloss_variant: Variant) -> None:
        """Scaled, repeated, beside a built-in loss and penalty: the total is the sum."""
        v = onnxloss_variant
        rng = _rng(self.seed, type(self).__name__, "compose", v.id)
        weights = self._weights(rng, v.options)
        model = toy_model("multi", v.opset, weights=weights)
        floats = [n for n in weights if n.startswith("w")]
        spec = (
            MSELoss("pred", reduction="mean")
            + 2.0 * self.term(floats[0], **v.options)
            + self.term("w*", **v.options)
            + L1Penalty("f64_0", 0.5)
        )
        result = self._check_model(model, spec, {"label"})
        p = rng.normal(size=(STATIC_BATCH, 3)).astype(np.float32)
        label = rng.normal(size=p.shape).astype(np.float32)
        loss = run_model(result, {"P": p, "label": label})[0]
        mse = ((p.astype(np.float64) - label) ** 2).sum(axis=1).mean()
        expected = (
            mse
            + 2.0 * self._penalty(floats[:1], weights, v.options)
            + self._penalty(floats, weights, v.options)
            + 0.5 * float(np.abs(weights["f64_0"].astype(np.float32).astype(np.float64)).sum())
        )
        _allclose(loss, expected, self.rtol, self.atol, "composed loss vs sum of references")

    def test_gradient_matches_reference(self, onnxloss_gradient_variant: Variant) -> None:
        """onnxruntime-training builds the gradient graph, and its gradient with respect to
        every penalised weight matches finite differences of the reference (skipped without
        onnxruntime-training)."""
        self._require_training_runtime()
        v = onnxloss_gradient_variant
        rng = _rng(self.seed, type(self).__name__, "gradient", v.id)
        weights = {n: w for n, w in self._weights(rng, v.options).items() if n.startswith("w")}
        model = toy_model("single", v.opset, weights=weights)
        names = list(weights)
        result = rewrite(model, self._spec(None, "w*", v.options))
        p = rng.normal(size=(STATIC_BATCH, 3)).astype(np.float32)
        loss, grads = onnxruntime_gradients(result, {"P": p, "label": p}, names)
        _allclose(
            loss,
            self._penalty(names, weights, v.options),
            self.rtol,
            self.atol,
            "onnxruntime-training's loss",
        )
        for name in names:

            def objective(w: np.ndarray, name: str = name) -> float:
                arrays = [w if n == name else weights[n].astype(np.float64) for n in names]
                return float(self.reference(arrays, **v.options))

            fd = numeric_gradient(objective, weights[name].astype(np.float64))
            _allclose(
                grads[name],
                fd,
                self.gradient_rtol,
                self.gradient_atol,
                f"gradient w.r.t. '{name}' vs finite differences",
            )
