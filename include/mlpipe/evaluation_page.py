"""A train run's evaluation as one static HTML page: the decision, every model's
metrics, ROC, precision-recall and calibration curves, score histograms, and the gate
metric with its bootstrap intervals. Charts are inline SVG, so the page needs nothing
else to display; ``charts`` gives the figures, which the evaluate run also logs as PNG."""

from __future__ import annotations

import html
import io

from mlpipe.records import CHAMPION_KEY, LedgerEntry


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()[buf.getvalue().index("<svg"):]


def _curve_charts(curves: dict[str, dict]) -> dict:
    import matplotlib.pyplot as plt

    charts = {}
    for key, title, x, y, xlabel, ylabel in (
            ("roc", "ROC", "fpr", "tpr", "false positive rate", "true positive rate"),
            ("precision_recall", "Precision-recall", "recall", "precision", "recall", "precision"),
            ("calibration", "Calibration", "mean_score", "positive_rate", "mean score in bin", "positive rate")):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for name, c in curves.items():
            ax.plot(c[x], c[y], label=name, lw=2.2 if name == CHAMPION_KEY else 1.2,
                    ls="--" if name == CHAMPION_KEY else "-", marker="." if key == "calibration" else None)
        if key != "precision_recall":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=8, loc="upper right" if key == "precision_recall" else "lower right")
        charts[key] = fig
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, c in curves.items():
        ax.stairs(c["histogram"], [i / len(c["histogram"]) for i in range(len(c["histogram"]) + 1)], label=name)
    ax.set(title="Score histogram (holdout)", xlabel="score", ylabel="rows", xlim=(0, 1))
    ax.legend(fontsize=8)
    charts["score_histogram"] = fig
    return charts


def _interval_chart(entry: LedgerEntry):
    import matplotlib.pyplot as plt

    metric, intervals = entry.metric, entry.intervals
    names = [n for n in intervals if "ci" in intervals[n]]
    panels = [("ci", f"{metric} ({entry.confidence:.0%} bootstrap interval)", None)]
    if any("gain_ci" in intervals[n] for n in names):
        panels.append(("gain_ci", f"gain over the champion (margin {entry.margin})", entry.margin))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.45 * len(names) + 1.5), squeeze=False)
    for ax, (key, title, margin) in zip(axes[0], panels, strict=True):
        shown = [n for n in names if key in intervals[n]]
        for row, name in enumerate(shown):
            low, high = intervals[name][key]
            point = intervals[name].get("gain" if key == "gain_ci" else "value", (low + high) / 2)
            color = "tab:green" if name == entry.winner and entry.would_promote else "tab:blue"
            ax.errorbar(point, row, xerr=[[point - low], [high - point]], fmt="o", color=color, capsize=4)
        ax.set_yticks(range(len(shown)), shown)
        if margin is not None:
            ax.axvline(0, color="grey", lw=0.8)
            ax.axvline(margin, color="tab:red", lw=1, ls="--", label="margin")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
    return fig


def charts(entry: LedgerEntry, curves: dict[str, dict]) -> dict:
    """The page's matplotlib figures by name (close them after use)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    return {**(_curve_charts(curves) if curves else {}), "intervals": _interval_chart(entry)}


def render(entry: LedgerEntry, figures: dict) -> str:
    """The page for one evaluation (``entry`` is the ledger entry, ``figures`` from :func:`charts`)."""
    esc, w = html.escape, entry.window.to_dict()
    models = {**{n: c["metrics"] for n, c in entry.candidates.items()},
              **({CHAMPION_KEY: entry.champion_metrics} if entry.champion_metrics else {})}
    columns = sorted({k for m in models.values() for k in m})
    rows = "".join(
        f"<tr><th>{esc(n)}</th>" + "".join(f"<td>{m[c]:.4f}</td>" if c in m else "<td></td>" for c in columns)
        + "</tr>" for n, m in models.items())
    svgs = [_svg(fig) for fig in figures.values()]
    verdict = {"promote": "PROMOTED", "keep": "kept the champion"}.get(entry.decision, entry.decision)
    run = esc(str(entry.run_id))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation {run}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}
.charts{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>
<h1>Evaluation of train run {run}</h1>
<p>Pipeline <b>{esc(entry.pipeline)}</b>, model <b>{esc(entry.model)}</b>, {esc(entry.mode)} run;
trained on [{esc(w['start'])}, {esc(w['holdout_start'])}), evaluated on [{esc(w['holdout_start'])}, {esc(w['end'])});
spec {esc(entry.spec_hash[:12])}; ledger entry {entry.seq}.</p>
<p><b>{esc(verdict)}</b>: {esc(entry.reason)}</p>
<p>champion before: v{esc(str(entry.champion_before))}, after: v{esc(str(entry.champion_after))};
challenger: v{esc(str(entry.challenger_after))}</p>
<table><tr><th>model</th>{''.join(f'<th>{esc(c)}</th>' for c in columns)}</tr>{rows}</table>
{_per_class_tables(entry)}
<div class="charts">{''.join(svgs)}</div></body></html>"""


def _per_class_tables(entry: LedgerEntry) -> str:
    """Per candidate of a multi-class model: precision, recall, F1 and rows per class,
    and the confusion matrix (rows: true class, columns: predicted)."""
    esc, out = html.escape, []
    for name, found in entry.candidates.items():
        figures = found.get("per_class")
        if not figures:
            continue
        classes = figures["classes"]
        per = "".join(f"<tr><th>{esc(c)}</th><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td><td>{n}</td></tr>"
                      for c, p, r, f, n in zip(classes, figures["precision"], figures["recall"], figures["f1"],
                                               figures["support"], strict=True))
        confusion = "".join(f"<tr><th>{esc(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                            for c, row in zip(classes, figures["confusion"], strict=True))
        head = "".join(f"<th>{esc(c)}</th>" for c in classes)
        out.append(f'<h3>{esc(name)}: per class</h3><div class="charts"><table><tr><th>class</th><th>precision</th>'
                   f'<th>recall</th><th>F1</th><th>rows</th></tr>{per}</table><table><tr><th>true \\ predicted'
                   f'</th>{head}</tr>{confusion}</table></div>')
    return "".join(out)
