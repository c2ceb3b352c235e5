"""The ``onnxloss`` command line.

``onnxloss add-loss MODEL OUT [options]``
    the command-line form of :func:`onnxloss.add_loss_output`; writes OUT atomically.
``onnxloss plugins``
    registered losses and regularizers, the plugin and distribution of each, and any
    plugin that failed to load.
``onnxloss draw MODEL [-o out.svg]``
    a picture of a (loss) graph: rendered by Graphviz when installed, else DOT source or
    the ONNX text format.
``onnxloss check MODEL [--weights a,b] [--loss-output NAME] [--backend B]``
    the readiness check (:func:`onnxloss.check_trainable`): every problem that would stop
    onnxruntime-training (or, with ``--backend onnxruntime``, the autodiff pass) from
    training MODEL, one per line with its fix; exits 0 when nothing blocks training
    (warnings may remain), 1 when something does.
``onnxloss train-graph MODEL OUT [--weights a,b] [--optimizer sgd|adamw] [--max-grad-norm X]``
    the training-step model of a loss model (:func:`onnxloss.autodiff.training_step`):
    gradient and optimizer update in standard ONNX, for any runtime; writes OUT atomically.
``onnxloss demo``
    trains a small linear regression and compares it with least squares
    (needs the ``train`` extra).

A user error prints one line on stderr and exits with status 2; no output file is left.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import OnnxLossError, PenaltyError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other user error
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def parse_penalty(text: str) -> tuple[str, object]:
    """``coef:0.01`` → ``('coef', 0.01)``; ``coef:l1=0.1,l2=0.01`` →
    ``('coef', {'l1': 0.1, 'l2': 0.01})``. The last ``:`` separates name and value, so
    tensor names may themselves contain colons.
    """
    name, sep, value = text.rpartition(":")
    if not sep or not name or not value:
        raise PenaltyError(
            f"--penalty {text!r}: expected NAME:COEF or NAME:l1=A,l2=B (e.g. coef:l2=0.01)"
        )
    if "=" not in value:
        return name, _number(text, value)
    parts: dict[str, float] = {}
    for item in value.split(","):
        key, eq, num = item.partition("=")
        if not eq or key.strip() not in ("l1", "l2"):
            raise PenaltyError(f"--penalty {text!r}: '{item}' is not l1=<number> or l2=<number>")
        parts[key.strip()] = _number(text, num)
    return name, parts


def _number(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise PenaltyError(f"--penalty {text!r}: '{value}' is not a number") from None


def parse_option(text: str) -> tuple[str, object]:
    """``delta=0.5`` → ``('delta', 0.5)``: values are python literals, else strings."""
    key, eq, value = text.partition("=")
    if not eq or not key.isidentifier():
        raise OnnxLossError(f"--option {text!r}: expected KEY=VALUE, e.g. --option delta=0.5")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _output_index(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxloss", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    add = sub.add_parser("add-loss", help="add a loss output to a model file")
    add.add_argument("model", help="input .onnx file (never modified)")
    add.add_argument("output", help="where to write the loss model")
    add.add_argument(
        "--score-name",
        default="squared_error",
        help="loss name (see 'plugins'; default: %(default)s)",
    )
    add.add_argument(
        "--loss-name", default="loss", help="name of the scalar loss output (default: %(default)s)"
    )
    add.add_argument(
        "--label-name", default="label", help="name of the new label input (default: %(default)s)"
    )
    add.add_argument("--weight-name", default=None, help="name of a new [N] sample-weight input")
    add.add_argument(
        "--output-index",
        type=_output_index,
        default=None,
        help="output the loss applies to (position or name); needed with several outputs",
    )
    add.add_argument(
        "--penalty",
        action="append",
        default=[],
        metavar="NAME:SPEC",
        help="penalty on a tensor or glob: NAME:COEF (COEF·Σw²) or NAME:l1=A,l2=B; repeatable",
    )
    add.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the loss, e.g. l1_weight=0.1 or eps=1e-7; repeatable",
    )
    add.add_argument("--no-validate", action="store_true", help="skip onnx.checker on the result")

    plugins = sub.add_parser("plugins", help="list losses, regularizers and their plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    draw = sub.add_parser("draw", help="draw a (loss) graph: .svg/.png/.pdf, .dot or .txt")
    draw.add_argument("model", help=".onnx file")
    draw.add_argument(
        "-o",
        "--output",
        default=None,
        help="picture to write: .svg, .png, .pdf (needs Graphviz 'dot'), .dot or .txt; "
        "without it the ONNX text format goes to stdout",
    )
    draw.add_argument(
        "--loss-only", action="store_true", help="only the nodes onnxloss added (big models)"
    )

    check = sub.add_parser(
        "check",
        help="list what stops onnxruntime-training from training a model (exit 1 if anything)",
    )
    check.add_argument("model", help=".onnx file (a loss model, or an inference model)")
    check.add_argument(
        "--weights",
        type=_names,
        default=None,
        metavar="A,B",
        help="comma-separated tensors to train (default: every float initializer of rank >= 1 "
        "on a differentiable path to an output; the report lists those left out)",
    )
    check.add_argument(
        "--loss-output",
        default=None,
        metavar="NAME",
        help="the loss output (default: read from onnxloss's metadata; without it the model "
        "is checked as an inference model)",
    )
    check.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where training would run (default: %(default)s)",
    )
    check.add_argument(
        "--backend",
        default="onnxruntime-training",
        choices=["onnxruntime-training", "onnxruntime"],
        help="the training path to check: onnxruntime-training's gradient builder, or the "
        "onnxloss.autodiff pass run by plain onnxruntime (default: %(default)s)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")

    step = sub.add_parser(
        "train-graph", help="write the training-step model (gradient + update) of a loss model"
    )
    step.add_argument("model", help="the loss model (.onnx, never modified; loss first)")
    step.add_argument("output", help="where to write the training-step model")
    step.add_argument(
        "--weights",
        type=_names,
        default=None,
        metavar="A,B",
        help="comma-separated initializers to train (default: every float initializer of "
        "rank >= 1)",
    )
    step.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "adamw"],
        help="update rule, with onnxruntime-training's formulas (default: %(default)s)",
    )
    step.add_argument(
        "--max-grad-norm",
        type=float,
        default=None,
        metavar="X",
        help="clip the gradients to this global L2 norm (default: no clipping)",
    )
    step.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an optimizer parameter, e.g. weight_decay=0.01 or betas=(0.9,0.99); repeatable",
    )
    step.add_argument(
        "--loss-output", default=None, metavar="NAME", help="the loss output (default: the first)"
    )

    demo = sub.add_parser("demo", help="train a small linear regression (needs [train])")
    demo.add_argument(
        "--samples", type=int, default=1000, help="training samples (default: %(default)s)"
    )
    demo.add_argument(
        "--epochs", type=int, default=50, help="passes over the samples (default: %(default)s)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and of the shuffling (default: %(default)s)",
    )
    demo.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "onnxruntime-training", "onnxruntime"],
        help="the trainer's backend (default: %(default)s: the training build when installed)",
    )
    demo.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI: run with mpiexec -n N python -m onnxloss demo "
        "--distributed (needs the [mpi] extra)",
    )
    return parser


def _cmd_add_loss(args: argparse.Namespace) -> int:
    from .compat import add_loss_output_file

    penalty = dict(parse_penalty(p) for p in args.penalty) or None
    options = dict(parse_option(o) for o in args.option)
    add_loss_output_file(
        args.model,
        args.output,
        score_name=args.score_name,
        loss_name=args.loss_name,
        label_name=args.label_name,
        weight_name=args.weight_name,
        penalty=penalty,
        output_index=args.output_index,
        validate=not args.no_validate,
        **options,
    )
    print(f"wrote {args.output}")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from .errors import PluginWarning
    from .registry import get_registry

    registry = get_registry()
    with warnings.catch_warnings():
        # Plugin problems are listed below; the same text as a warning would be noise.
        warnings.simplefilter("ignore", PluginWarning)
        registry.load()
    rows = []
    for kind in ("loss", "regularizer"):
        for name, reg in registry.registrations(kind).items():
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "aliases": list(reg.aliases),
                    "plugin": reg.plugin.name,
                    "distribution": "built-in" if reg.plugin.builtin else reg.plugin.distribution,
                    "version": reg.plugin.version,
                    "summary": reg.summary,
                }
            )
    plugins = [
        {
            "name": p.name,
            "module": p.module,
            "distribution": "built-in" if p.builtin else p.distribution,
            "version": p.version,
        }
        for p in registry.plugins
    ]
    failures = [
        {
            "plugin": f.plugin.name,
            "distribution": f.plugin.distribution,
            "version": f.plugin.version,
            "stage": f.stage,
            "error": f.message,
        }
        for f in registry.failures
    ]
    if args.json:
        print(json.dumps({"terms": rows, "plugins": plugins, "failures": failures}, indent=2))
        return 0
    _print_table(
        ("name", "kind", "aliases", "plugin", "distribution"),
        [
            (r["name"], r["kind"], ",".join(r["aliases"]) or "-", r["plugin"], _origin(r))
            for r in rows
        ],
    )
    # Every loaded plugin, also those that register nothing (yet): where it comes from.
    print()
    _print_table(
        ("plugin", "distribution", "module"),
        [(p["name"], _origin(p), p["module"]) for p in plugins],
    )
    if failures:
        print(f"\n{len(failures)} plugin problem(s):")
        for f in registry.failures:
            print(f"  {f.describe()}")
    return 0


def _origin(row: dict) -> str:
    """``built-in``, ``dist version``, or ``-`` for a plugin added without a distribution."""
    name = row["distribution"] or "-"
    return f"{name} {row['version']}" if row["version"] else name


def _print_table(headers: tuple[str, ...], table: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table, strict=False)]
    for line in (headers, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def _cmd_draw(args: argparse.Namespace) -> int:
    from .draw import draw, model_text
    from .model_io import load_model

    model = load_model(args.model, load_external_data=False)
    if args.output is None:
        print(model_text(model))
        return 0
    draw(model, args.output, loss_only=args.loss_only)
    print(f"wrote {args.output}")
    return 0


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated tensor names, got {text!r}")
    return names


def _cmd_check(args: argparse.Namespace) -> int:
    from .readiness import check_trainable

    report = check_trainable(
        args.model,
        args.weights,
        loss_output=args.loss_output,
        device=args.device,
        backend=args.backend,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "trainable": report.ok,
                    "backend": report.backend,
                    "weights": report.trainables,
                    "left_out": report.left_out,
                    "loss_outputs": report.loss_outputs,
                    "problems": [p.as_dict() for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        print(f"{args.model}: {report.format()}")
    return 0 if report.ok else 1


def _cmd_train_graph(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .autodiff import training_step
    from .model_io import load_model, save_model_atomic
    from .rewrite import _validate_model

    params = dict(parse_option(o) for o in args.option)
    model = load_model(args.model, load_external_data=False)
    step = training_step(
        model,
        args.weights,
        args.optimizer,
        optimizer_params=params or None,
        max_grad_norm=args.max_grad_norm,
        loss_output=args.loss_output,
        validate=False,
    )
    # checked as the finished temporary file, beside any external data it refers to
    save_model_atomic(step, args.output, Path(args.model).resolve().parent, _validate_model)
    print(f"wrote {args.output}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        n_samples=args.samples,
        epochs=args.epochs,
        seed=args.seed,
        backend=args.backend,
        distributed=args.distributed,
    )
    return 0


COMMANDS = {
    "add-loss": _cmd_add_loss,
    "plugins": _cmd_plugins,
    "draw": _cmd_draw,
    "check": _cmd_check,
    "train-graph": _cmd_train_graph,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (OnnxLossError, _UsageError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"onnxloss: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxloss: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `onnxloss plugins | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
