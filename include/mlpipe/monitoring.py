"""The monitoring stage: each scored day against the reference of the model that scored
it (a sample of its training features and its holdout scores, logged with the version),
with Evidently doing the statistics: data drift over the monitored columns, prediction
drift over the scores. Once labels arrive (``label_delay_days`` later) the champion's
live metrics, with the metric functions evaluation uses, against its holdout figure.
Sustained drift or degradation asks for a retrain, within guardrails.

Per day: ``reports/drift/<day>.html`` (Evidently's report, self-contained) and
``reports/drift/<day>.json`` (the summary below), both also on an MLflow ``monitor`` run.
``python -m mlpipe.monitoring --from D1 --to D2`` prints the history as a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging

import pandas as pd

from mlpipe import ranges, report_index
from mlpipe.bands import assess, degraded, output_bands
from mlpipe.bands import categorical as is_categorical
from mlpipe.bands import method as band_method
from mlpipe.context import Context
from mlpipe.errors import MlpipeError
from mlpipe.features import PARTITION_DATE
from mlpipe.predictions import (
    CHALLENGER_SCORE,
    CHALLENGER_VERSION,
    MODEL_VERSION,
    SCORE,
    classes_in,
    keys,
    outputs,
    scores_of,
    with_labels,
)
from mlpipe.storage import atomic_write

log = logging.getLogger(__name__)
KIND = "drift"


def monitor_day(ctx: Context, day: dt.date, backfill: bool = False, train_in_flight: bool = False,
                page: bool = True) -> dict:
    """Drift and live quality of ``day`` (and of its served traffic:
    :mod:`mlpipe.serving.report`), the retrain decision, written as the day's
    report, and (with ``page``) the pipeline's monitoring page rebuilt; returns the
    summary (small: fit for XCom). A live run lists the drift and degradation
    ``episodes`` that start or end on the day (each alerts once); a backfill lists none."""
    from mlpipe import monitoring_page
    from mlpipe.serving import report as served_report

    spec, store = ctx.spec, ctx.store
    drift, html, version, rows = _measure(ctx, day)
    quality = live_quality(ctx, day - dt.timedelta(days=spec.monitoring.label_delay_days))
    summary = {"day": str(day), "model_version": version, "rows": rows, **drift, "quality": quality,
               "estimated": estimated_quality(ctx, day, version)}
    # online traffic of the day, when there was some
    summary["served"] = served_report.served_day(ctx, day, functools.partial(_against_reference, ctx))
    summary["decision"] = retrain_decision(ctx, day, summary, backfill, train_in_flight)
    summary["episodes"] = [] if backfill else _episodes(ctx, day, summary)
    report = atomic_write(store.report_path(KIND, day, ".html"), html)
    summary["report"] = str(report)
    summary["page"] = str(store.report_dir("monitoring") / "index.html") if page else None
    store.write_report(KIND, day, summary)
    built = monitoring_page.build(store, day) if page else None  # before the index, which links it once it exists
    report_index.record(store, "day", str(day), {"drift": str(report),
                                                 "served": summary["served"] and summary["served"]["report"]},
                        drift_status=("drift" if summary["dataset_drift"] else "no drift")
                        + ("" if summary["decision"]["action"] == "none" else f", {summary['decision']['action']}"))
    ctx.tracking.log_monitoring(spec.name, summary, html, built)
    _log(summary)
    return summary


def _episodes(ctx: Context, day: dt.date, summary: dict) -> list[dict]:
    """The drift and degradation episodes that start or end on ``day``: a state that
    differs from the day before's (measured here if that day is not monitored yet)."""
    found = []
    before = ctx.store.report_path(KIND, day - dt.timedelta(days=1))
    earlier = json.loads(before.read_text()) if before.exists() else {}
    was_drifting = bool(earlier.get("dataset_drift")) if earlier else _drifted(ctx, day - dt.timedelta(days=1))
    if summary["dataset_drift"] != was_drifting:
        found.append({"kind": "drift", "state": "started" if summary["dataset_drift"] else "ended", "day": str(day),
                      "columns": summary["drifted_columns"], "drift_score": summary.get("drift_score")})
    quality, was_degraded = summary["quality"] or {}, bool((earlier.get("quality") or {}).get("degraded"))
    if bool(quality.get("degraded")) != was_degraded:
        found.append({"kind": "degradation", "state": "started" if quality.get("degraded") else "ended",
                      "day": str(day), "metric": quality.get("metric"), "live": quality.get("live"),
                      "bound": (quality.get("baseline") or {}).get("bound", quality.get("holdout"))})
    return found


def monitor_range(ctx: Context, scored: dict, monitor: bool = True) -> dict:
    """Monitor, in order, each day a chunk of the score_range DAG scored (``scored``, its
    result), as a backfill run of the monitor DAG would (it records ``would-trigger``,
    never triggers); nothing with ``monitor`` false. A day that cannot be monitored is
    listed in ``failed`` and the other days go on."""
    from mlpipe import monitoring_page

    passed, failed = [], []
    for day in map(dt.date.fromisoformat, scored["passed"] if monitor else []):
        try:
            monitor_day(ctx, day, backfill=True, page=False)
        except MlpipeError as exc:
            failed.append(ranges.failure(day, exc))
            continue
        passed.append(str(day))
    if passed:  # the page once per chunk, not once a day
        monitoring_page.build(ctx.store, dt.date.fromisoformat(passed[-1]))
    return {"start": scored["start"], "end": scored["end"], "passed": passed, "failed": failed}


def _measure(ctx: Context, day: dt.date) -> tuple[dict, str, str, int]:
    """The day's drift against the reference of the version that scored it:
    (summary, report HTML, version, rows compared)."""
    current, version = _current(ctx, day)
    drift, html = _against_reference(ctx, current, version)
    return drift, html, version, len(current)


def _against_reference(ctx: Context, current: pd.DataFrame, version: str) -> tuple[dict, str]:
    """Drift of ``current`` against ``version``'s reference and bands: (summary, report HTML)."""
    spec = ctx.spec
    reference = ctx.tracking.reference_of(spec.registered_model, version, _reference_dir(ctx, version))
    if reference is None:
        raise MlpipeError(f"version {version} of {spec.registered_model!r} has no monitoring reference "
                          f"(trained before references were logged): retrain to monitor it")
    return drift_report(spec, *reference, current, ctx.tracking.bands_of(spec.registered_model, version))


def _reference_dir(ctx: Context, version: str):
    """A version's reference, downloaded once per host (a cache: see mlpipe.settings)."""
    return ctx.cache_dir / "monitoring-reference" / f"v{version}"


def _current(ctx: Context, day: dt.date) -> tuple[pd.DataFrame, str]:
    """The window's features with the day's scores, and the version that scored ``day``."""
    spec, mon = ctx.spec, ctx.spec.monitoring
    start, end = day - dt.timedelta(days=mon.window_days - 1), day + dt.timedelta(days=1)
    predictions, days = ctx.store.read_range("predictions", start, end, date_column=PARTITION_DATE)
    if day not in days:
        raise MlpipeError(f"no predictions for {day} at {ctx.store.path('predictions', day)}: score the day first")
    columns = list(dict.fromkeys([*spec.row_id, *spec.monitored_columns]))  # a row id column may be monitored
    features, _ = ctx.store.read_range("features", start, end, columns=columns, date_column=PARTITION_DATE)
    outs = outputs(predictions)
    joined = features.merge(predictions[[*keys(spec), *outs]], on=keys(spec), how="inner", validate="one_to_one")
    todays = predictions.loc[predictions[PARTITION_DATE] == day, MODEL_VERSION]
    return joined[[*spec.monitored_columns, *outs]], str(todays.mode().iloc[0])


def drift_report(spec, ref_features: pd.DataFrame, ref_scores: pd.DataFrame, current: pd.DataFrame,
                 learnt: dict | None = None) -> tuple[dict, str]:
    """Value drift of each monitored column and of the scores. With the version's bands
    (``learnt``, :mod:`mlpipe.bands`) a calibrated column drifts when its statistic is
    outside its band, and the day is dataset drift when its drift score is outside that
    score's band; without them, Evidently's fixed thresholds decide (the spec's method and
    threshold per column type, else Evidently's defaults), and dataset drift is at least
    ``drift_share`` of the columns drifting. Returns (summary, report HTML).

    The report: a table of every column's statistic against its band, then Evidently's
    ``ValueDrift`` (distributions, test, the band as its threshold) of the scores, of the
    columns outside their bands and of the columns without one. A calibrated column inside
    its band is measured with the same Evidently statistic but not drawn: drawing is most
    of a report's time (bench/monitoring.py)."""
    mon = spec.monitoring
    present = [c for c in spec.monitored_columns if c in ref_features.columns]
    # a column with no values on either side has no distribution to compare (e.g. no weather that day)
    empty = [c for c in present if not (ref_features[c].notna().any() and current[c].notna().any())]
    columns = [c for c in present if c not in empty]
    bands = {c: b for c, b in ((learnt or {}).get("columns") or {}).items() if c in columns}
    quiet = _inside_bands(spec, ref_features, current, bands)
    drawn = [c for c in columns if c not in quiet]
    snapshot = _evidently(spec, ref_features, ref_scores, current, drawn, learnt)
    summary = _drift_summary(snapshot.dict(), outputs(ref_scores))
    summary["columns"] = {c: summary["columns"].get(c) or quiet[c] for c in columns}
    drifted = sorted(c for c in columns if summary["columns"][c]["drifted"])
    share = len(drifted) / len(columns) if columns else 0.0
    summary |= {"drifted_columns": drifted, "drift_share": share, "dataset_drift": bool(columns) and share >= mon.drift_share}
    if learnt and learnt.get("dataset"):
        assessed = assess(learnt, {c: v["score"] for c, v in summary["columns"].items()})
        summary |= {"dataset_drift": assessed["dataset_drift"], "drift_score": assessed["drift_score"],
                    "drift_score_band": assessed["drift_score_band"], "excess": assessed["excess"]}
    calibrated = {k: learnt[k] for k in ("source", "from", "to", "quantile", "learnt_at")} if learnt else None
    summary = {**summary, "empty_columns": empty, "calibration": calibrated}
    return summary, _with_table(snapshot.get_html_str(as_iframe=False), summary)


def _inside_bands(spec, ref_features: pd.DataFrame, current: pd.DataFrame, bands: dict[str, dict]) -> dict[str, dict]:
    """The calibrated columns whose statistic is inside their band, as the summary lists a column."""
    from mlpipe.bands import outside, statistics

    measured = statistics(spec, ref_features, current, {c: b["test"] for c, b in bands.items()})
    return {c: {"score": v, "method": bands[c]["test"], "threshold": bands[c]["band"], "drifted": False}
            for c, v in measured.items() if not outside(bands[c], v)}


def _evidently(spec, ref_features: pd.DataFrame, ref_scores: pd.DataFrame, current: pd.DataFrame,
               columns: list[str], learnt: dict | None):
    """Evidently's report of one ``ValueDrift`` per column of ``columns`` and of the model's
    outputs (the score; a multi-class model's predicted class and class probabilities),
    a band as its column's threshold: its snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    mon, outs = spec.monitoring, outputs(ref_scores)
    every = [*columns, *outs]
    text = [c for c in every if is_categorical(spec, c)]
    definition = DataDefinition(numerical_columns=[c for c in every if c not in text], categorical_columns=text)
    reference = pd.concat([ref_features[columns].reset_index(drop=True), ref_scores[outs].reset_index(drop=True)],
                          axis=1)
    bands = {**((learnt or {}).get("columns") or {}), **output_bands(learnt)}

    def value_drift(column: str, method: str | None, threshold: float | None):
        if band := bands.get(column):
            return ValueDrift(column=column, method=band_method(spec, column, band["test"]), threshold=band["band"])
        return ValueDrift(column=column, method=method, threshold=threshold)

    metrics = [value_drift(c, mon.cat_method, mon.cat_threshold) if c in text
               else value_drift(c, mon.num_method, mon.num_threshold) for c in columns]
    report = Report([*metrics, *(value_drift(c, None, None) for c in outs)], include_tests=True)
    return report.run(Dataset.from_pandas(current[every].astype({c: "string" for c in text}),
                                          data_definition=definition),
                      Dataset.from_pandas(reference.astype({c: "string" for c in text}), data_definition=definition))


def _with_table(page: str, summary: dict) -> str:
    """Evidently's page with a table of every column's statistic against its band (or its
    test's threshold) at the top of its body."""
    import html

    excess = summary.get("excess") or {}
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(str(v['method']))}</td><td>{v['score']:.4g}</td>"
        f"<td>{v['threshold']:.4g}</td><td>{excess.get(c, '')}</td><td>{'drift' if v['drifted'] else ''}</td></tr>"
        for c, v in sorted(summary["columns"].items(), key=lambda kv: (not kv[1]["drifted"], kv[0])))
    verdict = "dataset drift" if summary["dataset_drift"] else "no dataset drift"
    score = (f"; drift score {summary['drift_score']:.3f} against its band {summary['drift_score_band']:.3f}"
             if summary.get("drift_score") is not None else "")
    table = (f'<div style="font-family:sans-serif;margin:16px"><h3>{verdict}: {len(summary["drifted_columns"])} of '
             f'{len(summary["columns"])} columns outside their band{score}</h3><table border="1" cellpadding="3" '
             'style="border-collapse:collapse;font-size:13px"><tr><th>column</th><th>test</th><th>statistic</th>'
             f'<th>band (threshold)</th><th>excess</th><th></th></tr>{rows}</table><p>Below: the distributions of '
             'the scores and of the columns outside their band (or without one).</p></div>')
    at = page.find(">", page.rfind("<body")) + 1 if "<body" in page else 0  # the last: its bundled script names one too
    return page[:at] + table + page[at:]


def _drift_summary(result: dict, outs: list[str]) -> dict:
    """Each drawn column's statistic, test, threshold and verdict, and the model outputs'
    (``outs``): prediction drift is the first's (the score, or the predicted class), with
    a multi-class model's class probabilities under ``outputs``, drifted when any is."""
    drifts = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            drifts[config["column"]] = {"score": float(metric["value"]), "method": config["method"],
                                        "threshold": config["threshold"]}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith("ValueDrift"):
            drifts[params["column"]]["drifted"] = test["status"] == "FAIL"
    found = {c: drifts.pop(c) for c in outs}
    prediction = {**found[outs[0]], "drifted": any(v["drifted"] for v in found.values())}
    return {"columns": drifts, "prediction_drift": prediction if len(outs) == 1 else {**prediction, "outputs": found}}


def live_quality(ctx: Context, day: dt.date) -> dict | None:
    """The champion's (and shadow challenger's) metrics on the labelled rows of the
    ``quality_days`` scored days ending with ``day``, next to the version's holdout
    figure; None while those days have no labels or predictions. Degraded: below the
    version's quality band (its metric over holdout windows of the same length,
    :func:`mlpipe.bands.quality_band`) by more than ``tolerance``, judged only once all
    ``quality_days`` days are labelled (``judged``); a version without a band, below its
    pooled holdout figure by more than ``tolerance``."""
    spec, target, kind = ctx.spec, ctx.spec.target.name, ctx.spec.target_type
    start, end = day - dt.timedelta(days=spec.monitoring.quality_days - 1), day + dt.timedelta(days=1)
    rows, days = with_labels(ctx.store, spec, start, end)
    if rows.empty:
        return None
    version, metric = str(rows[MODEL_VERSION].mode().iloc[0]), spec.gate.metric
    rows = rows[rows[MODEL_VERSION].astype(str) == version]  # one model's rows
    classes = classes_in(rows)  # a multi-class champion's; its challenger's scores are read on them
    live = kind.metrics(rows[target], scores_of(rows, classes), classes)
    holdout = ctx.tracking.version_metrics(spec.registered_model, version).get(metric)
    quality = {"day": str(day), "days": [str(d) for d in days], "model_version": version, "rows": len(rows),
               "metric": metric, "live": live.get(metric), "holdout": holdout, "metrics": live}
    shadow = rows[rows[CHALLENGER_VERSION].notna()]
    if len(shadow):
        quality["challenger"] = kind.metrics(shadow[target], scores_of(shadow, classes, CHALLENGER_SCORE),
                                             classes).get(metric)
    quality["estimated"] = (_estimated(ctx, version, rows[SCORE].to_numpy(), len(days))  # beside the realised figure
                            if kind.estimates else None)
    band = (ctx.tracking.bands_of(spec.registered_model, version) or {}).get("quality")
    if band and band["metric"] == metric and band["days"] == spec.monitoring.quality_days:
        # windows of the same length in the holdout: a fair comparison, so a shorter live window
        # (the first days after a promotion, days without labels) is not judged against it
        quality["baseline"], quality["judged"] = band, len(days) >= band["days"]
        quality["degraded"] = quality["judged"] and live.get(metric) is not None and degraded(
            band, live[metric], spec.monitoring.tolerance)
        return quality
    if holdout is None or live.get(metric) is None:
        quality["degraded"] = False
        return quality
    quality["degraded"] = bool(-spec.metric().gain(live[metric], holdout) > spec.monitoring.tolerance)
    return quality


def _estimated(ctx: Context, version: str, scores, days: int) -> dict | None:
    """The gate metric expected from ``scores`` (of ``days`` days) by the version's
    calibrator, against its quality band (judged only over as many days as its windows
    have); None without a calibrator or an estimator for the metric."""
    from mlpipe.estimate import estimate

    spec, learnt = ctx.spec, ctx.tracking.bands_of(ctx.spec.registered_model, version) or {}
    if not learnt.get("calibrator"):
        return None
    value = estimate(spec.gate.metric, learnt["calibrator"], scores)
    if value is None:
        return None
    band = learnt.get("quality")
    judged = bool(band) and days >= band["days"]
    return {"metric": spec.gate.metric, "value": value, "rows": len(scores), "judged": judged,
            "degraded": judged and degraded(band, value, spec.monitoring.tolerance)}


def estimated_quality(ctx: Context, day: dt.date, version: str) -> dict | None:
    """The estimated gate metric (no labels needed) of ``version``'s scores over the
    ``quality_days`` scored days ending with ``day`` (:mod:`mlpipe.estimate`)."""
    spec = ctx.spec
    if not spec.target_type.estimates:
        return None
    start = day - dt.timedelta(days=spec.monitoring.quality_days - 1)
    rows, days = ctx.store.read_range("predictions", start, day + dt.timedelta(days=1), columns=[SCORE, MODEL_VERSION])
    rows = rows[rows[MODEL_VERSION].astype(str) == version] if len(rows) else rows
    found = _estimated(ctx, version, rows[SCORE].to_numpy(), len(days)) if len(rows) else None
    return found and {**found, "day": str(day), "days": [str(d) for d in days]}


def retrain_decision(ctx: Context, day: dt.date, summary: dict, backfill: bool, train_in_flight: bool) -> dict:
    """``trigger`` (emit the retrain request), ``would-trigger`` (a backfill: recorded
    only), ``blocked`` (a guardrail held; ``reason`` says which) or ``none``."""
    spec, policy = ctx.spec, ctx.spec.monitoring.retrain
    reasons = []
    streak = _drift_streak(ctx, day, summary["dataset_drift"])
    if streak >= policy.drift_days:
        reasons.append(f"dataset drift on {streak} consecutive days ({', '.join(summary['drifted_columns'])})")
    quality = summary["quality"]
    if quality and quality["degraded"]:
        baseline = quality.get("baseline")
        against = (f"the bound {baseline['bound']:.4f} of its holdout's {baseline['windows']} {baseline['days']}-day "
                   "windows" if baseline else f"holdout {quality['holdout']:.4f}")
        reasons.append(f"live {quality['metric']} {quality['live']:.4f} below {against} by more than "
                       f"{spec.monitoring.tolerance} over {len(quality.get('days', [1]))} labelled days to {quality['day']}")
    estimated = summary.get("estimated")
    if policy.use_estimate and estimated and estimated["degraded"]:
        reasons.append(f"estimated {estimated['metric']} {estimated['value']:.4f} (before labels) below the version's "
                       f"quality band by more than {spec.monitoring.tolerance} over the scored days to {estimated['day']}")
    if not reasons:
        return {"action": "none", "reason": "no sustained drift or degradation", "drift_streak": streak}
    reason = "; ".join(reasons)
    base = {"reason": reason, "drift_streak": streak, "window_end": str(day + dt.timedelta(days=1))}
    held = _guardrail(ctx, day, train_in_flight)
    if held:
        return {**base, "action": "blocked", "reason": f"{reason}; not triggered: {held}"}
    return {**base, "action": "would-trigger" if backfill else "trigger"}


def _drift_streak(ctx: Context, day: dt.date, today: bool) -> int:
    """Consecutive days with dataset drift, ending with ``day`` (at most the policy's
    ``drift_days``). An earlier day not monitored yet (a backfill runs days in parallel)
    is measured here, so the decision does not depend on the order runs finish in."""
    streak, previous = int(today), day - dt.timedelta(days=1)
    while today and streak < ctx.spec.monitoring.retrain.drift_days and _drifted(ctx, previous):
        streak, previous = streak + 1, previous - dt.timedelta(days=1)
    return streak


def _drifted(ctx: Context, day: dt.date) -> bool:
    path = ctx.store.report_path(KIND, day)
    if path.exists():
        return bool(json.loads(path.read_text()).get("dataset_drift"))
    if not ctx.store.exists("predictions", day):
        return False
    try:
        return bool(_measure(ctx, day)[0]["dataset_drift"])
    except MlpipeError:  # scored by a version without a reference: no evidence of drift
        return False


def _guardrail(ctx: Context, day: dt.date, train_in_flight: bool) -> str | None:
    """Why a retrain request must not go out now, or None."""
    from mlpipe import ledger

    spec, store, policy = ctx.spec, ctx.store, ctx.spec.monitoring.retrain
    if train_in_flight:
        return "a train run is in flight"
    validation = store.report_path("validation", day)
    if validation.exists() and not json.loads(validation.read_text()).get("success", True):
        return f"validation of {day} failed"
    # the latest train on data up to this day (a backfill looks at an earlier day than the latest train); the
    # ledger is read from its end back to that entry only
    last_end = next((e.window.end for e in ledger.newest_first(store)
                     if e.kind == "train" and e.window and e.window.end <= day + dt.timedelta(days=1)), None)
    if last_end is not None and (day - last_end).days + 1 < policy.cooldown_days:
        return f"cooldown: the last train's window ended {last_end}, less than {policy.cooldown_days} days ago"
    since = last_end or spec.schedule.start
    labelled = _labelled_rows(ctx, since, day + dt.timedelta(days=1), policy.min_new_labelled_rows)
    if labelled < policy.min_new_labelled_rows:
        return f"{labelled} labelled rows since {since}, fewer than {policy.min_new_labelled_rows}"
    return None


def _labelled_rows(ctx: Context, start: dt.date, end: dt.date, enough: int) -> int:
    """Labelled rows in ``[start, end)``, counted from the latest day back until ``enough``."""
    return ctx.store.count_values("features", start, end, ctx.spec.target.name, enough)


def _log(summary: dict) -> None:
    log.info("drift %s: %d of %d columns drifted (share %.2f, dataset drift %s); prediction drift %.4f (%s)",
             summary["day"], len(summary["drifted_columns"]), len(summary["columns"]), summary["drift_share"],
             summary["dataset_drift"], summary["prediction_drift"]["score"], summary["prediction_drift"]["method"])
    for column in summary["drifted_columns"]:
        info = summary["columns"][column]
        log.info("  drifted %-28s %s %.4f (threshold %s)", column, info["method"], info["score"], info["threshold"])
    log.info("retrain decision: %s (%s)", summary["decision"]["action"], summary["decision"]["reason"])


def history(ctx: Context, start: dt.date, end: dt.date) -> list[dict]:
    """The saved summaries of [start, end]."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    paths = [ctx.store.report_path(KIND, d) for d in days]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def format_history(rows: list[dict]) -> str:
    lines = [f"{'day':<11} {'v':>3} {'drift':>6} {'share':>6} {'pred':>7} {'live':>7} {'holdout':>7}  "
             f"{'decision':<13} drifted columns / reason"]
    for r in rows:
        q = r.get("quality") or {}
        live = f"{q['live']:.4f}" if q.get("live") is not None else "-"
        holdout = f"{q['holdout']:.4f}" if q.get("holdout") is not None else "-"
        lines.append(f"{r['day']:<11} {r['model_version']:>3} {'yes' if r['dataset_drift'] else 'no':>6} "
                     f"{r['drift_share']:>6.2f} {r['prediction_drift']['score']:>7.4f} {live:>7} {holdout:>7}  "
                     f"{r['decision']['action']:<13} {', '.join(r['drifted_columns']) or '-'}")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """One line for a range of monitored days."""
    if not rows:
        return "monitoring: no monitored days"
    drifted = [r["day"] for r in rows if r["dataset_drift"]]
    actions = sorted({r["decision"]["action"] for r in rows} - {"none"})
    quality = [r["quality"] for r in rows if r.get("quality")]
    live = ""
    if quality:
        mean = sum(q["live"] for q in quality if q["live"] is not None) / len(quality)
        live = f"; live {quality[0]['metric']} mean {mean:.4f} over {len(quality)} labelled days " \
               f"(holdout {quality[-1]['holdout']:.4f})"
    return (f"monitoring: {len(drifted)} of {len(rows)} days with dataset drift{live}; "
            f"decisions: {', '.join(actions) or 'none'}")


def relearn_bands(ctx: Context, start: dt.date, end: dt.date, version: str | None = None) -> dict:
    """Learn ``version``'s (default: the champion's) drift bands again on the scored days
    ``[start, end]``, without retraining: each day's features (and that version's scores)
    against its reference, for seasons that change what an ordinary day is. The quality
    band and calibrator are kept. Logged beside the reference (the earlier bands kept as
    ``bands-<learnt_at>.json``); returns them."""
    from mlpipe import bands
    from mlpipe.registry import CHAMPION

    spec = ctx.spec
    if version is None:
        current = ctx.tracking.champion_version(spec.registered_model)
        if current is None:
            raise MlpipeError(f"no '{CHAMPION}' alias on model {spec.registered_model!r}: nothing to re-learn")
        version = str(current.version)
    reference = ctx.tracking.reference_of(spec.registered_model, version, _reference_dir(ctx, version))
    if reference is None:
        raise MlpipeError(f"version {version} of {spec.registered_model!r} has no monitoring reference: retrain")
    stop = end + dt.timedelta(days=1)
    predictions, days = ctx.store.read_range("predictions", start, stop, date_column=PARTITION_DATE)
    if not days:
        raise MlpipeError(f"no scored days in [{start}, {end}]: score them first (the score_range DAG)")
    predictions = predictions[predictions[MODEL_VERSION].astype(str) == version]
    columns = list(dict.fromkeys([*spec.row_id, *spec.monitored_columns]))
    features, _ = ctx.store.read_range("features", start, stop, columns=columns, date_column=PARTITION_DATE)
    outs = outputs(predictions)
    scored = features.merge(predictions[[*keys(spec), *outs]], on=keys(spec), how="inner")
    earlier = ctx.tracking.bands_of(spec.registered_model, version) or {}
    learnt = bands.learn(spec, reference[0], scored, reference[1], scored[[*outs, PARTITION_DATE]],
                         f"re-learnt on scored days {start} .. {end}")
    learnt |= {k: earlier[k] for k in ("quality", "calibrator") if earlier.get(k)}
    ctx.tracking.log_bands(spec.registered_model, version, learnt)
    return learnt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlpipe.monitoring", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="end", required=True, type=dt.date.fromisoformat, help="last day (inclusive)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pipeline", help="the pipeline's name (default: the only one, when there is one)")
    parser.add_argument("--relearn", action="store_true",
                        help="learn the champion's drift bands again on the scored days FROM..TO (no retraining)")
    parser.add_argument("--version", help="with --relearn: this version instead of the champion")
    args = parser.parse_args(argv)
    ctx = Context.for_cli(args.pipeline)
    if args.relearn:
        try:
            learnt = relearn_bands(ctx, args.start, args.end, args.version)
        except MlpipeError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"bands of {len(learnt['columns'])} column(s) re-learnt on {learnt['from']} .. {learnt['to']} "
              f"({learnt['dataset']['chunks'] if learnt['dataset'] else 0} chunk(s)); the earlier ones are kept")
        return
    rows = history(ctx, args.start, args.end)
    print(json.dumps(rows, indent=2) if args.json else f"{format_history(rows)}\n{verdict(rows)}")


if __name__ == "__main__":
    main()
