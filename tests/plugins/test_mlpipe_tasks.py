"""The step runner (in-process): errors that retrying cannot fix fail at once, records
cross XCom as dicts and come back as records."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

import mlpipe_tasks  # noqa: E402
from mlpipe import steps  # noqa: E402
from mlpipe.errors import PartitionMissing, SourceError, ValidationFailed  # noqa: E402
from mlpipe.records import Candidate, Job, Window  # noqa: E402

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"
FLIGHTS = str(PIPELINES / "flights.yaml")


@pytest.mark.parametrize("error", [ValidationFailed("bad day", [], "report.json"), SourceError("no file")])
def test_data_errors_fail_without_retry(monkeypatch, error):
    def boom(ctx, **kwargs):
        raise error

    monkeypatch.setitem(steps.STEPS, "extract_day", boom)
    with pytest.raises(AirflowFailException, match=str(error).splitlines()[0]):
        mlpipe_tasks.run_step("extract_day", FLIGHTS, day=dt.date(2013, 1, 1))


def test_waiting_for_partitions_stays_retryable(monkeypatch):
    def wait(ctx, **kwargs):
        raise PartitionMissing("earlier day not validated yet")

    monkeypatch.setitem(steps.STEPS, "build_day_features", wait)
    with pytest.raises(PartitionMissing):
        mlpipe_tasks.run_step("build_day_features", FLIGHTS, day=dt.date(2013, 1, 2))


def test_run_step_returns_records_as_xcom_dicts_and_reads_them_back(monkeypatch):
    window = Window(dt.date(2013, 1, 1), dt.date(2013, 1, 8), dt.date(2013, 1, 10))
    job = Job("hgb", "sklearn", window, "live", True)
    monkeypatch.setitem(steps.STEPS, "plan_training", lambda ctx, **kwargs: [job])
    jobs = mlpipe_tasks.run_step("plan_training", FLIGHTS, logical_date=dt.date(2013, 1, 10))
    assert jobs == [job.to_dict()] and mlpipe_tasks.first_job(jobs) == job
    candidate = Candidate("hgb", "sklearn_hgb", "r1", "runs:/r1/model", "1", {"roc_auc": 0.7})
    # per family: a list of results, None for a failed variant, None for a family with no variants
    assert mlpipe_tasks.trained([[candidate.to_dict(), None], None]) == [candidate]


def test_unknown_step_names_are_an_error():
    with pytest.raises(KeyError, match="no_such_step"):
        mlpipe_tasks.run_step("no_such_step", FLIGHTS)


def test_a_step_runs_in_the_context_of_its_dags_own_spec(monkeypatch):
    """The factory hands each task its pipeline's spec file: two pipelines' steps, one process."""
    monkeypatch.setitem(steps.STEPS, "extract_day", lambda ctx, **kwargs: {"pipeline": ctx.spec.name,
                                                                           "data": str(ctx.store.report_dir())})
    for name in ("flights", "bikes", "flights"):
        result = mlpipe_tasks.run_step("extract_day", str(PIPELINES / f"{name}.yaml"), day=dt.date(2013, 1, 1))
        assert result["pipeline"] == name and f"/{name}/" in result["data"]
