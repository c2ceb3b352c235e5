"""
Seconds per epoch: scikit-learn, onnxloss and PyTorch
=====================================================

The same MLP (20 → 50 → 10 → 1) trained with plain SGD at batch 100 by scikit-learn's
``MLPRegressor.partial_fit``, by onnxloss, and by PyTorch when it is installed. The figure
is the best of three epochs on this machine; the docs build machine is small and shared, so
read the ratios rather than the absolute times.
"""

import importlib.util
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

import onnxloss
from onnxloss.examples import mlp
from onnxloss.train import OrtGradientOptimizer

warnings.filterwarnings("ignore", category=ConvergenceWarning)
rng = np.random.default_rng(0)
X = rng.normal(size=(20000, 20)).astype(np.float32)
y = (np.tanh(X[:, 0]) + 0.1 * rng.normal(size=20000)).astype(np.float32)
batch, repeat = 100, 3


def best(fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


results = {}
sk = MLPRegressor(
    hidden_layer_sizes=(50, 10),
    solver="sgd",
    momentum=0.0,
    batch_size=batch,
    learning_rate_init=1e-3,
    shuffle=True,
    random_state=0,
)
sk.partial_fit(X, y)
results["scikit-learn"] = best(lambda: sk.partial_fit(X, y))

trainer = OrtGradientOptimizer(
    onnxloss.rewrite(mlp((20, 50, 10, 1)), onnxloss.MSELoss()),
    learning_rate=1e-3,
    batch_size=batch,
    max_iter=1,
    warm_start=True,
    random_state=0,
)
trainer.fit(X, y)
results["onnxloss"] = best(lambda: trainer.fit(X, y))

if importlib.util.find_spec("torch") is not None:
    import torch

    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(20, 50),
        torch.nn.ReLU(),
        torch.nn.Linear(50, 10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, 1),
    )
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(X), torch.from_numpy(y[:, None])

    def torch_epoch():
        perm = torch.randperm(len(tx))
        for s in range(0, len(tx), batch):
            idx = perm[s : s + batch]
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(tx[idx]), ty[idx]).backward()
            opt.step()

    results["PyTorch"] = best(torch_epoch)
else:
    print("PyTorch is not installed: its bar is left out.")

for name, seconds in results.items():
    print(f"{name:<13} {seconds:.3f} s/epoch ({seconds / results['onnxloss']:.2f}x onnxloss)")

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(
    list(results), list(results.values()), color=["#4c72b0", "#dd8452", "#55a868"][: len(results)]
)
ax.set_xlabel("seconds per epoch (20,000 samples, batch 100)")
fig.tight_layout()
