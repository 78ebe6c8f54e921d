"""PyTorch backend: a tabular MLP with one embedding per categorical column, trained
with early stopping on a seeded validation split. Saved as a JSON config plus a
``state_dict`` loaded with ``weights_only=True`` (no arbitrary unpickling)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.backends.neural import DEFAULTS as NEURAL_DEFAULTS
from mlpipe.backends.neural import NeuralBackend
from mlpipe.preprocessing import Encoded

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {**NEURAL_DEFAULTS, "weight_decay": 1e-5, "device": "auto"}


def pick_device(requested: str, quiet: bool = False) -> str:
    """``cuda`` when asked for ("auto" or "cuda") and visible; otherwise the CPU, said aloud
    unless ``quiet`` (loading a model for scoring)."""
    import torch

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if quiet:
        return "cpu"
    if requested == "cuda":
        log.warning("torch backend: CUDA requested but no GPU is visible; falling back to the CPU")
    elif requested == "auto":
        log.warning("torch backend: no GPU visible; training on the CPU")
    return "cpu"


def _network(n_numeric: int, cardinalities: list[int], hidden: list[int], dropout: float, max_dim: int,
             units: int = 1):
    import torch
    from torch import nn

    class TabularMLP(nn.Module):
        def __init__(self):
            super().__init__()
            dims = [min(max_dim, (card + 1) // 2 + 1) for card in cardinalities]
            self.embeddings = nn.ModuleList(nn.Embedding(card, dim) for card, dim in zip(cardinalities, dims,
                                                                                          strict=True))
            layers, width = [], n_numeric + sum(dims)
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
                width = size
            layers.append(nn.Linear(width, units))
            self.body = nn.Sequential(*layers)

        def forward(self, numeric, categorical):
            parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
            out = self.body(torch.cat(parts, dim=1))
            return out.squeeze(1) if units == 1 else out

    return TabularMLP()


class TabularMLP(NeuralBackend):
    defaults = DEFAULTS
    framework = "torch"
    fitted_attr = "net_"

    def fit(self, X: Encoded, y: np.ndarray) -> TabularMLP:
        import torch

        torch.manual_seed(self.seed)
        torch.set_num_threads(self.n_threads)
        self.device_ = pick_device(self._p("device"))
        train, val, target = self._split(y)
        self.config_ = {"n_numeric": X.numeric.shape[1], "cardinalities": list(X.cardinalities),
                        "hidden": list(self._p("hidden")), "dropout": self._p("dropout"),
                        "max_dim": self._p("max_embedding_dim"), "units": self.units}
        net = _network(**self.config_).to(self.device_)
        opt = torch.optim.AdamW(net.parameters(), lr=self._p("lr"), weight_decay=self._p("weight_decay"))
        loss_fn = (torch.nn.MSELoss() if self.n_classes_ is None else torch.nn.BCEWithLogitsLoss() if self.units == 1
                   else torch.nn.CrossEntropyLoss())
        tensors = self._tensors(X)
        t = torch.as_tensor(target if self.units == 1 else target.astype("int64"), device=self.device_)
        gen = torch.Generator().manual_seed(self.seed)
        batch = self._p("batch_size")
        vidx = torch.as_tensor(val, device=self.device_)

        def run_epoch() -> None:
            net.train()
            perm = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
            for start in range(0, len(perm), batch):
                idx = perm[start:start + batch].to(self.device_)
                opt.zero_grad()
                loss_fn(net(tensors[0][idx], tensors[1][idx]), t[idx]).backward()
                opt.step()

        def val_loss() -> float:
            net.eval()
            with torch.no_grad():
                return float(loss_fn(net(tensors[0][vidx], tensors[1][vidx]), t[vidx]))

        best_state = self._early_stopping(
            run_epoch, val_loss, lambda: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        net.load_state_dict(best_state)
        self.net_ = net.eval()
        return self

    def _tensors(self, X: Encoded):
        import torch

        return (torch.as_tensor(X.numeric, dtype=torch.float32, device=self.device_),
                torch.as_tensor(X.categorical, dtype=torch.long, device=self.device_))

    def _raw(self, X: Encoded) -> np.ndarray:
        import torch

        self._check_fitted()
        torch.set_num_threads(self.n_threads)
        with torch.no_grad():
            out = self.net_(*self._tensors(X))
            if self.n_classes_ is not None:
                out = torch.sigmoid(out) if self.units == 1 else torch.softmax(out, dim=1)
        return out.cpu().numpy().astype("float64")

    def save(self, directory: Path) -> None:
        import torch

        self._check_fitted()  # before reading config_
        directory = self._save_meta(directory, config=self.config_)
        torch.save({k: v.cpu() for k, v in self.net_.state_dict().items()}, directory / "state_dict.pt")

    @classmethod
    def load(cls, directory: Path) -> TabularMLP:
        import torch

        model, meta = cls._from_meta(directory)
        model.config_ = meta["config"]
        model.device_ = pick_device(model._p("device"), quiet=True)
        net = _network(**model.config_)
        net.load_state_dict(torch.load(Path(directory) / "state_dict.pt", map_location="cpu", weights_only=True))
        model.net_ = net.to(model.device_).eval()
        return model
