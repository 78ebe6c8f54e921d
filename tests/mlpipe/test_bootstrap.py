from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlpipe.bootstrap import paired_bootstrap, resample_weights
from mlpipe.metrics import METRICS, gate_metrics, metric

REFERENCE = {
    "roc_auc": lambda y, s, w: skm.roc_auc_score(y, s, sample_weight=w),
    "pr_auc": lambda y, s, w: skm.average_precision_score(y, s, sample_weight=w),
    "log_loss": lambda y, s, w: skm.log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), sample_weight=w),
    "brier": lambda y, s, w: skm.brier_score_loss(y, s, sample_weight=w),
    "accuracy": lambda y, s, w: skm.accuracy_score(y, s >= 0.5, sample_weight=w),
    "rmse": lambda y, s, w: skm.root_mean_squared_error(y, s, sample_weight=w),
    "mae": lambda y, s, w: skm.mean_absolute_error(y, s, sample_weight=w),
    "r2": lambda y, s, w: skm.r2_score(y, s, sample_weight=w),
}


MULTICLASS = {
    "roc_auc": lambda y, p, w: np.mean([skm.roc_auc_score(y == k, p[:, k], sample_weight=w) for k in range(4)]),
    "log_loss": lambda y, p, w: skm.log_loss(y, p, sample_weight=w, labels=range(4)),
    "brier": lambda y, p, w: np.average(((p - np.eye(4)[y]) ** 2).sum(axis=1), weights=w),
    "accuracy": lambda y, p, w: skm.accuracy_score(y, p.argmax(axis=1), sample_weight=w),
    "f1_macro": lambda y, p, w: skm.f1_score(y, p.argmax(axis=1), sample_weight=w, average="macro",
                                             zero_division=0.0),
    "f1_weighted": lambda y, p, w: skm.f1_score(y, p.argmax(axis=1), sample_weight=w, average="weighted",
                                                zero_division=0.0),
}


def test_every_bootstrapped_metric_of_the_table_is_checked_here():
    bootstrapped = {(t, m.name) for m in METRICS.values() if m.bootstrap for t in m.targets}
    checked = {("binary", m) for m in REFERENCE if m in gate_metrics("binary")} | \
        {("regression", m) for m in REFERENCE if m in gate_metrics("regression")} | \
        {("multiclass", m) for m in MULTICLASS}
    assert bootstrapped == checked


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_weighted_metrics_match_sklearn_sample_weight(name):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=1500).astype(float)
    score = np.round(np.clip(y * 0.3 + rng.uniform(0, 0.7, size=1500), 0, 1), 2)  # many ties
    weights = next(resample_weights(len(y), 4, seed=1))
    got = metric(name).prepare_weighted(y, score)(weights)
    expected = [REFERENCE[name](y, score, w) for w in weights]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MULTICLASS))
def test_weighted_multiclass_metrics_match_sklearn_sample_weight(name):
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, size=800)
    y[:3] = 3  # every class has rows
    logits = np.round(rng.normal(size=(800, 4)) + np.eye(4)[y], 1)  # ties
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    weights = next(resample_weights(len(y), 4, seed=1))
    got = metric(name).prepare_weighted(y, p)(weights)
    expected = [MULTICLASS[name](y, p, w) for w in weights]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc"])
def test_rank_metrics_match_sklearn_without_ties_and_with_undrawn_rows(metric):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=300).astype(float)
    score = rng.uniform(size=300)
    y[np.argmax(score)] = 1.0  # the top-scored row is a positive, not drawn in many resamples
    weights = next(resample_weights(len(y), 50, seed=2))
    got = METRICS[metric].prepare_weighted(y, score)(weights)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [REFERENCE[metric](y, score, w) for w in weights], rtol=1e-10)


def test_an_undefined_metric_gives_an_undefined_interval():
    y = np.array([1.0] + [0.0] * 29)  # most resamples have no positive: roc_auc undefined there
    out = paired_bootstrap(metric("roc_auc"), y, {"a": np.linspace(0, 1, 30)}, None, resamples=100)
    assert np.isnan(out["a"]["ci"]).all()


def test_resample_weights_are_counts_of_a_resample_with_replacement():
    blocks = list(resample_weights(1000, 120, seed=3))
    assert [b.shape for b in blocks] == [(50, 1000), (50, 1000), (20, 1000)]
    assert all((b.sum(axis=1) == 1000).all() and (b >= 0).all() for b in blocks)
    again = np.concatenate(list(resample_weights(1000, 120, seed=3)))
    np.testing.assert_array_equal(np.concatenate(blocks), again)  # seeded


def _scores(rng, y, noise):
    return np.clip(0.5 * y + rng.normal(0, noise, size=len(y)) + 0.25, 0, 1)


def test_identical_models_have_a_zero_width_gain():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=2000).astype(float)
    s = _scores(rng, y, 0.4)
    out = paired_bootstrap(metric("roc_auc"), y, {"champion": s, "same": s.copy()}, "champion", resamples=200)
    assert out["same"]["gain_ci"] == [0.0, 0.0]
    assert "gain_ci" not in out["champion"]
    low, high = out["same"]["ci"]
    assert low < skm.roc_auc_score(y, s) < high


def test_a_clearly_better_model_has_a_positive_interval_and_noise_straddles_zero():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=3000).astype(float)
    champion = _scores(rng, y, 0.6)
    scores = {"champion": champion, "better": _scores(rng, y, 0.3),
              "noisy": champion + rng.normal(0, 0.01, size=len(y))}
    out = paired_bootstrap(metric("roc_auc"), y, scores, "champion", resamples=300)
    assert out["better"]["gain_ci"][0] > 0.05
    low, high = out["noisy"]["gain_ci"]
    assert low < 0 < high


def test_lower_is_better_gains_are_sign_adjusted():
    rng = np.random.default_rng(6)
    y = rng.normal(size=2000)
    out = paired_bootstrap(metric("rmse"), y, {"champion": y + rng.normal(0, 1, 2000),
                                               "better": y + rng.normal(0, 0.5, 2000)}, "champion", resamples=200)
    assert out["better"]["gain_ci"][0] > 0  # a lower rmse is a positive gain


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="no bootstrap for metric 'f1'"):
        paired_bootstrap(metric("f1"), np.zeros(3), {"a": np.zeros(3)}, None)
