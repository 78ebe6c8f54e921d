"""``reports/index.html``: one static page (no network) linking what a person looks for:
per day the validation report and its Data Docs page, the predictions summary and the
drift report; per train run the evaluation report and the ledger entry.

Each task that writes a report records it (:func:`record`) in ``reports/index.json``
under the pipeline's ``report-index`` lock (:mod:`mlpipe.locks`: every host) and rewrites the page, so parallel tasks never lose an entry and the
page is always whole (one write: ``storage.atomic_write``). Links are relative to
``reports/``: the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json

from mlpipe.storage import Location, Store, atomic_write, read_json, relative

SECTIONS = ("day", "train")
DAY_COLUMNS = ("validation", "data_docs", "predictions", "drift")
TRAIN_COLUMNS = ("evaluation", "ledger")


def record(store: Store, section: str, key: str, links: dict[str, str | None], **facts: str) -> Location:
    """Set ``links`` (column -> file path) and ``facts`` (column -> short text) of row
    ``key`` in ``section`` ("day" or "train"), keeping its other columns; returns the page."""
    if section not in SECTIONS:
        raise ValueError(f"unknown index section {section!r}; expected one of {SECTIONS}")
    folder = store.report_dir()
    with store.lock("report-index", timeout=600):
        path = folder / "index.json"
        index = read_json(path) if path.exists() else {s: {} for s in SECTIONS}
        row = index[section].setdefault(str(key), {})
        row.update({k: relative(v, folder) for k, v in links.items() if v})
        row.update({k: str(v) for k, v in facts.items() if v is not None})
        atomic_write(path, json.dumps(index, indent=1, sort_keys=True))
        page = folder / "index.html"
        atomic_write(page, render(store.pipeline, index))
    return page


def _cell(row: dict, column: str) -> str:
    href = row.get(column)
    if not href:
        return "<td></td>"
    label = row.get(f"{column}_status") or "open"
    return f'<td><a href="{html.escape(href)}">{html.escape(label)}</a></td>'


def render(pipeline: str, index: dict) -> str:
    """The page: days newest first, then train runs newest first."""
    esc = html.escape
    days = "".join(f"<tr><th>{esc(day)}</th>" + "".join(_cell(row, c) for c in DAY_COLUMNS) + "</tr>"
                   for day, row in sorted(index["day"].items(), reverse=True))
    runs = "".join(f"<tr><th>{esc(seq)}</th><td>{esc(row.get('run_id', ''))}</td><td>{esc(row.get('decision', ''))}"
                   "</td>" + "".join(_cell(row, c) for c in TRAIN_COLUMNS) + "</tr>"
                   for seq, row in sorted(index["train"].items(), reverse=True))
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in DAY_COLUMNS)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(pipeline)} reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Reports of pipeline {esc(pipeline)}</h1>
<h2>Train runs</h2>
<table><tr><th>ledger entry</th><th>Airflow run</th><th>decision</th><th>evaluation</th><th>ledger</th></tr>{runs}</table>
<h2>Days</h2>
<table><tr><th>day</th>{head}</tr>{days}</table>
</body></html>"""
