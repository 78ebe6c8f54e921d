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

    def _raw(self, X: Encoded) -> np.ndarray:
        """The estimator's ``_raw_predict`` of our own float64 matrix without its per-call
        validation and set-up (about 1.5 ms, 10x the trees' work for one row): the same
        tree calls, in the same order, on the same array, so the same sums."""
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        est, matrix = self._fitted(), self._matrix(X)
        if matrix.shape[1] != est.n_features_in_:
            raise ValueError(f"X has {matrix.shape[1]} features; the model was fitted with {est.n_features_in_}")
        if est._preprocessor is not None:  # its ColumnTransformer: ordinal codes of the categories first
            mask = est.is_categorical_
            encoded = [np.where(known, pos, np.nan) for pos, known in
                       (self._ordinal(cats, matrix[:, j]) for cats, j in
                        zip(est._preprocessor.named_transformers_["encoder"].categories_, np.flatnonzero(mask),
                            strict=True))]
            matrix = np.hstack([np.column_stack(encoded).astype("float64") if encoded else matrix[:, :0],
                                matrix[:, ~mask]])
        matrix = np.ascontiguousarray(matrix, dtype="float64")
        bitsets = getattr(self, "_bitsets_", None)
        if bitsets is None:  # fixed once fitted
            bitsets = self._bitsets_ = est._bin_mapper.make_known_categories_bitsets()
        raw = np.zeros((len(matrix), est.n_trees_per_iteration_), dtype=est._baseline_prediction.dtype, order="F")
        raw += est._baseline_prediction
        n_threads = _openmp_effective_n_threads()
        for predictors in est._predictors:
            for k, predictor in enumerate(predictors):
                raw[:, k] += predictor.predict(matrix, known_cat_bitsets=bitsets[0], f_idx_map=bitsets[1],
                                               n_threads=n_threads)
        return raw

    @staticmethod
    def _ordinal(categories: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OrdinalEncoder's code of each value (its position among the sorted ``categories``)
        and whether it is known (unknown ones: NaN, as the estimator configures it)."""
        pos = np.searchsorted(categories, values)
        return pos, categories[np.minimum(pos, len(categories) - 1)] == values

    def _direct(self) -> bool:
        """Whether :meth:`_raw` applies: the estimator is laid out as the scikit-learn version
        written against has it (ordinal encoder first, the rest passed through)."""
        est = self._fitted()
        pre = getattr(est, "_preprocessor", None)
        if not hasattr(est, "_predictors") or not hasattr(est, "_baseline_prediction"):
            return False
        if pre is None:
            return True
        n_cat = int(np.sum(est.is_categorical_))
        return (getattr(pre, "output_indices_", {}).get("encoder") == slice(0, n_cat)
                and pre.output_indices_.get("numerical") == slice(n_cat, est.n_features_in_)
                and pre.remainder == "drop" and all(np.asarray(c).dtype.kind == "f"
                                                    for c in pre.named_transformers_["encoder"].categories_))

    def predict(self, X: Encoded) -> np.ndarray:
        if target_type(self.task).classifier or not self._direct():
            return super().predict(X)
        with threadpool_limits(self.n_threads):
            return self._fitted()._loss.link.inverse(self._raw(X).ravel())

    def predict_proba(self, X: Encoded) -> np.ndarray:
        if not target_type(self.task).classifier or not self._direct():
            return super().predict_proba(X)
        with threadpool_limits(self.n_threads):
            return self._fitted()._loss.predict_proba(self._raw(X))


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
