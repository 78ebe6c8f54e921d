"""Task glue: errors that retrying cannot fix fail at once; schedule dates come from the spec."""

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


@pytest.mark.parametrize("error", [ValidationFailed("bad day", [], "report.json"), SourceError("no file")])
def test_data_errors_fail_without_retry(monkeypatch, error):
    def boom(ctx, **kwargs):
        raise error

    monkeypatch.setitem(steps.STEPS, "extract_day", boom)
    with pytest.raises(AirflowFailException, match=str(error).splitlines()[0]):
        mlpipe_tasks.run_step("extract_day", day=dt.date(2013, 1, 1))


def test_waiting_for_partitions_stays_retryable(monkeypatch):
    def wait(ctx, **kwargs):
        raise PartitionMissing("earlier day not validated yet")

    monkeypatch.setitem(steps.STEPS, "build_day_features", wait)
    with pytest.raises(PartitionMissing):
        mlpipe_tasks.run_step("build_day_features", day=dt.date(2013, 1, 2))


def test_run_step_returns_records_as_xcom_dicts_and_reads_them_back(monkeypatch):
    window = Window(dt.date(2013, 1, 1), dt.date(2013, 1, 8), dt.date(2013, 1, 10))
    job = Job("hgb", "sklearn", window, "live", True)
    monkeypatch.setitem(steps.STEPS, "plan_training", lambda ctx, **kwargs: [job])
    jobs = mlpipe_tasks.run_step("plan_training", logical_date=dt.date(2013, 1, 10))
    assert jobs == [job.to_dict()] and mlpipe_tasks.first_job(jobs) == job
    candidate = Candidate("hgb", "sklearn_hgb", "r1", "runs:/r1/model", "1", {"roc_auc": 0.7})
    # per family: a list of results, None for a failed variant, None for a family with no variants
    assert mlpipe_tasks.trained([[candidate.to_dict(), None], None]) == [candidate]


def test_unknown_step_names_are_an_error():
    with pytest.raises(KeyError, match="no_such_step"):
        mlpipe_tasks.run_step("no_such_step")


def test_schedule_dates_follow_the_spec():
    dates = mlpipe_tasks.schedule_dates(extra_days=8)
    assert dates["start_date"] == dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
    assert dates["end_date"] == dt.datetime(2014, 1, 8, 23, 59, tzinfo=dt.timezone.utc)


def test_gpu_queue_and_pool_come_from_the_spec(monkeypatch, tmp_path):
    import yaml
    from mlpipe_operators import SklearnTrainOperator, TensorFlowTrainOperator, TorchTrainOperator

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "include/pipelines/flights.yaml").read_text())
    spec["execution"] = {"gpu_queue": "gpu_h100", "gpu_pool": "h100"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "spec.yaml"))
    monkeypatch.delenv("MLPIPE_GPU_QUEUE", raising=False)
    monkeypatch.delenv("MLPIPE_GPU_POOL", raising=False)
    assert TorchTrainOperator.placement() == {"queue": "gpu_h100", "pool": "h100"}
    assert TensorFlowTrainOperator(task_id="t", job={}).pool == "h100"
    assert SklearnTrainOperator.placement() == {}
    monkeypatch.setenv("MLPIPE_GPU_QUEUE", "from_env")
    assert TorchTrainOperator.placement()["queue"] == "from_env"


def test_training_slots_default_to_cores_per_task_and_can_be_configured(monkeypatch, tmp_path):
    import yaml

    monkeypatch.delenv("MLPIPE_TRAINING_SLOTS", raising=False)
    monkeypatch.setattr(mlpipe_tasks.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "2")
    assert mlpipe_tasks.training_slots() == 4  # 8 cores, 2 threads per task
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "16")
    assert mlpipe_tasks.training_slots() == 1  # never zero

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/pipelines/flights.yaml").read_text())
    spec["execution"]["training_slots"] = 3
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "spec.yaml"))
    assert mlpipe_tasks.training_slots() == 3  # the spec named now, not the first one loaded
    monkeypatch.setenv("MLPIPE_TRAINING_SLOTS", "5")
    assert mlpipe_tasks.training_slots() == 5


def test_a_retrain_request_is_read_from_the_triggering_asset_event_and_tags_the_run():
    from types import SimpleNamespace

    from airflow.sdk import Asset

    from mlpipe.records import Job, Window
    from mlpipe_tasks import RETRAIN_URI, retrain_request, run_tags

    event = SimpleNamespace(extra={"reason": "dataset drift on 3 consecutive days", "window_end": "2013-10-09"})
    other = SimpleNamespace(extra={"reason": "not ours"})
    events = {Asset("mlpipe://features"): [other], Asset(RETRAIN_URI): [SimpleNamespace(extra={"reason": "old"}), event]}
    assert retrain_request(events) == event.extra
    assert retrain_request({Asset("mlpipe://features"): [other]}) is None and retrain_request(None) is None
    from mlpipe_tasks import with_retrain_request

    params = {"window_end": None, "dry_run": False}
    assert with_retrain_request(params, events) == {**params, "window_end": "2013-10-09", "trigger": event.extra["reason"]}
    assert with_retrain_request({**params, "window_end": "2013-09-01"}, events)["window_end"] == "2013-09-01"
    assert with_retrain_request(params, None) == params
    dag_run = SimpleNamespace(dag_id="train", run_id="r1", run_type="asset_triggered")
    window = Window(*(dt.date(2013, 1, d) for d in (1, 20, 31)))
    job = Job("hgb", "sklearn", window, "live", True, trigger=event.extra["reason"])
    assert run_tags(dag_run, job)["mlpipe.trigger"] == event.extra["reason"]
    assert "mlpipe.trigger" not in run_tags(dag_run, Job("hgb", "sklearn", window, "live", True))


def test_only_scheduled_runs_past_the_schedule_end_are_skipped():
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowSkipException

    end = mlpipe_tasks._spec().schedule.end  # the bundled dataset ends on 2013-12-31
    later = dt.datetime.combine(end + dt.timedelta(days=9), dt.time(), dt.timezone.utc)
    with pytest.raises(AirflowSkipException, match="past the spec's schedule end"):
        mlpipe_tasks.skip_past_schedule_end(SimpleNamespace(run_type="scheduled"), later, extra_days=8)
    mlpipe_tasks.skip_past_schedule_end(SimpleNamespace(run_type="scheduled"), later - dt.timedelta(days=1), 8)
    for run_type in ("manual", "asset_triggered", "backfill"):  # a UI trigger today creates its tasks
        mlpipe_tasks.skip_past_schedule_end(SimpleNamespace(run_type=run_type), later, extra_days=8)
