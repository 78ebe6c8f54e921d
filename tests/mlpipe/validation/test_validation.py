"""Data-quality suites, run through real Great Expectations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipe.errors import ValidationFailed
from mlpipe.sources import read_day
from mlpipe.validation import TYPE_LISTS, Rule, build_rules, validate


@pytest.fixture
def day_frame(spec, cache_dir, days):
    return read_day(spec, days[1], cache_dir)


@pytest.fixture
def reporter(store, days):
    def write(payload):
        return store.write_report("validation", days[1], payload)

    return write


def _fail(frame, spec, reporter) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate(frame, spec, "raw/day-2", reporter)
    return info.value


def test_build_rules_derived_from_spec(spec):
    rules = build_rules(spec)
    exists = [r.column for r in rules if r.expectation == "ExpectColumnToExist"]
    # row id, partition column, target inputs, features, history keys, validated columns; once each
    assert exists == ["event_id", "ts", "delay", "amount", "store_size", "channel", "store", "region"]
    by = {(r.expectation, r.column): r.kwargs for r in rules}
    assert by[("ExpectColumnValuesToBeInTypeList", "amount")] == {"type_list": TYPE_LISTS["number"]}
    assert by[("ExpectColumnValuesToBeInTypeList", "channel")] == {"type_list": ["str"]}
    assert by[("ExpectColumnValuesToNotBeNull", "amount")] == {"mostly": 0.5}
    assert by[("ExpectColumnValuesToNotBeNull", "channel")] == {"mostly": 1.0}
    assert by[("ExpectColumnValuesToBeBetween", "amount")] == {"min_value": 0, "max_value": 1000}
    assert by[("ExpectColumnValuesToBeBetween", "event_id")] == {"min_value": 1, "max_value": None}
    assert by[("ExpectColumnValuesToBeInSet", "channel")] == {"value_set": ["web", "app", "store"]}
    assert ("ExpectColumnValuesToBeBetween", "channel") not in by
    # the target input has no column rule: it gets the "not all null" rule
    assert by[("ExpectColumnValuesToNotBeNull", "delay")] == {"mostly": 0.01}
    assert rules[-1] == Rule("ExpectTableRowCountToBeBetween", None, {"min_value": 1, "max_value": 1000})


def test_build_rules_bundled_flights():
    from mlpipe.settings import PROJECT_ROOT
    from mlpipe.spec import load_spec

    spec = load_spec(PROJECT_ROOT / "include" / "pipelines" / "flights.yaml")
    rules = build_rules(spec)
    by = {(r.expectation, r.column): r.kwargs for r in rules}
    assert by[("ExpectColumnValuesToNotBeNull", "arr_delay")] == {"mostly": 0.2}
    # the target input has its own column rule, so no extra default rule
    assert sum(1 for r in rules if r.column == "arr_delay" and r.expectation == "ExpectColumnValuesToNotBeNull") == 1
    assert by[("ExpectColumnValuesToBeInSet", "origin")] == {"value_set": ["EWR", "JFK", "LGA"]}
    assert rules[-1].kwargs == {"min_value": 300, "max_value": 2000}
    assert ("ExpectColumnToExist", "tailnum") in by  # a history key


def test_a_listed_class_target_of_one_column_must_be_among_its_classes(day_frame, spec, reporter, with_target):
    """Through real GX: a label outside target.classes fails the day's validation, naming the column."""
    multiclass = with_target(spec, name="kind", expression="channel", task="multiclass", when_null="drop",
                             classes=["web", "app"])
    (rule,) = [r for r in build_rules(multiclass) if r.column == "channel" and r.expectation.endswith("InSet")]
    assert rule.kwargs == {"value_set": ["web", "app", "store"]}  # its own categories rule wins
    no_rule = multiclass.model_copy(update={"validation": multiclass.validation.model_copy(update={"columns": {}})})
    (rule,) = [r for r in build_rules(no_rule) if r.column == "channel" and r.expectation.endswith("InSet")]
    assert rule.kwargs == {"value_set": ["web", "app"]}
    failure = _fail(day_frame, no_rule, reporter)
    assert "channel" in str(failure)
    assert any(f["column"] == "channel" and f["expectation"] == "expect_column_values_to_be_in_set"
               for f in failure.failures)
    numbered = with_target(spec, name="kind", expression="event_id", task="multiclass", when_null="drop",
                           classes=["1", "2"])
    (rule,) = [r for r in build_rules(numbered) if r.column == "event_id" and r.expectation.endswith("InSet")]
    assert rule.kwargs == {"value_set": ["1", "2", 1, 2]}  # a column of numbers matches its classes too


def test_validate_passes_on_good_data_and_writes_report(day_frame, spec, reporter, store, days):
    summary = validate(day_frame, spec, "raw/day-2", reporter)
    path = store.report_path("validation", days[1])
    assert summary == {"rows": len(day_frame), "rules": len(build_rules(spec)), "warnings": 0, "report": str(path),
                       "data_docs": None}  # no site asked for (see test_data_docs)
    report = json.loads(path.read_text())
    assert report["success"] is True and report["failures"] == []
    assert report["pipeline"] == "toy" and report["source"] == "raw/day-2" and report["rows"] == len(day_frame)
    assert len(report["results"]) == len(build_rules(spec))
    assert all(r["success"] for r in report["results"])


def test_missing_column_fails_naming_it(day_frame, spec, reporter):
    error = _fail(day_frame.drop(columns=["channel"]), spec, reporter)
    message = str(error)
    assert "column channel" in message and "expect_column_to_exist" in message
    assert error.report in message and error.report.endswith(".json")
    assert [(f["column"], f["expectation"]) for f in error.failures] == [("channel", "expect_column_to_exist")]
    saved = json.loads(open(error.report).read())
    assert saved["success"] is False and saved["failures"] == error.failures


def test_strings_in_numeric_column_fail_type_rule(day_frame, spec, reporter):
    bad = day_frame.assign(amount=day_frame["amount"].astype(str))
    error = _fail(bad, spec, reporter)
    message = str(error)
    assert "column amount" in message and "expect_column_values_to_be_in_type_list" in message
    assert f"report: {error.report}" in message
    failed = {(f["column"], f["expectation"]) for f in error.failures}
    assert ("amount", "expect_column_values_to_be_in_type_list") in failed
    assert {c for c, _ in failed} == {"amount"}
    type_failure = next(f for f in error.failures if f["expectation"] == "expect_column_values_to_be_in_type_list")
    assert type_failure["result"]["unexpected_count"] == day_frame["amount"].notna().sum()


def test_failure_message_does_not_claim_an_existing_column_is_missing(day_frame, spec, reporter):
    bad = day_frame.assign(amount=day_frame["amount"].astype(str))
    assert "column not found" not in str(_fail(bad, spec, reporter))


def test_all_null_target_input_fails(day_frame, spec, reporter):
    error = _fail(day_frame.assign(delay=np.nan), spec, reporter)
    assert "column delay" in str(error) and "expect_column_values_to_not_be_null" in str(error)
    assert [(f["column"], f["expectation"]) for f in error.failures] == [("delay", "expect_column_values_to_not_be_null")]
    assert error.failures[0]["result"]["unexpected_count"] == len(day_frame)


def test_out_of_set_and_range_values_fail(day_frame, spec, reporter):
    bad = day_frame.copy()
    bad.loc[0, "channel"] = "fax"
    bad.loc[1, "amount"] = 5000.0
    error = _fail(bad, spec, reporter)
    failed = {(f["column"], f["expectation"]): f for f in error.failures}
    assert set(failed) == {("channel", "expect_column_values_to_be_in_set"),
                           ("amount", "expect_column_values_to_be_between")}
    assert failed[("channel", "expect_column_values_to_be_in_set")]["result"]["unexpected_count"] == 1
    assert "1 of" in str(error)


def test_row_count_bounds(day_frame, spec, reporter):
    strict = spec.model_copy(update={"validation": spec.validation.model_copy(update={"max_rows": 3})})
    error = _fail(day_frame, strict, reporter)
    assert [f["expectation"] for f in error.failures] == ["expect_table_row_count_to_be_between"]
    assert "<table>" in str(error)


def test_warn_severity_reports_without_blocking(day_frame, spec, reporter, store, days):
    columns = dict(spec.validation.columns)
    columns["amount"] = columns["amount"].model_copy(update={"severity": "warn"})
    lenient = spec.model_copy(update={"validation": spec.validation.model_copy(update={"columns": columns})})
    bad = day_frame.copy()
    bad.loc[0, "amount"] = 5000.0  # out of range, but only a warning now

    summary = validate(bad, lenient, "day", reporter)

    assert summary["warnings"] == 1
    report = json.loads(Path(summary["report"]).read_text())
    assert report["success"] is True and report["failures"] == []
    assert [(w["column"], w["expectation"]) for w in report["warnings"]] == [
        ("amount", "expect_column_values_to_be_between")]


@pytest.mark.parametrize("corruption", ["text in a numeric column", "nulls in an int column"])
def test_in_a_single_file_source_only_the_bad_day_fails(corruption, toy_dir, spec_dict, write_spec, events, days,
                                                        store, tmp_path):
    from mlpipe.spec import load_spec

    bad_day = days[3]
    on_bad_day = pd.to_datetime(events["ts"]).dt.date == bad_day
    events = events.assign(items=np.arange(len(events)) % 7 + 1)
    if corruption == "text in a numeric column":
        events["amount"] = events["amount"].astype(object)
        events.loc[events.index[on_bad_day][:3], "amount"] = "twelve"
    else:  # half of the day's rows: beyond the rule's 10%, and enough for pandas to read the file's column as float
        events.loc[events.index[on_bad_day][::2], "items"] = None
    events.to_csv(toy_dir / "events.csv", index=False)
    spec_dict["validation"]["columns"]["items"] = {"type": "int", "max_null_fraction": 0.1}
    spec = load_spec(write_spec(toy_dir, spec_dict, "typed.yaml"))
    failed = {}
    for day in days:
        frame = read_day(spec, day, tmp_path / "cache")
        try:
            validate(frame, spec, f"raw/{day}", lambda payload, d=day: store.write_report("validation", d, payload))
        except ValidationFailed as exc:
            failed[day] = {(f["column"], f["expectation"]) for f in exc.failures}
        else:
            assert str(frame["items"].dtype) == "Int64" and str(frame["amount"].dtype) == "float64"  # the spec's types
    expected = (("amount", "expect_column_values_to_be_in_type_list") if corruption == "text in a numeric column"
                else ("items", "expect_column_values_to_not_be_null"))
    assert set(failed) == {bad_day}  # exactly the bad day
    assert expected in failed[bad_day] and {column for column, _ in failed[bad_day]} == {expected[0]}


def test_duplicated_row_ids_fail_naming_the_rule_and_the_count(day_frame, spec, reporter):
    doubled = pd.concat([day_frame, day_frame.head(3)], ignore_index=True)
    error = _fail(doubled, spec, reporter)
    (failure,) = error.failures
    assert failure["expectation"] == "expect_column_values_to_be_unique" and failure["column"] == "event_id"
    assert failure["result"]["unexpected_count"] == 6  # both copies of each of the 3 rows
    assert "event_id: expect_column_values_to_be_unique" in str(error) and "6 of" in str(error)
