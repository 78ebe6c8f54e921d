"""Paired bootstrap intervals for a metric and for its difference between models scored
on the same rows.

A resample draws how many times each row is picked (resampling with replacement) and
applies those counts, as row weights, to every model at once, so the differences are
paired. The weighted metrics below are vectorised over a block of resamples; the tests
check each against scikit-learn's ``sample_weight`` implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from mlpipe.metric_functions import EPS, predicted_class, present_classes, true_class_probability

BLOCK_CELLS = 4_000_000  # weights per block (resamples x rows): about 32 MB


def _ranked(y: np.ndarray, score: np.ndarray):
    """Positive and negative rows, each sorted by score, with every positive's position
    among the negatives' (lo: strictly below, hi: below or tied) and among the positives'."""
    pos, neg = np.flatnonzero(y >= 0.5), np.flatnonzero(y < 0.5)
    pos, neg = pos[np.argsort(score[pos], kind="mergesort")], neg[np.argsort(score[neg], kind="mergesort")]
    sp, sn = score[pos], score[neg]
    return pos, neg, np.searchsorted(sn, sp, "left"), np.searchsorted(sn, sp, "right"), np.searchsorted(sp, sp, "left")


def _cumulative(weights: np.ndarray) -> np.ndarray:
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=weights.dtype)
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


def _binary_roc_auc(y, score):
    pos, neg, lo, hi, _ = _ranked(y, score)

    def metric(weights):
        wp, cn = weights[:, pos], _cumulative(weights[:, neg])
        below = cn[:, lo] + cn[:, hi]  # twice (negatives below + half the tied ones)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * np.einsum("ij,ij->i", wp, below) / (wp.sum(axis=1) * cn[:, -1])
    return metric


def roc_auc(y, score):
    """Binary: the ROC AUC; multi-class: the mean of each present class against the rest."""
    if score.ndim == 1:
        return _binary_roc_auc(y, score)
    parts = [_binary_roc_auc((y == k).astype("float64"), score[:, k])
             for k in present_classes(y, score.shape[1])]
    return lambda weights: np.mean([part(weights) for part in parts], axis=0)


def pr_auc(y, score):
    """Average precision: each positive's weight share times the precision at its score."""
    pos, neg, lo, _, first = _ranked(y, score)

    def metric(weights):
        wp = weights[:, pos]
        cp, cn = _cumulative(wp), _cumulative(weights[:, neg])
        tp = cp[:, -1:] - cp[:, first]  # weight of positives scored >= this one
        fp = cn[:, -1:] - cn[:, lo]
        # a positive not drawn in this resample (weight 0) may have tp + fp = 0: precision 0, weight 0
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("ij,ij->i", wp, precision) / cp[:, -1]
    return metric


def _mean(values: Callable[[np.ndarray, np.ndarray], np.ndarray], root: bool = False):
    def prepare(y, score):
        v = values(y, score)
        if root:
            return lambda weights: np.sqrt(weights @ v / weights.sum(axis=1))
        return lambda weights: weights @ v / weights.sum(axis=1)
    return prepare


def r2(y, score):
    squared = (y - score) ** 2
    centred = y - y.mean()  # the spread is a difference of two sums: keep them small

    def metric(weights):
        total = weights.sum(axis=1)
        return 1.0 - (weights @ squared) / (weights @ centred ** 2 - (weights @ centred) ** 2 / total)
    return metric


def _f1(weighted_by_support: bool):
    """Multi-class F1 per class from weighted true/false positive and negative counts,
    averaged over the classes with rows or predictions in the resample (macro) or by
    each class's rows (weighted), as scikit-learn's F1 of the resampled rows."""
    def prepare(y, score):
        eye = np.eye(score.shape[1])
        truth, said = eye[y.astype("int64")], eye[predicted_class(score)]
        hit = truth * said

        def metric(weights):
            tp, support, predicted = weights @ hit, weights @ truth, weights @ said
            denominator = support + predicted  # 2tp + fp + fn
            seen = denominator > 0
            f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=seen)
            if weighted_by_support:
                return (f1 * support).sum(axis=1) / support.sum(axis=1)
            return f1.sum(axis=1) / seen.sum(axis=1)
        return metric
    return prepare


# each: prepare(y, score) -> weighted metric(weights (resamples x rows)) -> (resamples,); the
# metric table (mlpipe.metrics) names them
log_loss = _mean(lambda y, s: -np.log(np.clip(true_class_probability(y, s), EPS, 1 - EPS)))
brier = _mean(lambda y, s: (s - y) ** 2 if s.ndim == 1 else (s ** 2).sum(axis=1) - 2 * true_class_probability(y, s) + 1)
accuracy = _mean(lambda y, s: (predicted_class(s) == y).astype("float64"))
rmse = _mean(lambda y, s: (y - s) ** 2, root=True)
mae = _mean(lambda y, s: np.abs(y - s))
f1_macro = _f1(weighted_by_support=False)
f1_weighted = _f1(weighted_by_support=True)


def resample_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of row counts, one row per resample, each summing to ``n``."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        block = max(1, min(BLOCK_CELLS // n, 50, resamples - done))
        picks = rng.integers(0, n, size=(block, n)) + np.arange(block)[:, None] * n
        yield np.bincount(picks.ravel(), minlength=block * n).reshape(block, n).astype("float64")
        done += block


def paired_bootstrap(metric, y: np.ndarray, scores: dict[str, np.ndarray], reference: str | None,
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """For each model: the ``confidence`` interval of ``metric`` (an ``mlpipe.metrics.Metric``)
    and, when ``reference`` names one of ``scores``, of its gain over the reference
    (positive = better)."""
    y = np.asarray(y, dtype="float64")
    names = list(scores)
    prepared = {}
    for name in names:
        score = np.asarray(scores[name], dtype="float64")
        prepared[name] = metric.prepare_weighted(y.astype("int64") if score.ndim == 2 else y, score)
    values = {name: [] for name in names}
    for weights in resample_weights(len(y), resamples, seed):
        for name in names:
            values[name].append(prepared[name](weights))
    drawn = {name: np.concatenate(v) for name, v in values.items()}
    tail = (1 - confidence) / 2 * 100
    bounds = (tail, 100 - tail)

    def interval(sample: np.ndarray) -> list[float]:
        """Percentile interval; NaN if the metric is undefined in any resample (e.g. a
        resample without positives), which the gate treats as no evidence."""
        return [float(b) for b in np.percentile(sample, bounds)] if np.isfinite(sample).all() else [np.nan, np.nan]

    out = {}
    for name in names:
        out[name] = {"ci": interval(drawn[name])}
        if reference is not None and name != reference:
            out[name]["gain_ci"] = interval(metric.sign * (drawn[name] - drawn[reference]))
    return out
