"""The training window and its split: enough labelled rows, both classes, and errors
that name the days without features."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from mlpipe.context import Context, load_split, resolve_window
from mlpipe.errors import TrainingError
from mlpipe.records import Window
from mlpipe.settings import get_settings


@pytest.fixture
def ctx(spec, store, model_frame):
    for day, part in model_frame.groupby("partition_date"):
        store.write("features", day, part)
    return Context(dataclasses.replace(get_settings(), data_root=store.root), spec, store)


def test_the_split_puts_the_last_days_in_the_holdout(ctx, days):
    train, holdout, read = load_split(ctx, resolve_window(ctx.spec, days[-1] + dt.timedelta(days=1)))
    assert set(holdout["partition_date"]) == {days[-1]} and days[-1] not in set(train["partition_date"])
    assert read == days[1:]  # lookback_days 5


def test_a_one_class_split_fails_with_the_class_counts(ctx, store, days):
    part = store.read("features", days[-1])
    store.write("features", days[-1], part.assign(late=0.0))
    with pytest.raises(TrainingError, match=r"holdout split .* has \d+ negative and 0 positive rows; need at least "
                                            r"5 of each class \(training.min_class_rows\)"):
        load_split(ctx, Window(days[0], days[-1], days[-1] + dt.timedelta(days=1)))


def test_too_few_rows_names_the_days_without_features(ctx, days):
    window = Window(days[0] - dt.timedelta(days=3), days[-1] + dt.timedelta(days=3), days[-1] + dt.timedelta(days=5))
    with pytest.raises(TrainingError, match="holdout split .* has 0 labelled rows; need at least 10") as info:
        load_split(ctx, window)
    assert str(info.value).endswith(f"days without feature partitions: {days[0] - dt.timedelta(days=3)}.."
                                    f"{days[0] - dt.timedelta(days=1)}, {days[-1] + dt.timedelta(days=1)}.."
                                    f"{days[-1] + dt.timedelta(days=4)}")
