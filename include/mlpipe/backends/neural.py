"""What the torch and Keras MLP backends share: hyperparameter checking with defaults,
the seeded validation split with target scaling, and predict / predict_proba on top of
each backend's ``_raw`` (class probabilities for classifiers: one column, the positive
class's, for two classes, else one per class; scaled values for regression)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlpipe.errors import NotFittedError, TrainingError
from mlpipe.preprocessing import Encoded
from mlpipe.targets import target_type

DEFAULTS: dict[str, Any] = {"hidden": [128, 64], "dropout": 0.1, "lr": 2e-3, "batch_size": 1024,
                            "max_epochs": 30, "patience": 3, "validation_fraction": 0.1, "max_embedding_dim": 16}


class NeuralBackend:
    defaults: ClassVar[dict[str, Any]] = DEFAULTS
    framework: ClassVar[str] = ""
    fitted_attr: ClassVar[str] = ""

    def __init__(self, *, task: str, seed: int = 0, n_threads: int = 1, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(f"unknown {self.framework} hyperparameters {unknown}; known: {sorted(self.defaults)}")
        self.task = task
        self.seed = seed
        self.n_threads = n_threads
        self.params = params

    def _p(self, name: str):
        return self.params.get(name, self.defaults[name])

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attr):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")

    @property
    def classes_(self) -> np.ndarray:
        """A classifier's classes: 0 .. n_classes_ - 1 (the largest label it saw)."""
        self._check_fitted()
        return np.arange(self.n_classes_)

    @property
    def units(self) -> int:
        """Output units: one (regression, or the positive class's logit), else one per class."""
        return 1 if self.n_classes_ in (None, 2) else self.n_classes_

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seeded (train, validation) row indices and the target, standardised for
        regression; a classifier's classes are 0 .. n_classes_ - 1."""
        y = np.asarray(y, dtype="float32")
        classifier = target_type(self.task).classifier
        self.n_classes_ = max(2, int(y.max()) + 1) if classifier else None
        self.y_mean_, self.y_std_ = (0.0, 1.0) if classifier else (float(y.mean()), float(y.std() or 1.0))
        order = np.random.default_rng(self.seed).permutation(len(y))
        n_val = max(1, int(len(y) * self._p("validation_fraction")))
        return order[n_val:], order[:n_val], ((y - self.y_mean_) / self.y_std_).astype("float32")

    def _early_stopping(self, run_epoch, val_loss, snapshot):
        """Call ``run_epoch()`` until ``val_loss()`` has not improved by 1e-5 for
        ``patience`` epochs (or ``max_epochs``); return ``snapshot()`` of the best epoch."""
        best, best_state, stale = float("inf"), None, 0
        for _ in range(self._p("max_epochs")):
            run_epoch()
            score = val_loss()
            if score < best - 1e-5:
                best, best_state, stale = score, snapshot(), 0
            else:
                stale += 1
                if stale >= self._p("patience"):
                    break
        if best_state is None:
            raise TrainingError(f"{self.framework} MLP: the validation loss was never finite; "
                                "lower lr or check the inputs for extreme values")
        return best_state

    def _save_meta(self, directory: Path, **fitted: Any) -> Path:
        """Create ``directory`` and write the hyperparameters, the target scaling and
        ``fitted`` (backend-specific state) to ``backend.json``; return the directory."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"task": self.task, "seed": self.seed, "n_threads": self.n_threads, "params": self.params,
                "y_mean": self.y_mean_, "y_std": self.y_std_, "n_classes": self.n_classes_, **fitted}
        (directory / "backend.json").write_text(json.dumps(meta))
        return directory

    @classmethod
    def _from_meta(cls, directory: Path) -> tuple[NeuralBackend, dict[str, Any]]:
        """An unfitted model with the saved hyperparameters and target scaling, and the metadata."""
        meta = json.loads((Path(directory) / "backend.json").read_text())
        model = cls(task=meta["task"], seed=meta["seed"], n_threads=meta["n_threads"], **meta["params"])
        model.y_mean_, model.y_std_ = meta["y_mean"], meta["y_std"]
        model.n_classes_ = meta.get("n_classes", 2 if target_type(meta["task"]).classifier else None)
        return model, meta

    def _raw(self, X: Encoded) -> np.ndarray:  # pragma: no cover - implemented by each backend
        raise NotImplementedError

    def predict_proba(self, X: Encoded) -> np.ndarray:
        self._check_fitted()
        if not target_type(self.task).classifier:
            raise TypeError("predict_proba is only defined for classification")
        p = np.clip(self._raw(X), 0.0, 1.0)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p

    def predict(self, X: Encoded) -> np.ndarray:
        self._check_fitted()
        if target_type(self.task).classifier:
            p = self.predict_proba(X)
            return (p[:, 1] >= 0.5).astype("int64") if p.shape[1] == 2 else p.argmax(axis=1)
        return self._raw(X) * self.y_std_ + self.y_mean_
