"""The compatibility table of docs/compatibility.md, measured: convert each model, make it
trainable, add a loss, train it for a few epochs, report the loss before and after.

    python scripts/compatibility_table.py                 # print the table
    python scripts/compatibility_table.py --write docs/compatibility.md

Every scikit-learn model is fitted on one data set, converted with skl2onnx (its default
target opset), then fine-tuned by onnxruntime-training on a second data set whose targets
follow a shifted relationship, so the loss has somewhere to go. The PyTorch row is the MLP
exported once to tests/data/torch_mlp.onnx (see tests/data/make_torch_models.py).
``tests/test_compatibility.py`` runs the same :func:`measure` in CI, so a row that says
"trains" is proven there, and a row that does not carries the readiness check's message.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import onnxloss  # noqa: E402
from onnxloss.passes import AddLoss, MakeTrainable  # noqa: E402

DATA = ROOT / "tests" / "data"
N_SAMPLES = 256
N_FEATURES = 4
#: A row "trains" when the loss falls below this fraction of where it started.
TRAINS_BELOW = 0.9


@dataclass(frozen=True)
class Case:
    """One row: how to get the model, which loss to add, how to train it."""

    name: str
    converter: str
    kind: str  # "regression", "binary", "multiclass"
    make: Callable[[np.ndarray, np.ndarray], onnx.ModelProto]
    loss: Callable[[], onnxloss.Spec | onnxloss.Term]
    loss_label: str
    learning_rate: float = 0.05
    epochs: int = 20
    #: Turns the 4 normal features into the model's inputs (categorical columns...).
    features: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass
class Row:
    model: str
    converter: str
    loss: str
    passes: str
    trains: bool
    before: float | None
    after: float | None
    message: str

    @property
    def verdict(self) -> str:
        return "trains" if self.trains else "does not train"


def data(kind: str, shift: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets; ``shift`` gives the fine-tuning set (another relationship)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    w = np.array([1.5, -2.0, 0.5, 1.0])
    if shift:
        w = np.array([-0.5, -1.0, 2.0, 0.0])
    score = X @ w + (1.0 if shift else 0.0)
    if kind == "regression":
        return X, (score + 0.1 * rng.normal(size=N_SAMPLES)).astype(np.float32)
    if kind == "binary":
        return X, (score > 0.5).astype(np.int64)
    return X, np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)


def skl2onnx_version() -> str:
    import skl2onnx

    return f"skl2onnx {skl2onnx.__version__}"


def sklearn_case(
    name, kind, estimator_factory, loss, loss_label, dtype=np.float32, zipmap=True, **kwargs
):
    """A scikit-learn row; ``zipmap=False`` for classifiers whose converter has no such
    option (their probabilities are a tensor already)."""

    def make(X, y):
        from skl2onnx import to_onnx

        options = {"zipmap": False} if kind != "regression" and zipmap else None
        with warnings.catch_warnings():  # few iterations on purpose: no convergence warnings
            warnings.simplefilter("ignore")
            estimator = estimator_factory().fit(X, y)
            return to_onnx(estimator, X[:1].astype(dtype), options=options)

    return Case(name, "skl2onnx", kind, make, loss, loss_label, **kwargs)


def torch_case() -> Case:
    def make(X, y):
        return onnx.load(str(DATA / "torch_mlp.onnx"))

    version = str(np.load(DATA / "torch_mlp.npz")["torch_version"]).split("+")[0]
    return Case(
        "PyTorch MLP (Softplus, ELU)",
        f"torch.onnx (dynamo), PyTorch {version}",
        "regression",
        make,
        lambda: onnxloss.MSELoss(),
        "squared_error",
        learning_rate=0.01,
    )


def mixed_columns(X: np.ndarray) -> np.ndarray:
    """Columns 0-1 numeric, column 2 a category in {0, 1, 2}, column 3 one in {0, 1}."""
    out = X.copy()
    out[:, 2] = np.digitize(X[:, 2], [-0.5, 0.5])
    out[:, 3] = X[:, 3] > 0
    return out


def column_transformer():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [("numeric", StandardScaler(), [0, 1]), ("categories", OneHotEncoder(), [2, 3])]
    )
    return make_pipeline(columns, LogisticRegression())


def cases() -> list[Case]:
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.decomposition import PCA
    from sklearn.linear_model import (
        LinearRegression,
        LogisticRegression,
        Perceptron,
        Ridge,
        SGDClassifier,
        SGDRegressor,
    )
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC, LinearSVR
    from sklearn.tree import DecisionTreeRegressor

    mse = ("regression", lambda: onnxloss.MSELoss(), "squared_error")
    log_loss = (lambda: onnxloss.LogLoss("probabilities", target="y"), "log_loss")
    mlp = {"hidden_layer_sizes": (16,), "max_iter": 50, "random_state": 0}
    # [-s, s] scores in 'probabilities' (hinge-type classifiers): a logistic loss on 2s
    on_scores = (
        lambda: onnxloss.CrossEntropyLoss("probabilities", target="y"),
        "cross_entropy on the scores",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            sklearn_case("LinearRegression", *mse[:1], LinearRegression, *mse[1:]),
            sklearn_case("Ridge", *mse[:1], lambda: Ridge(alpha=1.0), *mse[1:]),
            sklearn_case(
                "LinearRegression (float64 data)",
                *mse[:1],
                LinearRegression,
                *mse[1:],
                dtype=np.float64,
            ),
            sklearn_case("SGDRegressor", *mse[:1], lambda: SGDRegressor(random_state=0), *mse[1:]),
            sklearn_case("LogisticRegression (binary)", "binary", LogisticRegression, *log_loss),
            sklearn_case(
                "LogisticRegression (3 classes)", "multiclass", LogisticRegression, *log_loss
            ),
            # hinge loss: its 'probabilities' output holds the scores [-s, s]
            sklearn_case(
                "SGDClassifier (hinge, binary)",
                "binary",
                lambda: SGDClassifier(random_state=0),
                *on_scores,
            ),
            sklearn_case(
                "MLPRegressor",
                "regression",
                lambda: MLPRegressor(**mlp),
                *mse[1:],
                learning_rate=0.01,
            ),
            sklearn_case(
                "MLPClassifier (binary)",
                "binary",
                lambda: MLPClassifier(**mlp),
                *log_loss,
                learning_rate=0.01,
            ),
            sklearn_case(
                "MLPClassifier (3 classes)",
                "multiclass",
                lambda: MLPClassifier(**mlp),
                *log_loss,
                learning_rate=0.01,
            ),
            torch_case(),
            sklearn_case(
                "Pipeline(StandardScaler, LogisticRegression)",
                "binary",
                lambda: make_pipeline(StandardScaler(), LogisticRegression()),
                *log_loss,
            ),
            sklearn_case(
                "Pipeline(StandardScaler, Ridge)",
                *mse[:1],
                lambda: make_pipeline(StandardScaler(), Ridge()),
                *mse[1:],
            ),
            sklearn_case(
                "Pipeline(StandardScaler, PCA, Ridge)",
                *mse[:1],
                lambda: make_pipeline(StandardScaler(), PCA(3), Ridge()),
                *mse[1:],
                learning_rate=0.01,
            ),
            sklearn_case(
                "Pipeline(StandardScaler, MLPRegressor)",
                *mse[:1],
                lambda: make_pipeline(StandardScaler(), MLPRegressor(**mlp)),
                *mse[1:],
                learning_rate=0.01,
            ),
            # binary: 'probabilities' is [N, 1], the decision function of the positive class
            sklearn_case(
                "LinearSVC (binary)",
                "binary",
                lambda: LinearSVC(random_state=0),
                lambda: onnxloss.BCEWithLogitsLoss("probabilities", target="y"),
                "bce_with_logits on the score",
                zipmap=False,
            ),
            sklearn_case("LinearSVR", *mse[:1], lambda: LinearSVR(random_state=0), *mse[1:]),
            sklearn_case("PLSRegression", *mse[:1], lambda: PLSRegression(2), *mse[1:]),
            sklearn_case("Perceptron", "binary", lambda: Perceptron(random_state=0), *on_scores),
            sklearn_case("GaussianNB", "binary", GaussianNB, *log_loss),
            sklearn_case(
                "ColumnTransformer(StandardScaler, OneHotEncoder) + LogisticRegression",
                "binary",
                column_transformer,
                *log_loss,
                features=mixed_columns,
            ),
            sklearn_case(
                "DecisionTreeRegressor",
                "regression",
                lambda: DecisionTreeRegressor(max_depth=3),
                *mse[1:],
            ),
        ]


def mean_loss(loss_model: onnx.ModelProto, X: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(
        loss_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    target = session.get_inputs()[1]
    y = y.reshape(-1, 1) if len(target.shape) == 2 and y.ndim == 1 else y
    y = y.astype(np.int64 if "int64" in target.type else np.float32)
    return float(session.run(None, {names[0]: X, names[1]: y})[0])


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(onnx.numpy_helper.from_array(weights[tensor.name], tensor.name))
    return out


def measure(case: Case, seed: int = 0) -> Row:
    """Convert, fix, add the loss, check, train: one row of the table."""
    from onnxruntime import __version__  # noqa: F401  (the trainer needs the runtime)

    from onnxloss.train import OrtGradientOptimizer

    X_fit, y_fit = data(case.kind, shift=False, seed=seed)
    X, y = data(case.kind, shift=True, seed=seed + 1)
    if case.features is not None:
        X_fit, X = case.features(X_fit), case.features(X)
    converter = skl2onnx_version() if case.converter == "skl2onnx" else case.converter
    model = case.make(X_fit, y_fit)
    fixed = MakeTrainable()(model)
    passes = ", ".join(fixed.applied) or "none"
    try:
        loss_model = AddLoss(case.loss())(fixed.model).model
    except onnxloss.OnnxLossError as exc:
        return Row(case.name, converter, case.loss_label, passes, False, None, None, str(exc))
    report = onnxloss.check_trainable(loss_model)
    if not report.ok:
        message = " ".join(p.line() for p in report.errors)
        return Row(case.name, converter, case.loss_label, passes, False, None, None, message)
    before = mean_loss(loss_model, X, y)
    trainer = OrtGradientOptimizer(
        loss_model,
        optimizer="adamw",
        learning_rate=case.learning_rate,
        batch_size=32,
        max_iter=case.epochs,
        random_state=seed,
    )
    trainer.fit(X, y)
    after = mean_loss(with_weights(loss_model, trainer.get_state()), X, y)
    trains = math.isfinite(after) and after < TRAINS_BELOW * before
    message = "" if trains else f"the loss went from {before:.4g} to {after:.4g}"
    return Row(case.name, converter, case.loss_label, passes, trains, before, after, message)


HEADER = (
    "| model | converter | loss | passes applied (`make_trainable`) | trains? "
    "| loss before → after | message if not |\n"
    "|---|---|---|---|---|---|---|"
)


def markdown(rows: list[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        numbers = "—" if r.before is None else f"{r.before:.4g} → {r.after:.4g}"
        message = r.message.replace("|", "\\|") or "—"
        lines.append(
            f"| {r.model} | {r.converter} | {r.loss} | {r.passes} | {r.verdict} | {numbers} "
            f"| {message} |"
        )
    return "\n".join(lines)


BEGIN, END = "<!-- compatibility-table: begin -->", "<!-- compatibility-table: end -->"


def write(path: Path, table: str) -> None:
    """Replace the table between the markers of ``path``."""
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text))


def read_verdicts(path: Path) -> dict[str, str]:
    """model → "trains" / "does not train", from the table in ``path``."""
    text = path.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    verdicts = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        verdicts[cells[0]] = cells[4]
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file")
    args = parser.parse_args(argv)
    rows = [measure(case) for case in cases()]
    table = markdown(rows)
    if args.write:
        write(args.write, table)
        print(f"wrote {args.write}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
