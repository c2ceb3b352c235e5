"""Readiness check: what would stop onnxruntime-training 1.19.2 (or, with
``backend="onnxruntime"``, the :mod:`onnxloss.autodiff` pass on plain onnxruntime) from
training a model, found before any training and each with a fix.

``check_trainable(model, weights)`` follows the paths from the tensors to train to the loss
(the first output, which the runtime differentiates) and reports:

* operators on those paths without a gradient, or in a form the runtime cannot
  differentiate, by node name and op type (from the measured tables of
  :mod:`onnxloss.gradient_ops`), with the pass that rewrites them when there is one;
* tensors to train that are missing, not float32, not initializers, or that do not reach
  the loss through differentiable operators (when none are named, the default weights of
  :func:`default_trainables`, with the initializers it left out and why);
* an ai.onnx opset outside 11–21 and an IR version above 10;
* outputs declared with a type or shape their nodes do not compute (the gradient build
  stops on the contradiction);
* a loss that is missing, not the first output or not a float32 tensor.

A node matters only when it lies on a path from a trained tensor to the loss: it takes a
value computed from a trained tensor (through float tensors; integer and bool tensors carry
no gradient) and one of its float outputs leads to the loss. Nodes inside the subgraphs of
an ``If``/``Loop``/``Scan`` on such a path are checked conservatively (every node fed by a
trained value). The check never imports onnxruntime.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from .errors import OnnxLossError
from .gradient_ops import DIFFERENTIABLE_TYPES, ML_DOMAIN, RUNTIME, gradient_support
from .model_index import DEFAULT_DOMAINS, MIN_OPSET, subgraphs
from .model_io import ModelLike, load_model
from .rewrite import read_metadata
from .tensor_info import FLOAT_TYPES, TensorInfo
from .trainables import (
    default_weights,
    implicit_inputs,
    non_differentiable_positions,
    stops_gradient,
)

RUNTIME_OPSETS = (11, 21)
RUNTIME_MAX_IR = 10
#: The training paths the check knows: onnxruntime-training's gradient builder, or the
#: onnxloss.autodiff pass whose graphs plain onnxruntime runs.
BACKENDS = ("onnxruntime-training", "onnxruntime")
AUTODIFF = "onnxloss.autodiff (the gradient pass for plain onnxruntime)"

#: ai.onnx.ml operators that keep trainable-looking parameters in attributes.
_ML_PARAMETER_OPS = {
    "LinearRegressor": "LinearRegressorToMatMul",
    "LinearClassifier": "LinearClassifierToMatMul",
    "SVMRegressor": None,
    "SVMClassifier": None,
    "TreeEnsembleRegressor": None,
    "TreeEnsembleClassifier": None,
    "TreeEnsemble": None,
}
#: Shown when a node list is long.
_SHOWN_NODES = 5


class NotTrainableError(OnnxLossError):
    """The readiness check found problems that stop onnxruntime-training; the message lists
    every one with its fix."""


@dataclass(frozen=True)
class Problem:
    """One thing in the way of training.

    Attributes:
        severity: ``"error"`` (training cannot work) or ``"warning"`` (it may not, or
            something is done for you).
        kind: a short code: ``no-gradient``, ``gradient-form``, ``no-cpu-kernel``,
            ``crashes-runtime``, ``unknown-gradient``, ``trainable-missing``,
            ``trainable-dtype``, ``trainable-input``, ``trainable-unreachable``,
            ``no-trainables``, ``opset``, ``ir-version``, ``output-shape``, ``loss-missing``,
            ``loss-position``, ``loss-dtype``, ``loss-shape``, ``no-loss``, ``domain``.
        subject: the node(s), tensor or version concerned.
        message: what is wrong, naming the culprit.
        fix: what would be right, naming the pass that does it when there is one.
    """

    severity: str
    kind: str
    subject: str
    message: str
    fix: str

    def line(self) -> str:
        """The problem on one line: ``error: <message>. Fix: <fix>``."""
        return f"{self.severity}: {self.message}. Fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class TrainabilityReport:
    """What :func:`check_trainable` found.

    Attributes:
        trainables: the tensors checked as weights to train.
        loss_outputs: the output(s) the paths lead to (the loss, or every float output of
            an inference model).
        path_nodes: names (or op types) of the main-graph nodes on the gradient path.
        problems: everything in the way, errors first.
        left_out: when no weights were named, the float initializers the default left out
            of ``trainables``, each with the reason (a scalar constant, Resize scales, Clip
            bounds, unused...); see :func:`default_trainables`.
    """

    trainables: list[str]
    loss_outputs: list[str]
    path_nodes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    backend: str = "onnxruntime-training"

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing blocks training (warnings may remain)."""
        return not self.errors

    def format(self) -> str:
        """A summary line, then one line per problem."""
        if self.ok:
            head = (
                f"ready to train {self.trainables} towards {self.loss_outputs} "
                f"({len(self.path_nodes)} nodes on the gradient path)"
            )
        else:
            head = f"not trainable: {len(self.errors)} problem(s) block training"
        if self.warnings:
            head += f", {len(self.warnings)} warning(s)"
        return "\n".join([head, *self._left_out_lines(), *(p.line() for p in self.problems)])

    def _left_out_lines(self) -> list[str]:
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.left_out.items():
            by_reason.setdefault(reason, []).append(repr(name))
        return [
            f"left out of the default weights: {', '.join(names)} ({reason})"
            for reason, names in by_reason.items()
        ]

    def raise_for_errors(self) -> None:
        """Raise :class:`NotTrainableError` listing every error, if there is one."""
        if self.errors:
            lines = "; ".join(p.line() for p in self.errors)
            who = AUTODIFF if self.backend == "onnxruntime" else RUNTIME
            raise NotTrainableError(
                f"{who} cannot train this model ({len(self.errors)} problem(s)): {lines}"
            )


def check_trainable(
    model: ModelLike,
    weights: Sequence[str] | None = None,
    *,
    loss_output: str | None = None,
    device: str | None = "cpu",
    backend: str = "onnxruntime-training",
) -> TrainabilityReport:
    """Report everything that stops onnxruntime-training 1.19.2 from training ``model``.

    Args:
        model: a ``ModelProto`` (never modified) or a path; a loss model (first output the
            loss) or an inference model (the paths to every float output are checked).
        weights: names of the tensors to train; None takes every float initializer of rank
            >= 1 (what :class:`~onnxloss.train.OrtGradientOptimizer` trains by default).
        loss_output: the loss output's name; None reads it from the metadata
            :func:`onnxloss.rewrite` writes, and takes the model as an inference model
            without one.
        device: ``"cpu"`` (missing CPU gradient kernels are errors), ``"cuda"``, or None
            (unknown: they are warnings).
        backend: ``"onnxruntime-training"`` (its gradient builder, opset 11–21, IR <= 10,
            float32 weights) or ``"onnxruntime"``: the :mod:`onnxloss.autodiff` pass, whose
            graphs plain onnxruntime runs; then an operator on the path without a gradient
            rule (or in a form its rule does not handle) is the error, any float type
            trains, opsets from 13 are accepted, and onnxruntime 1.19.2's opset 21 / IR 10
            limits are warnings (newer onnxruntime releases load newer models).

    Returns:
        A :class:`TrainabilityReport`; ``report.ok`` is False when training cannot work,
        ``report.raise_for_errors()`` turns that into a :class:`NotTrainableError`.
    """
    model = load_model(model, load_external_data=False)
    if weights is not None and (isinstance(weights, str) or not _all_str(weights)):
        raise OnnxLossError(f"weights must be a list of tensor names, got {weights!r}")
    if backend not in BACKENDS:
        raise OnnxLossError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return _Checker(model, weights, loss_output, device, backend).run()


def default_trainables(model: onnx.ModelProto) -> list[str]:
    """The tensors trained when none are named: every float initializer of rank >= 1 from
    which a differentiable path leads to a float output. Scalars (constants such as
    skl2onnx's 'unity') and initializers that only feed shape, index, bound or statistics
    inputs (Resize scales, Reshape shapes, Clip bounds...) are left out; see
    :mod:`onnxloss.trainables` (``TrainabilityReport.left_out`` says why each one was)."""
    return default_weights(model).names


def _all_str(values: Iterable) -> bool:
    return all(isinstance(v, str) and v for v in values)


class _Checker:
    def __init__(self, model, weights, loss_output, device, backend="onnxruntime-training"):
        from .passes.node_rules import RewriteContext  # the passes' view of types and names

        self.model = model
        self.graph = model.graph
        self.weights = None if weights is None else list(dict.fromkeys(weights))
        self.loss_output = loss_output
        self.device = device
        self.backend = backend
        self.autodiff = backend == "onnxruntime"
        self.problems: list[Problem] = []
        self.opset = next(
            (op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS), None
        )
        self.context = RewriteContext(model) if self.opset is not None else None
        self.infos: dict[str, TensorInfo] = self.context.infos if self.context else {}
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.left_out: dict[str, str] = {}

    def add(self, severity: str, kind: str, subject: str, message: str, fix: str) -> None:
        self.problems.append(Problem(severity, kind, subject, message, fix))

    def error(self, kind: str, subject: str, message: str, fix: str) -> None:
        self.add("error", kind, subject, message, fix)

    def warning(self, kind: str, subject: str, message: str, fix: str) -> None:
        self.add("warning", kind, subject, message, fix)

    def run(self) -> TrainabilityReport:
        self.check_versions()
        self.check_declarations()
        targets = self.check_loss()
        trainables = self.check_trainables()
        path = self.check_paths(trainables, targets) if targets else []
        order = {"error": 0, "warning": 1}
        problems = sorted(self.problems, key=lambda p: order[p.severity])
        return TrainabilityReport(
            self.trainable_names, targets, path, problems, self.left_out, self.backend
        )

    # -- versions ---------------------------------------------------------------------------
    def check_versions(self) -> None:
        if self.autodiff:
            self._check_versions_autodiff()
            return
        low, high = RUNTIME_OPSETS
        if self.opset is None:
            self.error(
                "opset",
                "ai.onnx",
                "the model imports no ai.onnx opset",
                f"add one between {low} and {high} to model.opset_import",
            )
        elif not low <= self.opset <= high:
            target = min(max(self.opset, MIN_OPSET), high)
            self.error(
                "opset",
                f"ai.onnx {self.opset}",
                f"the model uses ai.onnx opset {self.opset}; {RUNTIME} builds gradients for "
                f"opsets {low} to {high}",
                f"onnxloss.passes.ConvertOpset({target}) converts it (make_trainable does)",
            )
        for op in self.model.opset_import:
            if op.domain not in (*DEFAULT_DOMAINS, ML_DOMAIN, "com.microsoft"):
                self.warning(
                    "domain",
                    op.domain,
                    f"the model imports domain '{op.domain}'; the runtime may not implement it",
                    "check that onnxruntime has kernels for its operators",
                )
        if self.model.ir_version > RUNTIME_MAX_IR:
            from .passes.versions import required_ir_version

            need, why = required_ir_version(self.model)
            ir = self.model.ir_version
            if need <= RUNTIME_MAX_IR:
                self.warning(
                    "ir-version",
                    f"IR {ir}",
                    f"IR version {ir} is above {RUNTIME_MAX_IR}, which onnxruntime 1.19.2 refuses "
                    "to load; nothing in the model needs it, and OrtGradientOptimizer lowers it",
                    "onnxloss.passes.LowerIRVersion() sets it to 10 for other tools",
                )
            else:
                self.error(
                    "ir-version",
                    f"IR {ir}",
                    f"IR version {ir} is above {RUNTIME_MAX_IR}, which onnxruntime 1.19.2 "
                    f"refuses to load, and {why} needs IR version {need}",
                    "remove or convert what needs the newer IR version, then "
                    "onnxloss.passes.LowerIRVersion()",
                )

    # -- declarations -----------------------------------------------------------------------
    def check_declarations(self) -> None:
        """Outputs declared with a type or shape their nodes do not compute: inference
        runtimes let it pass, the gradient build stops on it ("Inferred shape and existing
        shape differ")."""
        from .passes.structure import declaration_conflicts

        if self.opset is None:
            return
        conflicts = declaration_conflicts(self.model)
        if not conflicts:
            return
        if read_metadata(self.model) is None:
            fix = (
                "onnxloss.passes.RedeclareOutputs() declares them again from shape inference "
                "(make_trainable does)"
            )
        else:  # the loss's targets took their shapes from the wrong declarations
            fix = (
                "apply onnxloss.passes.RedeclareOutputs() (or make_trainable) to the inference "
                "model, then add the loss again: its targets take the outputs' shapes"
            )
        self.error(
            "output-shape",
            ", ".join(c.name for c in conflicts),
            "; ".join(c.describe() for c in conflicts)
            + f"; {RUNTIME} cannot build gradients for a graph that contradicts its "
            "declarations",
            fix,
        )

    def _check_versions_autodiff(self) -> None:
        from .model_index import MAX_OPSET

        if self.opset is None or not MIN_OPSET <= self.opset <= MAX_OPSET:
            found = "no ai.onnx opset" if self.opset is None else f"ai.onnx opset {self.opset}"
            self.error(
                "opset",
                "ai.onnx" if self.opset is None else f"ai.onnx {self.opset}",
                f"the model has {found}; {AUTODIFF} emits gradients for opsets {MIN_OPSET} to "
                f"{MAX_OPSET}",
                f"onnxloss.passes.ConvertOpset({min(max(self.opset or 0, MIN_OPSET), 21)}) "
                "converts it",
            )
        elif self.opset > RUNTIME_OPSETS[1] or self.model.ir_version > RUNTIME_MAX_IR:
            self.warning(
                "runtime-version",
                f"ai.onnx {self.opset}, IR {self.model.ir_version}",
                f"onnxruntime 1.19.2 loads ai.onnx opsets up to {RUNTIME_OPSETS[1]} and IR "
                f"versions up to {RUNTIME_MAX_IR}; this model has opset {self.opset}, IR "
                f"{self.model.ir_version}",
                "use a newer onnxruntime release, or onnxloss.passes.ConvertOpset(21) and "
                "LowerIRVersion()",
            )
        for op in self.model.opset_import:
            if op.domain not in (*DEFAULT_DOMAINS, ML_DOMAIN):
                self.warning(
                    "domain",
                    op.domain,
                    f"the model imports domain '{op.domain}'; plain onnxruntime may not "
                    "implement it",
                    "check that the runtime has kernels for its operators",
                )

    # -- loss -------------------------------------------------------------------------------
    def check_loss(self) -> list[str]:
        outputs = [o.name for o in self.graph.output]
        name = self.loss_output
        if name is None:
            meta = read_metadata(self.model)
            name = meta.get("loss") if meta else None
        if name is None:
            floats = []
            for o in self.graph.output:
                if o.type.HasField("tensor_type"):
                    elem = o.type.tensor_type.elem_type
                    if not elem or elem in FLOAT_TYPES:
                        floats.append(o.name)
                elif self._produced_by(o.name, "ZipMap"):
                    self.warning(
                        "no-loss",
                        o.name,
                        f"output '{o.name}' holds the probabilities as a sequence of maps "
                        "(ZipMap); a loss needs a tensor",
                        "onnxloss.passes.ZipMapToTensor() (or convert with "
                        "options={'zipmap': False})",
                    )
            if not floats:
                kinds = [f"'{o.name}' ({_value_type(o)})" for o in self.graph.output]
                self.error(
                    "no-loss",
                    "outputs",
                    "the model has no loss output (no onnxloss metadata and no loss_output "
                    f"given) and no float tensor output to put one on (outputs: "
                    f"{', '.join(kinds) or 'none'})",
                    "a loss needs float scores or probabilities: output them (not only "
                    "predicted labels), or name the loss with loss_output / --loss-output",
                )
                return []
            self.warning(
                "no-loss",
                "outputs",
                f"the model has no loss output (no onnxloss metadata and no loss_output given); "
                f"the paths to its float outputs {floats} were checked instead",
                "add a loss with onnxloss.rewrite or onnxloss.passes.AddLoss (the runtime "
                "differentiates the FIRST output), or name it with loss_output / --loss-output",
            )
            return floats
        if name not in outputs:
            self.error(
                "loss-missing",
                name,
                f"the model has no output named '{name}'; its outputs are {outputs}",
                "pass the name of the scalar loss output, or add one with onnxloss.rewrite",
            )
            return []
        if outputs[0] != name and not self.autodiff:  # autodiff takes loss_output by name
            self.error(
                "loss-position",
                name,
                f"the loss '{name}' is output #{outputs.index(name)} of {outputs}; the runtime "
                "differentiates the FIRST output",
                "move it first (onnxloss.rewrite puts the loss first)",
            )
        info = TensorInfo.from_value_info(self.graph.output[outputs.index(name)])
        if info is None or not info.elem_type or info.shape is None:
            info = self.infos.get(name, info)  # what shape inference knows
        float32_only = not self.autodiff or info is None or info.elem_type not in FLOAT_TYPES
        if (
            info is not None
            and info.elem_type
            and info.elem_type != TensorProto.FLOAT
            and float32_only
        ):
            self.error(
                "loss-dtype",
                name,
                f"the loss {info.describe()} is not float32; {RUNTIME} differentiates float32 "
                "losses only",
                "convert the model with onnxloss.passes.ToFloat32() before adding the loss",
            )
        elif info is not None and info.shape not in (None, ()):
            self.warning(
                "loss-shape",
                name,
                f"the loss {info.describe()} is not a scalar; the runtime differentiates the "
                "sum of its elements",
                "reduce it to a scalar (onnxloss.rewrite does)",
            )
        return [name]

    def _produced_by(self, name: str, op_type: str) -> bool:
        return any(n.op_type == op_type and name in n.output for n in self.graph.node)

    # -- trainables -------------------------------------------------------------------------
    def check_trainables(self) -> list[str]:
        """The valid-looking trainables (float initializers) for the path analysis."""
        inputs = {i.name for i in self.graph.input}
        constants = {n.output[0] for n in self.graph.node if n.op_type == "Constant" and n.output}
        floats = [n for n, t in self.initializers.items() if t.data_type in FLOAT_TYPES]
        if self.weights is None:
            defaults = default_weights(self.model, self.infos if self.context else None)
            names, self.left_out = defaults.names, defaults.left_out
            if not names:
                self._no_trainables()
        else:
            names = self.weights
            if not names:
                self.error(
                    "no-trainables",
                    "weights",
                    "the list of weights is empty",
                    "name the initializers to train",
                )
        self.trainable_names = list(names)
        usable = []
        for name in names:
            tensor = self.initializers.get(name)
            if tensor is not None:
                if name in inputs and not self.autodiff:
                    self.error(
                        "trainable-input",
                        name,
                        f"'{name}' is an initializer also listed as a graph input (an "
                        "overridable default); the runtime refuses it (duplicate definition)",
                        "onnxloss.passes.InitializersNotInputs() removes it from the inputs "
                        "(make_trainable does)",
                    )
                if tensor.data_type == TensorProto.FLOAT or (
                    self.autodiff and tensor.data_type in FLOAT_TYPES
                ):
                    usable.append(name)
                elif tensor.data_type in FLOAT_TYPES:
                    kind = TensorProto.DataType.Name(tensor.data_type)
                    self.error(
                        "trainable-dtype",
                        name,
                        f"'{name}' is {kind}; {RUNTIME} trains float32 initializers only",
                        "onnxloss.passes.ToFloat32() converts the model to float32 "
                        + ("(make_trainable does)" if kind == "DOUBLE" else f"(types=[{kind}])"),
                    )
                    usable.append(name)
                else:
                    kind = TensorProto.DataType.Name(tensor.data_type)
                    self.error(
                        "trainable-dtype",
                        name,
                        f"'{name}' is a {kind} tensor; only float tensors have gradients",
                        "leave it out of the weights",
                    )
            elif name in inputs and self.autodiff:
                usable.append(name)  # the gradient pass differentiates inputs too
            elif name in inputs:
                self.error(
                    "trainable-input",
                    name,
                    f"'{name}' is a graph input, not an initializer; the runtime trains "
                    "initializers only",
                    "store its initial value in graph.initializer and remove it from graph.input",
                )
            elif name in constants:
                self.error(
                    "trainable-input",
                    name,
                    f"'{name}' is the output of a Constant node, not an initializer",
                    "turn the Constant into an initializer of the same name",
                )
            else:
                self._missing(name, floats)
        return usable

    def _ml_parameter_nodes(self) -> list[onnx.NodeProto]:
        return [
            n for n in self.graph.node if n.domain == ML_DOMAIN and n.op_type in _ML_PARAMETER_OPS
        ]

    def _left_alone_because(self, rule, node: onnx.NodeProto) -> str:
        """Why ``rule`` would leave ``node`` alone ("" when it rewrites it)."""
        from .passes.node_rules import NodeView

        if self.context is None:
            return "the model has no ai.onnx opset"
        return rule.explain(NodeView(node, self.context))

    def _ml_convertible(self, node: onnx.NodeProto) -> str:
        """Why the pass for an ML operator holding coefficients leaves it alone ("" when it
        rewrites it; "no pass" when there is none)."""
        from .passes import ml_ops

        name = _ML_PARAMETER_OPS[node.op_type]
        return self._left_alone_because(getattr(ml_ops, name)(), node) if name else "no pass"

    def _ml_hint(self) -> str:
        nodes = self._ml_parameter_nodes()
        if not nodes:
            return ""
        hints = []
        for node in nodes:
            described = f"{node.op_type} '{node.name}'"
            reason = self._ml_convertible(node)
            if reason == "no pass":
                hints.append(
                    f"{described} keeps its parameters in attributes and is piecewise "
                    "constant: gradient descent cannot train it"
                )
            elif reason:
                hints.append(
                    f"{described} keeps its coefficients in attributes and "
                    f"onnxloss.passes.{_ML_PARAMETER_OPS[node.op_type]}() leaves it alone "
                    f"({reason})"
                )
            else:
                hints.append(
                    f"{described} keeps its coefficients in attributes: "
                    f"onnxloss.passes.{_ML_PARAMETER_OPS[node.op_type]}() turns them into the "
                    "initializers 'coef' and 'intercept' (make_trainable does)"
                )
        return "; " + "; ".join(hints)

    def _no_trainables(self) -> None:
        hint = self._ml_hint()
        reasons = [self._ml_convertible(n) for n in self._ml_parameter_nodes()]
        fix = (
            "apply the pass named above, then train 'coef' and 'intercept'"
            if "" in reasons
            else "write the model with standard operators over initializers, or convert it "
            "with options that do"
            if any(r != "no pass" for r in reasons)
            else "train it with the library it comes from and convert it again"
            if reasons
            else "name the tensors to train"
        )
        what = "the model has no float initializer of rank >= 1 to train"
        if any(self.initializers[n].dims for n in self.left_out):
            shown = ", ".join(f"'{n}' ({why})" for n, why in list(self.left_out.items())[:3])
            what = f"the model has no weight to train (float initializers left out: {shown})"
        self.error("no-trainables", "weights", f"{what}{hint}", fix)

    def _missing(self, name: str, floats: list[str]) -> None:
        close = difflib.get_close_matches(name, floats, n=3)
        shown = ", ".join(repr(n) for n in floats[:12]) + (" ..." if len(floats) > 12 else "")
        hint = self._ml_hint()
        if close:
            fix = f"did you mean {', '.join(map(repr, close))}? Float initializers: [{shown}]"
        elif "" in [self._ml_convertible(n) for n in self._ml_parameter_nodes()]:
            fix = "apply the pass named above first"
        elif hint:
            fix = "name a tensor the model has (the operator named above holds no initializer)"
        else:
            fix = f"name one of the float initializers: [{shown}]"
        self.error(
            "trainable-missing",
            name,
            f"there is no tensor named '{name}' in the model{hint}",
            fix,
        )

    # -- paths ------------------------------------------------------------------------------
    def differentiable(self, name: str) -> bool:
        info = self.infos.get(name)
        return info is None or not info.elem_type or info.elem_type in DIFFERENTIABLE_TYPES

    def check_paths(self, trainables: list[str], targets: list[str]) -> list[str]:
        path = gradient_path(
            self.graph.node,
            trainables,
            targets,
            differentiable=self.differentiable,
            skipped_inputs=self._skipped,
            stops=self._stops,
        )
        needed, live, on_path = path.needed, path.live, path.nodes
        for name in trainables:
            if name not in needed:
                self.error(
                    "trainable-unreachable",
                    name,
                    f"'{name}' does not reach the loss {targets} through differentiable "
                    "operators (unused, used only by integer/bool computations, by inputs that "
                    "take shapes, bounds or statistics such as Clip bounds or Resize scales, by "
                    "random or range operators, or by another output); the runtime refuses it",
                    "leave it out of the weights",
                )
        inner = []
        for node in on_path:
            inner += self._subgraph_path(node, live)
        self._report_nodes([*on_path, *inner])
        return [n.name or n.op_type for n in on_path]

    def _skipped(self, node: onnx.NodeProto) -> frozenset[int]:
        if self.autodiff:
            rule = _gradient_rule(node)
            return rule.non_differentiable if rule is not None else frozenset()
        return non_differentiable_positions(node)

    def _fed(self, node: onnx.NodeProto, live: set[str]) -> bool:
        return _fed(node, live, self._skipped(node))

    def _stops(self, node: onnx.NodeProto) -> bool:
        return stops_gradient(node)

    def _subgraph_path(self, node: onnx.NodeProto, live: set[str]) -> list[onnx.NodeProto]:
        """Nodes inside the subgraphs of an on-path node fed by a trained value (conservative:
        every formal input of the subgraph counts as trained)."""
        found = []
        for sub in subgraphs(node):
            inner_live = set(live) | {i.name for i in sub.input}
            for inner in sub.node:
                if self._fed(inner, inner_live):
                    found.append(inner)
                    if not stops_gradient(inner):
                        inner_live.update(o for o in inner.output if o)
                    found += self._subgraph_path(inner, inner_live)
        return found

    def _report_nodes(self, nodes: list[onnx.NodeProto]) -> None:
        if self.autodiff:
            self._report_rules(nodes)
            return
        groups: dict[tuple[str, str, str, str], list[str]] = {}
        for node in nodes:
            support = gradient_support(node, self.opset or 0)
            if support.status in ("ok", "stop"):
                continue
            if support.status == "cpu" and self.device not in ("cpu", None):
                continue
            fix = self._fix_for(node, support.status)
            key = (support.status, _op_name(node), support.reason, fix)
            groups.setdefault(key, []).append(node.name or f"<unnamed {node.op_type}>")
        for (status, op, reason, fix), names in groups.items():
            severity, kind = _STATUS[status]
            if status == "cpu" and self.device is None:
                severity = "warning"
            self.add(severity, kind, ", ".join(names), f"{_describe(names, op)}: {reason}", fix)

    def _report_rules(self, nodes: list[onnx.NodeProto]) -> None:
        """The nodes onnxloss.autodiff has no rule for, or whose form its rule refuses."""
        from .autodiff.node import GradientNode

        groups: dict[tuple[str, str, str, str], list[str]] = {}
        for node in nodes:
            rule = _gradient_rule(node)
            if rule is None:
                kind, reason = "no-gradient-rule", f"{AUTODIFF} has no gradient rule for it"
            elif rule.check is not None and self.context is not None:
                reason = rule.check(GradientNode(node, self.context, None, []))
                if not reason:
                    continue
                kind = "gradient-form"
                reason = f"the gradient rule for {rule.operator} does not handle it: {reason}"
            else:
                continue
            fix = self._fix_for(node, "none") if kind == "no-gradient-rule" else ""
            if not fix.startswith("onnxloss.passes."):
                fix = (
                    "register a rule with the onnxloss_register_gradients hook (see the "
                    "autodiff guide), rewrite the node, or leave the weights before it out of "
                    "training"
                )
            key = (kind, _op_name(node), reason, fix)
            groups.setdefault(key, []).append(node.name or f"<unnamed {node.op_type}>")
        for (kind, op, reason, fix), names in groups.items():
            self.error(kind, ", ".join(names), f"{_describe(names, op)}: {reason}", fix)

    def _fix_for(self, node: onnx.NodeProto, status: str) -> str:
        from .passes import DECOMPOSITIONS, ML_RULES

        if status == "crash":
            return "move the loop out of the gradient path or unroll it"
        if status == "cpu":
            return "train on CUDA (the train-gpu extra), or replace the operator"
        if node.op_type in ("LayerNormalization", "Dropout", "SoftmaxCrossEntropyLoss"):
            return "onnxloss.passes.DeclareGradientOutputs() declares them (make_trainable does)"
        if node.op_type == "Transpose":
            return (
                "onnxloss.passes.ExplicitTransposePerm() writes it out when the input rank is "
                "known (make_trainable does)"
            )
        if node.op_type == "ZipMap" and node.domain == ML_DOMAIN:
            return "onnxloss.passes.ZipMapToTensor() (or convert with options={'zipmap': False})"
        domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
        for rule in (cls() for cls in (*DECOMPOSITIONS, *ML_RULES)):
            if rule.op_type == node.op_type and (rule.domain or "") == domain:
                reason = self._left_alone_because(rule, node)
                if not reason:
                    return (
                        f"onnxloss.passes.{rule.name}() rewrites it as {rule.formula} "
                        "(make_trainable does)"
                    )
                return (
                    f"onnxloss.passes.{rule.name}() leaves this node alone ({reason}); "
                    "replace it by hand, or leave the weights before it out of training"
                )
        if status == "unknown":
            return "if generation fails on it, replace it or leave the weights before it untrained"
        return "no pass rewrites it: replace it, or leave the weights before it out of training"


_STATUS = {
    "none": ("error", "no-gradient"),
    "form": ("error", "gradient-form"),
    "cpu": ("error", "no-cpu-kernel"),
    "crash": ("error", "crashes-runtime"),
    "unknown": ("warning", "unknown-gradient"),
}


def _value_type(value: onnx.ValueInfoProto) -> str:
    """``INT64 tensor``, ``sequence``, ``map``: what an output holds, for messages."""
    info = TensorInfo.from_value_info(value)
    return f"{info.type_name} tensor" if info is not None else TensorInfo.value_kind(value)


def _op_name(node: onnx.NodeProto) -> str:
    domain = "" if node.domain in DEFAULT_DOMAINS else f"{node.domain}."
    return f"{domain}{node.op_type}"


def _describe(names: list[str], op: str) -> str:
    if len(names) == 1:
        return f"node '{names[0]}' ({op}) on the gradient path"
    shown = ", ".join(f"'{n}'" for n in names[:_SHOWN_NODES])
    more = f" and {len(names) - _SHOWN_NODES} more" if len(names) > _SHOWN_NODES else ""
    return f"{len(names)} {op} nodes on the gradient path ({shown}{more})"


@dataclass
class GradientPath:
    """The part of a graph that gradients flow through, from trained tensors to targets.

    Attributes:
        nodes: the nodes on a path from a trained tensor to a target, in graph order: fed
            by a live value and with a differentiable output whose gradient is needed.
        live: names of the values computed from a trained tensor through differentiable
            edges (the trained tensors included).
        needed: names of the values whose gradient the targets need (the targets included):
            a trained tensor missing from it does not reach them.
    """

    nodes: list[onnx.NodeProto]
    live: set[str]
    needed: set[str]


def gradient_path(
    nodes: Sequence[onnx.NodeProto],
    trainables: Iterable[str],
    targets: Iterable[str],
    *,
    differentiable: Callable[[str], bool],
    skipped_inputs: Callable[[onnx.NodeProto], frozenset[int]],
    stops: Callable[[onnx.NodeProto], bool] = stops_gradient,
) -> GradientPath:
    """Follow the paths from ``trainables`` to ``targets`` through the topologically sorted
    ``nodes`` of one graph.

    A forward sweep marks the values computed from a trained tensor (``live``): a node is
    fed when one of its inputs, other than those ``skipped_inputs(node)`` lists, or a name
    its subgraphs read from the enclosing scope is live; its ``differentiable`` outputs
    become live unless ``stops(node)``. A backward sweep from the targets marks the values
    whose gradient is needed. Integer and bool values (``differentiable`` is False) cut
    both sweeps. Used by the readiness check and by :mod:`onnxloss.autodiff`, each with its
    own idea of which inputs carry no gradient.
    """
    live = set(trainables)
    touched: list[bool] = []
    for node in nodes:
        hit = _fed(node, live, skipped_inputs(node))
        touched.append(hit)
        if hit and not stops(node):
            live.update(o for o in node.output if o and differentiable(o))
    needed = set(targets)
    on_path: list[onnx.NodeProto] = []
    for node, hit in zip(reversed(nodes), reversed(touched), strict=True):
        outs = [o for o in node.output if o in needed and differentiable(o)]
        if not outs or stops(node):
            continue
        skip = skipped_inputs(node)
        names = [i for k, i in enumerate(node.input) if i and k not in skip]
        names += sorted(implicit_inputs(node))
        needed.update(n for n in names if differentiable(n))
        if hit and any(o in live for o in outs):
            on_path.append(node)
    on_path.reverse()
    return GradientPath(on_path, live, needed)


def _gradient_rule(node: onnx.NodeProto):
    from .registry import get_registry

    return get_registry().gradient_rule(node.op_type, node.domain)


def _fed(node: onnx.NodeProto, live: set[str], skip: frozenset[int]) -> bool:
    if any(i in live for k, i in enumerate(node.input) if i and k not in skip):
        return True
    return any(name in live for name in implicit_inputs(node))
