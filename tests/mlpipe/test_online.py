"""The online snapshot and request features (in-process: files, real Great Expectations
for the ingest that publishes the snapshots)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
import pytest

from mlpipe import ingest, online
from mlpipe.context import Context
from mlpipe.errors import SourceError
from mlpipe.features import PARTITION_DATE
from mlpipe.settings import get_settings
from mlpipe.storage import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def ingested(spec, tmp_path, days):
    root = tmp_path / "data"
    ctx = Context(dataclasses.replace(get_settings(), data_root=root), spec, Store(root, spec.name))
    for day in days:
        ingest.extract_day(ctx, day)
        ingest.validate_day(ctx, day)
        ingest.build_day_features(ctx, day)
    return ctx


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: JSON records (timestamps as ISO text)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _plain(spec, records: list[dict], snapshot: dict):
    return online.plain_features(spec, *online.request_values(spec, records), snapshot)


def _requests(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(_records(frame))


def test_rows_of_day_d_with_the_snapshot_as_of_d_minus_1_get_day_ds_batch_features(ingested, days):
    ctx = ingested
    for day in days[1:]:
        snapshot = online.load(ctx.store, day - dt.timedelta(days=1))
        raw = ctx.store.read("raw", day)
        got = online.request_features(ctx.spec, _requests(raw), snapshot)
        batch = ctx.store.read("features", day).drop(columns=[ctx.spec.target.name])
        got = got.sort_values(ctx.spec.row_id, kind="stable").reset_index(drop=True)
        assert list(got.columns) == list(batch.columns)
        pd.testing.assert_frame_equal(got.astype({PARTITION_DATE: str}), batch.astype({PARTITION_DATE: str}),
                                      check_dtype=False)
        history = [h.name for h in ctx.spec.features.history]
        assert got[history].notna().any().all(), day  # the lookups found their groups
        # the serving path: columns built value by value, the same features
        plain = _plain(ctx.spec, _records(raw), snapshot)
        assert plain is not None, day
        fast = online.features_frame(ctx.spec, plain).sort_values(ctx.spec.row_id, kind="stable")
        pd.testing.assert_frame_equal(fast.reset_index(drop=True).astype({PARTITION_DATE: str}),
                                      batch.astype({PARTITION_DATE: str}), check_dtype=False)


PLAIN_OR_NOT = [
    ({}, True),
    ({"amount": None, "channel": None, "store": None}, True),  # nulls: no group, median, code 0
    ({"region": 5, "store_size": 250.0}, True),  # a number as a category: its text
    ({"region": 5.5}, True),
    ({"ts": "2024-01-03T23:30:00-05:00"}, True),  # an offset: the day in the partition's zone
    ({"ts": "2024-01-03T23:30:00.000Z"}, True),
    ({"region": "12"}, False),  # text of digits in an undeclared column: the ingest reads a number
    ({"amount": "1.5"}, False),  # text in a number column
    ({"amount": True}, False),
    ({"store_size": 2**60}, False),  # past float precision
    ({"ts": "03/01/2024 10:00"}, False),  # not ISO 8601: pandas decides
]


def test_plain_features_are_request_features_or_leave_the_rows_to_them(ingested, days):
    """The value-by-value path gives the frame path's features, or None where pandas'
    typing decides (then the server uses request_features)."""
    ctx, day = ingested, days[2]
    snapshot = online.load(ctx.store, day - dt.timedelta(days=1))
    for change, plain in PLAIN_OR_NOT:
        records = [{**record, **change} for record in _records(ctx.store.read("raw", day).head(4))]
        got = _plain(ctx.spec, records, snapshot)
        assert (got is not None) == plain, change
        if got is not None:
            expected = online.request_features(ctx.spec, pd.DataFrame(records), snapshot)
            pd.testing.assert_frame_equal(online.features_frame(ctx.spec, got).astype({PARTITION_DATE: str}),
                                          expected.astype({PARTITION_DATE: str}), check_dtype=False, obj=str(change))
    records = _records(ctx.store.read("raw", days[1]).head(2))  # two timestamp formats: pandas decides
    records[0]["ts"], records[1]["ts"] = "2024-01-02T10:00:00Z", "2024-01-02 11:00:00"
    assert _plain(ctx.spec, records, snapshot) is None


def test_the_pointer_moves_only_forward_and_keeps_the_previous_snapshot(ingested, days):
    store = ingested.store
    assert online.current(store)["as_of"] == str(days[-1])
    again = online.publish(store, ingested.spec, days[0], pd.DataFrame(columns=["store", "channel", "delay",
                                                                                PARTITION_DATE]))
    assert again == {"as_of": str(days[0]), "published": False, "current": str(days[-1])}  # a backfill: no swap
    assert online.load(store)["as_of"] == days[-1]
    assert online.snapshot_path(store, days[-2]).exists()  # what a reader of the previous one holds


def test_a_request_row_without_a_readable_timestamp_is_named(ingested, days):
    rows = _requests(ingested.store.read("raw", days[1]).head(3))
    rows.loc[1, ingested.spec.partition.column] = "not a time"
    with pytest.raises(SourceError, match=r"ts: rows \[1\] have no readable timestamp"):
        online.request_features(ingested.spec, rows, online.load(ingested.store))


def test_a_days_snapshot_can_be_published_again_from_its_validated_partitions(ingested, days):
    """For data ingested before snapshots existed: the same statistics as the ingest's."""
    store = ingested.store
    published = online.load(store, days[-1])
    online.snapshot_path(store, days[-1]).unlink()
    assert online.publish_day(ingested, days[-1]) == {"as_of": str(days[-1]), "published": True}
    again = online.load(store, days[-1])
    for name, value in published["stats"].items():
        if isinstance(value, float):
            assert again["stats"][name] == pytest.approx(value, nan_ok=True)
        else:
            pd.testing.assert_frame_equal(again["stats"][name], value)


def test_request_typing_is_the_ingests(spec):
    """The cheap typing of a request's columns gives what ``sources.typed`` gives."""
    from mlpipe.sources import typed

    frames = [pd.DataFrame({"channel": ["web", None], "region": [None, None], "store": ["s1", "7"],
                            "amount": [None, 1.5], "delay": ["1", " 2 "]}),
              pd.DataFrame({"channel": ["12"], "region": ["north"], "store": ["inf"], "amount": [None], "delay": [None]})]
    for frame in frames:
        pd.testing.assert_frame_equal(online._typed(frame, spec), typed(frame, spec))
