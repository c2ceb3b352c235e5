"""
An MLPRegressor from scikit-learn, trained by onnxloss
======================================================

A neural network built by scikit-learn is converted with skl2onnx, given a squared-error
loss and trained with onnxloss. Both trainers start from the same weights and take the same
plain SGD steps (no momentum, no penalty, the same batches), so their loss curves should
lie on top of each other.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

import onnxloss
from onnxloss.train import OrtGradientOptimizer

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
X = X.astype(np.float32)
epochs, eta, batch = 30, 0.01, 20

# One epoch to initialise the weights, then convert: both trainers start from here.
sk = MLPRegressor(
    hidden_layer_sizes=(20,),
    solver="sgd",
    learning_rate_init=eta,
    momentum=0.0,
    alpha=0.0,
    batch_size=batch,
    shuffle=False,
    max_iter=1,
    random_state=0,
).fit(X, y)
onx = to_onnx(sk, X[:1], target_opset=17)
weights = [t.name for t in onx.graph.initializer if t.name.startswith(("coef", "inter"))]
print("trained tensors:", weights)

# %%
# scikit-learn minimises ``(p - y)²/2`` averaged over the batch; onnxloss's mean-reduced
# squared error is ``(p - y)²`` averaged, so half the learning rate makes the same steps.

trainer = OrtGradientOptimizer(
    onnxloss.rewrite(onx, onnxloss.MSELoss(reduction="mean")),
    weights,
    learning_rate=eta / 2,
    batch_size=batch,
    max_iter=1,
    shuffle=False,
    warm_start=True,
)
onnx_mse, sk_mse = [], []
for _ in range(epochs):
    trainer.fit(X, y)
    onnx_mse.append(trainer.train_losses_[-1])
    sk.partial_fit(X, y)
    sk_mse.append(2 * sk.loss_)
print(f"after {epochs} epochs: scikit-learn {sk_mse[-1]:.4f}, onnxloss {onnx_mse[-1]:.4f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(range(1, epochs + 1), sk_mse, "o-", label="MLPRegressor.partial_fit")
ax.plot(range(1, epochs + 1), onnx_mse, "x--", label="onnxloss")
ax.set_xlabel("epoch")
ax.set_ylabel("mean squared error during the epoch")
ax.legend()
fig.tight_layout()
