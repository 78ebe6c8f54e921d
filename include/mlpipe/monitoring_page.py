"""One monitoring page per pipeline, ``reports/monitoring/index.html``: the monitored days
at a glance, built from their summaries (``reports/drift/<day>.json``).

Panels: the day's drift score against its band (the share of drifted columns for a
version without bands) with the retrain decisions as markers; the estimated and the
realised gate metric with the quality band's bound; rows per day; then each column's
drift statistic against its band (its test's threshold). The page embeds its one PNG
(``monitoring.png``, also logged to the day's MLflow ``monitor`` run), so it opens
offline, and lists the drift and degradation episodes with links to their days' reports.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

from mlpipe.storage import Location, Store, atomic_write, read_json, relative

KIND = "drift"
PAGE_DAYS = 92  # monitored days the page shows, ending with the newest
MARKERS = {"trigger": ("^", "#c0392b"), "would-trigger": ("^", "#8e44ad"), "blocked": ("x", "#e67e22")}


def summaries(store: Store, end: dt.date, days: int = PAGE_DAYS) -> list[dict]:
    """The monitored days' summaries among the ``days`` days ending with ``end``, in order
    (one read each: the days are named, nothing is listed)."""
    found = []
    for i in range(days - 1, -1, -1):
        path = store.report_path(KIND, end - dt.timedelta(days=i))
        if path.exists():
            found.append(read_json(path))
    return found


def episodes(rows: list[dict], flag) -> list[dict]:
    """Runs of consecutive monitored days on which ``flag(row)`` holds: start, end, days."""
    found, current = [], None
    for row in rows:
        if flag(row):
            if current is None:
                current = {"start": row["day"], "end": row["day"], "days": 0}
                found.append(current)
            current["end"], current["days"] = row["day"], current["days"] + 1
        else:
            current = None
    return found


def drifting(row: dict) -> bool:
    return bool(row.get("dataset_drift"))


def degrading(row: dict) -> bool:
    return bool((row.get("quality") or {}).get("degraded"))


def figure(pipeline: str, rows: list[dict]):
    """The page's matplotlib figure (close it after use)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    days = [dt.date.fromisoformat(r["day"]) for r in rows]
    columns = sorted({c for r in rows for c in r.get("columns", {})})
    grid = -(-len(columns) // 4)
    fig = plt.figure(figsize=(14, 7.5 + 1.6 * grid))
    top = fig.add_gridspec(3 + grid, 4, height_ratios=[2.2, 2.2, 1.2] + [1.4] * grid, hspace=0.9, wspace=0.3,
                           left=0.05, right=0.98, top=0.97, bottom=0.04)  # fixed margins: no "tight" bbox (3x the save)
    _drift_panel(fig.add_subplot(top[0, :]), pipeline, days, rows)
    _quality_panel(fig.add_subplot(top[1, :]), days, rows)
    ax = fig.add_subplot(top[2, :])
    ax.bar(days, [r.get("rows", 0) for r in rows], color="#7f8c8d")
    ax.set(title="rows per day", ylabel="rows")
    for i, column in enumerate(columns):
        _column_panel(fig.add_subplot(top[3 + i // 4, i % 4]), column, days, rows)
    return fig


def _drift_panel(ax, pipeline: str, days: list[dt.date], rows: list[dict]) -> None:
    if any(r.get("drift_score") is not None for r in rows):
        ax.plot(days, [r.get("drift_score") for r in rows], marker=".", label="drift score (summed excess)")
        ax.step(days, [r.get("drift_score_band") for r in rows], where="mid", ls="--", color="grey", label="its band")
    else:
        ax.plot(days, [r["drift_share"] for r in rows], marker=".", label="share of drifted columns")
    for action, (marker, color) in MARKERS.items():
        hits = [(d, 0) for d, r in zip(days, rows, strict=True) if r["decision"]["action"] == action]
        if hits:
            ax.scatter(*zip(*hits, strict=True), marker=marker, color=color, s=60, zorder=3, label=f"decision: {action}")
    drift_days = [d for d, r in zip(days, rows, strict=True) if drifting(r)]
    ax.scatter(drift_days, [0] * len(drift_days), marker="|", color="#c0392b", s=200, label="dataset drift")
    ax.set(title=f"{pipeline}: dataset drift", ylabel="score")
    ax.legend(fontsize=7, loc="upper left", ncols=3)


def _quality_panel(ax, days: list[dt.date], rows: list[dict]) -> None:
    realised = [(dt.date.fromisoformat(q["day"]), q["live"]) for r in rows if (q := r.get("quality"))
                and q.get("live") is not None]
    estimated = [(d, e["value"]) for d, r in zip(days, rows, strict=True) if (e := r.get("estimated"))]
    bound = [(d, q["baseline"]["bound"]) for d, r in zip(days, rows, strict=True) if (q := r.get("quality"))
             and q.get("baseline")]
    metric = next((q["metric"] for r in rows if (q := r.get("quality"))), "metric")
    for points, label, style in ((realised, f"realised {metric}", "-"), (estimated, f"estimated {metric}", ":"),
                                 (bound, "quality band's bound", "--")):
        if points:
            ax.plot(*zip(*points, strict=True), ls=style, marker="." if style != "--" else None, label=label)
    ax.set(title=f"live quality ({metric} over the last days)", ylabel=metric)
    ax.legend(fontsize=7, loc="lower left", ncols=3)


def _column_panel(ax, column: str, days: list[dt.date], rows: list[dict]) -> None:
    points = [(d, r["columns"][column]) for d, r in zip(days, rows, strict=True) if column in r.get("columns", {})]
    ax.plot([d for d, _ in points], [c["score"] for _, c in points], lw=1)
    ax.step([d for d, _ in points], [c["threshold"] for _, c in points], where="mid", ls="--", color="grey", lw=0.8)
    out = [(d, c["score"]) for d, c in points if c.get("drifted")]
    if out:
        ax.scatter(*zip(*out, strict=True), color="#c0392b", s=10, zorder=3)
    if points and "p_value" in str(points[0][1].get("method", "")).lower():
        ax.set_yscale("log")
    ax.set_title(column, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.tick_params(axis="x", labelrotation=30)


def build(store: Store, end: dt.date) -> bytes | None:
    """Write the page and its PNG for the monitored days up to ``end``; the PNG's bytes
    (to log to MLflow, wherever the store is), or None when no day is monitored yet."""
    import matplotlib.pyplot as plt

    rows = summaries(store, end)
    if not rows:
        return None
    fig = figure(store.pipeline, rows)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    folder = store.report_dir("monitoring")
    atomic_write(folder / "monitoring.png", buf.getvalue())
    atomic_write(folder / "index.html", _html(store, rows, base64.b64encode(buf.getvalue()).decode(), folder))
    return buf.getvalue()


def _html(store: Store, rows: list[dict], png: str, folder: Location) -> str:
    def listed(found: list[dict]) -> str:
        if not found:
            return "<p>none</p>"
        items = "".join(f'<li><a href="{relative(str(store.report_path(KIND, e["start"], ".html")), folder)}">'
                        f'{e["start"]}</a> .. {e["end"]} ({e["days"]} day(s))</li>' for e in found)
        return f"<ul>{items}</ul>"

    last = rows[-1]
    bands = last.get("calibration")
    calibration = (f"bands learnt on {html.escape(bands['source'])} ({bands['from']} .. {bands['to']}, quantile "
                   f"{bands['quantile']}, learnt {bands['learnt_at']})" if bands else
                   "no calibrated bands: Evidently's fixed thresholds")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(store.pipeline)} monitoring</title>
<style>body{{font-family:sans-serif;margin:1.5em}} img{{max-width:100%}}</style></head><body>
<h1>Monitoring of pipeline {html.escape(store.pipeline)}</h1>
<p>{len(rows)} monitored day(s), {rows[0]["day"]} .. {last["day"]}; the newest scored by v{last["model_version"]},
{calibration}. <a href="../index.html">Every report</a>;
<a href="{relative(str(store.report_path(KIND, last["day"], ".html")), folder)}">the newest day's drift report</a>.</p>
<h2>Dataset drift episodes</h2>{listed(episodes(rows, drifting))}
<h2>Degradation episodes</h2>{listed(episodes(rows, degrading))}
<img alt="monitoring charts" src="data:image/png;base64,{png}">
</body></html>"""
