"""What the MLflow registry says about a model: each registered version's description
(markdown) and tags from the evaluation that judged it, and the registered model's
description naming the champion and why. Pure: ledger entries in, text out
(``registry.describe_version`` / ``describe_model`` write them)."""

from __future__ import annotations

from mlpipe.records import LedgerEntry


def _interval(entry: LedgerEntry, name: str, key: str = "ci") -> str:
    low, high = entry.intervals.get(name, {}).get(key) or (None, None)
    return f"[{low:.4f}, {high:.4f}]" if low is not None else ""


def _role(entry: LedgerEntry, version: str) -> str:
    if version == entry.champion_after:
        return "champion"
    return "challenger" if version == entry.challenger_after else "candidate"


def version_tags(entry: LedgerEntry, name: str, report: str, evaluation_run: str | None) -> dict[str, str]:
    """Tags of candidate ``name``'s version: what it is, what it was trained and judged on."""
    found, w = entry.candidates[name], entry.window
    value = found["metrics"].get(entry.metric)
    return {"mlpipe.variant": name, "mlpipe.backend": str(found.get("backend")),
            "mlpipe.window": f"{w.start}/{w.holdout_start}/{w.end}",
            f"mlpipe.holdout.{entry.metric}": "" if value is None else f"{value:.6f}",
            f"mlpipe.holdout.{entry.metric}_ci": _interval(entry, name),
            "mlpipe.data_hash": entry.data_hash or "", "mlpipe.airflow_run": f"{entry.dag_id}/{entry.run_id}",
            "mlpipe.decision": entry.decision, "mlpipe.role": _role(entry, str(found.get("version"))),
            "mlpipe.ledger_seq": str(entry.seq), "mlpipe.evaluation_report": report,
            **({"mlpipe.evaluation_run": evaluation_run} if evaluation_run else {})}


def version_description(entry: LedgerEntry, name: str, report: str, evaluation_run: str | None) -> str:
    """Markdown for candidate ``name``'s version, shown on its page in the MLflow UI."""
    found, w, metric = entry.candidates[name], entry.window, entry.metric
    version, value = str(found.get("version")), found["metrics"].get(metric)
    role = {"champion": "**This version is the champion.**", "challenger": "This version is the challenger "
            "(scored in shadow beside the champion)."}.get(_role(entry, version), "This version was not promoted.")
    gain = _interval(entry, name, "gain_ci")
    others = " · ".join(f"{k} {v:.4f}" for k, v in sorted(found["metrics"].items()) if k != metric)
    rows = [("Backend", f"`{found.get('backend')}`"),
            ("Trained on", f"{w.start} to {w.holdout_start} (exclusive)"),
            ("Holdout", f"{w.holdout_start} to {w.end} (exclusive)"),
            (f"Holdout {metric}", f"{value:.4f} {_interval(entry, name)} ({entry.confidence:.0%} bootstrap)"
             if value is not None else "not scored"),
            *([(f"Gain over champion v{entry.champion_before}", f"{entry.intervals[name].get('gain', 0):+.4f} {gain}"
                f" (margin {entry.margin})")] if gain else []),
            ("Other metrics", others or "none"),
            *_per_class_rows(found.get("per_class")),
            ("Data", f"{len(entry.partitions)} feature partitions, sha256 `{(entry.data_hash or '?')[:16]}`"),
            ("Airflow", f"DAG `{entry.dag_id}`, run `{entry.run_id}`"),
            ("Evaluation report", f"`{report}`" + (f", and `report.html` of MLflow run `{evaluation_run}`"
                                                   if evaluation_run else ""))]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"### {entry.model} v{version}: {name}\n\n{role}\n\nDecision of ledger entry {entry.seq} "
            f"({entry.mode}): **{entry.decision}**. {entry.reason}\n\n| | |\n|---|---|\n{table}\n")


def _per_class_rows(figures: dict | None) -> list[tuple[str, str]]:
    """A multi-class version's classes and its holdout precision and recall per class."""
    if not figures:
        return []
    per = " · ".join(f"`{c}` {p:.3f} / {r:.3f} ({n} rows)" for c, p, r, n in
                     zip(figures["classes"], figures["precision"], figures["recall"], figures["support"], strict=True))
    return [("Classes", ", ".join(f"`{c}`" for c in figures["classes"])), ("Holdout precision / recall per class", per)]


def model_description(entries: list[LedgerEntry], champion: str | None) -> str:
    """Markdown for the registered model: its champion, the entry that put it there and why,
    the challenger, and the latest decision."""
    if champion is None:
        return "No champion yet: no train run has promoted a version."
    made = next((e for e in reversed(entries) if e.moved and e.champion_after == champion), None)
    lines = [f"**Champion: v{champion}**"]
    if made is not None and made.kind == "train":
        winner = made.candidates.get(made.winner or "", {})
        value = winner.get("metrics", {}).get(made.metric)
        lines[0] += (f" ({made.winner}, `{winner.get('backend')}`), promoted by train run `{made.run_id}` "
                     f"(ledger entry {made.seq}, {made.time}): {made.reason}")
        if value is not None:
            lines.append(f"Holdout {made.metric} {value:.4f} {_interval(made, made.winner)}, trained on "
                         f"{made.window.start} to {made.window.holdout_start}.")
    elif made is not None:
        how = "its canary" if made.kind == "canary" else "rollback"
        lines[0] += f", made champion by {how} (ledger entry {made.seq}, {made.time}): {made.reason}"
    latest = entries[-1] if entries else None
    if latest is not None and latest is not made:
        lines.append(f"Latest decision: ledger entry {latest.seq} ({latest.kind}, run `{latest.run_id}`): "
                     f"{latest.decision}. {latest.reason}")
    if latest is not None and latest.challenger_after:
        lines.append(f"Challenger: v{latest.challenger_after}.")
    lines.append("Every decision: `python -m mlpipe.ledger`.")
    return "\n\n".join(lines)
