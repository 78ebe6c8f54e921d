"""One contract for every registered backend (scikit-learn's estimator contract):
fit returns self, predict / predict_proba shapes and ranges, save -> load -> identical
predictions, a clear error when unfitted, seeded determinism, unseen categories and
missing values at predict time, binary classification and regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.backends import REGISTRY, get_backend
from mlpipe.backends.base import Backend
from mlpipe.errors import NotFittedError
from mlpipe.preprocessing import Encoded, Preprocessor

BACKENDS = sorted(REGISTRY)
FAST = {"max_epochs": 40, "hidden": [16], "batch_size": 32, "patience": 5, "lr": 0.01}
PARAMS = {"sklearn_hgb": {"max_iter": 15}, "sklearn_linear": {}, "torch_mlp": FAST, "tensorflow_mlp": FAST}
CASES = [(b, t) for b in BACKENDS for t in ("binary", "regression")]


def test_every_registered_backend_is_covered():
    assert set(PARAMS) == set(REGISTRY)


def _data(n: int = 200, seed: int = 0) -> tuple[Encoded, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3)).astype("float32")
    categorical = rng.integers(0, 4, size=(n, 2)).astype("int64")
    value = 2 * numeric[:, 0] - numeric[:, 1] + (categorical[:, 0] == 2) * 1.5 + rng.normal(0, 0.5, size=n)
    return Encoded(numeric, categorical, (4, 4)), (value > 0).astype("int64"), value


def _fit(name: str, task: str, **extra):
    X, y_bin, y_reg = _data()
    model = get_backend(name)(task=task, seed=3, **{**PARAMS[name], **extra})
    return model, model.fit(X, y_bin if task == "binary" else y_reg), X


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
    _, y_bin, y_reg = _data()
    if task == "binary":
        assert set(np.unique(pred)) <= {0, 1}
        assert (pred == y_bin).mean() > 0.75  # learnt the signal
    else:
        assert np.corrcoef(pred, y_reg)[0, 1] > 0.75


@pytest.mark.parametrize("name", BACKENDS)
def test_predict_proba_shape_and_rows_sum_to_one(name):
    model, _, X = _fit(name, "binary")
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(model.predict(X), (proba[:, 1] >= 0.5).astype(int))


@pytest.mark.parametrize("name", BACKENDS)
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
    assert (loaded.task, loaded.seed, loaded.params) == (task, 3, PARAMS[name])
    X_new, _, _ = _data(n=50, seed=9)
    np.testing.assert_allclose(loaded.predict(X_new), model.predict(X_new), rtol=1e-6)
    if task == "binary":
        np.testing.assert_allclose(loaded.predict_proba(X_new), model.predict_proba(X_new), rtol=1e-6)


@pytest.mark.parametrize("name, task", CASES)
def test_unfitted_raises(name, task, tmp_path):
    model = get_backend(name)(task=task)
    X, _, _ = _data(n=10)
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
    if task == "binary":
        np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))



@pytest.mark.parametrize("name", BACKENDS)
def test_unseen_categories_and_missing_values_at_predict_time(name):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b", "c"], size=200)})
    y = ((frame["x"] > 0) | (frame["c"] == "b")).astype("int64").to_numpy()
    pre = Preprocessor(["x"], ["c"]).fit(frame)
    model = get_backend(name)(task="binary", seed=1, **PARAMS[name]).fit(pre.transform(frame), y)
    odd = pd.DataFrame({"x": [np.nan, 0.5, None], "c": ["never-seen", None, "a"]})
    proba = model.predict_proba(pre.transform(odd))
    assert proba.shape == (3, 2) and np.isfinite(proba).all()
