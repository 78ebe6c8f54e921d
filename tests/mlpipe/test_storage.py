from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from mlpipe.errors import PartitionMissing
from mlpipe.storage import LAYERS, Store, atomic_write, atomic_write_dir, file_hash

D1, D2, D3, D4 = (dt.date(2024, 1, d) for d in (1, 2, 3, 4))


def _frame(seed: int = 0, n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "c": [f"k{i % 2}" for i in range(n)]})


def test_paths_follow_the_layout(store, tmp_path):
    assert store.path("raw", D1) == tmp_path / "data" / "toy" / "raw" / "date=2024-01-01.parquet"
    assert store.report_path("validation", D2) == tmp_path / "data" / "toy" / "reports" / "validation" / "2024-01-02.json"
    assert store.report_path("decisions", "run-1").name == "run-1.json"
    assert store.report_path("drift", D1, ".html") == store.report_dir() / "drift" / "2024-01-01.html"
    assert store.report_dir() == tmp_path / "data" / "toy" / "reports"  # index.html, one folder per kind
    assert set(LAYERS) == {"raw", "validated", "features", "predictions", "quarantine"}
    with pytest.raises(ValueError, match="unknown layer"):
        store.path("gold", D1)


def test_write_is_atomic_and_leaves_no_temp_files(store):
    path = store.write("raw", D1, _frame())
    assert path == store.path("raw", D1) and path.exists()
    assert store.exists("raw", D1) and not store.exists("raw", D2)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    pd.testing.assert_frame_equal(store.read("raw", D1), _frame())


def test_failed_write_keeps_old_partition_and_cleans_up(store):
    store.write("raw", D1, _frame(0))
    unwritable = pd.DataFrame({"bad": [object()]})  # pyarrow cannot serialise a bare object
    with pytest.raises((TypeError, ValueError, ArithmeticError)):  # pyarrow's ArrowInvalid/TypeError
        store.write("raw", D1, unwritable)
    folder = store.layer_dir("raw")
    assert [p.name for p in folder.iterdir()] == ["date=2024-01-01.parquet"]
    pd.testing.assert_frame_equal(store.read("raw", D1), _frame(0))


def test_rewrite_replaces_instead_of_duplicating(store):
    store.write("raw", D1, _frame(0, n=5))
    store.write("raw", D1, _frame(1, n=3))
    back = store.read("raw", D1)
    pd.testing.assert_frame_equal(back, _frame(1, n=3))
    assert len(list(store.layer_dir("raw").iterdir())) == 1


def test_identical_frames_give_identical_bytes(store, tmp_path):
    first = store.write("features", D1, _frame(3))
    other = Store(tmp_path / "elsewhere", "toy").write("features", D1, _frame(3))
    assert first.read_bytes() == other.read_bytes()
    assert file_hash(first) == file_hash(other)
    different = Store(tmp_path / "third", "toy").write("features", D1, _frame(4))
    assert file_hash(different) != file_hash(first)


def test_file_hash_is_sha256(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * (3 << 20))  # more than one read chunk
    assert file_hash(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_read_missing_partition_raises(store):
    with pytest.raises(PartitionMissing, match="raw partition for 2024-01-03"):
        store.read("raw", D3)


def test_days_lists_existing_partitions_in_half_open_range(store):
    for day in (D4, D1, D3):  # written out of order, D2 missing
        store.write("validated", day, _frame())
    (store.layer_dir("validated") / ".date=2024-01-02.parquet.abc.tmp").write_bytes(b"partial")
    assert store.days("validated", D1, D4) == [D1, D3]  # end is exclusive, temp files ignored
    assert store.days("validated", D1, D4 + dt.timedelta(days=1)) == [D1, D3, D4]
    assert store.days("validated", D2, D3) == []
    assert store.days("features", D1, D4) == []  # layer never written


def test_read_range_concatenates_and_tags_dates(store):
    store.write("validated", D1, _frame(0, n=2))
    store.write("validated", D3, _frame(1, n=3))
    frame, days = store.read_range("validated", D1, D4, columns=["id", "x"], date_column="partition_date")
    assert days == [D1, D3]
    assert list(frame.columns) == ["id", "x", "partition_date"]
    assert frame["partition_date"].tolist() == [D1, D1, D3, D3, D3]
    assert frame["id"].tolist() == [0, 1, 0, 1, 2]
    np.testing.assert_array_equal(frame["x"].to_numpy(), np.r_[_frame(0, 2)["x"], _frame(1, 3)["x"]])

    plain, _ = store.read_range("validated", D1, D4)
    assert "partition_date" not in plain.columns and len(plain) == 5


def test_read_range_empty(store):
    frame, days = store.read_range("validated", D1, D4, columns=["id"], date_column="partition_date")
    assert days == [] and frame.empty
    assert list(frame.columns) == ["id", "partition_date"]


def test_write_report_atomic_json(store):
    path = store.write_report("validation", D1, {"ok": True, "day": D1})
    assert path == store.report_path("validation", D1)
    assert json.loads(path.read_text()) == {"ok": True, "day": "2024-01-01"}
    store.write_report("validation", D1, {"ok": False})
    assert json.loads(path.read_text()) == {"ok": False}
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_count_values_reads_footers_and_matches_the_data(store, monkeypatch):
    days = [dt.date(2013, 1, d) for d in (1, 2, 5)]
    for i, day in enumerate(days):
        store.write("features", day, pd.DataFrame({"late": [1.0, None, 0.0][: i + 1] + [None] * i, "x": range(2 * i + 1)}))
    expected = sum(int(store.read("features", d)["late"].notna().sum()) for d in days[:2])

    monkeypatch.setattr(Store, "read", lambda *a, **k: pytest.fail("read data, not footers"))
    assert store.count_values("features", dt.date(2013, 1, 1), dt.date(2013, 1, 3), "late") == expected
    assert store.count_values("features", dt.date(2013, 1, 1), dt.date(2013, 1, 9), "nope") == 0


def test_count_values_with_enough_reads_only_the_latest_footers(store, monkeypatch):
    """A bound on what a monitoring day reads, whatever the span since the last train."""
    import pyarrow.parquet as pq

    days = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(40)]
    for day in days:
        store.write("features", day, pd.DataFrame({"late": [1.0, 0.0, None]}))
    opened = []
    real = pq.read_metadata
    monkeypatch.setattr(pq, "read_metadata", lambda fh: opened.append(fh) or real(fh))
    assert store.count_values("features", days[0], days[-1] + dt.timedelta(days=1), "late", enough=5) == 6
    assert len(opened) == 3
    assert store.count_values("features", days[0], days[-1] + dt.timedelta(days=1), "late") == 80


def test_atomic_write_replaces_whole_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write(path, "one") == path and path.read_text() == "one"
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    atomic_write(path, lambda tmp: tmp.write_text("three"))  # a writer given the temporary path
    assert path.read_text() == "three"

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "three" and [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_exclusive_atomic_write_never_replaces(tmp_path):
    path = atomic_write(tmp_path / "entry.json", "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, "second", exclusive=True)
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_atomic_write_dir_keeps_the_first_and_skips_nothing_built(tmp_path):
    def build(text):
        def into(scratch):
            (scratch / "d").mkdir()
            (scratch / "d" / "f").write_text(text)
            return scratch / "d"
        return into

    target = tmp_path / "cache" / "v1"
    assert atomic_write_dir(target, build("first")) and (target / "f").read_text() == "first"
    assert atomic_write_dir(target, build("second")) and (target / "f").read_text() == "first"  # a concurrent loser
    assert not atomic_write_dir(tmp_path / "cache" / "v2", lambda scratch: None)
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1"]


def test_an_atomic_write_gets_the_mode_a_plain_write_gets(tmp_path):
    """Reports are read by other processes (a web server, another user's api-server)."""
    from mlpipe.storage import atomic_write

    plain = tmp_path / "plain.html"
    plain.write_text("x")
    assert (atomic_write(tmp_path / "page.html", "x").stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
