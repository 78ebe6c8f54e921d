"""What the DAG factory asks for (in-process): schedule dates, GPU placement and training
slots from the spec it builds, the spec cache, the retrain request behind a run, skipped
runs past the end."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import mlpipe_dagkit  # noqa: E402

FLIGHTS = Path(__file__).resolve().parents[2] / "include/pipelines/flights.yaml"


def _spec(tmp_path, **sections):
    import yaml

    spec = yaml.safe_load(FLIGHTS.read_text())
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return mlpipe_dagkit.load(tmp_path / "spec.yaml")


def test_schedule_dates_follow_the_spec():
    dates = mlpipe_dagkit.schedule_dates(mlpipe_dagkit.load(FLIGHTS), extra_days=8)
    assert dates["start_date"] == dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
    assert dates["end_date"] == dt.datetime(2014, 1, 8, 23, 59, tzinfo=dt.timezone.utc)


def test_gpu_queue_and_pool_come_from_the_spec_when_the_dag_is_built(monkeypatch, tmp_path):
    from mlpipe_operators import SklearnTrainOperator, TorchTrainOperator

    spec = _spec(tmp_path, execution={"gpu_queue": "gpu_h100", "gpu_pool": "h100"})
    monkeypatch.delenv("MLPIPE_GPU_QUEUE", raising=False)
    monkeypatch.delenv("MLPIPE_GPU_POOL", raising=False)
    assert TorchTrainOperator.placement(spec) == {"queue": "gpu_h100", "pool": "h100"}
    assert SklearnTrainOperator.placement(spec) == {}
    monkeypatch.setenv("MLPIPE_GPU_QUEUE", "from_env")
    assert TorchTrainOperator.placement(spec)["queue"] == "from_env"


def test_training_slots_default_to_cores_per_task_and_can_be_configured(monkeypatch, tmp_path):
    flights = mlpipe_dagkit.load(FLIGHTS)
    monkeypatch.delenv("MLPIPE_TRAINING_SLOTS", raising=False)
    monkeypatch.setattr(mlpipe_dagkit.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "2")
    assert mlpipe_dagkit.training_slots(flights) == 4  # 8 cores, 2 threads per task
    monkeypatch.setenv("MLPIPE_TASK_CPUS", "16")
    assert mlpipe_dagkit.training_slots(flights) == 1  # never zero

    assert mlpipe_dagkit.training_slots(_spec(tmp_path, execution={"training_slots": 3})) == 3
    monkeypatch.setenv("MLPIPE_TRAINING_SLOTS", "5")
    assert mlpipe_dagkit.training_slots(flights) == 5


def test_the_spec_cache_follows_the_file(tmp_path):
    """Keyed by path and modification time: an edited spec is read again, and two paths are two specs."""
    import os

    first = _spec(tmp_path, training={"holdout_days": 5})
    assert mlpipe_dagkit.load(tmp_path / "spec.yaml") is first
    edited = (tmp_path / "spec.yaml").read_text().replace("holdout_days: 5", "holdout_days: 6")
    (tmp_path / "spec.yaml").write_text(edited)
    os.utime(tmp_path / "spec.yaml", ns=(1, 10**18))
    assert mlpipe_dagkit.load(tmp_path / "spec.yaml").training.holdout_days == 6
    assert mlpipe_dagkit.load(FLIGHTS).training.holdout_days == 28


def test_a_retrain_request_is_read_from_the_triggering_asset_event_and_tags_the_run():
    from types import SimpleNamespace

    from airflow.sdk import Asset

    from mlpipe.records import Job, Window
    from mlpipe_dagkit import asset_uri, retrain_request, run_tags

    uri = asset_uri(mlpipe_dagkit.load(FLIGHTS), "retrain-request")
    assert uri == "mlpipe://flights/retrain-request"
    event = SimpleNamespace(extra={"reason": "dataset drift on 3 consecutive days", "window_end": "2013-10-09"})
    other = SimpleNamespace(extra={"reason": "not ours"})
    events = {Asset("mlpipe://flights/features"): [other], Asset("mlpipe://bikes/retrain-request"): [other],
              Asset(uri): [SimpleNamespace(extra={"reason": "old"}), event]}
    assert retrain_request(events, uri) == event.extra
    assert retrain_request({Asset("mlpipe://bikes/retrain-request"): [other]}, uri) is None  # another pipeline's
    assert retrain_request(None, uri) is None
    from mlpipe_dagkit import with_retrain_request

    params = {"window_end": None, "dry_run": False}
    expected = {**params, "window_end": "2013-10-09", "trigger": event.extra["reason"]}
    assert with_retrain_request(params, events, uri) == expected
    assert with_retrain_request({**params, "window_end": "2013-09-01"}, events, uri)["window_end"] == "2013-09-01"
    assert with_retrain_request(params, None, uri) == params
    dag_run = SimpleNamespace(dag_id="flights__train", run_id="r1", run_type="asset_triggered")
    window = Window(*(dt.date(2013, 1, d) for d in (1, 20, 31)))
    job = Job("hgb", "sklearn", window, "live", True, trigger=event.extra["reason"])
    assert run_tags(dag_run, job)["mlpipe.trigger"] == event.extra["reason"]
    assert "mlpipe.trigger" not in run_tags(dag_run, Job("hgb", "sklearn", window, "live", True))


def test_only_scheduled_runs_past_the_schedule_end_are_skipped():
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowSkipException

    spec = mlpipe_dagkit.load(FLIGHTS)
    end = spec.schedule.end  # the bundled dataset ends on 2013-12-31
    later = dt.datetime.combine(end + dt.timedelta(days=9), dt.time(), dt.timezone.utc)
    with pytest.raises(AirflowSkipException, match="past the spec's schedule end"):
        mlpipe_dagkit.skip_past_schedule_end(spec, SimpleNamespace(run_type="scheduled"), later, extra_days=8)
    mlpipe_dagkit.skip_past_schedule_end(spec, SimpleNamespace(run_type="scheduled"), later - dt.timedelta(days=1), 8)
    for run_type in ("manual", "asset_triggered", "backfill"):  # a UI trigger today creates its tasks
        mlpipe_dagkit.skip_past_schedule_end(spec, SimpleNamespace(run_type=run_type), later, extra_days=8)


def test_building_an_operator_reads_no_spec(monkeypatch, tmp_path):
    """Operators do no work in ``__init__``: with no readable spec one still builds."""
    from mlpipe_operators import TensorFlowTrainOperator

    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "missing.yaml"))
    op = TensorFlowTrainOperator(task_id="t", job={}, queue="q", pool="p")
    assert (op.queue, op.pool, op.job) == ("q", "p", {})


def test_a_pipeline_queue_routes_every_task_but_gpu_training(tmp_path):
    """``execution.queue``: a Celery worker started on that queue serves that pipeline alone."""
    from mlpipe_factory import ingest, train

    spec = _spec(tmp_path, execution={"queue": "team_a"})
    built = train.build(str(tmp_path / "spec.yaml"), spec)
    queues = {t.task_id: t.queue for t in built.tasks}
    assert queues.pop("train_torch") == queues.pop("train_tensorflow") == "gpu"
    assert set(queues.values()) == {"team_a"}
    assert {t.queue for t in ingest.build(str(FLIGHTS), mlpipe_dagkit.load(FLIGHTS)).tasks} == {"default"}
