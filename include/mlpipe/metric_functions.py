"""The point form of each metric in ``mlpipe.metrics.METRICS`` (the table names them), and
the curves on the evaluation page. ``score`` is one column (binary: the positive class
probability; regression: the value) or an ``(n, classes)`` probability matrix with ``y``
the class index (multi-class)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as m

EPS = 1e-7
CALIBRATION_BINS = 10


def predicted_class(score: np.ndarray) -> np.ndarray:
    """Binary: score >= 0.5; multi-class: the most probable class's index."""
    return score.argmax(axis=1) if score.ndim == 2 else (score >= 0.5).astype("int64")


def true_class_probability(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The probability each row gave its own class."""
    if score.ndim == 2:
        return score[np.arange(len(y)), y.astype("int64")]
    return np.where(y >= 0.5, score, 1.0 - score)


def _two_classes(y: np.ndarray) -> bool:
    return 0 < int((y >= 0.5).sum()) < len(y)


def present_classes(y: np.ndarray, n_classes: int) -> list[int]:
    """Classes with rows of their own and of others in ``y``: those one-vs-rest is defined for."""
    counts = np.bincount(y.astype("int64"), minlength=n_classes)
    return [k for k in range(n_classes) if 0 < counts[k] < len(y)]


def roc_auc(y, score):
    if score.ndim == 1:
        return m.roc_auc_score(y, score) if _two_classes(y) else None
    present = present_classes(y, score.shape[1])
    if len(present) < 2:
        return None
    return float(np.mean([m.roc_auc_score(y == k, score[:, k]) for k in present]))


def pr_auc(y, score):
    return m.average_precision_score(y, score) if _two_classes(y) else None


def log_loss(y, score):
    return float(-np.mean(np.log(np.clip(true_class_probability(y, score), EPS, 1.0 - EPS))))


def brier(y, score):
    if score.ndim == 1:
        return float(np.mean((score - y) ** 2))
    return float(np.mean((score ** 2).sum(axis=1) - 2 * true_class_probability(y, score) + 1.0))


def accuracy(y, score):
    return float(np.mean(predicted_class(score) == y))


def f1(y, score):
    return m.f1_score(y.astype("int64"), predicted_class(score), zero_division=0.0)


def precision(y, score):
    return m.precision_score(y.astype("int64"), predicted_class(score), zero_division=0.0)


def recall(y, score):
    return m.recall_score(y.astype("int64"), predicted_class(score), zero_division=0.0)


def _f1_per_class(y, score, average):
    """Over the classes that are some row's label or prediction (a class absent from both
    says nothing about the model)."""
    return m.f1_score(y, predicted_class(score), average=average, zero_division=0.0)


def f1_macro(y, score):
    return _f1_per_class(y, score, "macro")


def f1_weighted(y, score):
    return _f1_per_class(y, score, "weighted")


def per_class(y: np.ndarray, score: np.ndarray, classes: list[str]) -> dict:
    """A multi-class model's figures per class: precision, recall, F1 and rows (support),
    and the confusion matrix (rows: the true class, columns: the predicted one)."""
    labels = list(range(len(classes)))
    predicted = predicted_class(score)
    precision_, recall_, f1_, support = m.precision_recall_fscore_support(y, predicted, labels=labels,
                                                                         zero_division=0.0)
    return {"classes": list(classes), "precision": [round(float(v), 6) for v in precision_],
            "recall": [round(float(v), 6) for v in recall_], "f1": [round(float(v), 6) for v in f1_],
            "support": [int(v) for v in support],
            "confusion": m.confusion_matrix(y, predicted, labels=labels).tolist()}


def positive_rate(y, score):
    return float(np.mean(y))


def rmse(y, score):
    return m.root_mean_squared_error(y, score)


def mae(y, score):
    return m.mean_absolute_error(y, score)


def r2(y, score):
    return m.r2_score(y, score)


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
    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    fpr, tpr, _ = m.roc_curve(y, score)
    precision_, recall_, _ = m.precision_recall_curve(y, score)

    def thin(*arrays):
        keep = np.unique(np.linspace(0, len(arrays[0]) - 1, min(points, len(arrays[0]))).astype(int))
        return [[round(float(v), 5) for v in a[keep]] for a in arrays]

    (fpr, tpr), (recall_, precision_) = thin(fpr, tpr), thin(recall_, precision_)
    which = np.clip((score * bins).astype(int), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    return {"fpr": fpr, "tpr": tpr, "recall": recall_, "precision": precision_,
            "mean_score": [round(float(score[which == b].mean()), 5) for b in filled],
            "positive_rate": [round(float(y[which == b].mean()), 5) for b in filled],
            "histogram": np.histogram(np.clip(score, 0, 1), bins=20, range=(0, 1))[0].tolist()}
