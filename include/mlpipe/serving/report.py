"""Served traffic, monitored like the batch predictions (the monitor DAG's day, when the
request log has rows of it):

- drift of the rows the champion arm answered against its version's reference, with its
  calibrated bands (the same Evidently statistics and bands as a scored day);
- the arms compared once labels arrive: each (arm, version)'s rows and its metrics from the
  same metric table as evaluation, over the ``quality_days`` served days ending
  ``label_delay_days`` before the day, and the canary's always-valid comparison of the
  champion arm with the other (per-row losses, :mod:`mlpipe.serving.sequential`).

Written as ``reports/served/<day>.json|html``; the summary (small) goes into the day's
monitoring summary under ``served``.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable

import pandas as pd

from mlpipe.context import Context
from mlpipe.errors import MlpipeError
from mlpipe.features import PARTITION_DATE
from mlpipe.predictions import MODEL_VERSION, classes_in, outputs, scores_of
from mlpipe.serving import policy, requestlog, sequential
from mlpipe.storage import atomic_write

KIND = "served"


def served_day(ctx: Context, day: dt.date, drift: Callable[[pd.DataFrame, str], tuple[dict, str]]) -> dict | None:
    """The day's served-traffic report (None: nothing was served for it). ``drift(current,
    version)``: the monitor's drift of a frame against ``version``'s reference and bands
    (summary, report HTML), passed in by :mod:`mlpipe.monitoring`, which calls this."""
    spec, store = ctx.spec, ctx.store
    served = requestlog.read_served(store, day, day + dt.timedelta(days=1))
    if served.empty:
        return None
    summary = {"day": str(day), "rows": len(served),
               "arms": {str(k): int(v) for k, v in served[requestlog.ARM].value_counts().items()}}
    drift_html = ""
    answered = served[served[requestlog.ARM] == policy.CHAMPION]
    if len(answered):
        summary["drift"], drift_html = _drift(ctx, answered, drift)
    quality_end = day - dt.timedelta(days=spec.monitoring.label_delay_days)
    start = quality_end - dt.timedelta(days=spec.monitoring.quality_days - 1)
    summary["arms_quality"] = compare_arms(ctx, requestlog.with_labels(store, spec, start,
                                                                       quality_end + dt.timedelta(days=1)))
    page = atomic_write(store.report_path(KIND, day, ".html"), _page(summary, drift_html))
    summary["report"] = str(page)
    store.write_report(KIND, day, summary)
    return summary


def _drift(ctx: Context, rows: pd.DataFrame, drift) -> tuple[dict, str]:
    spec = ctx.spec
    version = str(rows[MODEL_VERSION].mode().iloc[0])
    mine = rows[rows[MODEL_VERSION].astype(str) == version]
    try:
        found, page = drift(mine[[*spec.monitored_columns, *outputs(mine)]], version)
    except MlpipeError as exc:  # a version without a reference: the arms are still compared
        return {"model_version": version, "rows": len(mine), "skipped": str(exc)}, ""
    keep = ("dataset_drift", "drifted_columns", "drift_score", "drift_score_band", "drift_share")
    return {"model_version": version, "rows": len(mine), **{k: found[k] for k in keep if k in found}}, page


def compare_arms(ctx: Context, labelled: pd.DataFrame) -> dict:
    """Each (arm, version)'s labelled rows and metrics, and the champion arm against the
    other arm (when there is one) on per-row losses."""
    spec, kind = ctx.spec, ctx.spec.target_type
    target = spec.target.name
    out: dict = {"rows": len(labelled), "days": sorted({str(d) for d in labelled.get(PARTITION_DATE, [])}),
                 "metric": spec.gate.metric, "arms": []}
    losses = {}
    if labelled.empty:
        return out
    for (arm, version), rows in labelled.groupby([requestlog.ARM, MODEL_VERSION], sort=True):
        classes = classes_in(rows)
        scores = scores_of(rows, classes)
        metrics = kind.metrics(rows[target], scores, classes) if len(rows) > 1 else {}
        out["arms"].append({"arm": arm, "model_version": str(version), "rows": len(rows), "metrics": metrics})
        losses.setdefault(arm, kind.row_loss(rows[target], scores, classes))
    others = [a for a in losses if a != policy.CHAMPION]
    if policy.CHAMPION in losses and others:
        found = sequential.compare(losses[policy.CHAMPION], losses[others[0]], alpha=spec.serving.canary.alpha,
                                   min_rows=spec.serving.canary.min_rows)
        out["comparison"] = {"against": others[0], **found.to_dict()}
    return out


def _page(summary: dict, drift_html: str) -> str:
    """The report: the arms' table, then the champion arm's drift report."""
    quality = summary["arms_quality"]
    metric = quality["metric"]
    rows = "".join(f"<tr><td>{html.escape(a['arm'])}</td><td>v{html.escape(a['model_version'])}</td>"
                   f"<td>{a['rows']}</td><td>{a['metrics'].get(metric, float('nan')):.4f}</td></tr>"
                   for a in quality["arms"])
    found = quality.get("comparison")
    verdict = (f"<p>{html.escape(found['against'])} against champion (always-valid test, per-row loss): "
               f"difference {found['difference']:.4g} in [{found['low']:.4g}, {found['high']:.4g}], "
               f"p = {found['p_value']:.3g}: <b>{found['verdict']}</b></p>") if found else ""
    head = (f"<h1>Served traffic of {summary['day']}</h1><p>{summary['rows']} rows served: "
            + ", ".join(f"{k} {v}" for k, v in summary["arms"].items())
            + f"</p><h2>Arms on labelled served rows ({', '.join(quality['days']) or 'none yet'})</h2>"
            f"<table><tr><th>arm</th><th>version</th><th>rows</th><th>{html.escape(metric)}</th></tr>{rows}</table>"
            + verdict + "<h2>Drift of the rows the champion answered</h2>")
    body = drift_html or "<p>No champion rows, or no reference to compare them with.</p>"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>served {summary['day']}</title></head>" \
           f"<body>{head}{body}</body></html>" if "<html" not in body else body.replace("<body>", f"<body>{head}", 1)
