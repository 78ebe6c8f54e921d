"""The storage layer on a real S3-compatible server (moto's, a process on 127.0.0.1),
in-process: partitions are single objects, listings read no contents, entries are never
overwritten, and reports, Data Docs and the report index live in the bucket."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from mlpipe import ledger, report_index
from mlpipe.records import LedgerEntry
from mlpipe.storage import Store, atomic_write, file_hash, listing, location

pytestmark = pytest.mark.integration
D1, D2, D3 = (dt.date(2024, 1, d) for d in (1, 2, 3))


def _frame(seed: int = 0, n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "c": [f"k{i % 2}" for i in range(n)]})


@pytest.fixture
def s3_store(s3_root):
    return Store(location(s3_root), "toy")


def test_partitions_round_trip_as_single_objects(s3_store, s3_root, tmp_path):
    path = s3_store.write("raw", D1, _frame(0))
    assert str(path) == f"{s3_root}/toy/raw/date=2024-01-01.parquet"
    s3_store.write("raw", D1, _frame(1, n=3))  # a rerun replaces the object
    s3_store.write("raw", D3, _frame(2))
    pd.testing.assert_frame_equal(s3_store.read("raw", D1), _frame(1, n=3))
    assert listing(s3_store.layer_dir("raw")) == ["date=2024-01-01.parquet", "date=2024-01-03.parquet"]  # no temp objects
    assert s3_store.exists("raw", D3) and not s3_store.exists("raw", D2)
    assert s3_store.days("raw", D1, D3) == [D1]
    frame, days = s3_store.read_range("raw", D1, dt.date(2024, 2, 1), columns=["id"], date_column="day")
    assert days == [D1, D3] and len(frame) == 8 and list(frame.columns) == ["id", "day"]
    assert s3_store.count_values("raw", D1, dt.date(2024, 2, 1), "x") == 8
    local = Store(tmp_path, "toy").write("raw", D1, _frame(1, n=3))
    assert file_hash(path) == file_hash(local)  # the same bytes as on a local disk
    assert s3_store.remove("raw", D3) and not s3_store.exists("raw", D3)


def test_a_failed_write_leaves_the_old_object(s3_store):
    s3_store.write("raw", D1, _frame(0))
    with pytest.raises((TypeError, ValueError, ArithmeticError)):
        s3_store.write("raw", D1, pd.DataFrame({"bad": [object()]}))
    pd.testing.assert_frame_equal(s3_store.read("raw", D1), _frame(0))
    assert listing(s3_store.layer_dir("raw")) == ["date=2024-01-01.parquet"]


def test_listing_partitions_reads_no_object(s3_store, monkeypatch):
    for day in (D1, D2, D3):
        s3_store.write("features", day, _frame())
    fs = s3_store.base.fs
    opened = []
    for name in ("open", "cat_file", "_cat_file", "_open"):
        real = getattr(fs, name)
        monkeypatch.setattr(fs, name, lambda *a, _real=real, **k: opened.append(a) or _real(*a, **k))
    assert s3_store.days("features", D1, dt.date(2024, 2, 1)) == [D1, D2, D3]
    assert opened == []


def test_a_short_range_lists_only_its_months_so_its_cost_does_not_grow_with_the_history(s3_store, monkeypatch):
    """A day's look-back asks the store for its months' names (``date=YYYY-MM`` prefixes),
    not for every partition of the layer."""
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(0, 400, 9)]
    for day in days:
        s3_store.write("raw", day, _frame(n=1))
    fs = s3_store.base.fs
    asked = []
    for name in ("_lsdir", "_ls"):
        real = getattr(fs, name)
        monkeypatch.setattr(fs, name, lambda *a, _real=real, **k: asked.append(k.get("prefix", "")) or _real(*a, **k))
    start, end = dt.date(2023, 12, 25), dt.date(2024, 1, 8)
    assert s3_store.days("raw", start, end) == [d for d in days if start <= d < end]
    assert sorted(asked) == ["date=2023-12", "date=2024-01"]
    asked.clear()
    assert s3_store.days("raw", days[0], days[-1] + dt.timedelta(days=1)) == days  # a long range: one listing
    assert len(asked) == 1
    asked.clear()  # monitoring's labelled rows since the last train: from the latest month back, until enough
    assert s3_store.count_values("raw", days[0], days[-1] + dt.timedelta(days=1), "x", enough=4) == 4
    assert asked == ["date=2024-02", "date=2024-01"]  # 1 + 3 of the 45 days' values


def test_an_exclusive_write_never_replaces_an_object(s3_store):
    path = s3_store.base / "ledger" / "000001.json"
    atomic_write(path, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, "second", exclusive=True)
    assert path.read_text() == "first"


def test_the_ledger_and_report_index_live_in_the_bucket(s3_root, lock_database):
    store = Store(location(s3_root), "toy", lock_database)
    entry = LedgerEntry(kind="train", pipeline="toy", model="m", mode="live", decision="keep", reason="r")
    assert [ledger.append(store, entry).seq for _ in range(3)] == [1, 2, 3]
    ledger.write_pending(store, entry, [("champion", "2", "1")])
    assert ledger.pending(store)[1] == [("champion", "2", "1")]
    ledger.clear_pending(store)
    assert ledger.pending(store) is None
    assert [e.seq for e in ledger.entries(store)] == [1, 2, 3]

    report = store.write_report("validation", D1, {"success": True})
    page = report_index.record(store, "day", str(D1), {"validation": str(report)}, validation_status="passed")
    assert str(page) == f"{s3_root}/toy/reports/index.html"
    assert report_index.load(store)["day"][str(D1)]["validation"] == "validation/2024-01-01.json"
    assert 'href="validation/2024-01-01.json"' in page.read_text()


def test_data_docs_pages_are_objects(s3_root, lock_database, spec):
    from mlpipe.validation import validate
    from mlpipe.validation.data_docs import DataDocs

    store = Store(location(s3_root), spec.name, lock_database)
    frame = pd.DataFrame({"event_id": [1, 2], "ts": ["2024-01-01 10:00:00"] * 2, "store": ["s1", "s2"],
                          "channel": ["web", "app"], "amount": [1.0, 2.0], "delay": [1.0, 20.0], "region": ["n", "s"],
                          "store_size": [1, 2]})
    summary = validate(frame, spec, "test rows", lambda p: store.write_report("validation", D1, p),
                       DataDocs.of(store, D1))
    page = summary["data_docs"]
    assert page.startswith(f"{s3_root}/{spec.name}/reports/data_docs/validations/") and page.endswith(".html")
    assert "2024-01-01" in location(page).read_text()
    site = store.report_dir("data_docs")
    assert (site / "index.html").exists() and "2024-01-01" in (site / "index.html").read_text()
    assert json.loads(store.report_path("validation", D1).read_text())["data_docs"] == page
