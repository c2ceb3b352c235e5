"""
Training on GPU (or CPU when there is none)
===========================================

The same estimator with ``device="cuda"``. That needs onnxruntime-training's CUDA build
(``pip install "onnxloss[train-gpu]"``) and a GPU with the CUDA 11.8 runtime; where they are
missing the example says so and trains on the CPU.
"""

import matplotlib.pyplot as plt
import numpy as np

import onnxloss
from onnxloss.examples import mlp
from onnxloss.train import OrtGradientOptimizer
from onnxloss.train._runtime import load_runtime

providers = load_runtime().ort.get_available_providers()
device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
if device == "cpu":
    print(f"No CUDA execution provider (available: {providers}): training on the CPU.")

rng = np.random.default_rng(0)
X = rng.normal(size=(4000, 20)).astype(np.float32)
y = np.sin(X[:, :1]) + 0.1 * X[:, 1:2] ** 2

model = onnxloss.rewrite(mlp((20, 64, 32, 1), seed=0), onnxloss.MSELoss())
trainer = OrtGradientOptimizer(
    model,
    optimizer="adamw",
    learning_rate=3e-3,
    batch_size=64,
    max_iter=15,
    device=device,
    random_state=0,
)
trainer.fit(X, y)
print(f"device {device}: loss {trainer.train_losses_[0]:.4f} -> {trainer.train_losses_[-1]:.4f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(trainer.train_losses_, "o-")
ax.set_title(f"MLP 20-64-32-1, AdamW, device={device}")
ax.set_xlabel("epoch")
ax.set_ylabel("mean squared error")
fig.tight_layout()
