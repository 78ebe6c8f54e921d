from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlpipe.serving.sequential import DEFAULT_EFFECT, Comparison, compare

ALPHA = 0.05
DAYS = 30
CONTROL_PER_DAY, CANARY_PER_DAY = 400, 100  # the canary serves a fifth of the champion's traffic
SHAPE, SCALE = 2.0, 0.5  # gamma per-row losses: skewed like a log loss, mean 1, sd 0.71
SD = math.sqrt(SHAPE) * SCALE


def _losses(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    return rng.gamma(SHAPE, SCALE, rows) + shift


def _experiment(rng: np.random.Generator, shift: float) -> list[tuple[Comparison, float]]:
    """One canary over DAYS daily looks at the cumulative rows, carrying the previous look's
    p-value and interval as the DAG does; each look with the naive fixed-sample z-test's
    p-value on the same rows."""
    control = _losses(rng, CONTROL_PER_DAY * DAYS)
    canary = _losses(rng, CANARY_PER_DAY * DAYS, shift)
    looks, previous = [], {"previous_p": 1.0, "previous_low": -math.inf, "previous_high": math.inf}
    for day in range(1, DAYS + 1):
        c, t = control[:CONTROL_PER_DAY * day], canary[:CANARY_PER_DAY * day]
        result = compare(c, t, alpha=ALPHA, **previous)
        previous = {"previous_p": result.p_value, "previous_low": result.low, "previous_high": result.high}
        z = (t.mean() - c.mean()) / math.sqrt(c.var(ddof=1) / c.size + t.var(ddof=1) / t.size)
        looks.append((result, math.erfc(abs(z) / math.sqrt(2.0))))
    return looks


def _slack(rate: float, runs: int) -> float:
    return 2.5 * math.sqrt(rate * (1.0 - rate) / runs)  # Monte Carlo noise on a rate near `rate`


def test_false_alarms_stay_below_alpha_over_daily_looks_where_a_naive_z_test_does_not():
    rng, runs = np.random.default_rng(20170), 300
    msprt = naive = 0
    for _ in range(runs):
        looks = _experiment(rng, shift=0.0)
        msprt += any(r.verdict in ("worse", "better") for r, _ in looks)
        naive += any(p < ALPHA for _, p in looks)
    # figures at this seed: mSPRT 1.7% of the runs (5/300), the naive test peeked at daily 28.7%
    assert msprt / runs <= ALPHA + _slack(ALPHA, runs)
    assert naive / runs > ALPHA + _slack(ALPHA, runs)  # the same check would catch a naive test


def test_a_clear_degradation_is_detected_as_worse():
    rng, runs = np.random.default_rng(20171), 60
    shift = 0.1 * SD  # canary loss a tenth of a standard deviation higher
    verdicts = [_experiment(rng, shift)[-1][0].verdict for _ in range(runs)]
    assert "better" not in verdicts
    assert verdicts.count("worse") / runs >= 0.9  # figure at this seed: 59/60, first flagged on day 11 (median)

    result = compare(_losses(rng, 5_000), _losses(rng, 5_000, 0.2 * SD))
    assert result.verdict == "worse" and result.low > 0.0 and result.p_value < ALPHA
    result = compare(_losses(rng, 5_000), _losses(rng, 5_000, -0.2 * SD))
    assert result.verdict == "better" and result.high < 0.0


def test_no_difference_with_enough_rows_is_not_worse():
    rng = np.random.default_rng(20172)
    result = compare(_losses(rng, 2_000), _losses(rng, 2_000))
    assert result.verdict == "not_worse" and result.low < 0.0 < result.high and result.p_value >= ALPHA


def test_too_few_rows_hold_even_with_a_huge_difference():
    rng = np.random.default_rng(20173)
    result = compare(_losses(rng, 5_000), _losses(rng, 50, 10 * SD), min_rows=100)
    assert result.verdict == "hold"
    assert result.p_value < 1e-6 and result.low > 0.0  # the evidence is reported all the same
    assert compare(_losses(rng, 50), _losses(rng, 5_000)).verdict == "hold"
    empty = compare(np.array([]), np.array([1.0]))
    assert empty.verdict == "hold" and empty.p_value == 1.0 and empty.low == -math.inf


def test_the_p_value_never_increases_across_looks():
    rng = np.random.default_rng(20174)
    control, canary = _losses(rng, 6_000), _losses(rng, 6_000, 0.15 * SD)
    canary[3_000:] -= 0.3 * SD  # the canary improves later on: the looks' own p-values go back up
    previous_p, fresh, running = 1.0, [], []
    for rows in range(200, 6_001, 200):
        result = compare(control[:rows], canary[:rows], previous_p=previous_p)
        fresh.append(compare(control[:rows], canary[:rows]).p_value)
        running.append(result.p_value)
        previous_p = result.p_value
    assert np.all(np.diff(running) <= 0.0)
    assert running == list(np.minimum.accumulate(fresh))
    assert np.any(np.diff(fresh) > 0.0)  # so the running minimum did something
    assert compare(control, canary, previous_p=0.01).p_value == 0.01


def test_the_confidence_sequence_covers_the_true_difference_at_every_look():
    rng, runs, shift = np.random.default_rng(20175), 300, 0.05 * SD
    misses = 0
    for _ in range(runs):
        looks = _experiment(rng, shift)
        misses += any(not r.low <= shift <= r.high for r, _ in looks)
        widths = [r.high - r.low for r, _ in looks]
        assert np.all(np.diff(widths) <= 0.0)  # a running intersection only narrows
    # figure at this seed: every look of 98.7% of the runs covers the true difference
    assert misses / runs <= ALPHA + _slack(ALPHA, runs)


def test_fields_default_tau_and_ledger_dict():
    rng = np.random.default_rng(20176)
    control, canary = _losses(rng, 1_000), _losses(rng, 400, 0.3)
    result = compare(control, canary)
    assert (result.n_control, result.n_treatment) == (1_000, 400)
    assert result.mean_control == pytest.approx(control.mean())
    assert result.difference == pytest.approx(canary.mean() - control.mean())
    pooled = ((999 * control.var(ddof=1)) + 399 * canary.var(ddof=1)) / 1_398
    assert result.tau == pytest.approx(DEFAULT_EFFECT**2 * pooled)
    assert result.low < result.difference < result.high
    entry = result.to_dict()
    assert set(entry) >= {"n_control", "n_treatment", "mean_control", "mean_treatment", "difference",
                          "low", "high", "p_value", "verdict"}
    assert all(type(v) in (int, float, str) for v in entry.values())
    assert json.loads(json.dumps(entry)) == entry

    # the p-value is 1 / Lambda(0), with the arms' plug-in variances
    v = control.var(ddof=1) / 1_000 + canary.var(ddof=1) / 400
    d = canary.mean() - control.mean()
    assert compare(control, canary, tau=0.01).p_value == pytest.approx(
        min(1.0, math.sqrt((v + 0.01) / v) * math.exp(-0.01 * d**2 / (2 * v * (v + 0.01)))))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        compare(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        compare(np.ones((2, 2)), np.ones(3))
    with pytest.raises(ValueError):
        compare(np.ones(3), np.ones(3), alpha=1.5)
    with pytest.raises(ValueError):
        compare(np.ones(3), np.ones(3), tau=0.0)
