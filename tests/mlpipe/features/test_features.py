from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlpipe import features as feat
from mlpipe.errors import SourceError
from mlpipe.sources import read_day
from mlpipe.spec import FeaturesSpec, load_spec
from mlpipe.storage import Store, file_hash

D = dt.date(2024, 1, 5)  # a Friday


def _day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


def _rows() -> pd.DataFrame:
    """Four validated rows of day D (as read_day would give them)."""
    return pd.DataFrame({
        "event_id": [4, 1, 2, 3],  # not in row-id order
        "ts": [f"2024-01-05 0{h}:00:00" for h in range(4)],
        "store": ["s1", "s1", "s2", "s3"],
        "channel": ["store", "web", "app", "web"],
        "amount": [10, 20, 30, 40],  # ints: cast to float features
        "delay": [np.nan, 20.0, 5.0, 11.0],
        "settle_time": [1.0, 2.0, 3.0, 4.0],
        "region": ["north", "north", "north", "south"],
        "store_size": [100, 100, 250, 80],
    })


def _past(*, with_future: bool) -> pd.DataFrame:
    """Earlier validated rows (history columns + partition_date), labels noted per row."""
    records = [
        (_day(-3), "s1", "web", 50.0),    # outside the 2-day window
        (_day(-2), "s1", "app", 30.0),    # late
        (_day(-2), "s2", "app", 0.0),     # on time
        (_day(-1), "s1", "web", 0.0),     # on time
        (_day(-1), "s1", "web", np.nan),  # unknown -> late (when_null: positive)
        (_day(-1), "s2", "app", 20.0),    # late
    ]
    if with_future:
        records += [(_day(0), "s1", "web", 0.0), (_day(0), "s3", "web", 99.0),   # the day itself
                    (_day(1), "s3", "web", 99.0), (_day(1), "s2", "store", 0.0)]  # a later day
    return pd.DataFrame(records, columns=["partition_date", "store", "channel", "delay"])


def test_history_columns_and_days(spec):
    assert feat.history_columns(spec) == ["channel", "delay", "store"]
    assert feat.history_days(spec, D) == (_day(-2), D)  # the longest window, end exclusive


def test_history_aggregates_use_only_earlier_days(spec):
    out = feat.build_features(spec, D, _rows(), _past(with_future=True))
    by_id = out.set_index("event_id")
    # store rate over D-2 and D-1: s1 labels [1, 0, 1] -> 2/3; s2 [0, 1] -> 1/2; s3 never seen before D
    assert by_id.loc[1, "late_rate_store_2d"] == pytest.approx(2 / 3)
    assert by_id.loc[4, "late_rate_store_2d"] == pytest.approx(2 / 3)
    assert by_id.loc[2, "late_rate_store_2d"] == pytest.approx(0.5)
    assert np.isnan(by_id.loc[3, "late_rate_store_2d"])
    # channel count over D-1 only: web 2, app 1, store 0
    assert by_id["count_channel_1d"].to_dict() == {1: 2.0, 2: 1.0, 3: 2.0, 4: 0.0}


def test_history_target_mean_skips_unknown_labels_when_dropped(spec, with_target):
    dropped = with_target(spec, when_null="drop")
    out = feat.build_features(dropped, D, _rows(), _past(with_future=False)).set_index("event_id")
    assert out.loc[1, "late_rate_store_2d"] == pytest.approx(1 / 2)  # s1: [1, 0], the NaN label skipped


def test_features_of_a_day_do_not_depend_on_later_days(spec, tmp_path):
    with_later = feat.build_features(spec, D, _rows(), _past(with_future=True))
    without = feat.build_features(spec, D, _rows(), _past(with_future=False))
    pd.testing.assert_frame_equal(with_later, without)
    a = Store(tmp_path / "a", "toy").write("features", D, with_later)
    b = Store(tmp_path / "b", "toy").write("features", D, without)
    assert a.read_bytes() == b.read_bytes()


def test_point_in_time_through_the_store(spec, cache_dir, tmp_path, days):
    """Build day 4 from the validated layer, once with all six days ingested, once with only
    days 1-4: the feature partition's bytes must be identical."""
    hashes = []
    for name, ingested in (("all", days), ("upto", days[:4])):
        store = Store(tmp_path / name, "toy")
        for day in ingested:
            store.write("validated", day, read_day(spec, day, cache_dir))
        target_day = days[3]
        start, end = feat.history_days(spec, target_day)
        past, used = store.read_range("validated", start, end, columns=feat.history_columns(spec),
                                      date_column=feat.PARTITION_DATE)
        assert used == [days[1], days[2]]
        # also hand the builder rows of later days, as a careless caller might
        later, _ = store.read_range("validated", target_day, days[-1] + dt.timedelta(days=1),
                                    columns=feat.history_columns(spec), date_column=feat.PARTITION_DATE)
        frame = feat.build_features(spec, target_day, store.read("validated", target_day),
                                    pd.concat([past, later], ignore_index=True))
        hashes.append(file_hash(store.write("features", target_day, frame)))
    assert hashes[0] == hashes[1]


def test_first_day_without_history(spec):
    empty = pd.DataFrame(columns=[*feat.history_columns(spec), feat.PARTITION_DATE])
    out = feat.build_features(spec, D, _rows(), empty)
    assert out["late_rate_store_2d"].isna().all()  # unknown rate
    assert (out["count_channel_1d"] == 0.0).all()  # nothing happened


def test_excluded_columns_never_become_features(spec, cache_dir, days):
    rows = read_day(spec, days[2], cache_dir)
    assert {"settle_time", "ts", "delay"} <= set(rows.columns)
    out = feat.build_features(spec, days[2], rows, pd.DataFrame(columns=[*feat.history_columns(spec), "partition_date"]))
    assert list(out.columns) == ["event_id", "partition_date", "amount", "store_size", "channel", "store", "region",
                                 "day_of_week", "is_weekend", "late_rate_store_2d", "count_channel_1d", "late"]
    assert set(out.columns) & spec.leakage == {"late"}  # only the label itself
    assert not set(spec.features.all_names) & spec.leakage


def test_row_ids_dtypes_and_order(spec):
    out = feat.build_features(spec, D, _rows(), _past(with_future=False))
    assert out["event_id"].tolist() == [1, 2, 3, 4]
    assert out["event_id"].dtype == np.int64  # ids keep their type
    assert (out["partition_date"] == D).all()
    for column in ("amount", "store_size", "day_of_week", "is_weekend", "late_rate_store_2d", "count_channel_1d"):
        assert out[column].dtype == np.float64, column
    for column in ("channel", "store", "region"):
        assert isinstance(out[column].dtype, pd.StringDtype), column
    assert out["amount"].tolist() == [20.0, 30.0, 40.0, 10.0]


@pytest.mark.parametrize("policy, expected", [
    ("positive", [1.0, 0.0, 1.0, 1.0]),
    ("negative", [1.0, 0.0, 1.0, 0.0]),
    ("drop", [1.0, 0.0, 1.0, np.nan]),
])
def test_when_null_policies(spec, with_target, policy, expected):
    out = feat.build_features(with_target(spec, when_null=policy), D, _rows(), _past(with_future=False))
    # rows sorted by event_id: delays 20, 5, 11, NaN
    np.testing.assert_array_equal(out["late"].to_numpy(), np.array(expected))
    labels = feat.compute_target(_rows(), with_target(spec, when_null=policy).target)
    assert labels.name == "late" and labels.index.equals(_rows().index)


def test_compute_target_expressions_and_errors(spec, with_target):
    frame = pd.DataFrame({"arr": [1.0, 30.0, np.nan], "dep": [40.0, 0.0, 0.0]})
    target = with_target(spec, expression="(arr > 15) | (dep > 30)", when_null="negative").target
    assert feat.compute_target(frame, target).tolist() == [1.0, 1.0, 0.0]
    regression = with_target(spec, expression="arr * 2", task="regression", when_null="drop").target
    np.testing.assert_array_equal(feat.compute_target(frame, regression).to_numpy(), [2.0, 60.0, np.nan])
    with pytest.raises(SourceError, match=r"input columns \['delay'\] not found"):
        feat.compute_target(frame, spec.target)
    assert feat.compute_target(pd.DataFrame({"delay": []}), spec.target).empty


@pytest.mark.parametrize("day, values", [
    (dt.date(2024, 1, 6), {"day_of_week": 5.0, "day_of_year": 6.0, "month": 1.0, "is_weekend": 1.0}),
    (dt.date(2024, 1, 7), {"day_of_week": 6.0, "day_of_year": 7.0, "month": 1.0, "is_weekend": 1.0}),
    (dt.date(2024, 3, 1), {"day_of_week": 4.0, "day_of_year": 61.0, "month": 3.0, "is_weekend": 0.0}),
    (dt.date(2024, 12, 31), {"day_of_week": 1.0, "day_of_year": 366.0, "month": 12.0, "is_weekend": 0.0}),
])
def test_calendar_features(spec, day, values):
    calendar_spec = spec.model_copy(update={"features": FeaturesSpec(
        numeric=["amount"], categorical=["store"], calendar=list(values))})
    out = feat.build_features(calendar_spec, day, _rows(), pd.DataFrame())
    for name, value in values.items():
        assert (out[name] == value).all(), name
        assert out[name].dtype == np.float64


def test_missing_feature_column_raises(spec):
    with pytest.raises(SourceError, match=r"columns \['region'\] not in the validated partition"):
        feat.build_features(spec, D, _rows().drop(columns=["region"]), _past(with_future=False))


def test_numeric_categorical_is_encoded_the_same_on_every_day(spec_dict, write_spec, toy_dir):
    spec_dict["features"]["numeric"] = ["amount"]
    spec_dict["features"]["categorical"] = ["channel", "store_size"]
    spec = load_spec(write_spec(toy_dir, spec_dict, "numeric_category.yaml"))
    complete = _rows()
    with_null = _rows().assign(store_size=[100.0, 100.0, np.nan, 80.0])  # a store missing from the lookup
    a = feat.build_features(spec, D, complete, pd.DataFrame(columns=["channel", "delay", "store", "partition_date"]))
    b = feat.build_features(spec, _day(1), with_null, pd.DataFrame(columns=["channel", "delay", "store", "partition_date"]))
    assert a.loc[0, "store_size"] == b.loc[0, "store_size"]


def test_a_global_history_aggregate_has_no_group_by(spec_dict, write_spec, toy_dir):
    spec_dict["features"]["history"] = [{"name": "late_rate_2d", "window_days": 2},
                                        {"name": "rows_1d", "window_days": 1, "stat": "count"}]
    spec = load_spec(write_spec(toy_dir, spec_dict, "global.yaml"))
    out = feat.build_features(spec, D, _rows(), _past(with_future=True))
    # over D-2 and D-1 (never D or later): labels [1, 0, 0, 1, 1] -> 3/5; D-1 has 3 rows
    assert out["late_rate_2d"].tolist() == pytest.approx([0.6] * 4)
    assert out["rows_1d"].tolist() == [3.0] * 4
