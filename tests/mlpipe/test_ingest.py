"""The ingest stage on the toy pipeline: a failed re-ingest never replaces good data, and
a backfill that starts mid-way ingests the history it needs by itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from mlpipe import ingest, report_index
from mlpipe.context import Context
from mlpipe.errors import BadRange, SourceError, ValidationFailed
from mlpipe.settings import get_settings
from mlpipe.spec import load_spec
from mlpipe.storage import Store, file_hash

pytestmark = pytest.mark.integration


def context(spec, root) -> Context:
    return Context(dataclasses.replace(get_settings(), data_root=root), spec, Store(root, spec.name))


def ingest_day(ctx, day):
    ingest.extract_day(ctx, day)
    ingest.validate_day(ctx, day)
    return ingest.build_day_features(ctx, day)


def reports_index(store) -> dict[str, dict[str, tuple[str, Path]]]:
    """reports/index.html's day rows: {day: {column: (link text, resolved target)}}."""
    import re

    page = store.report_dir() / "index.html"
    rows = {}
    for day, cells in re.findall(r"<tr><th>(\d{4}-\d\d-\d\d)</th>(.*?)</tr>", page.read_text()):
        links = re.findall(r"<td>(?:<a href=\"([^\"]+)\">([^<]+)</a>)?</td>", cells)
        rows[day] = {column: (text, (page.parent / href).resolve())
                     for column, (href, text) in zip(("validation", "data_docs", "predictions", "drift", "served"), links, strict=True)
                     if href}
    return rows


def test_a_failed_reingest_keeps_the_last_good_partitions_and_says_so(spec, toy_dir, days, tmp_path):
    ctx, day = context(spec, tmp_path / "data"), days[2]
    for d in days[:3]:
        ingest_day(ctx, d)
    good = {layer: file_hash(ctx.store.path(layer, day)) for layer in ("raw", "validated", "features")}
    events = pd.read_csv(toy_dir / "events.csv")
    on_day = pd.to_datetime(events["ts"]).dt.date == day
    events.loc[on_day, "channel"] = "fax"  # not one of the spec's categories
    events.to_csv(toy_dir / "events.csv", index=False)

    ingest.extract_day(ctx, day)
    with pytest.raises(ValidationFailed, match="(?s)channel.*quarantine.*keeps its last validated partitions") as info:
        ingest.validate_day(ctx, day)

    store = ctx.store
    assert {layer: file_hash(store.path(layer, day)) for layer in good} == good  # nothing good was replaced
    assert store.read("raw", day).equals(store.read("validated", day))
    assert set(store.read("quarantine", day)["channel"]) == {"fax"}  # the failed rows, kept for inspection
    report = json.loads(store.report_path("validation", day).read_text())
    assert not report["success"] and report["failures"][0]["column"] == "channel"
    assert report["quarantine"] == str(store.path("quarantine", day)) and report["kept"] == good
    assert "events.csv" in str(info.value)  # the message names the source file, not only the partition
    page = store.report_dir("data_docs") / "validations" / "toy" / "raw" / str(day)
    assert info.value.data_docs.startswith(str(page)) and f"data docs: {info.value.data_docs}" in str(info.value)
    assert report["data_docs"] == info.value.data_docs and Path(report["data_docs"]).is_file()
    index = reports_index(store)  # the report index links the failed day's page and report
    assert index[str(day)]["validation"] == ("failed", Path(store.report_path("validation", day)))
    assert index[str(day)]["data_docs"] == ("Data Docs", Path(info.value.data_docs))
    assert index[str(days[0])]["validation"][0] == "passed"
    features = store.read("features", day)
    assert features["event_id"].tolist() == sorted(store.read("validated", day)["event_id"])


def test_a_day_that_never_passed_keeps_no_raw_partition(spec, toy_dir, days, tmp_path):
    ctx = context(spec, tmp_path / "data")
    events = pd.read_csv(toy_dir / "events.csv")
    events.loc[pd.to_datetime(events["ts"]).dt.date == days[0], "channel"] = "fax"
    events.to_csv(toy_dir / "events.csv", index=False)
    ingest.extract_day(ctx, days[0])
    with pytest.raises(ValidationFailed, match="the day has no validated data"):
        ingest.validate_day(ctx, days[0])
    assert not ctx.store.exists("raw", days[0]) and ctx.store.exists("quarantine", days[0])
    report = json.loads(ctx.store.report_path("validation", days[0]).read_text())
    assert report["kept"] == {}


@pytest.fixture
def long_history(toy_dir, events, spec_dict, write_spec):
    """The toy events repeated over 54 days, with 7- and 14-day history features."""
    copies = []
    for k in range(9):
        shifted = events.assign(event_id=events["event_id"] + k * len(events),
                                ts=(pd.to_datetime(events["ts"]) + pd.Timedelta(days=6 * k)).dt.strftime(
                                    "%Y-%m-%d %H:%M:%S"))
        copies.append(shifted)
    pd.concat(copies, ignore_index=True).to_csv(toy_dir / "events.csv", index=False)
    spec_dict["features"]["history"] = [
        {"name": "late_rate_store_7d", "group_by": ["store"], "window_days": 7},
        {"name": "count_channel_14d", "group_by": ["channel"], "window_days": 14, "stat": "count"}]
    spec_dict["schedule"] = {"start": "2024-01-01", "end": "2024-02-23"}
    spec_dict["validation"]["max_rows"] = 100
    return load_spec(write_spec(toy_dir, spec_dict, "long.yaml"))


def test_a_backfill_starting_mid_way_needs_no_manual_prefill(long_history, days, tmp_path):
    first = days[0] + dt.timedelta(days=30)
    window = [first + dt.timedelta(days=i) for i in range(5)]
    mid_way = context(long_history, tmp_path / "mid_way")
    outs = {day: ingest_day(mid_way, day) for day in window}
    out = outs[first]
    assert outs[window[1]]["warmed_up"] == []
    assert out["warmed_up"] == [str(first - dt.timedelta(days=i)) for i in range(14, 0, -1)]
    assert out["history_gaps"] == []
    assert not mid_way.store.exists("features", first - dt.timedelta(days=1))  # warm-up days: no features

    from_start = context(long_history, tmp_path / "from_start")
    for i in range(35):
        ingest_day(from_start, days[0] + dt.timedelta(days=i))
    for day in window:  # point in time: the same features as an ingest that started at the beginning
        pd.testing.assert_frame_equal(mid_way.store.read("features", day), from_start.store.read("features", day))


def ingest_range(ctx, start, end, chunk_days):
    """What the ingest_range DAG runs: every chunk's validation, then every chunk's features, then the check."""
    checked = [ingest.validate_range(ctx, **chunk) for chunk in ingest.plan_range(ctx, start, end, chunk_days)]
    built = [ingest.features_range(ctx, c) for c in checked]
    return checked, built, ingest.check_range(ctx, checked)


def test_a_range_ingest_writes_what_daily_runs_write(long_history, days, tmp_path):
    """In-process: chunks of 3 days from mid-way (the first chunk ingests the history it needs
    first) give the same validated and feature partitions as one daily run per day."""
    first = days[0] + dt.timedelta(days=30)
    window = [first + dt.timedelta(days=i) for i in range(8)]
    daily = context(long_history, tmp_path / "daily")
    for day in window:
        ingest_day(daily, day)
    ranged = context(long_history, tmp_path / "ranged")
    checked, built, total = ingest_range(ranged, window[0], window[-1], 3)
    assert [(c["start"], c["end"]) for c in checked] == [(str(window[0]), str(window[2])), (str(window[3]), str(window[5])),
                                                        (str(window[6]), str(window[7]))]
    assert checked[0]["warmed_up"] == [str(first - dt.timedelta(days=i)) for i in range(14, 0, -1)]
    assert [c["warmed_up"] for c in checked[1:]] == [[], []]
    assert total == {"days": 8, "chunks": 3} and sum(b["days"] for b in built) == 8
    for day in window:
        for layer in ("validated", "features"):
            pd.testing.assert_frame_equal(ranged.store.read(layer, day), daily.store.read(layer, day))
    assert not ranged.store.exists("features", first - dt.timedelta(days=1))  # warm-up days: no features
    assert set(reports_index(ranged.store)) == set(reports_index(daily.store))


def test_a_day_that_fails_in_a_range_is_named_and_the_other_days_go_on(spec, toy_dir, days, tmp_path):
    from mlpipe.errors import DaysFailed

    ctx = context(spec, tmp_path / "data")
    events = pd.read_csv(toy_dir / "events.csv")
    events.loc[pd.to_datetime(events["ts"]).dt.date == days[1], "channel"] = "fax"
    events.to_csv(toy_dir / "events.csv", index=False)
    checked = [ingest.validate_range(ctx, **chunk) for chunk in ingest.plan_range(ctx, days[0], days[3], 2)]
    (failed,) = [f for c in checked for f in c["failed"]]
    assert failed["day"] == str(days[1]) and "channel" in failed["error"] and failed["failures"]
    assert ctx.store.exists("quarantine", days[1]) and not ctx.store.exists("validated", days[1])
    assert [ingest.features_range(ctx, c)["days"] for c in checked] == [1, 2]
    assert [d for d in days[:4] if ctx.store.exists("features", d)] == [days[0], days[2], days[3]]
    with pytest.raises(DaysFailed, match=rf"(?s)1 day\(s\) of the range failed \(3 validated\).*{days[1]}: "
                                         rf"ValidationFailed.*make ingest-day PIPELINE={spec.name} DAY=<day>"):
        ingest.check_range(ctx, checked)


def test_a_range_is_planned_in_order_and_a_bad_one_is_named(spec, tmp_path, days):
    ctx = context(spec, tmp_path / "data")
    chunks = ingest.plan_range(ctx, days[0], days[4], 2)
    assert chunks == [{"start": str(days[0]), "end": str(days[1]), "warm_up": True},
                      {"start": str(days[2]), "end": str(days[3]), "warm_up": False},
                      {"start": str(days[4]), "end": str(days[4]), "warm_up": False}]
    def sizes(on, days, slots):  # the default chunks' lengths
        chunks = ingest.plan_range(on, on.spec.schedule.start, on.spec.schedule.start + dt.timedelta(days=days - 1),
                                   None, slots)
        return [(dt.date.fromisoformat(c["end"]) - dt.date.fromisoformat(c["start"])).days + 1 for c in chunks]

    assert sizes(ctx, 6, 2) == [3, 3] and sizes(ctx, 6, 1) == [6] and sizes(ctx, 1, 4) == [1]
    year = dataclasses.replace(ctx, spec=spec.model_copy(update={"schedule": spec.schedule.model_copy(
        update={"end": days[0] + dt.timedelta(days=400)})}))
    assert sizes(year, 365, 2) == [29] * 12 + [17] and sizes(year, 40, 2) == [20, 20]
    with pytest.raises(BadRange, match="the end is before the start"):
        ingest.plan_range(ctx, days[2], days[1], 2)
    with pytest.raises(SourceError, match="outside the spec's schedule"):
        ingest.plan_range(ctx, days[0], days[-1] + dt.timedelta(days=1), 2)
    with pytest.raises(BadRange, match="chunk_days must be at least 1"):
        ingest.plan_range(ctx, days[0], days[1], 0)


def test_the_run_for_a_data_day_is_the_next_logical_date(spec, tmp_path, days, capsys):
    ctx = context(spec, tmp_path / "data")
    assert ingest.logical_date_for(days[2], ctx) == days[3]
    with pytest.raises(SourceError, match="outside the spec's schedule"):
        ingest.logical_date_for(days[-1] + dt.timedelta(days=1), ctx)


def test_ingest_on_object_storage_writes_the_same_partitions(spec, spec_dict, toy_dir, days, tmp_path, s3_root,
                                                              lock_database, write_spec):
    """In-process, against the S3 server process: sources and data root in a bucket, no
    local data folder; the partitions are byte for byte those of a local run, and the
    day's report, Data Docs page and index row are objects in the bucket."""
    from mlpipe.storage import listing, location

    bucket = s3_root.rsplit("/", 1)[0]
    for name in ("events.csv", "stores.csv"):
        location(f"{bucket}/sources/{name}").write_bytes((toy_dir / name).read_bytes())
    remote = {**spec_dict, "sources": {**spec_dict["sources"],
                                       "events": {"path": f"{bucket}/sources/events.csv"},
                                       "stores": {**spec_dict["sources"]["stores"], "path": f"{bucket}/sources/stores.csv"}}}
    s3_spec = load_spec(write_spec(tmp_path, remote, "s3.yaml"))
    settings = dataclasses.replace(get_settings(), data_root=location(s3_root), cache_dir=tmp_path / "host-cache",
                                   lock_url=lock_database)
    on_s3 = Context(settings, s3_spec, Store(settings.data_root, s3_spec.name, lock_database))
    local = context(spec, tmp_path / "local")
    for day in days[:3]:
        ingest_day(on_s3, day)
        ingest_day(local, day)
    for layer in ("raw", "validated", "features"):
        assert listing(on_s3.store.layer_dir(layer)) == [f"date={d}.parquet" for d in days[:3]]
        for day in days[:3]:
            assert file_hash(on_s3.store.path(layer, day)) == file_hash(local.store.path(layer, day)), (layer, day)
    row = report_index.load(on_s3.store)["day"][str(days[2])]
    assert row["validation"] == f"validation/{days[2]}.json" and row["data_docs"].startswith("data_docs/validations/")
    assert (on_s3.store.report_dir() / row["data_docs"]).exists()
    assert not (tmp_path / "host-cache").joinpath("toy", "raw").exists()  # only caches on this host
