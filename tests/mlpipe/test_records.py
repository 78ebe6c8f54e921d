"""Records that cross layers round-trip through the dicts XCom and the ledger hold, and
refuse dicts that do not match their fields."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlpipe.records import Candidate, Job, LedgerEntry, Window, to_xcom

WINDOW = Window(dt.date(2013, 1, 1), dt.date(2013, 10, 1), dt.date(2014, 1, 1))


def test_job_round_trips_through_json():
    job = Job("hgb", "sklearn", WINDOW, "backfill", False)
    raw = json.loads(json.dumps(job.to_dict()))
    assert raw["window"] == {"start": "2013-01-01", "holdout_start": "2013-10-01", "end": "2014-01-01"}
    assert Job.from_dict(raw) == job


def test_candidate_and_ledger_entry_round_trip():
    candidate = Candidate("ensemble", "ensemble", "r1", "runs:/r1/model", None, {"roc_auc": 0.7},
                          members={"hgb": "3", "logreg": None}, weights={"hgb": 0.6, "logreg": 0.4})
    assert Candidate.from_dict(json.loads(json.dumps(candidate.to_dict()))) == candidate
    entry = LedgerEntry(kind="train", pipeline="p", model="m", mode="live", decision="keep", reason="tie",
                        window=WINDOW, candidates={"hgb": {"version": "3", "metrics": {"roc_auc": 0.7}}}, seq=4)
    assert LedgerEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    rollback = LedgerEntry(kind="rollback", pipeline="p", model="m", mode="live", decision="rollback", reason="")
    assert LedgerEntry.from_dict(rollback.to_dict()).window is None


@pytest.mark.parametrize("raw, message", [
    ({"variant": "hgb", "family": "sklearn", "mode": "live", "promote": True}, r"missing keys \['window'\]"),
    ({"variant": "hgb", "family": "sklearn", "window": WINDOW.to_dict(), "mode": "live", "promote": True,
      "register": True}, r"unknown keys \['register'\]"),
])
def test_a_dict_that_is_not_the_record_is_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=f"not a Job record: .*{message}"):
        Job.from_dict(raw)


def test_to_xcom_turns_records_and_lists_of_records_into_dicts():
    job = Job("hgb", "sklearn", WINDOW, "live", True)
    assert to_xcom([job, job]) == [job.to_dict(), job.to_dict()]
    assert to_xcom({"uri": "x"}) == {"uri": "x"} and to_xcom(None) is None
