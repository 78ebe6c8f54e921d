"""The evaluation stage: every candidate and the champion scored on the same holdout,
paired bootstrap intervals for the gate metric, and the gate's decision. Pure of side
effects apart from loading models; acting on the decision is ``promotion``'s job."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlpipe.metrics import compute_metrics
from mlpipe.metrics import metric as metric_of
from mlpipe.records import CHAMPION_KEY
from mlpipe.spec import GateSpec, PipelineSpec


def score_models(tracking, model_uris: dict[str, str], holdout: pd.DataFrame,
                 hashes: dict[str, str | None] | None = None, classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each model's scores on the holdout rows, through the same pyfunc call (a model with
    a recorded hash in ``hashes`` is refused if its artifact changed); ``tracking``: the
    pipeline's ``registry.Tracking``. Multi-class: probabilities of ``classes``, in that
    order (a class a model does not know scores 0 for it)."""
    from mlpipe import registry

    hashes = hashes or {}
    return {name: registry.predict(tracking.load_model(uri, hashes.get(name)), holdout, classes)
            for name, uri in model_uris.items()}


def score_champion(tracking, registered_model: str, version: str | None, holdout: pd.DataFrame,
                   sha256: str | None = None, classes: list[str] | None = None) -> tuple[np.ndarray | None, str | None]:
    """The champion's holdout scores, or why it cannot score them (e.g. a schema change,
    or an artifact that no longer has its recorded hash)."""
    from mlpipe import registry

    if version is None:
        return None, None
    try:
        return score_models(tracking, {CHAMPION_KEY: registry.version_uri(registered_model, version)}, holdout,
                            {CHAMPION_KEY: sha256}, classes)[CHAMPION_KEY], None
    except Exception as exc:  # noqa: BLE001 - any failure to score: the gate's policy decides
        return None, f"v{version}: {type(exc).__name__}: {str(exc)[:300]}"


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


def assess(spec: PipelineSpec, y: np.ndarray, scores: dict[str, np.ndarray],
           champion_error: str | None = None) -> Decision:
    """Metrics of every scored model (the champion under ``CHAMPION_KEY``), the bootstrap
    intervals and the gate's decision. ``y``: the holdout labels encoded (multi-class: each
    row's class index in the candidates' classes, which every score matrix follows)."""
    metrics = {n: compute_metrics(spec.target.task, y, s) for n, s in scores.items()}
    champion_metrics = metrics.pop(CHAMPION_KEY, None)
    reference = CHAMPION_KEY if champion_metrics and spec.gate.metric in champion_metrics else None
    intervals = bootstrap_intervals(spec, y, scores, metrics, champion_metrics, reference)
    return decide(spec.gate, metrics, champion_metrics, intervals, champion_error)


def bootstrap_intervals(spec: PipelineSpec, y, scores, metrics, champion_metrics, reference) -> dict[str, dict]:
    """Bootstrap intervals of every model's gate metric and of each candidate's gain."""
    from mlpipe.bootstrap import paired_bootstrap

    gate, gate_metric = spec.gate, spec.metric()
    values = {**metrics, CHAMPION_KEY: champion_metrics or {}}
    usable = {n: s for n, s in scores.items() if gate.metric in values[n]}  # e.g. roc_auc needs two classes
    if not usable:
        return {}
    out = paired_bootstrap(gate_metric, y, usable, reference, gate.bootstrap.resamples, gate.bootstrap.confidence,
                           gate.bootstrap.seed)
    for n, iv in out.items():
        iv["value"] = values[n][gate.metric]
        if reference and n != reference:
            iv["gain"] = gate_metric.gain(iv["value"], champion_metrics[gate.metric])
    return out


def decide(gate: GateSpec, candidates: dict[str, dict[str, float]], champion: dict[str, float] | None,
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
    name, intervals = gate.metric, intervals or {}
    ineligible = _ineligible(gate, candidates)
    ranked = metric_of(name).best_first({n: c[name] for n, c in candidates.items() if n not in ineligible})
    promote, reason = _verdict(gate, candidates, champion, intervals, champion_error, ranked, ineligible)
    winner = ranked[0] if ranked else None
    rest = ranked[1:] if promote else ranked
    return Decision(promote, winner, reason, name, rest[0] if rest else None, candidates, champion, intervals,
                    ineligible)


def _ineligible(gate: GateSpec, candidates: dict[str, dict[str, float]]) -> dict[str, str]:
    out = {}
    for name, metrics in sorted(candidates.items()):
        failed = _floors_failed(gate, metrics)
        if metrics.get(gate.metric) is None:
            out[name] = f"no {gate.metric}"
        elif failed:
            out[name] = "fails floors: " + "; ".join(failed)
    return out


def _verdict(gate, candidates, champion, intervals, champion_error, ranked, ineligible) -> tuple[bool, str]:
    """Whether the best eligible candidate is promoted, and why."""
    metric = gate.metric
    if not ranked:
        detail = "; ".join(f"{n} {why}" for n, why in ineligible.items()) or "no candidates"
        return False, f"no candidate is eligible: {detail}"
    best, value = ranked[0], candidates[ranked[0]][metric]
    if champion is None and champion_error is None:
        return True, f"no champion yet; {best} passes floors with {metric}={value:.4f}"
    if champion is None:
        if gate.unscorable_champion == "keep":
            return False, (f"champion cannot score the holdout ({champion_error}); policy 'keep' "
                           "promotes nothing until it is rolled back or replaced by hand")
        return True, (f"champion cannot score the holdout ({champion_error}); policy 'replace': "
                      f"{best} passes floors with {metric}={value:.4f}")
    gain = metric_of(metric).gain(value, champion[metric])
    low, high = intervals.get(best, {}).get("gain_ci", (gain, gain))
    summary = (f"{best} {metric}={value:.4f} vs champion {champion[metric]:.4f}: gain {gain:+.4f}, "
               f"{gate.bootstrap.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]")
    if not (np.isfinite(gain) and np.isfinite(low)):
        return False, f"{summary}; the gain or its interval is undefined: no evidence, keep the champion"
    if gain <= 0:
        return False, f"{summary}; does not beat the champion"
    if low <= gate.min_improvement:
        return False, f"{summary}; lower bound not above the margin {gate.min_improvement}: within the noise"
    return True, f"{summary}; lower bound clears the margin {gate.min_improvement}"


def _floors_failed(gate: GateSpec, metrics: dict[str, float]) -> list[str]:
    bad = []
    for name, floor in gate.floors.items():
        value = metrics.get(name)
        if not metric_of(name).meets(value, floor):
            bad.append(f"{name}={value} vs floor {floor}")
    return bad
