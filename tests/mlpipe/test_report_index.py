"""reports/index.html: rows recorded by parallel tasks, relative links, nothing lost, and a
record's cost bounded whatever the history (rows in month and hundred-run shards)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
from pathlib import Path

import pytest

from mlpipe import report_index
from mlpipe.storage import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "data", "toy")


def _report(store: Store, kind: str, name: str) -> Path:
    path = store.report_dir() / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_rows_keep_their_columns_and_links_are_relative(store):
    validation = _report(store, "validation", "2013-01-02.json")
    drift = _report(store, "drift", "2013-01-02.html")
    report_index.record(store, "day", "2013-01-02", {"validation": str(validation)}, validation_status="passed")
    page = report_index.record(store, "day", "2013-01-02", {"drift": str(drift)}, drift_status="no drift")
    report_index.record(store, "train", "000001", {"ledger": str(store.root)}, run_id="manual__1", decision="promote")

    text = page.read_text()
    assert '<a href="validation/2013-01-02.json">passed</a>' in text and '<a href="drift/2013-01-02.html">no drift</a>' in text
    assert "manual__1" in text and "promote" in text and "http" not in text
    for href in re.findall(r'href="([^"]+)"', text):
        assert (page.parent / href).exists(), href


def test_an_unknown_section_is_refused(store):
    with pytest.raises(ValueError, match="unknown index section"):
        report_index.record(store, "week", "1", {})


def _record_many(root: str, worker: int) -> None:
    store = Store(Path(root), "toy")
    for i in range(15):
        report_index.record(store, "day", f"2013-{worker + 1:02d}-{i + 1:02d}", {}, validation_status="passed")


def test_parallel_tasks_lose_no_row(store):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_record_many, [(str(store.root), w) for w in range(4)])
    assert len(report_index.load(store)["day"]) == 60
    front = store.report_dir() / "index.html"
    assert len(re.findall(r"<tr><th>2013-", front.read_text())) == 15  # the newest month's; a page per month
    months = [front.parent / href for href in re.findall(r'href="(index/days-[^"]+)"', front.read_text())]
    assert [m.name for m in months] == [f"days-2013-{m:02d}.html" for m in (4, 3, 2, 1)]
    assert sum(len(re.findall(r"<tr><th>2013-", m.read_text())) for m in months) == 60


def test_a_record_reads_and_writes_only_its_shard_and_the_front_page(store, monkeypatch):
    """Day 400 costs what day 40 does: no file that grows with the history is read or written."""
    for i in range(400):
        report_index.record(store, "day", str(dt.date(2012, 1, 1) + dt.timedelta(days=i)), {}, validation_status="passed")
    touched = []
    for name in ("read_json", "atomic_write"):
        real = getattr(report_index, name)
        monkeypatch.setattr(report_index, name, lambda path, *a, _real=real, **k: touched.append(Path(path).name)
                            or _real(path, *a, **k))
    drift = _report(store, "drift", "2012-03-04.html")
    page = report_index.record(store, "day", "2012-03-04", {"drift": str(drift)}, drift_status="no drift")
    assert sorted(touched) == ["days-2012-03.html", "days-2012-03.json", "days-2012-03.json", "days-2013-02.json",
                               "index.html"]
    assert "2013-02-03" in page.read_text() and "2012-03-04" not in page.read_text()  # the newest month shown
    assert '<a href="../drift/2012-03-04.html">no drift</a>' in (page.parent / "index" / "days-2012-03.html").read_text()
