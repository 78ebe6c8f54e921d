"""Backend registry: a backend name -> ``module:Class``, imported only when used.

Adding a backend is one module implementing :class:`mlpipe.backends.base.Backend`
plus one line here.
"""

from __future__ import annotations

import importlib

from mlpipe.backends.base import Backend

REGISTRY: dict[str, str] = {
    "sklearn_hgb": "mlpipe.backends.sklearn:GradientBoosting",
    "sklearn_linear": "mlpipe.backends.sklearn:Linear",
    "torch_mlp": "mlpipe.backends.torch_mlp:TabularMLP",
    "tensorflow_mlp": "mlpipe.backends.keras_mlp:KerasMLP",
}


def get_backend(name: str) -> type[Backend]:
    try:
        module, _, attr = REGISTRY[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; registered: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), attr)
