"""``onnxloss demo``: the whole pipeline on a built-in example.

Builds a linear regression graph, adds a squared-error loss with ``add_loss_output``,
trains it with ``OrtGradientOptimizer`` and prints the fitted weights beside the
closed-form least-squares solution.
"""

from __future__ import annotations

import time

import numpy as np

from .compat import add_loss_output
from .errors import CoefficientError
from .examples import linear_regression

#: Bounds of the demo's arguments: enough samples to determine the 5 weights, few enough
#: to fit in memory and finish in minutes; seeds as numpy takes them.
LIMITS = {"samples": (5, 1_000_000), "epochs": (1, 10_000), "seed": (0, 2**32 - 1)}


def check_demo_arguments(n_samples: object, epochs: object, seed: object) -> None:
    """A :class:`~onnxloss.CoefficientError` naming the first argument that is not an
    integer within :data:`LIMITS`."""
    for name, value in (("samples", n_samples), ("epochs", epochs), ("seed", seed)):
        low, high = LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CoefficientError(
                f"demo: --{name} must be an integer from {low} to {high}, got {value!r}"
            )


def run_demo(n_samples: int = 1000, epochs: int = 50, seed: int = 0, print_fn=print) -> dict:
    """Run the demo; returns the trained and least-squares weights (the tests use it)."""
    check_demo_arguments(n_samples, epochs, seed)
    from .train import OrtGradientOptimizer

    rng = np.random.default_rng(seed)
    true_coef = np.array([1.5, -2.0, 0.5, 3.0])
    X = rng.normal(size=(n_samples, true_coef.size))
    y = X @ true_coef + 0.7 + rng.normal(scale=0.1, size=n_samples)

    model = linear_regression(true_coef.size)
    loss_model = add_loss_output(model, score_name="squared_error")
    start = time.perf_counter()
    trainer = OrtGradientOptimizer(
        loss_model,
        ["coef", "intercept"],
        learning_rate=0.01,
        max_iter=epochs,
        batch_size=16,
        random_state=seed,
    )
    trainer.fit(X, y)
    seconds = time.perf_counter() - start
    state = trainer.get_state()
    trained = np.r_[state["coef"].ravel(), state["intercept"]]
    design = np.c_[X, np.ones(n_samples)]
    lstsq = np.linalg.lstsq(design, y, rcond=None)[0]

    print_fn(
        f"onnxloss demo: linear regression, {n_samples} samples, squared error, "
        f"SGD (lr 0.01, batch 16), {epochs} epochs in {seconds:.2f} s"
    )
    print_fn(
        f"loss per sample: first epoch {trainer.train_losses_[0]:.4f}, "
        f"last epoch {trainer.train_losses_[-1]:.4f}"
    )
    names = [f"coef[{i}]" for i in range(true_coef.size)] + ["intercept"]
    truth = np.r_[true_coef, 0.7]
    print_fn(f"{'weight':<10} {'onnxloss':>10} {'lstsq':>10} {'true':>8}")
    for name, a, b, c in zip(names, trained, lstsq, truth, strict=True):
        print_fn(f"{name:<10} {a:>10.4f} {b:>10.4f} {c:>8.3f}")
    gap = float(np.max(np.abs(trained - lstsq)))
    print_fn(f"largest difference from least squares: {gap:.2e}")
    return {"trained": trained, "lstsq": lstsq, "losses": list(trainer.train_losses_)}
