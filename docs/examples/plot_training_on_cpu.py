"""
Training on CPU, taken apart
============================

What :class:`~onnxloss.train.OrtGradientOptimizer` does, one piece at a time: the loss
graph onnxloss writes, the artifacts onnxruntime-training builds from it, and the training
loop over ``api.Module`` and ``api.Optimizer``.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import onnx

import onnxloss
from onnxloss.draw import draw, has_graphviz
from onnxloss.examples import linear_regression
from onnxloss.train._runtime import load_runtime
from onnxloss.train.artifacts import TrainingArtifacts

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 3)).astype(np.float32)
y = (X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)

# %%
# 1. The loss graph. ``reduction="mean"``: the loss is the mean squared error over the
# batch. The picture fills the nodes onnxloss appended.

loss_model = onnxloss.rewrite(linear_regression(3), onnxloss.MSELoss(reduction="mean"))
print(onnx.printer.to_text(loss_model.graph))
if has_graphviz():
    picture = draw(loss_model, os.path.join(tempfile.mkdtemp(), "loss_graph.png"))
    fig, ax = plt.subplots(figsize=(5, 7))
    ax.imshow(plt.imread(picture))
    ax.set_axis_off()
else:
    print("Graphviz is not installed: the text above is the graph.")

# %%
# 2. The artifacts. ``generate_artifacts`` writes a training model (forward + gradient
# graph), an eval model, an optimizer model and a checkpoint holding the weights.

artifacts = TrainingArtifacts(loss_model, ["coef", "intercept"], optimizer="sgd")
for name in sorted(os.listdir(artifacts.directory)):
    size = os.path.getsize(artifacts.directory / name)
    print(f"{name:<22} {size:>8} bytes")
training = onnx.load(str(artifacts.training_model))
print("training model inputs: ", [i.name for i in training.graph.input])
print("training model outputs:", [o.name for o in training.graph.output])
ops = sorted({n.op_type for n in training.graph.node})
print(f"{len(training.graph.node)} nodes, operators: {', '.join(ops)}")

# %%
# 3. The loop, by hand: a forward and backward pass (``module(...)``), one optimizer step,
# and a reset of the accumulated gradients.

rt = load_runtime()
state = rt.api.CheckpointState.load_checkpoint(str(artifacts.checkpoint))
module = rt.api.Module(str(artifacts.training_model), state, str(artifacts.eval_model))
optimizer = rt.api.Optimizer(str(artifacts.optimizer_model), module)
optimizer.set_learning_rate(0.05)
print("module inputs:", module.input_names())
losses = []
for _epoch in range(20):
    total = 0.0
    for start in range(0, len(X), 50):
        loss, _ = module(X[start : start + 50], y[start : start + 50])
        optimizer.step()
        module.lazy_reset_grad()
        total += float(loss) * 50
    losses.append(total / len(X))
print(
    "coef:", state.parameters["coef"].data.ravel(), "intercept:", state.parameters["intercept"].data
)

# %%
# The same with the estimator, which also shuffles, schedules, validates and checks.

from onnxloss.train import OrtGradientOptimizer  # noqa: E402

estimator = OrtGradientOptimizer(
    loss_model, ["coef", "intercept"], learning_rate=0.05, batch_size=50, max_iter=20, shuffle=False
).fit(X, y)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(losses, "o-", label="hand-written loop")
ax.semilogy(estimator.train_losses_, "x--", label="OrtGradientOptimizer")
ax.set_xlabel("epoch")
ax.set_ylabel("mean loss")
ax.legend()
fig.tight_layout()
