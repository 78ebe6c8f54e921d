"""scikit-learn specifics: seeds reach the estimator, native categorical splits, skops
loading refuses unexpected types."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.backends import get_backend
from mlpipe.backends.sklearn import GradientBoosting, Linear
from mlpipe.preprocessing import Encoded

PARAMS = {"sklearn_hgb": {"max_iter": 15}, "sklearn_linear": {}}


def _data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3)).astype("float32")
    categorical = rng.integers(0, 4, size=(n, 2)).astype("int64")
    value = 2 * numeric[:, 0] - numeric[:, 1] + (categorical[:, 0] == 2) * 1.5 + rng.normal(0, 0.5, size=n)
    return Encoded(numeric, categorical, (4, 4)), (value > 0).astype("int64"), value


def _fit(name: str, task: str):
    X, y_bin, y_reg = _data()
    model = get_backend(name)(task=task, seed=3, **PARAMS[name])
    return model, model.fit(X, y_bin if task == "binary" else y_reg), X


def test_registry_resolves_classes():
    assert get_backend("sklearn_hgb") is GradientBoosting
    assert get_backend("sklearn_linear") is Linear


def test_saved_with_skops(tmp_path):
    model, _, _ = _fit("sklearn_hgb", "binary")
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "estimator.skops").exists()


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


@pytest.mark.parametrize("backend", ["sklearn_hgb", "sklearn_linear"])
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_trusted_type_list_is_exactly_what_the_estimators_need(tmp_path, backend, task):
    import skops.io as sio

    from mlpipe.backends.sklearn import TRUSTED_TYPES

    model, _, _ = _fit(backend, task)
    model.save(tmp_path / "m")
    assert set(sio.get_untrusted_types(file=tmp_path / "m" / "estimator.skops")) <= TRUSTED_TYPES
    assert type(model).load(tmp_path / "m").estimator_ is not None


def test_load_refuses_unexpected_types(tmp_path, monkeypatch):
    import skops.io as sio

    model, _, _ = _fit("sklearn_linear", "binary")
    model.save(tmp_path / "m")
    monkeypatch.setattr(sio, "get_untrusted_types", lambda file: ["sklearn.utils.validation.check_array",
                                                                  "numpy.ctypeslib.load_library"])
    with pytest.raises(ValueError, match="refusing to load unexpected types"):
        Linear.load(tmp_path / "m")


@pytest.mark.parametrize("backend, task, estimator, fixed", [
    ("sklearn_hgb", "binary", "HistGradientBoostingClassifier", {"categorical_features", "random_state"}),
    ("sklearn_hgb", "regression", "HistGradientBoostingRegressor", {"categorical_features", "random_state"}),
    ("sklearn_linear", "binary", "LogisticRegression", {"random_state", "max_iter"}),
    ("sklearn_linear", "regression", "Ridge", {"random_state"}),
])
def test_declared_hyperparameters_are_the_estimators_own(backend, task, estimator, fixed):
    import sklearn.ensemble
    import sklearn.linear_model

    from mlpipe.backends import BACKENDS

    cls = getattr(sklearn.ensemble, estimator, None) or getattr(sklearn.linear_model, estimator)
    assert BACKENDS[backend].params[task] == set(cls().get_params()) - fixed


def test_declared_neural_hyperparameters_are_the_backends_defaults():
    from mlpipe.backends import BACKENDS, get_backend

    for name in ("torch_mlp", "tensorflow_mlp"):
        for task in ("binary", "regression"):
            assert BACKENDS[name].params[task] == set(get_backend(name).defaults), name


def test_loading_skops_in_a_task_process_logs_no_deprecation_storm():
    """With Airflow's modules loaded (as in a task process), the first skops import must
    not warn once per scipy ufunc and Airflow shim (it did ~1,100 times, through the task log)."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('always'); import airflow.utils.timezone, scipy.special\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    from mlpipe.backends.sklearn import _skops; _skops()\n"
            "print(len(seen))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0"
