"""PyTorch backend: a tabular MLP with one embedding per categorical column, trained
with early stopping on a seeded validation split. Saved as a JSON config plus a
``state_dict`` loaded with ``weights_only=True`` (no arbitrary unpickling)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.errors import NotFittedError
from mlpipe.preprocessing import Encoded

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"hidden": [128, 64], "dropout": 0.1, "lr": 2e-3, "weight_decay": 1e-5,
                            "batch_size": 1024, "max_epochs": 30, "patience": 3, "validation_fraction": 0.1,
                            "max_embedding_dim": 16, "device": "auto"}


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


def _network(n_numeric: int, cardinalities: list[int], hidden: list[int], dropout: float, max_dim: int):
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
            layers.append(nn.Linear(width, 1))
            self.body = nn.Sequential(*layers)

        def forward(self, numeric, categorical):
            parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
            return self.body(torch.cat(parts, dim=1)).squeeze(1)

    return TabularMLP()


class TabularMLP:
    def __init__(self, *, task: str, seed: int = 0, n_threads: int = 1, **params: Any):
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"unknown torch hyperparameters {unknown}; known: {sorted(DEFAULTS)}")
        self.task = task
        self.seed = seed
        self.n_threads = n_threads
        self.params = params

    def _p(self, name: str):
        return self.params.get(name, DEFAULTS[name])

    def fit(self, X: Encoded, y: np.ndarray) -> TabularMLP:
        import torch

        torch.manual_seed(self.seed)
        torch.set_num_threads(self.n_threads)
        self.device_ = pick_device(self._p("device"))
        y = np.asarray(y, dtype="float32")
        self.y_mean_, self.y_std_ = (0.0, 1.0) if self.task == "binary" else (float(y.mean()), float(y.std() or 1.0))
        target = (y - self.y_mean_) / self.y_std_
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_val = max(1, int(len(y) * self._p("validation_fraction")))
        val, train = order[:n_val], order[n_val:]
        self.config_ = {"n_numeric": X.numeric.shape[1], "cardinalities": list(X.cardinalities),
                        "hidden": list(self._p("hidden")), "dropout": self._p("dropout"),
                        "max_dim": self._p("max_embedding_dim")}
        net = _network(**self.config_).to(self.device_)
        opt = torch.optim.AdamW(net.parameters(), lr=self._p("lr"), weight_decay=self._p("weight_decay"))
        loss_fn = torch.nn.BCEWithLogitsLoss() if self.task == "binary" else torch.nn.MSELoss()
        tensors = self._tensors(X)
        t = torch.as_tensor(target, device=self.device_)
        best, best_state, stale = float("inf"), None, 0
        gen = torch.Generator().manual_seed(self.seed)
        batch = self._p("batch_size")
        for _ in range(self._p("max_epochs")):
            net.train()
            perm = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
            for start in range(0, len(perm), batch):
                idx = perm[start:start + batch].to(self.device_)
                opt.zero_grad()
                loss_fn(net(tensors[0][idx], tensors[1][idx]), t[idx]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                vidx = torch.as_tensor(val, device=self.device_)
                score = float(loss_fn(net(tensors[0][vidx], tensors[1][vidx]), t[vidx]))
            if score < best - 1e-5:
                best, stale = score, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self._p("patience"):
                    break
        net.load_state_dict(best_state)
        self.net_ = net.eval()
        return self

    def _tensors(self, X: Encoded):
        import torch

        return (torch.as_tensor(X.numeric, dtype=torch.float32, device=self.device_),
                torch.as_tensor(X.categorical, dtype=torch.long, device=self.device_))

    def _raw(self, X: Encoded) -> np.ndarray:
        import torch

        if not hasattr(self, "net_"):
            raise NotFittedError("TabularMLP is not fitted: call fit() first")
        torch.set_num_threads(self.n_threads)
        with torch.no_grad():
            out = self.net_(*self._tensors(X))
        return out.cpu().numpy().astype("float64")

    def predict_proba(self, X: Encoded) -> np.ndarray:
        if not hasattr(self, "net_"):
            raise NotFittedError("TabularMLP is not fitted: call fit() first")
        if self.task != "binary":
            raise TypeError("predict_proba is only defined for classification")
        p = 1.0 / (1.0 + np.exp(-self._raw(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Encoded) -> np.ndarray:
        if self.task == "binary":
            return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")
        return self._raw(X) * self.y_std_ + self.y_mean_

    def save(self, directory: Path) -> None:
        import torch

        if not hasattr(self, "net_"):
            raise NotFittedError("TabularMLP is not fitted: call fit() first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.net_.state_dict().items()}, directory / "state_dict.pt")
        meta = {"task": self.task, "seed": self.seed, "n_threads": self.n_threads, "params": self.params,
                "config": self.config_, "y_mean": self.y_mean_, "y_std": self.y_std_}
        (directory / "backend.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> TabularMLP:
        import torch

        directory = Path(directory)
        meta = json.loads((directory / "backend.json").read_text())
        model = cls(task=meta["task"], seed=meta["seed"], n_threads=meta["n_threads"], **meta["params"])
        model.config_, model.y_mean_, model.y_std_ = meta["config"], meta["y_mean"], meta["y_std"]
        model.device_ = pick_device(model._p("device"), quiet=True)
        net = _network(**model.config_)
        net.load_state_dict(torch.load(directory / "state_dict.pt", map_location="cpu", weights_only=True))
        model.net_ = net.to(model.device_).eval()
        return model
