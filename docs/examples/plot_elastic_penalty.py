"""
An elastic loss with L1 and L2 penalties, and the graph behind it
=================================================================

The original library's example: an elastic error (``0.1·|d| + 0.9·d²`` per sample) with
sample weights, plus an L1/L2 penalty on the coefficients. The picture shows the nodes the
rewriter appended (filled) after the original linear model. Training shows what the L1
penalty is for: it pulls the coefficients of the useless features towards zero.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import onnx

import onnxloss
from onnxloss.draw import draw, has_graphviz
from onnxloss.examples import linear_regression
from onnxloss.train import OrtGradientOptimizer

onx_loss = onnxloss.add_loss_output(
    linear_regression(6),
    weight_name="weight",
    score_name="elastic",
    l1_weight=0.1,
    l2_weight=0.9,
    penalty={"coef": {"l1": 40.0, "l2": 0.1}},
)
print("inputs: ", [i.name for i in onx_loss.graph.input])
print("outputs:", [o.name for o in onx_loss.graph.output])
if has_graphviz():
    picture = draw(onx_loss, os.path.join(tempfile.mkdtemp(), "loss_graph.png"))
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.imshow(plt.imread(picture))
    ax.set_axis_off()
else:
    print(onnx.printer.to_text(onx_loss.graph))

# %%
# Only the first three features matter. The loss is a sum over the 100 samples, and the
# trainer steps on its per-sample mean, so the penalty acts as ``0.4·Σ|w| + 0.001·Σw²`` on
# the mean: enough to pull the useless coefficients to zero, and to shrink the others a
# little. Without it the useless coefficients fit the noise.

rng = np.random.default_rng(0)
X = rng.normal(size=(100, 6))
y = X[:, :3] @ np.array([2.0, -1.0, 0.5]) + rng.normal(size=100)
w = rng.uniform(0.5, 1.5, size=100)

coefs = {}
for label, model in [
    ("elastic + L1/L2 penalty", onx_loss),
    (
        "elastic only",
        onnxloss.add_loss_output(
            linear_regression(6),
            weight_name="weight",
            score_name="elastic",
            l1_weight=0.1,
            l2_weight=0.9,
        ),
    ),
]:
    trainer = OrtGradientOptimizer(
        model, ["coef", "intercept"], learning_rate=0.02, batch_size=100, max_iter=600
    )
    trainer.fit(X, y, w)
    coefs[label] = trainer.get_state()["coef"].ravel()
    print(f"{label:<24} coef = {np.round(coefs[label], 3)}")

fig, ax = plt.subplots(figsize=(6, 3.5))
index = np.arange(6)
for k, (label, c) in enumerate(coefs.items()):
    ax.bar(index + (k - 0.5) * 0.35, c, 0.35, label=label)
ax.axhline(0, color="black", lw=0.8)
ax.set_xlabel("feature (only 0, 1, 2 matter)")
ax.set_ylabel("coefficient")
ax.legend()
fig.tight_layout()
