"""Metric functions by task type and curves: the one definition used by evaluation,
the ensemble, shadow comparison and (later) live monitoring."""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 10


def compute_metrics(task: str, y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    from sklearn import metrics as m

    y_true = np.asarray(y_true, dtype="float64")
    score = np.asarray(score, dtype="float64")
    if task == "binary":
        y, label = y_true.astype(int), score >= threshold
        out = {"log_loss": m.log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1]),
               "brier": m.brier_score_loss(y, score, pos_label=1),
               "accuracy": m.accuracy_score(y, label),
               "f1": m.f1_score(y, label, zero_division=0.0),
               "precision": m.precision_score(y, label, zero_division=0.0),
               "recall": m.recall_score(y, label, zero_division=0.0),
               "calibration_error": calibration_error(y, score),
               "positive_rate": float(y.mean())}
        if len(np.unique(y)) == 2:
            out["roc_auc"] = m.roc_auc_score(y, score)
            out["pr_auc"] = m.average_precision_score(y, score)
        return {k: float(v) for k, v in out.items()}
    return {"rmse": float(m.root_mean_squared_error(y_true, score)),
            "mae": float(m.mean_absolute_error(y_true, score)),
            "r2": float(m.r2_score(y_true, score))}


def calibration_error(y: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: the row-weighted gap between the mean score and the
    observed positive rate over ``bins`` equal-width score bins (scikit-learn's binning)."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, score, n_bins=bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], score), minlength=bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(observed - predicted)) / counts.sum())


def curves(y: np.ndarray, score: np.ndarray, points: int = 200, bins: int = 10) -> dict[str, list[float]]:
    """ROC and precision-recall curves (thinned to about ``points`` points each), the
    calibration curve (mean score and positive rate per filled bin of ``bins`` equal
    widths) and the score histogram (counts in 20 equal bins of [0, 1])."""
    from sklearn import metrics as m

    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    fpr, tpr, _ = m.roc_curve(y, score)
    precision, recall, _ = m.precision_recall_curve(y, score)

    def thin(*arrays):
        keep = np.unique(np.linspace(0, len(arrays[0]) - 1, min(points, len(arrays[0]))).astype(int))
        return [[round(float(v), 5) for v in a[keep]] for a in arrays]

    (fpr, tpr), (recall, precision) = thin(fpr, tpr), thin(recall, precision)
    which = np.clip((score * bins).astype(int), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision,
            "mean_score": [round(float(score[which == b].mean()), 5) for b in filled],
            "positive_rate": [round(float(y[which == b].mean()), 5) for b in filled],
            "histogram": np.histogram(np.clip(score, 0, 1), bins=20, range=(0, 1))[0].tolist()}
