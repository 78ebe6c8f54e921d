"""One contract for every registered backend (scikit-learn's estimator contract):
fit returns self, predict / predict_proba shapes and ranges, save -> load -> identical
predictions, a clear error when unfitted, seeded determinism, unseen categories and
missing values at predict time, binary and multi-class classification and regression."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from mlpipe.backends import BACKENDS, BackendEntry, get_backend
from mlpipe.backends.base import Backend
from mlpipe.errors import NotFittedError, SpecError
from mlpipe.model import ModelBundle
from mlpipe.preprocessing import Encoded, Preprocessor
from mlpipe.spec import load_spec

NAMES = sorted(BACKENDS)
FAST = {"max_epochs": 40, "hidden": [16], "batch_size": 32, "patience": 5, "lr": 0.01}
PARAMS = {"sklearn_hgb": {"max_iter": 15}, "sklearn_linear": {}, "torch_mlp": FAST, "tensorflow_mlp": FAST}
CASES = [(b, t) for b in NAMES for t in ("binary", "regression", "multiclass")]
CLASSIFIERS = [(b, t) for b, t in CASES if t != "regression"]


def test_every_registered_backend_is_covered():
    assert set(PARAMS) == set(BACKENDS)


def test_each_family_has_one_operator():
    operators = {}
    for entry in BACKENDS.values():
        assert operators.setdefault(entry.family, entry.operator) == entry.operator, entry.family


def _data(n: int = 200, seed: int = 0) -> tuple[Encoded, dict[str, np.ndarray]]:
    """Rows and their label per target type: the same signal as a value, its sign and its
    tercile (classes 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3)).astype("float32")
    categorical = rng.integers(0, 4, size=(n, 2)).astype("int64")
    value = 2 * numeric[:, 0] - numeric[:, 1] + (categorical[:, 0] == 2) * 1.5 + rng.normal(0, 0.5, size=n)
    terciles = np.digitize(value, np.quantile(value, [1 / 3, 2 / 3])).astype("int64")
    return Encoded(numeric, categorical, (4, 4)), {"binary": (value > 0).astype("int64"), "regression": value,
                                                    "multiclass": terciles}


def _fit(name: str, task: str, **extra):
    X, y = _data()
    model = get_backend(name)(task=task, seed=3, **{**PARAMS.get(name, {}), **extra})
    return model, model.fit(X, y[task]), X


def test_registry_rejects_unknown_names():
    with pytest.raises(KeyError, match="unknown backend 'xgb'"):
        get_backend("xgb")


@pytest.mark.parametrize("name, task", CASES)
def test_fit_returns_self_and_predicts(name, task):
    model, fitted, X = _fit(name, task)
    assert fitted is model
    assert isinstance(model, Backend)
    pred = model.predict(X)
    assert pred.shape == (len(X),)
    _, y = _data()
    if task == "regression":
        assert np.corrcoef(pred, y[task])[0, 1] > 0.75
    else:
        assert set(np.unique(pred)) <= set(np.unique(y[task]))
        assert (pred == y[task]).mean() > (0.75 if task == "binary" else 0.6)  # learnt the signal (chance: 1/2, 1/3)


@pytest.mark.parametrize("name, task", CLASSIFIERS)
def test_predict_proba_shape_and_rows_sum_to_one(name, task):
    model, _, X = _fit(name, task)
    proba = model.predict_proba(X)
    classes = 2 if task == "binary" else 3
    assert proba.shape == (len(X), classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert ((proba >= 0) & (proba <= 1)).all()
    expected = (proba[:, 1] >= 0.5).astype(int) if task == "binary" else proba.argmax(axis=1)
    np.testing.assert_array_equal(model.predict(X), expected)


@pytest.mark.parametrize("name", NAMES)
def test_predict_proba_undefined_for_regression(name):
    model, _, X = _fit(name, "regression")
    with pytest.raises(TypeError, match="only defined for classification"):
        model.predict_proba(X)


@pytest.mark.parametrize("name, task", CASES)
def test_save_load_gives_identical_predictions(name, task, tmp_path):
    model, _, X = _fit(name, task)
    model.save(tmp_path / "model")
    loaded = get_backend(name).load(tmp_path / "model")
    assert type(loaded) is type(model)
    assert (loaded.task, loaded.seed, loaded.params) == (task, 3, PARAMS.get(name, {}))
    X_new, _ = _data(n=50, seed=9)
    np.testing.assert_allclose(loaded.predict(X_new), model.predict(X_new), rtol=1e-6)
    if task != "regression":
        np.testing.assert_allclose(loaded.predict_proba(X_new), model.predict_proba(X_new), rtol=1e-6)


@pytest.mark.parametrize("name, task", CASES)
def test_unfitted_raises(name, task, tmp_path):
    model = get_backend(name)(task=task)
    X, _ = _data(n=10)
    with pytest.raises(NotFittedError):
        model.predict(X)
    with pytest.raises(NotFittedError):
        model.predict_proba(X)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "m")


@pytest.mark.parametrize("name, task", CASES)
def test_seeded_fits_are_deterministic(name, task):
    first, _, X = _fit(name, task)
    second, _, _ = _fit(name, task)
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    if task != "regression":
        np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


@pytest.mark.parametrize("name", NAMES)
def test_unseen_categories_and_missing_values_at_predict_time(name):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b", "c"], size=200)})
    y = ((frame["x"] > 0) | (frame["c"] == "b")).astype("int64").to_numpy()
    pre = Preprocessor(["x"], ["c"]).fit(frame)
    model = get_backend(name)(task="binary", seed=1, **PARAMS.get(name, {})).fit(pre.transform(frame), y)
    odd = pd.DataFrame({"x": [np.nan, 0.5, None], "c": ["never-seen", None, "a"]})
    proba = model.predict_proba(pre.transform(odd))
    assert proba.shape == (3, 2) and np.isfinite(proba).all()


# ---------------------------------------------------------------- a new backend, one line
class LeastSquares:
    """A throwaway backend: least squares on the numeric columns and one-hot categories
    (a linear probability model for binary targets), saved as JSON."""

    def __init__(self, *, task: str, seed: int = 0, n_threads: int = 1, **params):
        unknown = set(params) - {"ridge"}
        if unknown:
            raise TypeError(f"unknown hyperparameters {sorted(unknown)}")
        self.task, self.seed, self.n_threads, self.params = task, seed, n_threads, params

    def _design(self, X: Encoded) -> np.ndarray:
        numeric = np.nan_to_num(X.numeric.astype("float64"))
        onehot = [(X.categorical[:, i:i + 1] == np.arange(card)).astype("float64")
                  for i, card in enumerate(X.cardinalities)]
        return np.hstack([np.ones((len(numeric), 1)), numeric, *onehot])

    def fit(self, X: Encoded, y: np.ndarray):
        A = self._design(X)
        self.coef_ = np.linalg.solve(A.T @ A + self.params.get("ridge", 1e-3) * np.eye(A.shape[1]), A.T @ np.asarray(y, float))
        return self

    def _raw(self, X: Encoded) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LeastSquares is not fitted: call fit() first")
        return self._design(X) @ self.coef_

    def predict_proba(self, X: Encoded) -> np.ndarray:
        raw = self._raw(X)
        if self.task != "binary":
            raise TypeError("predict_proba is only defined for classification")
        p = np.clip(raw, 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Encoded) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64") if self.task == "binary" else self._raw(X)

    def save(self, directory) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LeastSquares is not fitted: call fit() first")
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"task": self.task, "seed": self.seed, "params": self.params, "coef": self.coef_.tolist()}
        (directory / "backend.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory):
        meta = json.loads((directory / "backend.json").read_text())
        model = cls(task=meta["task"], seed=meta["seed"], **meta["params"])
        model.coef_ = np.asarray(meta["coef"])
        return model


CONTRACT = [f for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)
            and "name" in inspect.signature(f).parameters]


def test_a_backend_registered_in_one_line_passes_the_contract_and_the_spec_check(monkeypatch, tmp_path, spec_dict,
                                                                                  write_spec, model_frame):
    monkeypatch.setitem(BACKENDS, "toy_lsq", BackendEntry(f"{__name__}:LeastSquares", "sklearn", "SklearnTrainOperator"))

    for check in CONTRACT:  # every contract test above, run on the new backend
        cases = check.pytestmark[0].args[1] if "task" in inspect.signature(check).parameters else [(None, None)]
        tasks = sorted({t for _, t in cases if t != "multiclass"}, key=str)  # the toy has no multi-class form
        for task in tasks:
            kwargs = {"name": "toy_lsq", **({"task": task} if task else {}),
                      **({"tmp_path": tmp_path / f"{check.__name__}-{task}"} if "tmp_path" in
                         inspect.signature(check).parameters else {})}
            check(**kwargs)

    spec_dict["variants"].append({"name": "toy", "backend": "toy_lsq", "params": {"ridge": 0.1}})
    loaded = load_spec(write_spec(tmp_path, spec_dict))  # the spec check accepts it
    bundle = ModelBundle.train(loaded, loaded.variants[-1], model_frame)
    scores = bundle.score(model_frame)
    assert bundle.backend_name == "toy_lsq" and ((scores >= 0) & (scores <= 1)).all()
    assert np.corrcoef(scores, model_frame[loaded.target.name])[0, 1] > 0.2  # it learnt something


def test_a_backend_without_an_operator_fails_the_spec_check(monkeypatch, tmp_path, spec_dict, write_spec):
    monkeypatch.setitem(BACKENDS, "toy_lsq", BackendEntry(f"{__name__}:LeastSquares", "toy", None))
    spec_dict["variants"].append({"name": "toy", "backend": "toy_lsq"})
    with pytest.raises(SpecError, match=r"variants.2.backend: backend 'toy_lsq' \(variant 'toy'\) has no training "
                                        "operator"):
        load_spec(write_spec(tmp_path, spec_dict))
