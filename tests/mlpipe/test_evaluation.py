from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlpipe.evaluation import Decision, compute_metrics, decide
from mlpipe.spec import GateSpec


# ---------------------------------------------------------------- metrics
def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    score = np.clip(y * 0.3 + rng.uniform(0, 0.7, size=200), 0, 1)
    got = compute_metrics("binary", y.astype(float), score)
    assert set(got) == {"log_loss", "accuracy", "positive_rate", "roc_auc", "pr_auc"}
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, score))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, score))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, score >= 0.5))
    assert got["positive_rate"] == pytest.approx(y.mean())
    assert all(isinstance(v, float) for v in got.values())
    assert compute_metrics("binary", y, score, threshold=0.9)["accuracy"] == pytest.approx(
        skm.accuracy_score(y, score >= 0.9))


def test_binary_metrics_with_one_class_and_extreme_scores():
    got = compute_metrics("binary", np.zeros(4), np.array([0.0, 0.1, 0.2, 1.0]))
    assert "roc_auc" not in got and "pr_auc" not in got  # undefined with one class
    assert got["accuracy"] == 0.75 and got["positive_rate"] == 0.0
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


# ---------------------------------------------------------------- promotion gate
AUC_GATE = GateSpec(metric="roc_auc", floors={"roc_auc": 0.65}, min_improvement=0.01)


def test_first_run_promotes_best_candidate_passing_floors():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.70}, "b": {"roc_auc": 0.80}, "c": {"roc_auc": 0.75}}, None)
    assert isinstance(d, Decision)
    assert (d.promote, d.winner, d.metric) == (True, "b", "roc_auc")
    assert "no champion" in d.reason
    assert d.to_dict()["candidates"]["b"] == {"roc_auc": 0.80}


def test_best_below_floor_is_not_promoted():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.60}, "b": {"roc_auc": 0.62}}, None)
    assert (d.promote, d.winner) == (False, "b")
    assert "fails floors" in d.reason and "roc_auc" in d.reason


def test_missing_floor_metric_fails_the_floor():
    gate = GateSpec(metric="roc_auc", floors={"pr_auc": 0.3})
    d = decide(gate, "binary", {"a": {"roc_auc": 0.9}}, None)
    assert not d.promote and "pr_auc=None" in d.reason


def test_improvement_below_margin_is_not_promoted():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.805}}, {"roc_auc": 0.80})
    assert (d.promote, d.winner) == (False, "a")
    assert "does not beat champion" in d.reason


def test_tie_is_not_promoted_even_without_margin():
    gate = GateSpec(metric="roc_auc", min_improvement=0.0)
    d = decide(gate, "binary", {"a": {"roc_auc": 0.8}}, {"roc_auc": 0.8})
    assert not d.promote
    worse = decide(gate, "binary", {"a": {"roc_auc": 0.7}}, {"roc_auc": 0.8})
    assert not worse.promote


def test_clear_improvement_is_promoted():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.85}, "b": {"roc_auc": 0.82}}, {"roc_auc": 0.80})
    assert (d.promote, d.winner) == (True, "a")
    assert "beats champion" in d.reason
    assert d.champion == {"roc_auc": 0.80}
    exact = decide(GateSpec(metric="roc_auc", min_improvement=0.25), "binary", {"a": {"roc_auc": 0.75}},
                   {"roc_auc": 0.5})
    assert exact.promote  # "at least" the margin


def test_lower_is_better_log_loss():
    gate = GateSpec(metric="log_loss", floors={"log_loss": 0.6}, min_improvement=0.01)
    cands = {"a": {"log_loss": 0.50}, "b": {"log_loss": 0.40}, "c": {"log_loss": 0.45}}
    first = decide(gate, "binary", cands, None)
    assert (first.promote, first.winner) == (True, "b")  # the smallest loss wins
    assert decide(gate, "binary", cands, {"log_loss": 0.45}).promote  # 0.05 lower: better
    assert not decide(gate, "binary", cands, {"log_loss": 0.405}).promote  # below margin
    assert not decide(gate, "binary", cands, {"log_loss": 0.30}).promote  # champion is better
    assert not decide(gate, "binary", {"a": {"log_loss": 0.7}}, None).promote  # above the ceiling


def test_lower_is_better_rmse_and_higher_r2_floor():
    gate = GateSpec(metric="rmse", floors={"rmse": 5.0, "r2": 0.5}, min_improvement=0.1)
    cands = {"ridge": {"rmse": 3.0, "r2": 0.7}, "hgb": {"rmse": 2.5, "r2": 0.8}}
    d = decide(gate, "regression", cands, {"rmse": 2.7, "r2": 0.75})
    assert (d.promote, d.winner) == (True, "hgb")
    assert not decide(gate, "regression", cands, {"rmse": 2.55}).promote
    low_r2 = decide(gate, "regression", {"hgb": {"rmse": 2.5, "r2": 0.3}}, None)
    assert not low_r2.promote and "r2=0.3" in low_r2.reason


def test_ties_between_candidates_break_by_name():
    d = decide(AUC_GATE, "binary", {"zeta": {"roc_auc": 0.8}, "alpha": {"roc_auc": 0.8}}, None)
    assert d.winner == "alpha"


def test_candidates_without_the_metric():
    d = decide(AUC_GATE, "binary", {"a": {"log_loss": 0.3}}, None)
    assert (d.promote, d.winner) == (False, None)
    assert "no candidate has a roc_auc" in d.reason
    ignored = decide(AUC_GATE, "binary", {"a": {"log_loss": 0.3}, "b": {"roc_auc": 0.7}}, None)
    assert ignored.winner == "b" and ignored.promote


def test_champion_without_the_metric_counts_as_absent():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.7}}, {"log_loss": 0.2})
    assert d.promote and "no champion" in d.reason
