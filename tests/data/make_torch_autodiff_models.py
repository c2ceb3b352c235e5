"""Export the PyTorch models of the gradient pass's coverage tests (run by hand, with torch).

    /work/torch-venv-autodiff/bin/python tests/data/make_torch_autodiff_models.py

Writes ``tests/data/autodiff/<model>-<exporter><opset>.onnx`` for each model below, exported
by the TorchScript exporter (``dynamo=False``, opsets 13 and 17) and by the dynamo exporter
(``dynamo=True``, opsets 18 and 21), with a dynamic batch dimension and the weights inside
the file; and ``<model>.npz`` with an input batch ``X``, PyTorch's output for it and
PyTorch's gradients of ``L = Σ output² / N`` (the loss ``onnxloss.MSELoss()`` gives against
zero targets) with respect to every parameter, stored under ``grad/<initializer>`` for each
initializer of each exported file that holds a parameter's values (as such, or transposed,
as exporters fold ``Linear`` weights). Models in eval mode: BatchNormalization and Dropout in
inference form; for the models with BatchNormalization the exporters are asked not to fold
it into the convolutions (``training=PRESERVE`` for TorchScript, ``optimize=False`` for
dynamo), so that it stays on the gradient path. Not a test: pytest does not collect it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).parent / "autodiff"
EXPORTS = [("torchscript", 13), ("torchscript", 17), ("dynamo", 18), ("dynamo", 21)]


class Activations(nn.Module):
    """An MLP with every activation of the issue, and Dropout."""

    def __init__(self):
        super().__init__()
        acts = [nn.ReLU(), nn.GELU(), nn.Tanh(), nn.SiLU(), nn.LeakyReLU(0.1), nn.ELU(),
                nn.Softplus()]  # fmt: skip
        layers = [nn.Linear(4, 6)]
        for act in acts:
            layers += [act, nn.Linear(6, 6)]
        layers += [nn.Dropout(0.2), nn.Linear(6, 2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Conv, BatchNorm, ReLU, MaxPool, AveragePool, GlobalAveragePool, Flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(4, 3),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


class AutoEncoder(nn.Module):
    """Conv down, ConvTranspose up, nearest Upsample, Conv."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        return self.out(self.resize(torch.relu(self.up(torch.relu(self.down(x))))))


class UpsampleCNN(nn.Module):
    """Conv, bilinear Upsample, Conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.resize = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.b = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.b(torch.tanh(self.resize(self.a(x))))


class Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.embed(x).mean(dim=1))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out.mean(dim=1))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, activation="gelu",
            batch_first=True,
        )  # fmt: skip
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.layer(x).mean(dim=1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        r = self.b2(self.c2(torch.relu(self.b1(self.c1(h)))))
        return self.fc(torch.relu(h + r).mean(dim=(2, 3)))


class CumSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x).cumsum(dim=1))).mean(dim=1)


MODELS = {
    "activations": (Activations, lambda: torch.randn(6, 4)),
    "cnn": (CNN, lambda: torch.randn(3, 1, 8, 8)),
    "autoencoder": (AutoEncoder, lambda: torch.randn(2, 1, 8, 8)),
    "upsample": (UpsampleCNN, lambda: torch.randn(2, 1, 6, 6)),
    "embedding": (Embedding, lambda: torch.randint(0, 10, (4, 5))),
    "lstm": (LSTMNet, lambda: torch.randn(3, 5, 3)),
    "gru": (GRUNet, lambda: torch.randn(3, 5, 3)),
    "transformer": (Transformer, lambda: torch.randn(3, 5, 8)),
    "residual": (Residual, lambda: torch.randn(2, 1, 6, 6)),
    "cumsum": (CumSum, lambda: torch.randn(3, 6, 3)),
}


#: Models whose BatchNormalization must not be folded into the convolutions.
KEEP_BATCHNORM = {"cnn", "residual"}


def export(module, x, path: Path, exporter: str, opset: int, keep_batchnorm: bool) -> None:
    if exporter == "torchscript":
        mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(
            module, (x,), str(path), input_names=["X"], output_names=["variable"],
            opset_version=opset, dynamic_axes={"X": {0: "N"}, "variable": {0: "N"}},
            training=mode, dynamo=False,
        )  # fmt: skip
    else:
        torch.onnx.export(
            module, (x,), str(path), input_names=["X"], output_names=["variable"],
            opset_version=opset, dynamic_shapes=({0: torch.export.Dim("N", min=2)},),
            optimize=not keep_batchnorm, dynamo=True,
        )  # fmt: skip
    model = onnx.load(str(path))  # fold external weights back into one small file
    onnx.save(model, str(path))
    Path(f"{path}.data").unlink(missing_ok=True)


def parameter_gradients(model: onnx.ModelProto, params: dict, grads: dict) -> dict:
    """PyTorch's gradient for each initializer that holds exactly one parameter's values
    (as such, or transposed)."""
    found = {}
    for tensor in model.graph.initializer:
        value = onnx.numpy_helper.to_array(tensor)
        hits = []
        for name, p in params.items():
            if value.shape == p.shape and np.array_equal(value, p):
                hits.append(grads[name])
            elif p.ndim == 2 and value.shape == p.T.shape and np.array_equal(value, p.T):
                hits.append(grads[name].T)
        if len(hits) == 1:
            found[tensor.name] = hits[0]
    return found


def main() -> None:
    HERE.mkdir(exist_ok=True)
    torch.backends.mha.set_fastpath_enabled(False)  # the exporters want the plain layer
    for name, (cls, make_input) in MODELS.items():
        torch.manual_seed(0)
        module = cls().eval()
        with torch.no_grad():  # distinct values everywhere (zero biases, unit norms...)
            for p in module.parameters():
                p.add_(0.05 * torch.randn_like(p))
        if name in ("cnn", "residual"):  # non-trivial running statistics
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        x = make_input()
        out = module(x)
        loss = (out**2).sum() / out.shape[0]
        params = dict(module.named_parameters())
        grads = torch.autograd.grad(loss, list(params.values()))
        np_params = {k: v.detach().numpy() for k, v in params.items()}
        np_grads = {k: g.numpy() for k, g in zip(params, grads, strict=True)}
        arrays = {"X": x.numpy(), "variable": out.detach().numpy(), "loss": loss.detach().numpy()}
        exports = EXPORTS
        if name == "transformer":  # scaled_dot_product_attention needs opset 14
            exports = [("torchscript", 14), *EXPORTS[1:]]
        for exporter, opset in exports:
            path = HERE / f"{name}-{exporter}{opset}.onnx"
            try:
                export(module, x, path, exporter, opset, name in KEEP_BATCHNORM)
            except Exception as exc:  # noqa: BLE001  (recorded, the others still export)
                print(f"skipped {path.name}: {type(exc).__name__}: {str(exc)[:200]}")
                path.unlink(missing_ok=True)
                continue
            model = onnx.load(str(path))
            for init, g in parameter_gradients(model, np_params, np_grads).items():
                arrays[f"grad/{path.stem}/{init}"] = g
            print(f"wrote {path.name} ({path.stat().st_size} bytes)")
        np.savez_compressed(
            HERE / f"{name}.npz", torch_version=np.array(torch.__version__), **arrays
        )


if __name__ == "__main__":
    main()
