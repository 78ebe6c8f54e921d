from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlpipe.evaluation import Decision, calibration_error, compute_metrics, curves, decide
from mlpipe.spec import GateSpec


# ---------------------------------------------------------------- metrics
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
    assert compute_metrics("binary", y, score, threshold=0.9)["accuracy"] == pytest.approx(
        skm.accuracy_score(y, score >= 0.9))


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


def test_curves_are_thinned_and_span_the_unit_square():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=5000)
    got = curves(y, rng.uniform(size=5000), points=50)
    assert len(got["fpr"]) == len(got["tpr"]) <= 50 and len(got["recall"]) == len(got["precision"]) <= 50
    assert (got["fpr"][0], got["tpr"][0], got["fpr"][-1], got["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert min(got["recall"]) == 0.0 and max(got["recall"]) == 1.0


# ---------------------------------------------------------------- promotion gate
AUC_GATE = GateSpec(metric="roc_auc", floors={"roc_auc": 0.65}, min_improvement=0.01)


def gains(**intervals):
    return {name: {"gain_ci": list(ci)} for name, ci in intervals.items()}


def test_first_run_promotes_best_candidate_passing_floors():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.70}, "b": {"roc_auc": 0.80}, "c": {"roc_auc": 0.75}}, None)
    assert isinstance(d, Decision)
    assert (d.promote, d.winner, d.challenger, d.metric) == (True, "b", "c", "roc_auc")
    assert "no champion" in d.reason
    assert d.to_dict()["candidates"]["b"] == {"roc_auc": 0.80}


def test_candidates_below_a_floor_are_ineligible():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.60}, "b": {"roc_auc": 0.62}}, None)
    assert (d.promote, d.winner, d.challenger) == (False, None, None)
    assert "no candidate is eligible" in d.reason and "roc_auc=0.62 vs floor 0.65" in d.reason
    mixed = decide(AUC_GATE, "binary", {"low": {"roc_auc": 0.60}, "ok": {"roc_auc": 0.66}}, None)
    assert (mixed.promote, mixed.winner) == (True, "ok")
    assert set(mixed.ineligible) == {"low"}


def test_missing_floor_metric_fails_the_floor():
    gate = GateSpec(metric="roc_auc", floors={"pr_auc": 0.3})
    d = decide(gate, "binary", {"a": {"roc_auc": 0.9}}, None)
    assert not d.promote and "pr_auc=None" in d.ineligible["a"]


def test_a_clearly_better_candidate_is_promoted():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.85}, "b": {"roc_auc": 0.82}}, {"roc_auc": 0.80},
               gains(a=(0.03, 0.07), b=(0.0, 0.04)))
    assert (d.promote, d.winner, d.challenger) == (True, "a", "b")
    assert "lower bound clears the margin" in d.reason
    assert d.champion == {"roc_auc": 0.80}


def test_better_only_within_the_noise_is_not_promoted():
    # the point gain clears the margin, but the interval's lower bound does not
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.83}}, {"roc_auc": 0.80}, gains(a=(0.005, 0.055)))
    assert (d.promote, d.winner, d.challenger) == (False, "a", "a")
    assert "within the noise" in d.reason


def test_worse_or_tied_candidates_are_not_promoted():
    gate = GateSpec(metric="roc_auc", min_improvement=0.0)
    tie = decide(gate, "binary", {"a": {"roc_auc": 0.8}}, {"roc_auc": 0.8}, gains(a=(0.0, 0.0)))
    worse = decide(gate, "binary", {"a": {"roc_auc": 0.7}}, {"roc_auc": 0.8}, gains(a=(-0.12, -0.08)))
    assert not tie.promote and not worse.promote
    assert "does not beat the champion" in tie.reason


def test_lower_is_better_log_loss():
    gate = GateSpec(metric="log_loss", floors={"log_loss": 0.6}, min_improvement=0.01)
    cands = {"a": {"log_loss": 0.50}, "b": {"log_loss": 0.40}, "c": {"log_loss": 0.45}}
    first = decide(gate, "binary", cands, None)
    assert (first.promote, first.winner) == (True, "b")  # the smallest loss wins
    # gains are sign-adjusted: positive means a lower loss than the champion
    assert decide(gate, "binary", cands, {"log_loss": 0.45}, gains(b=(0.03, 0.07))).promote
    assert not decide(gate, "binary", cands, {"log_loss": 0.30}, gains(b=(-0.12, -0.08))).promote
    assert not decide(gate, "binary", {"a": {"log_loss": 0.7}}, None).promote  # above the ceiling


def test_lower_is_better_rmse_and_higher_r2_floor():
    gate = GateSpec(metric="rmse", floors={"rmse": 5.0, "r2": 0.5}, min_improvement=0.1)
    cands = {"ridge": {"rmse": 3.0, "r2": 0.7}, "hgb": {"rmse": 2.5, "r2": 0.8}}
    d = decide(gate, "regression", cands, {"rmse": 2.7, "r2": 0.75}, gains(hgb=(0.15, 0.25)))
    assert (d.promote, d.winner, d.challenger) == (True, "hgb", "ridge")
    low_r2 = decide(gate, "regression", {"hgb": {"rmse": 2.5, "r2": 0.3}}, None)
    assert not low_r2.promote and "r2=0.3" in low_r2.ineligible["hgb"]


def test_ties_between_candidates_break_by_name():
    d = decide(AUC_GATE, "binary", {"zeta": {"roc_auc": 0.8}, "alpha": {"roc_auc": 0.8}}, None)
    assert (d.winner, d.challenger) == ("alpha", "zeta")


def test_candidates_without_the_metric_are_ineligible():
    d = decide(AUC_GATE, "binary", {"a": {"log_loss": 0.3}}, None)
    assert (d.promote, d.winner) == (False, None)
    assert d.ineligible == {"a": "no roc_auc"}
    ignored = decide(AUC_GATE, "binary", {"a": {"log_loss": 0.3}, "b": {"roc_auc": 0.7}}, None)
    assert ignored.winner == "b" and ignored.promote


def test_an_undefined_interval_keeps_the_champion():
    d = decide(AUC_GATE, "binary", {"a": {"roc_auc": 0.9}}, {"roc_auc": 0.7}, gains(a=(float("nan"), float("nan"))))
    assert not d.promote and "undefined" in d.reason


@pytest.mark.parametrize("policy, promoted", [("replace", True), ("keep", False)])
def test_unscorable_champion_follows_the_policy(policy, promoted):
    gate = AUC_GATE.model_copy(update={"unscorable_champion": policy})
    d = decide(gate, "binary", {"a": {"roc_auc": 0.7}}, None, champion_error="v3: KeyError: 'new_feature'")
    assert (d.promote, d.winner) == (promoted, "a")
    assert "cannot score the holdout" in d.reason and f"policy '{policy}'" in d.reason
