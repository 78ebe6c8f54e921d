"""The canary's always-valid comparison of two arms on per-row losses.

Each day the canary DAG compares the champion (control) with the canary (treatment) on
the losses of the rows each arm served and that have been labelled since the canary
started (lower is better: a per-row log loss, squared error...). It looks every day, so a
fixed-sample test would raise false alarms far more often than its level; this module uses
the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis & Walsh
(2017, "Peeking at A/B tests"; Operations Research 2022, "Always valid inference") for
the difference of two means, with a normal mixing distribution.

With ``d`` the difference of the arms' mean losses (canary minus champion) and ``V`` its
variance, the mixture likelihood ratio of "the difference is theta" against a
``N(theta, tau)`` mixture of alternatives is::

    Lambda(theta) = sqrt(V / (V + tau)) * exp(tau * (d - theta)**2 / (2 * V * (V + tau)))

(with equal arms of ``n`` rows, ``V = 2 sigma**2 / n`` and this is the paper's
``Lambda_n``). ``1 / Lambda(0)`` is an always-valid p-value once its running minimum is
kept over the looks, and ``{theta: Lambda(theta) < 1 / alpha}`` is an always-valid
confidence sequence (kept as the running intersection of the looks' intervals), whatever
the number of looks and whenever the caller stops.

Practical choices, as in the paper's deployed version:

- ``V`` is a plug-in estimate: each arm's sample variance over its rows,
  ``V = s_c**2 / n_c + s_t**2 / n_t``. (With equal variances and arms this is the pooled
  estimate ``2 sigma**2 / n``; unlike a single pooled variance it stays right when the
  canary gets a small share of the traffic and its losses spread differently.)
- ``tau`` (the mixing variance, on the difference's scale) defaults to
  ``(DEFAULT_EFFECT * sigma)**2``, with ``sigma`` the pooled within-arm standard deviation
  of the per-row loss and ``DEFAULT_EFFECT = 0.1``: the prior puts the canary's effect
  around a tenth of a standard deviation of the loss, the size of a degradation worth a
  rollback and one a canary's thousands of rows can resolve. The mSPRT is most powerful
  for effects near ``sqrt(tau)``; it stays valid for any ``tau``, only slower for effects
  far from it.
- The guarantee is exact for normal losses with a known variance and a constant split of
  the traffic; with a plug-in variance, skewed losses and a split that moves step by step
  it holds approximately once each arm has enough rows, which is one reason for
  ``min_rows``: below it the verdict is "hold", never a pass.

The rows passed at each look must be all the experiment's rows so far (cumulative), and
``previous_p`` / ``previous_low`` / ``previous_high`` the previous look's ``p_value``,
``low`` and ``high`` (1, -inf, +inf at the first look).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Verdict = Literal["hold", "worse", "not_worse", "better"]

DEFAULT_EFFECT = 0.1  # default sqrt(tau), in standard deviations of the per-row loss


@dataclass(frozen=True)
class Comparison:
    """One look: each arm's rows and mean loss, the difference (canary minus champion),
    its always-valid confidence sequence [low, high] and p-value (running, across the
    looks), the mixing variance used and the verdict."""

    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    difference: float
    low: float
    high: float
    p_value: float
    tau: float
    alpha: float
    verdict: Verdict

    def to_dict(self) -> dict[str, int | float | str]:
        """Plain ints, floats and a string, for a ledger entry (an arm with no rows has a
        NaN mean, and an interval with fewer than two rows per arm is infinite: Python's
        ``json`` writes and reads both)."""
        return asdict(self)


def _losses(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite losses")
    return array


def _evidence(control: np.ndarray, treatment: np.ndarray, alpha: float,
              tau: float | None) -> tuple[float, float, float, float]:
    """This look's own p-value ``1 / Lambda(0)``, interval ``{theta: Lambda(theta) < 1 /
    alpha}`` and mixing variance (no evidence while an arm has fewer than two rows)."""
    p_now, low_now, high_now = 1.0, -math.inf, math.inf
    mixing = math.nan if tau is None else float(tau)
    n_c, n_t = control.size, treatment.size
    if n_c < 2 or n_t < 2:
        return p_now, low_now, high_now, mixing
    var_c, var_t = float(control.var(ddof=1)), float(treatment.var(ddof=1))
    variance = var_c / n_c + var_t / n_t
    if tau is None:
        mixing = DEFAULT_EFFECT**2 * ((n_c - 1) * var_c + (n_t - 1) * var_t) / (n_c + n_t - 2)
    difference = float(treatment.mean() - control.mean())
    if variance > 0.0 and mixing > 0.0:
        log_ratio = 0.5 * math.log(variance / (variance + mixing)) \
            + mixing * difference**2 / (2.0 * variance * (variance + mixing))
        p_now = math.exp(-log_ratio) if log_ratio > 0.0 else 1.0
        half = math.sqrt(variance * (variance + mixing) / mixing
                         * math.log((variance + mixing) / (variance * alpha**2)))
        low_now, high_now = difference - half, difference + half
    elif variance == 0.0 and difference != 0.0:
        p_now, low_now, high_now = 0.0, difference, difference  # every row says the same
    return p_now, low_now, high_now, mixing


def compare(control_losses: np.ndarray, treatment_losses: np.ndarray, *, alpha: float = 0.05,
            min_rows: int = 100, previous_p: float = 1.0, previous_low: float = -math.inf,
            previous_high: float = math.inf, tau: float | None = None) -> Comparison:
    """Compare the canary's (treatment) per-row losses with the champion's (control).

    Verdict: "hold" while either arm has fewer than ``min_rows`` rows (whatever the
    evidence; the p-value and interval are still reported); otherwise "worse" when the
    always-valid p-value is below ``alpha`` and the canary's loss is the higher (the
    interval lies above 0, else the current difference is positive), "better" when it is
    below ``alpha`` the other way, and "not_worse" when it is not below ``alpha``.
    ``tau`` defaults to ``(DEFAULT_EFFECT * sigma)**2`` (see the module's docstring).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if tau is not None and not tau > 0.0:
        raise ValueError(f"tau must be positive, got {tau}")
    control, treatment = _losses(control_losses, "control_losses"), _losses(treatment_losses, "treatment_losses")
    n_c, n_t = control.size, treatment.size
    mean_c = float(control.mean()) if n_c else math.nan
    mean_t = float(treatment.mean()) if n_t else math.nan
    difference = mean_t - mean_c
    p_now, low_now, high_now, mixing = _evidence(control, treatment, alpha, tau)

    p_value = min(float(previous_p), p_now)
    low, high = max(float(previous_low), low_now), min(float(previous_high), high_now)
    if low > high:  # the sequence missed the difference at some look (probability <= alpha)
        low, high = low_now, high_now

    if min(n_c, n_t) < min_rows:
        verdict: Verdict = "hold"
    elif p_value >= alpha:
        verdict = "not_worse"
    else:
        side = 1.0 if low > 0.0 else -1.0 if high < 0.0 else math.copysign(1.0, difference) if difference else 0.0
        verdict = "worse" if side > 0 else "better" if side < 0 else "not_worse"
    return Comparison(n_control=int(n_c), n_treatment=int(n_t), mean_control=mean_c, mean_treatment=mean_t,
                      difference=float(difference), low=float(low), high=float(high), p_value=float(p_value),
                      tau=float(mixing), alpha=float(alpha), verdict=verdict)
