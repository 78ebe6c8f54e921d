from __future__ import annotations

import numpy as np
import pytest

from mlpipe.backends import REGISTRY, get_backend
from mlpipe.backends.base import Backend
from mlpipe.backends.sklearn import GradientBoosting, Linear
from mlpipe.errors import NotFittedError
from mlpipe.preprocessing import Encoded

BACKENDS = sorted(REGISTRY)
PARAMS = {"sklearn_hgb": {"max_iter": 15}, "sklearn_linear": {}}
CASES = [(b, t) for b in BACKENDS for t in ("binary", "regression")]


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


def test_registry_resolves_classes():
    assert get_backend("sklearn_hgb") is GradientBoosting
    assert get_backend("sklearn_linear") is Linear
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
        assert (pred == y_bin).mean() > 0.8  # learnt the signal
    else:
        assert np.corrcoef(pred, y_reg)[0, 1] > 0.8


@pytest.mark.parametrize("name", BACKENDS)
def test_predict_proba_shape_and_rows_sum_to_one(name):
    model, _, X = _fit(name, "binary")
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(model.predict(X), proba.argmax(axis=1))


@pytest.mark.parametrize("name", BACKENDS)
def test_predict_proba_undefined_for_regression(name):
    model, _, X = _fit(name, "regression")
    with pytest.raises(TypeError, match="only defined for classification"):
        model.predict_proba(X)


@pytest.mark.parametrize("name, task", CASES)
def test_save_load_gives_identical_predictions(name, task, tmp_path):
    model, _, X = _fit(name, task)
    model.save(tmp_path / "model")
    assert (tmp_path / "model" / "estimator.skops").exists()
    loaded = get_backend(name).load(tmp_path / "model")
    assert type(loaded) is type(model)
    assert (loaded.task, loaded.seed, loaded.params) == (task, 3, PARAMS[name])
    X_new, _, _ = _data(n=50, seed=9)
    np.testing.assert_array_equal(loaded.predict(X_new), model.predict(X_new))
    if task == "binary":
        np.testing.assert_array_equal(loaded.predict_proba(X_new), model.predict_proba(X_new))


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


def test_seed_reaches_the_estimator():
    """The seed matters where the estimator is random (HGB with early stopping)."""
    X, y, _ = _data(n=300)
    params = {"max_iter": 30, "early_stopping": True, "validation_fraction": 0.3, "n_iter_no_change": 2}
    a = GradientBoosting(task="binary", seed=1, **params).fit(X, y)
    b = GradientBoosting(task="binary", seed=1, **params).fit(X, y)
    assert a.estimator_.random_state == 1
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_hgb_marks_categorical_columns():
    model, _, _ = _fit("sklearn_hgb", "binary")
    mask = list(model.estimator_.categorical_features)
    assert mask == [False, False, False, True, True]
    only_numeric = Encoded(np.ones((20, 2), "float32"), np.zeros((20, 0), "int64"), ())
    fitted = GradientBoosting(task="regression", max_iter=5).fit(only_numeric, np.arange(20.0))
    assert fitted.estimator_.categorical_features is None


def test_unseen_category_code_at_predict_time():
    X, y, _ = _data()
    for name in BACKENDS:
        model = get_backend(name)(task="binary", **PARAMS[name]).fit(X, y)
        odd = Encoded(X.numeric[:5], np.full((5, 2), 9, "int64"), X.cardinalities)  # never seen in fit
        proba = model.predict_proba(odd)
        assert proba.shape == (5, 2) and np.isfinite(proba).all()


def test_load_refuses_unexpected_types(tmp_path, monkeypatch):
    import skops.io as sio

    model, _, _ = _fit("sklearn_linear", "binary")
    model.save(tmp_path / "m")
    monkeypatch.setattr(sio, "get_untrusted_types", lambda file: ["os.system"])
    with pytest.raises(ValueError, match="refusing to load unexpected types"):
        Linear.load(tmp_path / "m")
