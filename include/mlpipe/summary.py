"""The text summary the demo prints: the data layers, the latest train decision (from
the promotion ledger) and the current aliases."""

from __future__ import annotations

from mlpipe import ledger
from mlpipe.context import Context
from mlpipe.records import LedgerEntry


def latest_decision(ctx: Context) -> LedgerEntry | None:
    """The ledger's latest train entry."""
    return next((e for e in ledger.newest_first(ctx.store) if e.kind == "train"), None)


def summary(ctx: Context) -> str:
    from mlpipe import registry
    from mlpipe.storage import listing

    lines = [f"pipeline {ctx.spec.name!r}: data {ctx.settings.data_root}, MLflow {ctx.settings.tracking_uri}"]
    for layer in ("raw", "validated", "features", "predictions"):
        names = listing(ctx.store.layer_dir(layer))
        lines.append(f"  {layer:<12} {sum(n.endswith('.parquet') for n in names)} partitions")
    decision = latest_decision(ctx)
    lines += decision_lines(ctx, decision) if decision else ["no train decision recorded yet"]
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        current = ctx.tracking.alias_version(ctx.spec.registered_model, alias)
        lines.append(f"{alias}: {ctx.spec.registered_model} version {current.version}" if current
                     else f"{alias}: none")
    return "\n".join(lines)


def decision_lines(ctx: Context, decision: LedgerEntry) -> list[str]:
    """Candidates best first with their gains over the champion, then the gate's verdict."""
    metric, intervals = decision.metric, decision.intervals
    window = decision.window.to_dict() if decision.window else {}
    lines = [f"latest train run {decision.run_id} ({decision.mode}), window {window}"]
    candidates = {n: c["metrics"] for n, c in decision.candidates.items()}
    names = ctx.spec.metric(metric).best_first({n: candidates[n].get(metric, 0.0) for n in candidates})
    cols = list(ctx.spec.target_type.headline)
    lines.append(f"  {'model':<16}" + "".join(f"{c:>10}" for c in cols) + f"   {metric} gain vs champion")
    rows = [(n, candidates[n]) for n in names]
    if decision.champion_metrics:
        rows.append((f"champion v{decision.champion_before}", decision.champion_metrics))
    for name, m in rows:
        gain = intervals.get(name, {})
        shown = (f"   {gain['gain']:+.4f} [{gain['gain_ci'][0]:+.4f}, {gain['gain_ci'][1]:+.4f}]"
                 if "gain_ci" in gain else "")
        lines.append(f"  {name:<16}" + "".join(f"{m.get(c, float('nan')):>10.4f}" for c in cols) + shown)
    if decision.failed_variants:
        lines.append(f"  failed variants: {decision.failed_variants}")
    verdict = {"promote": "PROMOTED", "keep": "kept the champion"}.get(decision.decision, decision.decision.upper())
    lines.append(f"gate: {verdict}: {decision.reason}")
    lines.append(f"ledger entry {decision.seq}: python -m mlpipe.ledger")
    return lines
