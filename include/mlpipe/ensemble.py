"""Soft-voting ensemble of trained bundles: one model, scored through the same
``score(frame)`` as a single bundle and saved as its members' bundles plus the weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe.errors import TrainingError
from mlpipe.metrics import Metric
from mlpipe.model import ModelBundle
from mlpipe.spec import EnsembleSpec

META = "ensemble.json"


class Ensemble:
    backend_name = "ensemble"

    def __init__(self, members: dict[str, ModelBundle], weights: dict[str, float]):
        if len(members) < 2 or set(members) != set(weights):
            raise TrainingError(f"an ensemble needs two or more members, each with a weight; got {sorted(weights)}")
        total = sum(weights.values())
        self.members = dict(sorted(members.items()))
        self.weights = {name: weights[name] / total for name in self.members}
        first = next(iter(self.members.values()))
        self.task, self.target, self.classes = first.task, first.target, first.classes
        if any(m.classes != self.classes for m in self.members.values()):
            raise TrainingError("an ensemble's members must predict the same classes; got "
                                f"{ {n: m.classes for n, m in self.members.items()} }")

    @property
    def features(self) -> list[str]:
        return list(dict.fromkeys(f for m in self.members.values() for f in m.features))

    @property
    def backend_names(self) -> list[str]:
        return sorted({m.backend_name for m in self.members.values()})

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The members' weighted mean score (multi-class: of each class's probability)."""
        return np.sum([w * self.members[n].score(frame) for n, w in self.weights.items()], axis=0)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        for name, member in self.members.items():
            member.save(directory / "members" / name)
        (directory / META).write_text(json.dumps({"weights": self.weights}))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Ensemble:
        directory = Path(directory)
        weights = json.loads((directory / META).read_text())["weights"]
        return cls({n: ModelBundle.load(directory / "members" / n) for n in weights}, weights)


def load_bundle(directory: str | Path) -> ModelBundle | Ensemble:
    """A saved single bundle or ensemble, whichever the folder holds."""
    return Ensemble.load(directory) if (Path(directory) / META).exists() else ModelBundle.load(directory)


def choose_members(config: EnsembleSpec, metrics: dict[str, float], metric: Metric) -> dict[str, float]:
    """The ``top_k`` candidates by the gate ``metric`` (values in ``metrics``), with their
    voting weights."""
    top = metric.best_first(metrics)[:config.top_k]
    if config.weighting == "equal":
        return dict.fromkeys(top, 1.0)
    return {n: metric.weight(metrics[n]) for n in top}
