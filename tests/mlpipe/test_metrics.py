"""The metric table and its functions by target type, checked against scikit-learn, and the curves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlpipe.metric_functions import calibration_error, curves
from mlpipe.metrics import METRICS, compute_metrics, gate_metrics, metric


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    score = np.clip(y * 0.3 + rng.uniform(0, 0.7, size=200), 0, 1)
    got = compute_metrics("binary", y.astype(float), score)
    assert set(got) == {"log_loss", "brier", "accuracy", "f1", "precision", "recall", "calibration_error",
                        "positive_rate", "roc_auc", "pr_auc"}
    label = score >= 0.5
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, score))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, score))
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, score))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, label))
    assert got["f1"] == pytest.approx(skm.f1_score(y, label))
    assert got["precision"] == pytest.approx(skm.precision_score(y, label))
    assert got["recall"] == pytest.approx(skm.recall_score(y, label))
    assert got["positive_rate"] == pytest.approx(y.mean())
    assert all(isinstance(v, float) for v in got.values())


def test_calibration_error_is_the_weighted_gap_per_bin():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    score = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95, 0.95, 0.95])  # two bins of 4 rows
    # bin 1: mean score 0.05, observed 0.5; bin 2: mean score 0.95, observed 0.75
    assert calibration_error(y, score) == pytest.approx(0.5 * 0.45 + 0.5 * 0.20)
    perfect = np.repeat([0, 1], 50)
    assert calibration_error(perfect, perfect.astype(float)) == pytest.approx(0.0)


def test_binary_metrics_with_one_class_and_extreme_scores():
    got = compute_metrics("binary", np.zeros(4), np.array([0.0, 0.1, 0.2, 1.0]))
    assert "roc_auc" not in got and "pr_auc" not in got  # undefined with one class
    assert got["accuracy"] == 0.75 and got["positive_rate"] == 0.0
    assert got["f1"] == 0.0 and got["precision"] == 0.0  # no positives: zero, not an error
    assert np.isfinite(got["log_loss"])  # a score of exactly 1 is clipped, not infinite


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, size=100)
    pred = y + rng.normal(0, 1, size=100)
    got = compute_metrics("regression", y, pred)
    assert set(got) == {"rmse", "mae", "r2"}
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))


def _multiclass(rng, n=600, k=4):
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def test_multiclass_metrics_match_sklearn():
    y, p = _multiclass(np.random.default_rng(5))
    got = compute_metrics("multiclass", y, p)
    assert set(got) == {"log_loss", "brier", "accuracy", "f1_macro", "f1_weighted", "roc_auc"}
    label = p.argmax(axis=1)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, label))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, label, average="macro"))
    assert got["f1_weighted"] == pytest.approx(skm.f1_score(y, label, average="weighted"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["brier"] == pytest.approx(np.mean(((p - np.eye(4)[y]) ** 2).sum(axis=1)))


def test_multiclass_f1_is_over_the_classes_a_row_has_or_is_predicted():
    y, p = np.array([0, 0, 1, 1]), np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.3, 0.7, 0.0]])
    got = compute_metrics("multiclass", y, p)  # class 2: no rows, never predicted: not in the mean
    assert got["f1_macro"] == pytest.approx(np.mean([2 / 3, 0.8]))


def test_multiclass_roc_auc_averages_the_classes_present():
    y, p = _multiclass(np.random.default_rng(6), k=3)
    y[y == 2] = 0  # class 2 has no rows: its one-vs-rest AUC is undefined and left out
    expected = np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in (0, 1)])
    assert compute_metrics("multiclass", y, p)["roc_auc"] == pytest.approx(expected)
    assert "roc_auc" not in compute_metrics("multiclass", np.zeros(5, dtype=int), p[:5])


def test_the_table_gives_every_metric_a_known_target_a_direction_and_the_gate_a_bootstrap():
    assert {t for m in METRICS.values() for t in m.targets} == {"binary", "multiclass", "regression"}
    assert set(gate_metrics("multiclass")) == {"roc_auc", "log_loss", "brier", "accuracy", "f1_macro", "f1_weighted"}
    assert set(gate_metrics("binary")) == {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy"}
    assert set(gate_metrics("regression")) == {"rmse", "mae", "r2"}
    loss, auc = metric("log_loss"), metric("roc_auc")
    assert loss.best_first({"a": 0.5, "b": 0.3, "c": 0.4}) == ["b", "c", "a"]
    assert auc.best_first({"a": 0.5, "b": 0.7}) == ["b", "a"]
    assert loss.gain(0.3, 0.4) == pytest.approx(0.1) and auc.gain(0.6, 0.7) == pytest.approx(-0.1)
    assert loss.meets(0.4, 0.5) and not loss.meets(0.6, 0.5) and not auc.meets(None, 0.5)
    assert (loss.direction, auc.direction) == ("minimize", "maximize")
    assert (loss.bad_side(0.99), auc.bad_side(0.99)) == (0.99, pytest.approx(0.01))
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        metric("nope")


def test_curves_are_thinned_and_span_the_unit_square():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=5000)
    got = curves(y, rng.uniform(size=5000), points=50)
    assert len(got["fpr"]) == len(got["tpr"]) <= 50 and len(got["recall"]) == len(got["precision"]) <= 50
    assert (got["fpr"][0], got["tpr"][0], got["fpr"][-1], got["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert min(got["recall"]) == 0.0 and max(got["recall"]) == 1.0
    assert sum(got["histogram"]) == 5000 and len(got["histogram"]) == 20


def test_the_calibration_curve_follows_a_calibrated_score():
    rng = np.random.default_rng(3)
    score = rng.uniform(size=20000)
    got = curves(rng.uniform(size=20000) < score, score)
    assert len(got["mean_score"]) == len(got["positive_rate"]) == 10
    np.testing.assert_allclose(got["positive_rate"], got["mean_score"], atol=0.03)
    assert got["mean_score"] == sorted(got["mean_score"])


# ---------------------------------------------------------------- promotion gate
