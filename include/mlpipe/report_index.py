"""``reports/index.html``: one static page (no network) linking what a person looks for:
per day the validation report and its Data Docs page, the predictions summary and the
drift report; per train run the evaluation report and the ledger entry.

The rows live in shards of bounded size, one object each, so that recording a row costs
the same after years of days as after a week: ``reports/index/days-YYYY-MM.json`` (one
month's days) and ``reports/index/train-NNNN.json`` (:data:`SHARD_RUNS` train runs), each
with its page beside it (``.html``). Each task that writes a report records it
(:func:`record`) under the pipeline's ``report-index`` lock (:mod:`mlpipe.locks`: every
host): it rewrites its row's shard and that shard's page, then the front page, which
shows the newest month's days and the newest train runs and links every shard's page
(found by one listing of names). Every write is whole (``storage.atomic_write``), so
parallel tasks never lose a row and a page is never half written. Links are relative: the
``reports/`` folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json

from mlpipe.storage import Location, Store, atomic_write, listing, read_json, relative

SECTIONS = ("day", "train")
DAY_COLUMNS = ("validation", "data_docs", "predictions", "drift", "served")
TRAIN_COLUMNS = ("evaluation", "ledger")
SHARD_RUNS = 100  # train runs per shard; a day shard is a calendar month
PREFIX = {"day": "days-", "train": "train-"}  # a shard's name: prefix, then its month or hundred


def _shard(section: str, key: str) -> str:
    return PREFIX[section] + (key[:7] if section == "day" else f"{int(key) // SHARD_RUNS:04d}")


def record(store: Store, section: str, key: str, links: dict[str, str | None], **facts: str) -> Location:
    """Set ``links`` (column -> file path) and ``facts`` (column -> short text) of row
    ``key`` in ``section`` ("day": an ISO date, or "train": a ledger sequence number),
    keeping its other columns; returns the front page."""
    if section not in SECTIONS:
        raise ValueError(f"unknown index section {section!r}; expected one of {SECTIONS}")
    folder = store.report_dir()
    shards = folder / "index"
    name = _shard(section, str(key))
    with store.lock("report-index", timeout=600):
        rows = _rows(shards / f"{name}.json")
        row = rows.setdefault(str(key), {})
        row.update({k: relative(v, folder) for k, v in links.items() if v})
        row.update({k: str(v) for k, v in facts.items() if v is not None})
        atomic_write(shards / f"{name}.json", json.dumps(rows, indent=1, sort_keys=True))
        atomic_write(shards / f"{name}.html", _page(store.pipeline, section, name, rows))
        names = sorted({n[:-5] for n in listing(shards) if n.endswith(".json")} | {name})
        newest = {s: max((n for n in names if n.startswith(PREFIX[s])), default=None) for s in SECTIONS}
        shown = {s: (rows if newest[s] == name else _rows(shards / f"{newest[s]}.json") if newest[s] else {})
                 for s in SECTIONS}
        page = folder / "index.html"
        monitored = (folder / "monitoring" / "index.html").exists()
        atomic_write(page, render(store.pipeline, shown, names, monitored))
    return page


def load(store: Store) -> dict[str, dict[str, dict]]:
    """Every row of the index, {section: {key: row}}: every shard read (for tools and tests)."""
    shards = store.report_dir() / "index"
    index: dict[str, dict] = {s: {} for s in SECTIONS}
    for name in listing(shards):
        if name.endswith(".json"):
            index["day" if name.startswith(PREFIX["day"]) else "train"].update(read_json(shards / name))
    return index


def _rows(path: Location) -> dict:
    try:
        return read_json(path)
    except FileNotFoundError:
        return {}


def _cell(row: dict, column: str, up: str) -> str:
    href = row.get(column)
    if not href:
        return "<td></td>"
    label = row.get(f"{column}_status") or "open"
    return f'<td><a href="{html.escape(up + href)}">{html.escape(label)}</a></td>'


def _table(section: str, rows: dict, up: str = "") -> str:
    """Rows newest first; ``up``: the way from the page to ``reports/``."""
    esc = html.escape
    if section == "day":
        head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in DAY_COLUMNS)
        body = "".join(f"<tr><th>{esc(day)}</th>" + "".join(_cell(row, c, up) for c in DAY_COLUMNS) + "</tr>"
                       for day, row in sorted(rows.items(), reverse=True))
        return f"<table><tr><th>day</th>{head}</tr>{body}</table>"
    body = "".join(f"<tr><th>{esc(seq)}</th><td>{esc(row.get('run_id', ''))}</td><td>{esc(row.get('decision', ''))}"
                   "</td>" + "".join(_cell(row, c, up) for c in TRAIN_COLUMNS) + "</tr>"
                   for seq, row in sorted(rows.items(), reverse=True))
    return ("<table><tr><th>ledger entry</th><th>Airflow run</th><th>decision</th><th>evaluation</th><th>ledger</th>"
            f"</tr>{body}</table>")


def _html(title: str, body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
{body}
</body></html>"""


def _page(pipeline: str, section: str, name: str, rows: dict) -> str:
    """A shard's own page, in ``reports/index/``."""
    what = f"days of {name[5:]}" if section == "day" else f"train runs {name[6:]}xx"  # after the prefix
    return _html(f"{pipeline} reports: {what}", f'<p><a href="../index.html">all reports</a></p>\n'
                 f"<h1>Reports of pipeline {html.escape(pipeline)}: {what}</h1>\n{_table(section, rows, '../')}")


def render(pipeline: str, shown: dict[str, dict], names: list[str], monitored: bool = False) -> str:
    """The front page: the newest train runs and days (``shown``), a link to every
    shard's page (``names``), newest first, and (``monitored``) to the monitoring page."""
    def links(prefix: str, label) -> str:
        return " ".join(f'<a href="index/{n}.html">{html.escape(label(n))}</a>'
                        for n in sorted(names, reverse=True) if n.startswith(prefix))

    return _html(f"{pipeline} reports", f"""<h1>Reports of pipeline {html.escape(pipeline)}</h1>
<h2>Train runs</h2>
{_table("train", shown["train"])}
<p>Every train run, by hundreds: {links("train-", lambda n: n[6:] + "xx")}</p>
{'<p><a href="monitoring/index.html">Monitoring</a>: drift, live and estimated quality, and the retrain '
 'decisions over the monitored days.</p>' if monitored else ''}
<h2>Days</h2>
{_table("day", shown["day"])}
<p>Every day, by month: {links("days-", lambda n: n[5:])}</p>""")
