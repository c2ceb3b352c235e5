"""Export the small PyTorch models under tests/data (run once, with torch installed).

    python tests/data/make_torch_models.py

Writes ``torch_mlp.onnx`` (Linear → Softplus → Linear → ELU → Linear, the PyTorch row of
the compatibility table), ``torch_zoo.onnx`` (HardSwish, LayerNorm, SELU, CELU, Mish,
Softsign, HardSigmoid, PReLU, log_softmax, logsumexp and a vector norm, for the
decomposition tests), and ``<name>.npz`` with an input ``X`` and PyTorch's outputs for it.
Both go through ``torch.onnx.export(..., dynamo=True)`` (the default exporter of recent
PyTorch releases) with a dynamic batch dimension; the weights are folded back into the
``.onnx`` file. Not a test: pytest does not collect it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

HERE = Path(__file__).parent


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = (
            torch.nn.Linear(4, 16),
            torch.nn.Linear(16, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x):
        h = torch.nn.functional.softplus(self.l1(x))
        return self.l3(torch.nn.functional.elu(self.l2(h)))


class Zoo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = (
            torch.nn.Linear(4, 8),
            torch.nn.Linear(8, 8),
            torch.nn.Linear(8, 3),
        )
        self.ln = torch.nn.LayerNorm(8)
        self.prelu = torch.nn.PReLU(8)

    def forward(self, x):
        F = torch.nn.functional
        h = self.ln(F.hardswish(self.l1(x)))
        h = F.selu(h) + F.celu(h) + F.mish(h) + F.softsign(h) + F.hardsigmoid(h)
        h = self.prelu(self.l2(h))
        z = self.l3(h)
        return (
            torch.log_softmax(z, dim=1),
            torch.logsumexp(z, dim=1),
            torch.linalg.vector_norm(h, dim=1),
        )


def export(module: torch.nn.Module, name: str, outputs: list[str]) -> None:
    torch.manual_seed(0)
    module = module.eval()
    x = torch.randn(16, 4) * 2
    path = HERE / f"{name}.onnx"
    torch.onnx.export(
        module,
        (x,),
        str(path),
        input_names=["X"],
        output_names=outputs,
        dynamic_shapes=({0: torch.export.Dim("N")},),
        dynamo=True,
    )
    # The exporter writes the weights to a side file: fold them back into one small file.
    model = onnx.load(str(path))
    onnx.save(model, str(path))
    Path(f"{path}.data").unlink(missing_ok=True)
    with torch.no_grad():
        expected = module(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    arrays = {n: t.numpy() for n, t in zip(outputs, expected, strict=True)}
    np.savez(HERE / f"{name}.npz", X=x.numpy(), torch_version=np.array(torch.__version__), **arrays)
    print(f"wrote {path} with torch {torch.__version__}")


if __name__ == "__main__":
    torch.manual_seed(0)
    export(MLP(), "torch_mlp", ["variable"])
    torch.manual_seed(1)
    export(Zoo(), "torch_zoo", ["logp", "lse", "norm"])
