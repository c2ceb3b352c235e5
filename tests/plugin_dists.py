"""Fake installed distributions with ``onnxloss`` entry points, for discovery tests.

A ``<name>-<version>.dist-info`` folder with METADATA and entry_points.txt on sys.path is
all importlib.metadata needs: discovery goes through the real entry-point machinery.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

FOCAL = '''
import onnxloss

class FocalLoss(onnxloss.Loss):
    """Binary focal loss on probabilities: -(1-p_t)^gamma log p_t."""
    name = "focal"

    def __init__(self, output=None, *, gamma=2.0, **kwargs):
        super().__init__(output, **kwargs)
        self.gamma = onnxloss.terms.check_number("focal gamma", gamma, low=0.0)

    def hyperparameters(self):
        return {"gamma": self.gamma}

    def elementwise(self, g, p, y):
        p = g.clip(p, 1e-6, 1 - 1e-6)
        p_t = g.Add(g.Mul(y, p), g.Mul(g.Sub(1.0, y), g.Sub(1.0, p)))
        return g.Neg(g.Mul(g.Pow(g.Sub(1.0, p_t), self.gamma), g.Log(p_t)))

@onnxloss.hookimpl
def onnxloss_register_losses(register):
    register(FocalLoss)
'''


def make_dist(
    root: Path,
    dist: str,
    version: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
) -> Path:
    """Write modules and a dist-info folder declaring ``entry_points`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[onnxloss]\n{lines}\n")
    return root
