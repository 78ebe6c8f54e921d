"""Human-readable summary of the latest train decision and the current champion."""

from __future__ import annotations

import json

from mlpipe.steps import Context


def latest_decision(ctx: Context) -> dict | None:
    folder = ctx.store.report_path("decisions", "x").parent
    records = sorted(folder.glob("*.json")) if folder.exists() else []
    return json.loads(records[-1].read_text()) if records else None


def summary(ctx: Context) -> str:
    from mlpipe import registry

    registry.connect(ctx.settings, ctx.spec.name)
    lines = [f"pipeline {ctx.spec.name!r}: data {ctx.settings.data_root}, MLflow {ctx.settings.tracking_uri}"]
    for layer in ("raw", "validated", "features", "predictions"):
        folder = ctx.store.layer_dir(layer)
        lines.append(f"  {layer:<12} {len(list(folder.glob('*.parquet'))) if folder.exists() else 0} partitions")
    decision = latest_decision(ctx)
    if decision is None:
        lines.append("no train decision recorded yet")
    else:
        metric = decision["metric"]
        lines.append(f"latest train run {decision['run_tags'].get('airflow.run_id')}, window {decision['window']}")
        sign = 1.0 if ctx.spec.greater_is_better(metric) else -1.0
        names = sorted(decision["candidates"], key=lambda n: -sign * decision["candidates"][n].get(metric, 0.0))
        cols = ["roc_auc", "pr_auc", "log_loss", "accuracy"] if ctx.spec.target.task == "binary" \
            else ["rmse", "mae", "r2"]
        lines.append(f"  {'variant':<16}" + "".join(f"{c:>10}" for c in cols))
        rows = [(n, decision["candidates"][n]) for n in names]
        if decision.get("champion"):
            rows.append((f"champion v{decision['previous_champion']}", decision["champion"]))
        for name, m in rows:
            lines.append(f"  {name:<16}" + "".join(f"{m.get(c, float('nan')):>10.4f}" for c in cols))
        if decision.get("failed_variants"):
            lines.append(f"  failed variants: {decision['failed_variants']}")
        verdict = "PROMOTED" if decision["promoted"] else "kept the champion"
        lines.append(f"gate: {verdict}: {decision['reason']}")
    current = registry.champion_version(ctx.spec.registered_model)
    lines.append(f"champion: {ctx.spec.registered_model} version {current.version}" if current
                 else "champion: none yet")
    return "\n".join(lines)
