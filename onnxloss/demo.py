"""``onnxloss demo``: the whole pipeline on a built-in example.

Builds a linear regression graph, adds a squared-error loss with ``add_loss_output``,
trains it with ``OrtGradientOptimizer`` and prints the fitted weights beside the
closed-form least-squares solution.
"""

from __future__ import annotations

import time

import numpy as np

from .compat import add_loss_output
from .errors import CoefficientError, OnnxLossError
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


def run_demo(
    n_samples: int = 1000,
    epochs: int = 50,
    seed: int = 0,
    print_fn=print,
    *,
    backend: str = "auto",
    distributed: bool = False,
) -> dict:
    """Run the demo; returns the trained and least-squares weights (the tests use it).

    ``distributed``: run under ``mpiexec``; every rank trains on its shard of the samples
    (:func:`onnxloss.train.shard`) and rank 0 prints.
    """
    check_demo_arguments(n_samples, epochs, seed)
    from .train import OrtGradientOptimizer, shard

    rng = np.random.default_rng(seed)
    true_coef = np.array([1.5, -2.0, 0.5, 3.0])
    X = rng.normal(size=(n_samples, true_coef.size))
    y = X @ true_coef + 0.7 + rng.normal(scale=0.1, size=n_samples)
    comm = _world() if distributed else None
    ranks = 1 if comm is None else comm.Get_size()
    if comm is not None and comm.Get_rank() != 0:
        print_fn = _silent  # rank 0 reports for everyone

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
        backend=backend,
        communicator=comm,
    )
    trainer.fit(*((X, y) if comm is None else shard((X, y), comm)))
    seconds = time.perf_counter() - start
    state = trainer.get_state()
    trained = np.r_[state["coef"].ravel(), state["intercept"]]
    design = np.c_[X, np.ones(n_samples)]
    lstsq = np.linalg.lstsq(design, y, rcond=None)[0]

    where = f"{ranks} ranks, batch 16 each" if comm is not None else "batch 16"
    print_fn(
        f"onnxloss demo: linear regression, {n_samples} samples, squared error, "
        f"SGD (lr 0.01, {where}), {epochs} epochs in {seconds:.2f} s on backend "
        f"{trainer.backend_}"
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


def _silent(*args, **kwargs) -> None:
    pass


def _world():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise OnnxLossError(
            f"demo --distributed needs mpi4py ({exc}); pip install 'onnxloss[mpi]' and run it "
            "with mpiexec -n 2 python -m onnxloss demo --distributed"
        ) from None
    return MPI.COMM_WORLD
