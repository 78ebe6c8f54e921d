"""The backend table: a backend name -> where its class lives, its family, the Airflow
operator that trains it and the pip requirements its models need.

Adding a backend is one module implementing :class:`mlpipe.backends.base.Backend` plus
one line in ``BACKENDS``. Classes are imported only when used, and nothing here imports a
framework, so the spec check and DAG parsing can read the table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlpipe.targets import NAMES

if TYPE_CHECKING:
    from mlpipe.backends.base import Backend


@dataclass(frozen=True)
class BackendEntry:
    """``target``: ``module:Class``. ``family``: variants of one family train as one
    mapped Airflow task (``train_<family>``). ``operator``: the class name in
    ``plugins/mlpipe_operators.py`` that trains them (None: the backend cannot be trained
    by the DAGs, and a spec naming it is refused). ``requirements``: distributions pinned
    into each logged model's pip requirements (those not installed are left out).
    ``params``: the hyperparameters a variant may set, per target type (``binary``,
    ``multiclass``, ``regression``), checked by the spec; None accepts any (checked only at fit time).
    ``modules``: what loading or training its models imports, which the executors
    preload before they fork task processes (plugins/mlpipe_preload.py)."""

    target: str
    family: str
    operator: str | None
    requirements: tuple[str, ...] = ()
    params: dict[str, frozenset[str]] | None = None
    modules: tuple[str, ...] = ()

    def unknown_params(self, task: str, names: set[str]) -> list[str]:
        return [] if self.params is None else sorted(names - self.params[task])


def _all(*names: str) -> dict[str, frozenset[str]]:
    return dict.fromkeys(NAMES, frozenset(names))


# Estimator arguments a variant may set: the backends fix categorical_features,
# random_state and (logistic) max_iter themselves. tests/mlpipe/backends checks these
# against the estimators' own signatures.
_HGB_COMMON = ("early_stopping", "interaction_cst", "l2_regularization", "learning_rate", "loss", "max_bins",
               "max_depth", "max_features", "max_iter", "max_leaf_nodes", "min_samples_leaf", "monotonic_cst",
               "n_iter_no_change", "scoring", "tol", "validation_fraction", "verbose", "warm_start")
_CLASSIFIER_HGB = frozenset({*_HGB_COMMON, "class_weight"})
_LOGISTIC = frozenset({"C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "n_jobs",
                       "penalty", "solver", "tol", "verbose", "warm_start"})
_HGB = {"binary": _CLASSIFIER_HGB, "multiclass": _CLASSIFIER_HGB, "regression": frozenset({*_HGB_COMMON, "quantile"})}
_LINEAR = {"binary": _LOGISTIC, "multiclass": _LOGISTIC,
           "regression": frozenset({"alpha", "copy_X", "fit_intercept", "max_iter", "positive", "solver", "tol"})}
_MLP = ("batch_size", "dropout", "hidden", "lr", "max_embedding_dim", "max_epochs", "patience",
        "validation_fraction")
_SKLEARN = ("scikit-learn", "skops", "threadpoolctl")
_SKLEARN_MODULES = ("skops.io", "sklearn.ensemble", "sklearn.linear_model", "threadpoolctl")

BACKENDS: dict[str, BackendEntry] = {
    "sklearn_hgb": BackendEntry("mlpipe.backends.sklearn:GradientBoosting", "sklearn", "SklearnTrainOperator",
                                _SKLEARN, _HGB, _SKLEARN_MODULES),
    "sklearn_linear": BackendEntry("mlpipe.backends.sklearn:Linear", "sklearn", "SklearnTrainOperator", _SKLEARN,
                                   _LINEAR, _SKLEARN_MODULES),
    "torch_mlp": BackendEntry("mlpipe.backends.torch_mlp:TabularMLP", "torch", "TorchTrainOperator", ("torch",),
                              _all(*_MLP, "weight_decay", "device"), ("torch",)),
    "tensorflow_mlp": BackendEntry("mlpipe.backends.keras_mlp:KerasMLP", "tensorflow", "TensorFlowTrainOperator",
                                   ("tensorflow-cpu", "tensorflow", "keras"), _all(*_MLP), ("tensorflow",)),
}


def backend_entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; registered: {sorted(BACKENDS)}") from None


def get_backend(name: str) -> type[Backend]:
    module, _, attr = backend_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)
