"""A trained model as one unit: fitted preprocessing + backend + what it predicts.

``score(frame)`` is the uniform predict every backend answers through, as the target
type says (``mlpipe.targets``): the positive class probability for binary targets, a
probability per class (in ``classes`` order) for multi-class ones, the predicted value
for regression.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe.backends import get_backend
from mlpipe.backends.base import Backend
from mlpipe.errors import TrainingError
from mlpipe.preprocessing import Preprocessor
from mlpipe.spec import PipelineSpec, VariantSpec
from mlpipe.targets import target_type


class ModelBundle:
    def __init__(self, backend_name: str, preprocessor: Preprocessor, backend: Backend, task: str, target: str,
                 classes: list[str] | None = None):
        self.backend_name = backend_name
        self.preprocessor = preprocessor
        self.backend = backend
        self.task = task
        self.target = target
        self.classes = classes

    @property
    def features(self) -> list[str]:
        return [*self.preprocessor.numeric, *self.preprocessor.categorical]

    @property
    def backend_names(self) -> list[str]:
        return [self.backend_name]

    @classmethod
    def train(cls, spec: PipelineSpec, variant: VariantSpec, frame: pd.DataFrame, n_threads: int = 1) -> ModelBundle:
        feats = spec.features
        numeric, categorical = [*feats.numeric, *feats.derived_numeric], list(feats.categorical)
        leaked = sorted(set(numeric + categorical) & spec.leakage)
        if leaked:  # the spec forbids this; checked again where it matters
            raise TrainingError(f"excluded columns {leaked} would reach the model")
        labelled = frame[frame[spec.target.name].notna()]
        if labelled.empty:
            raise TrainingError("no labelled rows to train on")
        pre = Preprocessor(numeric, categorical).fit(labelled)
        kind = spec.target_type
        classes = kind.classes(labelled[spec.target.name], spec.target.classes)
        y = kind.encode(labelled[spec.target.name], classes)
        if classes is not None and (y < 0).any():
            unknown = sorted(set(labelled[spec.target.name][y < 0].astype(str)))[:10]
            raise TrainingError(f"labels {unknown} are not among target.classes {classes}")
        try:
            backend = get_backend(variant.backend)(task=spec.target.task, seed=spec.training.seed,
                                                   n_threads=n_threads, **variant.params)
            backend.fit(pre.transform(labelled), y)
        except (TypeError, ValueError, KeyError) as exc:  # bad hyperparameters, unknown backend
            raise TrainingError(f"variant {variant.name!r} ({variant.backend}): {exc}") from exc
        return cls(variant.backend, pre, backend, spec.target.task, spec.target.name, classes)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        scores = target_type(self.task).output(self.backend, self.preprocessor.transform(frame), self.classes)
        if self.classes is not None and scores.shape[1] != len(self.classes):
            raise TrainingError(f"{self.backend_name} predicts {scores.shape[1]} classes; the model has "
                                f"{len(self.classes)}: {self.classes}")
        return scores

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.preprocessor.save(directory)
        self.backend.save(directory / "backend")
        meta = {"backend": self.backend_name, "task": self.task, "target": self.target, "classes": self.classes}
        (directory / "bundle.json").write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / "bundle.json").read_text())
        backend = get_backend(meta["backend"]).load(directory / "backend")
        return cls(meta["backend"], Preprocessor.load(directory), backend, meta["task"], meta["target"],
                   meta.get("classes"))
