"""The promotion gate: floors, the margin against the bootstrap interval, direction
of the metric, ties, and the unscorable-champion policy."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.evaluation import Decision, assess, decide
from mlpipe.spec import GateSpec

AUC_GATE = GateSpec(metric="roc_auc", floors={"roc_auc": 0.65}, min_improvement=0.01)


def gains(**intervals):
    return {name: {"gain_ci": list(ci)} for name, ci in intervals.items()}


def test_first_run_promotes_best_candidate_passing_floors():
    d = decide(AUC_GATE, {"a": {"roc_auc": 0.70}, "b": {"roc_auc": 0.80}, "c": {"roc_auc": 0.75}}, None)
    assert isinstance(d, Decision)
    assert (d.promote, d.winner, d.challenger, d.metric) == (True, "b", "c", "roc_auc")
    assert "no champion" in d.reason
    assert d.to_dict()["candidates"]["b"] == {"roc_auc": 0.80}


def test_candidates_below_a_floor_are_ineligible():
    d = decide(AUC_GATE, {"a": {"roc_auc": 0.60}, "b": {"roc_auc": 0.62}}, None)
    assert (d.promote, d.winner, d.challenger) == (False, None, None)
    assert "no candidate is eligible" in d.reason and "roc_auc=0.62 vs floor 0.65" in d.reason
    mixed = decide(AUC_GATE, {"low": {"roc_auc": 0.60}, "ok": {"roc_auc": 0.66}}, None)
    assert (mixed.promote, mixed.winner) == (True, "ok")
    assert set(mixed.ineligible) == {"low"}


def test_missing_floor_metric_fails_the_floor():
    gate = GateSpec(metric="roc_auc", floors={"pr_auc": 0.3})
    d = decide(gate, {"a": {"roc_auc": 0.9}}, None)
    assert not d.promote and "pr_auc=None" in d.ineligible["a"]


def test_a_clearly_better_candidate_is_promoted():
    d = decide(AUC_GATE, {"a": {"roc_auc": 0.85}, "b": {"roc_auc": 0.82}}, {"roc_auc": 0.80},
               gains(a=(0.03, 0.07), b=(0.0, 0.04)))
    assert (d.promote, d.winner, d.challenger) == (True, "a", "b")
    assert "lower bound clears the margin" in d.reason
    assert d.champion == {"roc_auc": 0.80}


def test_better_only_within_the_noise_is_not_promoted():
    # the point gain clears the margin, but the interval's lower bound does not
    d = decide(AUC_GATE, {"a": {"roc_auc": 0.83}}, {"roc_auc": 0.80}, gains(a=(0.005, 0.055)))
    assert (d.promote, d.winner, d.challenger) == (False, "a", "a")
    assert "within the noise" in d.reason


def test_worse_or_tied_candidates_are_not_promoted():
    gate = GateSpec(metric="roc_auc", min_improvement=0.0)
    tie = decide(gate, {"a": {"roc_auc": 0.8}}, {"roc_auc": 0.8}, gains(a=(0.0, 0.0)))
    worse = decide(gate, {"a": {"roc_auc": 0.7}}, {"roc_auc": 0.8}, gains(a=(-0.12, -0.08)))
    assert not tie.promote and not worse.promote
    assert "does not beat the champion" in tie.reason


def test_lower_is_better_log_loss():
    gate = GateSpec(metric="log_loss", floors={"log_loss": 0.6}, min_improvement=0.01)
    cands = {"a": {"log_loss": 0.50}, "b": {"log_loss": 0.40}, "c": {"log_loss": 0.45}}
    first = decide(gate, cands, None)
    assert (first.promote, first.winner) == (True, "b")  # the smallest loss wins
    # gains are sign-adjusted: positive means a lower loss than the champion
    assert decide(gate, cands, {"log_loss": 0.45}, gains(b=(0.03, 0.07))).promote
    assert not decide(gate, cands, {"log_loss": 0.30}, gains(b=(-0.12, -0.08))).promote
    assert not decide(gate, {"a": {"log_loss": 0.7}}, None).promote  # above the ceiling


def test_lower_is_better_rmse_and_higher_r2_floor():
    gate = GateSpec(metric="rmse", floors={"rmse": 5.0, "r2": 0.5}, min_improvement=0.1)
    cands = {"ridge": {"rmse": 3.0, "r2": 0.7}, "hgb": {"rmse": 2.5, "r2": 0.8}}
    d = decide(gate, cands, {"rmse": 2.7, "r2": 0.75}, gains(hgb=(0.15, 0.25)))
    assert (d.promote, d.winner, d.challenger) == (True, "hgb", "ridge")
    low_r2 = decide(gate, {"hgb": {"rmse": 2.5, "r2": 0.3}}, None)
    assert not low_r2.promote and "r2=0.3" in low_r2.ineligible["hgb"]


def test_ties_between_candidates_break_by_name():
    d = decide(AUC_GATE, {"zeta": {"roc_auc": 0.8}, "alpha": {"roc_auc": 0.8}}, None)
    assert (d.winner, d.challenger) == ("alpha", "zeta")


def test_candidates_without_the_metric_are_ineligible():
    d = decide(AUC_GATE, {"a": {"log_loss": 0.3}}, None)
    assert (d.promote, d.winner) == (False, None)
    assert d.ineligible == {"a": "no roc_auc"}
    ignored = decide(AUC_GATE, {"a": {"log_loss": 0.3}, "b": {"roc_auc": 0.7}}, None)
    assert ignored.winner == "b" and ignored.promote


def test_an_undefined_interval_keeps_the_champion():
    d = decide(AUC_GATE, {"a": {"roc_auc": 0.9}}, {"roc_auc": 0.7}, gains(a=(float("nan"), float("nan"))))
    assert not d.promote and "undefined" in d.reason


@pytest.mark.parametrize("policy, promoted", [("replace", True), ("keep", False)])
def test_unscorable_champion_follows_the_policy(policy, promoted):
    gate = AUC_GATE.model_copy(update={"unscorable_champion": policy})
    d = decide(gate, {"a": {"roc_auc": 0.7}}, None, champion_error="v3: KeyError: 'new_feature'")
    assert (d.promote, d.winner) == (promoted, "a")
    assert "cannot score the holdout" in d.reason and f"policy '{policy}'" in d.reason


def test_a_multiclass_champion_that_lacks_a_class_is_judged_on_the_candidates_classes(multiclass_spec):
    """The champion knew classes 0 and 1 only: read on the candidates' three classes it
    gives class 2 probability 0, loses on those rows, and the paired bootstrap says so."""
    from mlpipe.predictions import score_frame, scores_of
    from mlpipe.records import CHAMPION_KEY

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=600)
    logits = rng.normal(size=(600, 3)) + 2.0 * np.eye(3)[y]
    candidate = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    two = candidate[:, :2] / candidate[:, :2].sum(axis=1, keepdims=True)
    champion = scores_of(score_frame(two, ["0", "1"]), ["0", "1", "2"])
    assert (champion[:, 2] == 0).all()
    decision = assess(multiclass_spec, y.astype(float), {"hgb": candidate, CHAMPION_KEY: champion})
    assert decision.champion["log_loss"] > decision.candidates["hgb"]["log_loss"] + 1.0
    assert decision.promote and decision.intervals["hgb"]["gain_ci"][0] > 0, decision.reason
