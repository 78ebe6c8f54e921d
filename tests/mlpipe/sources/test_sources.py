"""read_day: the primary source's day joined to every lookup source."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mlpipe.errors import SourceError
from mlpipe.sources import day_has_rows, read_day
from mlpipe.spec import load_spec


def _day_events(events: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    return events[pd.to_datetime(events["ts"]).dt.date == day]


def _spec(toy_dir, spec_dict, write_spec, name="variant.yaml"):
    return load_spec(write_spec(toy_dir, spec_dict, name))


def test_read_day_joins_lookup_and_sorts_by_row_id(spec, cache_dir, days, events):
    frame = read_day(spec, days[2], cache_dir)
    expected = _day_events(events, days[2]).sort_values("event_id")
    assert frame["event_id"].tolist() == expected["event_id"].tolist()
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert list(frame.columns) == [*events.columns, "region", "store_size"]  # "size" renamed
    lookup = {"s1": ("north", 100), "s2": ("north", 250), "s3": ("south", 80), "s4": ("east", 400)}
    for store_id, region, size in frame[["store", "region", "store_size"]].itertuples(index=False):
        assert (region, size) == lookup[store_id]
    pd.testing.assert_series_equal(frame["amount"], expected["amount"].reset_index(drop=True))


def test_left_join_keeps_unmatched_rows_and_inner_drops_them(toy_dir, spec_dict, write_spec, cache_dir, days):
    stores = pd.read_csv(toy_dir / "stores.csv")
    stores[stores["store"] != "s1"].to_csv(toy_dir / "stores.csv", index=False)
    left = read_day(_spec(toy_dir, spec_dict, write_spec, "left.yaml"), days[0], cache_dir)
    unmatched = left[left["store"] == "s1"]
    assert len(unmatched) > 0 and unmatched["region"].isna().all() and unmatched["store_size"].isna().all()
    spec_dict["sources"]["stores"]["join"]["how"] = "inner"
    inner = read_day(_spec(toy_dir, spec_dict, write_spec, "inner.yaml"), days[0], cache_dir)
    assert len(inner) == len(left) - len(unmatched)
    assert "s1" not in set(inner["store"])


def test_duplicate_lookup_keys_raise_source_error_naming_the_join(toy_dir, spec, cache_dir, days):
    stores = pd.read_csv(toy_dir / "stores.csv")
    pd.concat([stores, stores.head(1)]).to_csv(toy_dir / "stores.csv", index=False)
    with pytest.raises(SourceError, match=r"join events -> stores: keys \['store'\] are not unique in stores"):
        read_day(spec, days[0], cache_dir)


def test_column_clash_raises_source_error(toy_dir, spec, cache_dir, days):
    stores = pd.read_csv(toy_dir / "stores.csv").assign(amount=1.0)  # also a column of events
    stores.to_csv(toy_dir / "stores.csv", index=False)
    with pytest.raises(SourceError, match=r"join events -> stores: columns \['amount'\] exist on both sides"):
        read_day(spec, days[0], cache_dir)


def test_rename_resolves_a_clash(toy_dir, spec_dict, write_spec, cache_dir, days):
    stores = pd.read_csv(toy_dir / "stores.csv").assign(amount=7.5)
    stores.to_csv(toy_dir / "stores.csv", index=False)
    spec_dict["sources"]["stores"]["rename"] = {"size": "store_size", "amount": "store_amount"}
    frame = read_day(_spec(toy_dir, spec_dict, write_spec), days[0], cache_dir)
    assert (frame["store_amount"] == 7.5).all()


def test_missing_join_key_raises_source_error(toy_dir, spec_dict, write_spec, cache_dir, days):
    spec_dict["sources"]["stores"]["join"]["keys"] = ["store", "region"]  # region is not in events
    with pytest.raises(SourceError, match=r"key columns \['region'\] missing"):
        read_day(_spec(toy_dir, spec_dict, write_spec), days[0], cache_dir)


def test_day_without_rows_is_empty_but_has_the_columns(spec, cache_dir, days, events):
    before = days[0] - dt.timedelta(days=1)
    frame = read_day(spec, before, cache_dir)
    assert frame.empty
    assert {"event_id", "store", "region", "store_size"} <= set(frame.columns)
    assert not day_has_rows(spec, before, cache_dir)
    assert day_has_rows(spec, days[0], cache_dir)


def test_every_event_is_read_on_exactly_one_day(spec, cache_dir, days, events):
    ids = [i for day in days for i in read_day(spec, day, cache_dir)["event_id"]]
    assert sorted(ids) == sorted(events["event_id"])


def test_row_number_numbers_the_rows_that_share_the_other_row_ids(toy_dir, spec_dict, write_spec, cache_dir, days):
    """Rows without a unique key (two identical items of one order): the line column tells them apart."""
    events = pd.read_csv(toy_dir / "events.csv")
    twice = pd.concat([events, events[events["event_id"] % 2 == 0]]).sort_values("event_id", kind="stable")
    twice.to_csv(toy_dir / "events.csv", index=False)
    spec_dict["sources"]["events"]["row_number"] = "line"
    spec_dict["row_id"] = ["event_id", "line"]
    frame = read_day(_spec(toy_dir, spec_dict, write_spec), days[1], cache_dir)
    assert not frame.duplicated(["event_id", "line"]).any()
    doubled = frame[frame["event_id"] % 2 == 0]
    assert len(doubled) and doubled.groupby("event_id")["line"].agg(sorted).map(list).tolist() == \
        [[0, 1]] * doubled["event_id"].nunique()
    assert (frame.loc[frame["event_id"] % 2 == 1, "line"] == 0).all()
    spec_dict["sources"]["stores"]["row_number"] = "n"
    with pytest.raises(Exception, match="sources.stores.row_number: only the first"):
        _spec(toy_dir, spec_dict, write_spec, "bad.yaml")
