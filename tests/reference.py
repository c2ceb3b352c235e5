"""Numpy references for every built-in loss and regularizer (the formulas in the docs)."""

from __future__ import annotations

import numpy as np


def per_sample(elementwise: np.ndarray) -> np.ndarray:
    return elementwise.reshape(len(elementwise), -1).sum(axis=1)


def reduce(per_sample_loss: np.ndarray, weight, reduction: str) -> float:
    v = per_sample_loss * (1.0 if weight is None else weight)
    return float(v.sum() if reduction == "sum" else v.mean())


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _take(matrix, labels):
    return matrix[np.arange(len(matrix)), np.asarray(labels).reshape(-1)]


def elementwise(name: str, p: np.ndarray, y: np.ndarray, **kw) -> np.ndarray:
    """The per-element (or per-sample, for class losses) loss of a built-in loss."""
    d = p - y if name not in ("cross_entropy", "log_loss", "log") else None
    if name == "squared_error":
        return d**2
    if name == "absolute_error":
        return np.abs(d)
    if name == "elastic":
        return kw.get("l1_weight", 0.5) * np.abs(d) + kw.get("l2_weight", 0.5) * d**2
    if name == "huber":
        delta = kw.get("delta", 1.0)
        a = np.abs(d)
        return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))
    if name == "poisson":
        if kw.get("log_input", True):
            return np.exp(p) - y * p
        return p - y * np.log(p + kw.get("eps", 1e-8))
    if name == "quantile":
        q = kw.get("quantile", 0.5)
        r = y - p
        return np.maximum(q * r, (q - 1) * r)
    if name == "bce_with_logits":
        return np.logaddexp(0, p) - y * p
    if name == "bce":
        eps = kw.get("eps", 1e-6)
        c = np.clip(p, eps, 1 - eps)
        return -(y * np.log(c) + (1 - y) * np.log(1 - c))
    if name == "cross_entropy":
        s = kw.get("label_smoothing", 0.0)
        lsm = _log_softmax(p)
        return -(1 - s) * _take(lsm, y) - s * lsm.mean(axis=1)
    if name in ("log_loss", "log"):
        eps = kw.get("eps", 1e-6)
        c = np.clip(p, eps, 1 - eps)
        c = c / c.sum(axis=1, keepdims=True)
        return -np.log(_take(c, y))
    raise KeyError(name)


def loss(name, p, y, weight=None, reduction="mean", **kw) -> float:
    return reduce(per_sample(elementwise(name, p, y, **kw)), weight, reduction)


def penalty(name: str, tensors: list[np.ndarray], **kw) -> float:
    l1 = sum(float(np.abs(t).sum()) for t in tensors)
    l2 = sum(float((t.astype(np.float64) ** 2).sum()) for t in tensors)
    if name == "l1":
        return kw.get("alpha", 1.0) * l1
    if name == "l2":
        return kw.get("alpha", 1.0) * l2
    if name == "elastic_net":
        return kw.get("l1", 0.0) * l1 + kw.get("l2", 0.0) * l2
    raise KeyError(name)


CLASS_LOSSES = {"cross_entropy", "log_loss", "log"}


def sample_data(name: str, n: int, cols: int, rng: np.random.Generator, dtype=np.float32, **kw):
    """Predictions and targets in the domain of loss ``name``."""
    if name in CLASS_LOSSES:
        cols = 2 if name == "log" else cols
        if name == "cross_entropy":
            p = rng.normal(scale=2.0, size=(n, cols))
        else:
            p = rng.dirichlet(np.ones(cols), size=n)
        y = rng.integers(0, cols, size=n).astype(np.int64)
        return p.astype(dtype), y
    p = rng.normal(size=(n, cols))
    y = rng.normal(size=(n, cols))
    if name == "bce":
        p = rng.uniform(0.02, 0.98, size=(n, cols))
        y = rng.integers(0, 2, size=(n, cols)).astype(float)
    elif name == "bce_with_logits":
        y = rng.uniform(0, 1, size=(n, cols))
    elif name == "poisson":
        y = rng.poisson(2.0, size=(n, cols)).astype(float)
        if not kw.get("log_input", True):
            p = rng.uniform(0.1, 4.0, size=(n, cols))
    return p.astype(dtype), y.astype(dtype)
