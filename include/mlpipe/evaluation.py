"""Metrics by task type and the promotion gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mlpipe.spec import METRICS, GateSpec


def compute_metrics(task: str, y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    from sklearn import metrics as m

    y_true = np.asarray(y_true, dtype="float64")
    score = np.asarray(score, dtype="float64")
    if task == "binary":
        y = y_true.astype(int)
        out = {"log_loss": m.log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1]),
               "accuracy": m.accuracy_score(y, score >= threshold),
               "positive_rate": float(y.mean())}
        if len(np.unique(y)) == 2:
            out["roc_auc"] = m.roc_auc_score(y, score)
            out["pr_auc"] = m.average_precision_score(y, score)
        return {k: float(v) for k, v in out.items()}
    return {"rmse": float(m.root_mean_squared_error(y_true, score)),
            "mae": float(m.mean_absolute_error(y_true, score)),
            "r2": float(m.r2_score(y_true, score))}


@dataclass
class Decision:
    promote: bool
    winner: str | None
    reason: str
    metric: str
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    champion: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def decide(gate: GateSpec, task: str, candidates: dict[str, dict[str, float]],
           champion: dict[str, float] | None) -> Decision:
    """Pick the best candidate on the gate metric; promote it only if it passes every
    floor and beats the champion (when there is one) by at least ``min_improvement``.

    First run (no champion): the best candidate that passes the floors is promoted.
    A tie or an improvement below the margin keeps the champion.
    """
    metric = gate.metric
    better = METRICS[metric][task]
    sign = 1.0 if better else -1.0

    def floors_failed(metrics: dict[str, float]) -> list[str]:
        bad = []
        for name, floor in gate.floors.items():
            value = metrics.get(name)
            ok = value is not None and (value >= floor if METRICS[name][task] else value <= floor)
            if not ok:
                bad.append(f"{name}={value} vs floor {floor}")
        return bad

    scored = {n: m for n, m in candidates.items() if m.get(metric) is not None}
    if not scored:
        return Decision(False, None, f"no candidate has a {metric}", metric, candidates, champion)
    best = max(sorted(scored), key=lambda n: sign * scored[n][metric])
    value = scored[best][metric]
    failed = floors_failed(scored[best])
    if failed:
        return Decision(False, best, f"best candidate {best} fails floors: {'; '.join(failed)}", metric,
                        candidates, champion)
    if champion is None or champion.get(metric) is None:
        return Decision(True, best, f"no champion yet; {best} passes floors with {metric}={value:.4f}", metric,
                        candidates, champion)
    gain = sign * (value - champion[metric])
    if gain < gate.min_improvement - 1e-9 or gain <= 0:
        return Decision(False, best, f"{best} {metric}={value:.4f} does not beat champion "
                        f"{champion[metric]:.4f} by the margin {gate.min_improvement} (gain {gain:+.4f})",
                        metric, candidates, champion)
    return Decision(True, best, f"{best} {metric}={value:.4f} beats champion {champion[metric]:.4f} "
                    f"by {gain:+.4f} >= margin {gate.min_improvement}", metric, candidates, champion)
