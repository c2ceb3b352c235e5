"""SGD and AdamW updates as ONNX nodes, with the formulas and defaults of
onnxruntime-training 1.19.2 (``onnxblock.optim.SGD`` / ``AdamW`` and the ``SGDOptimizerV2``,
``AdamWOptimizer`` and ``InplaceClipGradNorm`` kernels), so both training paths take the
same steps.

With ``g`` a gradient, ``w`` its weight, ``η`` the learning rate and ``t`` the number of
the update (1 for the first):

* SGD: ``w ← w - η·g`` (no momentum, no weight decay).
* AdamW (the runtime's ``adam_mode=1``, Hugging Face's form):
  ``m ← β1·m + (1 - β1)·g``, ``v ← β2·v + (1 - β2)·g²``,
  ``η_t = η·√(1 - β2^t) / (1 - β1^t)`` (``η_t = η`` without bias correction),
  ``w ← w - η_t·m / (√v + ε)``, then ``w ← w - η·λ·w`` (decoupled weight decay applied
  after the update). Defaults: ``betas=(0.9, 0.999)``, ``eps=1e-6``, ``weight_decay=0``,
  ``bias_correction=True``. The powers ``β^t`` are computed in float64 and rounded to
  float32, as the kernel does.
* Clipping (``max_grad_norm``): with ``n = √(Σ_w Σ g²)`` over every gradient, each
  gradient is multiplied by ``min(max_norm / (n + 1e-6), 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..builder import GraphBuilder, Value
from ..errors import CoefficientError, OnnxLossError

#: The epsilon InplaceClipGradNorm adds to the norm.
CLIP_EPSILON = 1e-6


class Optimizer:
    """An update rule: its state tensors and the nodes of one step."""

    name = ""
    #: Names of the state tensors kept per weight.
    state_roles: tuple[str, ...] = ()

    def __init__(self, **params):
        self.params: dict = params

    def step_constants(self, g: GraphBuilder, lr: Value, step: Value) -> dict:
        """Values shared by every weight's update (the bias-corrected learning rate...)."""
        return {}

    def update(
        self, g: GraphBuilder, w: Value, grad: Value, state: Mapping[str, Value], lr: Value, shared
    ) -> tuple[Value, dict[str, Value]]:
        raise NotImplementedError


class SGD(Optimizer):
    """``w ← w - η·g``."""

    name = "sgd"

    def update(self, g, w, grad, state, lr, shared):
        return g.Sub(w, g.Mul(lr, grad)), {}


class AdamW(Optimizer):
    """onnxruntime-training's AdamW (``adam_mode=1``); see the module docstring."""

    name = "adamw"
    state_roles = ("exp_avg", "exp_avg_sq")
    defaults = {"betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0, "bias_correction": True}

    def step_constants(self, g, lr, step):
        beta1, beta2 = self.params["betas"]
        if not self.params["bias_correction"]:
            return {"lr_corrected": lr}
        t = g.cast(step, np.float64)

        def correction(beta):
            # std::pow(float beta, int64 step) is computed in double, then cast to float
            power = g.Pow(g.const(np.array(float(np.float32(beta)), np.float64)), t)
            return g.Sub(g.const(np.array(1.0, np.float32)), g.cast(power, np.float32))

        ratio = g.Div(g.Sqrt(correction(beta2)), correction(beta1))
        return {"lr_corrected": g.Mul(lr, ratio)}

    def update(self, g, w, grad, state, lr, shared):
        beta1, beta2 = self.params["betas"]
        eps, decay = self.params["eps"], self.params["weight_decay"]
        # (1 - beta) in the weight's precision, as the kernel computes 1.f - beta
        one = g.dtype.type(1)
        m = g.Add(g.Mul(state["exp_avg"], beta1), g.Mul(grad, float(one - g.dtype.type(beta1))))
        decay2 = float(one - g.dtype.type(beta2))
        v = g.Add(g.Mul(state["exp_avg_sq"], beta2), g.Mul(g.Mul(grad, decay2), grad))
        lr_corrected = _as(g, shared["lr_corrected"], g.dtype)
        w = g.Sub(w, g.Div(g.Mul(lr_corrected, m), g.Add(g.Sqrt(v), eps)))
        if decay:
            w = g.Sub(w, g.Mul(g.Mul(_as(g, lr, g.dtype), decay), w))
        return w, {"exp_avg": m, "exp_avg_sq": v}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adamw": AdamW}


def make_optimizer(name: str, params: Mapping | None = None) -> Optimizer:
    """The optimizer ``name`` with its parameters checked and defaults filled in."""
    params = dict(params or {})
    if name == "sgd":
        if params:
            raise OnnxLossError(
                f"optimizer 'sgd' takes no optimizer_params (got {sorted(params)}): the "
                "runtime's SGD is plain W -= lr·grad"
            )
        return SGD()
    if name == "adamw":
        unknown = sorted(set(params) - set(AdamW.defaults))
        if unknown:
            raise OnnxLossError(
                f"optimizer 'adamw' has no parameter(s) {unknown}; it takes "
                f"{sorted(AdamW.defaults)}"
            )
        merged = {**AdamW.defaults, **params}
        return AdamW(**_checked_adamw(merged))
    raise OnnxLossError(f"optimizer {name!r} is not 'sgd' or 'adamw'")


def _checked_adamw(p: dict) -> dict:
    betas = p["betas"]
    if (
        not isinstance(betas, Sequence)
        or isinstance(betas, str)
        or len(betas) != 2
        or not all(_real(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise CoefficientError(f"adamw betas must be two numbers in [0, 1), got {betas!r}")
    if not (_real(p["eps"]) and p["eps"] > 0):
        raise CoefficientError(f"adamw eps must be a number > 0, got {p['eps']!r}")
    if not (_real(p["weight_decay"]) and p["weight_decay"] >= 0):
        raise CoefficientError(
            f"adamw weight_decay must be a number >= 0, got {p['weight_decay']!r}"
        )
    if not isinstance(p["bias_correction"], bool):
        raise CoefficientError(
            f"adamw bias_correction must be True or False, got {p['bias_correction']!r}"
        )
    return {
        "betas": (float(betas[0]), float(betas[1])),
        "eps": float(p["eps"]),
        "weight_decay": float(p["weight_decay"]),
        "bias_correction": p["bias_correction"],
    }


def _real(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_max_grad_norm(value) -> float | None:
    if value is None:
        return None
    if not (_real(value) and value > 0):
        raise CoefficientError(f"max_grad_norm must be a number > 0 or None, got {value!r}")
    return float(value)


def _as(g: GraphBuilder, value: Value, dtype) -> Value:
    """``value`` (float32) in the weight's float type."""
    return value if np.dtype(dtype) == np.float32 else g.cast(value, dtype)


def clip_by_global_norm(
    g: GraphBuilder, grads: Sequence[Value], dtypes: Sequence, max_norm: float
) -> list[Value]:
    """Every gradient times ``min(max_norm / (‖all gradients‖₂ + 1e-6), 1)``."""
    norm_dtype = np.dtype(dtypes[0]) if len({np.dtype(d) for d in dtypes}) == 1 else np.float32
    with g.scope("onnxloss_clip_grad_norm", dtype=norm_dtype):
        squares = [
            g.reduce_sum(g.Mul(v, v))
            if np.dtype(d) == norm_dtype
            else g.cast(g.reduce_sum(g.Mul(v, v)), norm_dtype)
            for v, d in zip(grads, dtypes, strict=True)
        ]
        total = g.Sqrt(g.add_all(squares))
        coef = g.Min(g.Div(max_norm, g.Add(total, CLIP_EPSILON)), 1.0)
        clipped = []
        for v, d in zip(grads, dtypes, strict=True):
            factor = coef if np.dtype(d) == norm_dtype else g.cast(coef, d)
            clipped.append(g.Mul(v, factor))
        return clipped
