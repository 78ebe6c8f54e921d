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

if TYPE_CHECKING:
    from mlpipe.backends.base import Backend


@dataclass(frozen=True)
class BackendEntry:
    """``target``: ``module:Class``. ``family``: variants of one family train as one
    mapped Airflow task (``train_<family>``). ``operator``: the class name in
    ``plugins/mlpipe_operators.py`` that trains them (None: the backend cannot be trained
    by the DAGs, and a spec naming it is refused). ``requirements``: distributions pinned
    into each logged model's pip requirements (those not installed are left out)."""

    target: str
    family: str
    operator: str | None
    requirements: tuple[str, ...] = ()


_SKLEARN = ("scikit-learn", "skops", "threadpoolctl")

BACKENDS: dict[str, BackendEntry] = {
    "sklearn_hgb": BackendEntry("mlpipe.backends.sklearn:GradientBoosting", "sklearn", "SklearnTrainOperator", _SKLEARN),
    "sklearn_linear": BackendEntry("mlpipe.backends.sklearn:Linear", "sklearn", "SklearnTrainOperator", _SKLEARN),
    "torch_mlp": BackendEntry("mlpipe.backends.torch_mlp:TabularMLP", "torch", "TorchTrainOperator", ("torch",)),
    "tensorflow_mlp": BackendEntry("mlpipe.backends.keras_mlp:KerasMLP", "tensorflow", "TensorFlowTrainOperator",
                                   ("tensorflow-cpu", "tensorflow", "keras")),
}


def backend_entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; registered: {sorted(BACKENDS)}") from None


def get_backend(name: str) -> type[Backend]:
    module, _, attr = backend_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)
