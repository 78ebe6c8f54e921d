"""Metrics by task type, curves, and the promotion gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mlpipe.spec import METRICS, GateSpec

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


def curves(y: np.ndarray, score: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """ROC and precision-recall curves, thinned to about ``points`` points each."""
    from sklearn import metrics as m

    fpr, tpr, _ = m.roc_curve(y, score)
    precision, recall, _ = m.precision_recall_curve(y, score)

    def thin(*arrays):
        keep = np.unique(np.linspace(0, len(arrays[0]) - 1, min(points, len(arrays[0]))).astype(int))
        return [[round(float(v), 5) for v in a[keep]] for a in arrays]

    (fpr, tpr), (recall, precision) = thin(fpr, tpr), thin(recall, precision)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}


@dataclass
class Decision:
    promote: bool
    winner: str | None
    reason: str
    metric: str
    challenger: str | None = None
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    champion: dict[str, float] | None = None
    intervals: dict[str, dict] = field(default_factory=dict)
    ineligible: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(gate: GateSpec, task: str, candidates: dict[str, dict[str, float]], champion: dict[str, float] | None,
           intervals: dict[str, dict] | None = None, champion_error: str | None = None) -> Decision:
    """Apply the gate to candidates scored on one holdout.

    - Only candidates that pass every floor are eligible; they rank by the gate metric
      (ties by name).
    - No champion: the best eligible candidate is promoted (first run).
    - A champion that cannot score the holdout (``champion_error``): with
      ``unscorable_champion: replace`` it is treated as absent; with ``keep`` nothing is
      promoted.
    - Otherwise the best candidate is promoted only if the lower bound of its gain's
      bootstrap interval (``intervals[name]["gain_ci"]``) is above ``min_improvement``,
      and its point gain above zero: a tie or a gain within the noise keeps the champion.
    - ``challenger`` is the best eligible candidate that did not win.
    """
    metric, intervals = gate.metric, intervals or {}
    sign = 1.0 if METRICS[metric][task] else -1.0
    ineligible = {}
    for name, metrics in sorted(candidates.items()):
        failed = _floors_failed(gate, task, metrics)
        if metrics.get(metric) is None:
            ineligible[name] = f"no {metric}"
        elif failed:
            ineligible[name] = "fails floors: " + "; ".join(failed)
    ranked = sorted((n for n in candidates if n not in ineligible), key=lambda n: (-sign * candidates[n][metric], n))

    def result(promote: bool, reason: str) -> Decision:
        winner = ranked[0] if ranked else None
        rest = ranked[1:] if promote else ranked
        return Decision(promote, winner, reason, metric, rest[0] if rest else None, candidates, champion,
                        intervals, ineligible)

    if not ranked:
        detail = "; ".join(f"{n} {why}" for n, why in ineligible.items()) or "no candidates"
        return result(False, f"no candidate is eligible: {detail}")
    best, value = ranked[0], candidates[ranked[0]][metric]
    if champion is None and champion_error is None:
        return result(True, f"no champion yet; {best} passes floors with {metric}={value:.4f}")
    if champion is None:
        if gate.unscorable_champion == "keep":
            return result(False, f"champion cannot score the holdout ({champion_error}); policy 'keep' "
                                 "promotes nothing until it is rolled back or replaced by hand")
        return result(True, f"champion cannot score the holdout ({champion_error}); policy 'replace': "
                            f"{best} passes floors with {metric}={value:.4f}")
    gain = sign * (value - champion[metric])
    low, high = intervals.get(best, {}).get("gain_ci", (gain, gain))
    summary = (f"{best} {metric}={value:.4f} vs champion {champion[metric]:.4f}: gain {gain:+.4f}, "
               f"{gate.bootstrap.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]")
    if not (np.isfinite(gain) and np.isfinite(low)):
        return result(False, f"{summary}; the gain or its interval is undefined: no evidence, keep the champion")
    if gain <= 0:
        return result(False, f"{summary}; does not beat the champion")
    if low <= gate.min_improvement:
        return result(False, f"{summary}; lower bound not above the margin {gate.min_improvement}: within the noise")
    return result(True, f"{summary}; lower bound clears the margin {gate.min_improvement}")


def _floors_failed(gate: GateSpec, task: str, metrics: dict[str, float]) -> list[str]:
    bad = []
    for name, floor in gate.floors.items():
        value = metrics.get(name)
        if value is None or not (value >= floor if METRICS[name][task] else value <= floor):
            bad.append(f"{name}={value} vs floor {floor}")
    return bad
