"""scikit-learn backends, saved with skops (no arbitrary pickle on load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from mlpipe.errors import NotFittedError
from mlpipe.preprocessing import Encoded
from mlpipe.targets import target_type

# Types skops does not trust by default that these backends' estimators contain (found
# by saving each estimator of both tasks; tests/mlpipe/backends checks it stays so).
# Anything else in a file is refused before it is loaded.
TRUSTED_TYPES = frozenset({"functools.partial", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                           "sklearn.utils.validation.check_array"})



_THREADPOOLS: list[ThreadpoolController] = []


def threadpool_limits(n_threads: int):
    """threadpoolctl's limit with the native libraries found once per process (finding
    them is about 5 ms, which a one-row prediction would pay on every call)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=n_threads)


def _skops():
    """``skops.io``, imported with warnings silenced: on import it looks every scipy ufunc
    up by ``getattr`` over all of ``sys.modules``, and in a task process each lookup on one
    of Airflow's deprecated-attribute shims warns through the task log (about 1,100 lines
    and most of a 36 s score task's time, measured)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skops.io as sio
    return sio

class _SklearnBackend:
    def __init__(self, *, task: str, seed: int = 0, n_threads: int = 1, **params: Any):
        self.task = task
        self.seed = seed
        self.n_threads = n_threads
        self.params = params

    def _build(self, X: Encoded):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _matrix(X: Encoded) -> np.ndarray:
        return np.hstack([X.numeric.astype("float64"), X.categorical.astype("float64")])

    def fit(self, X: Encoded, y: np.ndarray):
        self.estimator_ = self._build(X)
        with threadpool_limits(self.n_threads):
            self.estimator_.fit(self._matrix(X), np.asarray(y))
        return self

    def _fitted(self):
        if not hasattr(self, "estimator_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")
        return self.estimator_

    @property
    def classes_(self) -> np.ndarray:
        """A classifier's classes as its training labels had them (indices, for multi-class)."""
        return self._fitted().classes_

    def predict(self, X: Encoded) -> np.ndarray:
        est = self._fitted()
        with threadpool_limits(self.n_threads):
            return est.predict(self._matrix(X))

    def predict_proba(self, X: Encoded) -> np.ndarray:
        est = self._fitted()
        if not target_type(self.task).classifier:
            raise TypeError("predict_proba is only defined for classification")
        with threadpool_limits(self.n_threads):
            return est.predict_proba(self._matrix(X))

    def save(self, directory: Path) -> None:
        sio = _skops()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sio.dump(self._fitted(), directory / "estimator.skops")
        meta = {"task": self.task, "seed": self.seed, "n_threads": self.n_threads, "params": self.params}
        (directory / "backend.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path):
        sio = _skops()
        directory = Path(directory)
        meta = json.loads((directory / "backend.json").read_text())
        model = cls(task=meta["task"], seed=meta["seed"], n_threads=meta["n_threads"], **meta["params"])
        path = directory / "estimator.skops"
        untrusted = sio.get_untrusted_types(file=path)
        alien = sorted(set(untrusted) - TRUSTED_TYPES)
        if alien:
            raise ValueError(f"{path}: refusing to load unexpected types {alien}")
        model.estimator_ = sio.load(path, trusted=untrusted)
        return model


class GradientBoosting(_SklearnBackend):
    """Histogram gradient boosting with native categorical splits."""

    def _build(self, X: Encoded):
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        mask = [False] * X.numeric.shape[1] + [True] * X.categorical.shape[1]
        cls = HistGradientBoostingClassifier if target_type(self.task).classifier else HistGradientBoostingRegressor
        return cls(categorical_features=mask if any(mask) else None, random_state=self.seed, **self.params)


class Linear(_SklearnBackend):
    """Logistic (binary, multinomial) or ridge (regression) regression on one-hot categories."""

    def _build(self, X: Encoded):
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        n_num, n_cat = X.numeric.shape[1], X.categorical.shape[1]
        encode = ColumnTransformer(
            [("num", "passthrough", list(range(n_num))),
             ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(n_num, n_num + n_cat)))])
        if target_type(self.task).classifier:
            model = LogisticRegression(max_iter=2000, random_state=self.seed, **self.params)
        else:
            model = Ridge(random_state=self.seed, **self.params)
        return Pipeline([("encode", encode), ("model", model)])
