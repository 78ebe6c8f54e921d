"""What DAG files ask for (in-process): schedule dates, GPU placement and training slots
from the spec named now, the retrain request behind a run, skipped runs past the end."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import mlpipe_dagkit  # noqa: E402


def test_schedule_dates_follow_the_spec():
    dates = mlpipe_dagkit.schedule_dates(extra_days=8)
    assert dates["start_date"] == dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
    assert dates["end_date"] == dt.datetime(2014, 1, 8, 23, 59, tzinfo=dt.timezone.utc)


def test_gpu_queue_and_pool_come_from_the_spec_when_the_dag_is_built(monkeypatch, tmp_path):
    import yaml

    from mlpipe_operators import SklearnTrainOperator, TorchTrainOperator

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "include/pipelines/flights.yaml").read_text())
    spec["execution"] = {"gpu_queue": "gpu_h100", "gpu_pool": "h100"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "spec.yaml"))
    monkeypatch.delenv("MLPIPE_GPU_QUEUE", raising=False)
    monkeypatch.delenv("MLPIPE_GPU_POOL", raising=False)
    assert TorchTrainOperator.placement() == {"queue": "gpu_h100", "pool": "h100"}
    assert SklearnTrainOperator.placement() == {}
    monkeypatch.setenv("MLPIPE_GPU_QUEUE", "from_env")
    assert TorchTrainOperator.placement()["queue"] == "from_env"


def test_training_slots_default_to_cores_per_task_and_can_be_configured(monkeypatch, tmp_path):
    import yaml

    monkeypatch.delenv("MLPIPE_TRAINING_SLOTS", raising=False)
    monkeypatch.setattr(mlpipe_dagkit.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "2")
    assert mlpipe_dagkit.training_slots() == 4  # 8 cores, 2 threads per task
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "16")
    assert mlpipe_dagkit.training_slots() == 1  # never zero

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/pipelines/flights.yaml").read_text())
    spec["execution"]["training_slots"] = 3
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "spec.yaml"))
    assert mlpipe_dagkit.training_slots() == 3  # the spec named now, not the first one loaded
    monkeypatch.setenv("MLPIPE_TRAINING_SLOTS", "5")
    assert mlpipe_dagkit.training_slots() == 5


def test_a_retrain_request_is_read_from_the_triggering_asset_event_and_tags_the_run():
    from types import SimpleNamespace

    from airflow.sdk import Asset

    from mlpipe.records import Job, Window
    from mlpipe_dagkit import RETRAIN_URI, retrain_request, run_tags

    event = SimpleNamespace(extra={"reason": "dataset drift on 3 consecutive days", "window_end": "2013-10-09"})
    other = SimpleNamespace(extra={"reason": "not ours"})
    events = {Asset("mlpipe://features"): [other], Asset(RETRAIN_URI): [SimpleNamespace(extra={"reason": "old"}), event]}
    assert retrain_request(events) == event.extra
    assert retrain_request({Asset("mlpipe://features"): [other]}) is None and retrain_request(None) is None
    from mlpipe_dagkit import with_retrain_request

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

    end = mlpipe_dagkit.spec().schedule.end  # the bundled dataset ends on 2013-12-31
    later = dt.datetime.combine(end + dt.timedelta(days=9), dt.time(), dt.timezone.utc)
    with pytest.raises(AirflowSkipException, match="past the spec's schedule end"):
        mlpipe_dagkit.skip_past_schedule_end(SimpleNamespace(run_type="scheduled"), later, extra_days=8)
    mlpipe_dagkit.skip_past_schedule_end(SimpleNamespace(run_type="scheduled"), later - dt.timedelta(days=1), 8)
    for run_type in ("manual", "asset_triggered", "backfill"):  # a UI trigger today creates its tasks
        mlpipe_dagkit.skip_past_schedule_end(SimpleNamespace(run_type=run_type), later, extra_days=8)


def test_building_an_operator_reads_no_spec(monkeypatch, tmp_path):
    """Operators do no work in ``__init__``: with no readable spec one still builds."""
    from mlpipe_operators import TensorFlowTrainOperator

    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "missing.yaml"))
    op = TensorFlowTrainOperator(task_id="t", job={}, queue="q", pool="p")
    assert (op.queue, op.pool, op.job) == ("q", "p", {})
