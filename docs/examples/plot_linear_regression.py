"""
Linear regression: onnxloss against scikit-learn
================================================

A linear model written in ONNX gets a squared-error loss from
:func:`onnxloss.add_loss_output` and is trained by
:class:`onnxloss.train.OrtGradientOptimizer`. scikit-learn's ``SGDRegressor`` trains the
same model on the same data with the same per-sample steps and the same decreasing
learning rate (``invscaling``), and ``LinearRegression`` gives the closed-form solution.
Both stochastic trainers close in on the least-squares weights.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression, SGDRegressor

import onnxloss
from onnxloss.examples import linear_regression
from onnxloss.train import OrtGradientOptimizer

X, y = make_regression(n_samples=2000, n_features=8, noise=5.0, random_state=0)
X = X.astype(np.float32)
epochs, eta0, power_t = 15, 0.01, 0.25

# %%
# onnxloss: one epoch per ``fit`` (``warm_start`` keeps the weights and the schedule's
# sample counter), to record the training error after each epoch. scikit-learn's SGD
# steps on ``(p - y)²/2`` per sample and onnxloss on ``(p - y)²``, so onnxloss takes half
# the learning rate to make the same steps; both use ``eta0 / t^power_t`` with ``t``
# counting samples.

loss_model = onnxloss.add_loss_output(linear_regression(X.shape[1]))
trainer = OrtGradientOptimizer(
    loss_model,
    ["coef", "intercept"],
    learning_rate="invscaling",
    eta0=eta0 / 2,
    power_t=power_t,
    batch_size=1,
    max_iter=1,
    warm_start=True,
    random_state=0,
)
onnx_mse = []
for _ in range(epochs):
    trainer.fit(X, y)
    state = trainer.get_state()
    onnx_mse.append(float(np.mean((X @ state["coef"].ravel() + state["intercept"] - y) ** 2)))

sgd = SGDRegressor(
    penalty=None, learning_rate="invscaling", eta0=eta0, power_t=power_t, random_state=0
)
sk_mse = []
for _ in range(epochs):
    sgd.partial_fit(X, y)
    sk_mse.append(float(np.mean((sgd.predict(X) - y) ** 2)))

exact = LinearRegression().fit(X, y)
best = float(np.mean((exact.predict(X) - y) ** 2))
print(
    f"training MSE after {epochs} epochs: onnxloss {onnx_mse[-1]:.4f}, "
    f"SGDRegressor {sk_mse[-1]:.4f}, closed form {best:.4f}"
)

# %%
# Weights and loss curves side by side.

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
index = np.arange(X.shape[1])
left.bar(index - 0.25, exact.coef_, 0.25, label="LinearRegression (closed form)")
left.bar(index, sgd.coef_, 0.25, label="SGDRegressor")
left.bar(index + 0.25, state["coef"].ravel(), 0.25, label="onnxloss")
left.set_xlabel("feature")
left.set_ylabel("coefficient")
left.legend(loc="upper left", fontsize="small")
right.semilogy(range(1, epochs + 1), np.array(sk_mse) - best, "o-", label="SGDRegressor")
right.semilogy(range(1, epochs + 1), np.array(onnx_mse) - best, "s--", label="onnxloss")
right.set_xlabel("epoch")
right.set_ylabel("training MSE above the closed form")
right.legend()
fig.tight_layout()
