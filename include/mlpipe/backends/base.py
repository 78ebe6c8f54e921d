"""The backend contract, modelled on scikit-learn's estimator contract.

The constructor stores hyperparameters only; ``fit`` returns self and sets fitted state
in attributes ending in ``_``; ``predict`` returns labels (classification) or values
(regression); ``predict_proba`` returns ``(n, 2)`` class probabilities; ``save(dir)`` /
``load(dir)`` round-trip without arbitrary pickle; an unfitted model raises
:class:`~mlpipe.errors.NotFittedError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mlpipe.preprocessing import Encoded


@runtime_checkable
class Backend(Protocol):
    task: str

    def __init__(self, *, task: str, seed: int = 0, n_threads: int = 1, **params: Any) -> None: ...

    def fit(self, X: Encoded, y: np.ndarray) -> "Backend": ...

    def predict(self, X: Encoded) -> np.ndarray: ...

    def predict_proba(self, X: Encoded) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> "Backend": ...
