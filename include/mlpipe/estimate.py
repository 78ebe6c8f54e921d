"""Estimated performance before labels arrive (binary targets), as NannyML's CBPE does.

If a model's scores are calibrated, a row scored ``p`` is a positive with probability
``p``: the expected value of a metric over a window follows from the scores alone. The
champion's scores are calibrated on its holdout (isotonic regression, kept as a
piecewise-linear map in its bands) when it is promoted; the monitor then estimates the
gate metric over the ``quality_days`` scored days ending with each monitored day, and
sets the estimate beside the realised figure once labels arrive.
"""

from __future__ import annotations

import numpy as np


def fit_calibrator(y: np.ndarray, scores: np.ndarray) -> dict:
    """Isotonic regression of the labels on the scores, as the points of a monotone
    piecewise-linear map (clipped to [0, 1] outside them)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(np.asarray(scores, dtype="float64"),
                                                                           np.asarray(y, dtype="float64"))
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def calibrated(calibrator: dict, scores: np.ndarray) -> np.ndarray:
    return np.interp(np.asarray(scores, dtype="float64"), calibrator["x"], calibrator["y"])


def _roc_auc(p: np.ndarray, scores: np.ndarray) -> float | None:
    """Expected ROC AUC: over pairs of distinct rows, the chance the higher-scored one is
    the positive of a positive-negative pair (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    s, p = scores[order], p[order]
    q = 1.0 - p
    # for each row, the expected negatives scored strictly below it and tied with it (itself excluded)
    unique, first = np.unique(s, return_index=True)
    last = np.append(first[1:], len(s))
    cum_q = np.concatenate([[0.0], np.cumsum(q)])
    below = np.repeat(cum_q[first], last - first)
    tied = np.repeat(cum_q[last] - cum_q[first], last - first) - q
    ranked = float(np.sum(p * (below + 0.5 * tied)))
    pairs = float(p.sum() * q.sum() - np.sum(p * q))
    return ranked / pairs if pairs > 0 else None


def _accuracy(p: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean(np.where(scores >= 0.5, p, 1.0 - p)))


def _brier(p: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean(p * (1.0 - scores) ** 2 + (1.0 - p) * scores ** 2))


def _log_loss(p: np.ndarray, scores: np.ndarray) -> float:
    s = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(np.mean(-p * np.log(s) - (1.0 - p) * np.log(1.0 - s)))


ESTIMATORS = {"roc_auc": _roc_auc, "accuracy": _accuracy, "brier": _brier, "log_loss": _log_loss}


def estimate(metric: str, calibrator: dict, scores: np.ndarray) -> float | None:
    """The expected ``metric`` of ``scores`` (None for a metric with no estimator, or no rows)."""
    if metric not in ESTIMATORS or len(scores) == 0:
        return None
    scores = np.asarray(scores, dtype="float64")
    return ESTIMATORS[metric](calibrated(calibrator, scores), scores)
