"""The metric table: every metric's name, the target types it applies to, its direction,
its function and its bootstrap form, in one place that the spec check, training,
evaluation, the bootstrap, the gate, the ensemble, monitoring and the reports all read.

A metric's functions take ``(y, score)``: for a binary target ``y`` is 0/1 and ``score``
the positive class probability (one column); for a multi-class target ``y`` is the class
index and ``score`` an ``(n, classes)`` matrix of probabilities; for regression both are
values. Functions are named ``"module:attr"`` and imported only when called, so the spec
check and DAG parsing read this table without numpy or scikit-learn (as with
``mlpipe.backends.BACKENDS``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """``greater_is_better``: the direction (None: a descriptive figure, never a gate or a
    floor). ``function``: ``(y, score) -> float | None`` (None where undefined, e.g. ROC
    AUC of one class). ``weighted``: the bootstrap form, ``prepare(y, score) -> (weights
    (resamples x rows) -> values)``; None: no bootstrap, so not a gate metric."""

    name: str
    targets: frozenset[str]
    greater_is_better: bool | None
    function: str
    weighted: str | None = None
    description: str = ""

    @property
    def bootstrap(self) -> bool:
        return self.weighted is not None

    @property
    def ranked(self) -> bool:
        """Whether it has a direction: a descriptive figure is never a gate or a floor."""
        return self.greater_is_better is not None

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is: ``sign * value`` ranks best first."""
        return 1.0 if self.greater_is_better else -1.0

    @property
    def better(self) -> str:
        """Which way is better, in words ("" for a descriptive figure)."""
        return "" if not self.ranked else "higher" if self.greater_is_better else "lower"

    @property
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"

    def gain(self, value: float, reference: float) -> float:
        """How much better ``value`` is than ``reference`` (negative: worse)."""
        return self.sign * (value - reference)

    def meets(self, value: float | None, floor: float) -> bool:
        """Whether ``value`` is at least as good as ``floor``."""
        return value is not None and self.gain(value, floor) >= 0

    def bad_side(self, quantile: float) -> float:
        """The quantile level ``quantile`` away from the best on the bad side (0.99 of a
        loss, 0.01 of a score)."""
        return 1.0 - quantile if self.greater_is_better else quantile

    def weight(self, value: float) -> float:
        """A positive voting weight that grows with quality (the value, or its inverse for
        a loss; r2 can be zero or negative, losses can be zero)."""
        return max(value, 1e-6) if self.greater_is_better else 1.0 / max(value, 1e-12)

    def best_first(self, values: dict[str, float]) -> list[str]:
        """The names of ``values`` from best to worst (ties by name)."""
        return sorted(values, key=lambda n: (-self.sign * values[n], n))

    def compute(self, y, score) -> float | None:
        return _resolve(self.function)(y, score)

    def prepare_weighted(self, y, score):
        if self.weighted is None:
            raise ValueError(f"no bootstrap for metric {self.name!r}; choose one of {sorted(gate_metrics())}")
        return _resolve(self.weighted)(y, score)


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_B, _R, _M = frozenset({"binary"}), frozenset({"regression"}), frozenset({"multiclass"})
_F, _W = "mlpipe.metric_functions:", "mlpipe.bootstrap:"

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("roc_auc", _B | _M, True, _F + "roc_auc", _W + "roc_auc",
           "Area under the ROC curve; multi-class: the mean of each class against the rest (macro)"),
    Metric("pr_auc", _B, True, _F + "pr_auc", _W + "pr_auc", "Average precision"),
    Metric("log_loss", _B | _M, False, _F + "log_loss", _W + "log_loss",
           "Mean negative log probability of the true class (probabilities clipped at 1e-7)"),
    Metric("brier", _B | _M, False, _F + "brier", _W + "brier",
           "Mean squared error of the probabilities; multi-class: summed over the classes"),
    Metric("accuracy", _B | _M, True, _F + "accuracy", _W + "accuracy",
           "Share of rows whose predicted class (binary: score >= 0.5; else the most probable) is right"),
    Metric("f1", _B, True, _F + "f1", None, "F1 of the positive class at score >= 0.5"),
    Metric("precision", _B, True, _F + "precision", None, "Precision of the positive class at score >= 0.5"),
    Metric("recall", _B, True, _F + "recall", None, "Recall of the positive class at score >= 0.5"),
    Metric("f1_macro", _M, True, _F + "f1_macro", _W + "f1_macro", "Mean of the per-class F1"),
    Metric("f1_weighted", _M, True, _F + "f1_weighted", _W + "f1_weighted",
           "Per-class F1 weighted by each class's rows"),
    Metric("calibration_error", _B, False, _F + "calibration_error", None,
           "Expected calibration error over 10 equal-width score bins"),
    Metric("positive_rate", _B, None, _F + "positive_rate", None, "Share of positive labels (descriptive)"),
    Metric("rmse", _R, False, _F + "rmse", _W + "rmse", "Root mean squared error"),
    Metric("mae", _R, False, _F + "mae", _W + "mae", "Mean absolute error"),
    Metric("r2", _R, True, _F + "r2", _W + "r2", "Coefficient of determination"),
)}


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


def for_target(target: str) -> list[Metric]:
    return [m for m in METRICS.values() if target in m.targets]


def gate_metrics(target: str | None = None) -> list[str]:
    """Metrics with a direction and a bootstrap (for ``target``, or any)."""
    return [m.name for m in METRICS.values() if m.bootstrap and m.ranked
            and (target is None or target in m.targets)]


def compute_metrics(target: str, y, score) -> dict[str, float]:
    """Every defined metric of ``target`` for labels ``y`` and scores ``score``."""
    import numpy as np

    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    if score.ndim == 2:
        y = y.astype("int64")
    out = {m.name: m.compute(y, score) for m in for_target(target)}
    return {k: float(v) for k, v in out.items() if v is not None}
