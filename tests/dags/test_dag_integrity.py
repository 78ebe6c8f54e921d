"""DAG integrity: the DAG files import cleanly, stay light at parse time, and carry the
settings the project relies on (retries, tags, mapped training, typed Params, queues)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ["torch", "tensorflow", "mlflow", "great_expectations", "evidently", "sklearn", "pandas", "pyarrow"]


@pytest.fixture(scope="module")
def dagbag():
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"ingest", "train", "score", "monitor", "rollback"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(path):
    probe = (
        "import importlib.util, json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'plugins')!r}]\n"
        f"spec = importlib.util.spec_from_file_location('probe', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_task_retries_and_every_dag_is_tagged(dagbag):
    for dag in dagbag.dags.values():
        assert "mlpipe" in dag.tags and len(dag.tags) >= 2, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id}"


def test_every_task_alerts_on_failure_and_has_a_timeout(dagbag):
    from mlpipe_alerts import FailureNotifier

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            name = f"{dag.dag_id}.{task.task_id}"
            assert any(isinstance(c, FailureNotifier) for c in task.on_failure_callback or []), name
            assert task.execution_timeout is not None and task.execution_timeout.total_seconds() > 0, name
    train = dagbag.dags["train"]
    assert train.get_task("train_sklearn").execution_timeout.total_seconds() == 120 * 60
    assert train.get_task("evaluate").execution_timeout.total_seconds() == 60 * 60


def test_schedules_come_from_the_spec(dagbag):
    ingest = dagbag.dags["ingest"]
    assert ingest.start_date.date().isoformat() == "2013-01-01"
    assert ingest.end_date.date().isoformat() == "2013-12-31"
    assert ingest.catchup is False
    # no end_date on train: Airflow creates no task of a run after it, manual runs included
    assert dagbag.dags["train"].end_date is None


def test_train_maps_variants_per_backend_and_has_typed_params(dagbag):
    train = dagbag.dags["train"]
    for family in ("sklearn", "torch", "tensorflow"):
        task = train.get_task(f"train_{family}")
        assert type(task).__name__.endswith("MappedOperator")
        # all selects: every variant is ready at once, so the plan's order (not a race) decides
        assert task.upstream_task_ids == {"select_sklearn", "select_torch", "select_tensorflow"}
    # scheduled slowest first across backends; a strategy in partial() must survive the
    # scheduler's round trip (Airflow 3.3 stores a strategy object there as its repr)
    from airflow import plugins_manager
    from airflow.serialization.serialized_objects import DagSerialization

    import mlpipe_dagkit

    restored = DagSerialization.from_dict(DagSerialization.to_dict(train))
    registered = set(plugins_manager.get_priority_weight_strategy_plugins().values())
    for family in ("sklearn", "torch", "tensorflow"):
        rule = type(restored.get_task(f"train_{family}").weight_rule)
        # the scheduler's copy weighs with the strategy the plugin registered (not a default rule)
        assert rule in registered and rule.__name__ == "PlannedOrder", rule
    assert train.max_active_tasks == mlpipe_dagkit.training_slots()  # one training task per core
    trained = {"train_sklearn", "train_torch", "train_tensorflow"}
    # a failed variant does not stop the evaluation (collect runs when all are done); a failed plan does
    assert train.get_task("collect").upstream_task_ids == trained
    assert train.get_task("collect").trigger_rule == "all_done"
    assert train.get_task("ensemble").upstream_task_ids == {"collect", "plan"}
    assert train.get_task("evaluate").upstream_task_ids == {"collect", "ensemble", "plan"}
    assert train.get_task("ensemble").trigger_rule == train.get_task("evaluate").trigger_rule == "all_success"
    params = train.params
    assert set(params.keys()) == {"window_start", "window_end", "holdout_days", "variants", "dry_run",
                                  "promote_in_backfill"}
    assert params.get_param("dry_run").schema["type"] == "boolean"
    assert params["promote_in_backfill"] is False  # backfills never move the champion by default
    assert params.get_param("window_start").schema["format"] == "date"
    names = [v.name for v in mlpipe_dagkit.spec().variants]
    variants = params.get_param("variants").schema
    assert variants["examples"] == names and variants["items"]["enum"] == names  # a pick list, validated
    for name in params:
        assert params.get_param(name).description, name


def test_train_params_refuse_a_bad_date_and_an_unknown_variant(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags["train"].params
    for bad in ({"window_start": "2013-02-30"}, {"window_end": "yesterday"}, {"variants": ["nope"]},
                {"variants": ["logreg", "logreg"]}, {"holdout_days": 0}):
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params).update(bad)  # what the trigger form and the REST API check
    good = copy.deepcopy(params)
    good.update({"window_start": "2013-02-01", "variants": ["logreg"]})
    assert good.validate()["variants"] == ["logreg"]


def test_every_dag_and_task_has_docs_for_the_ui(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 80, dag.dag_id
        for task in dag.tasks:
            assert task.doc_md, f"{dag.dag_id}.{task.task_id}"


def test_rollback_is_manual_with_a_validated_version_param(dagbag):
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    rollback = dagbag.dags["rollback"]
    assert rollback.timetable.can_be_scheduled is False  # manual runs only
    assert rollback.params["version"] == "previous"
    schema = rollback.params.get_param("version").schema
    for good in ("previous", "3", "v12"):
        ParamsDict({"version": Param(good, **schema)}).validate()
    for bad in ("latest", "", "3.1"):
        with pytest.raises(ParamValidationError):
            ParamsDict({"version": Param(bad, **schema)}).validate()


def test_features_task_publishes_the_asset(dagbag):
    task = dagbag.dags["ingest"].get_task("build_features")
    assert [o.uri.rstrip("/") for o in task.outlets] == ["mlpipe://features"]


def test_monitor_waits_for_the_scores_and_only_a_due_retrain_emits_the_request(dagbag):
    monitor = dagbag.dags["monitor"]
    assert monitor.get_task("check").upstream_task_ids == {"wait_for_scores"}
    request = monitor.get_task("request_retrain")
    assert [o.uri.rstrip("/") for o in request.outlets] == ["mlpipe://retrain-request"]
    assert request.upstream_task_ids == {"retrain_due", "check"}
    assert all(not t.outlets for t in monitor.tasks if t.task_id != "request_retrain")


def test_train_runs_on_its_cron_or_a_retrain_request(dagbag):
    timetable = dagbag.dags["train"].timetable
    assert "retrain-request" in str(timetable.asset_condition)
    assert timetable.can_be_scheduled  # the cron part still runs weekly


def test_every_backend_names_an_operator_the_plugins_define(dagbag):  # dagbag: plugins on sys.path
    import mlpipe_operators
    from mlpipe.backends import BACKENDS

    for name, entry in BACKENDS.items():
        assert mlpipe_operators.operator_named(entry.operator, entry.family), name
    with pytest.raises(ValueError, match="names operator 'Nope', which mlpipe_operators does not define"):
        mlpipe_operators.operator_named("Nope", "toy")


def test_gpu_backends_run_on_the_gpu_queue_and_pool(dagbag):
    train = dagbag.dags["train"]
    assert (train.get_task("train_torch").queue, train.get_task("train_torch").pool) == ("gpu", "gpu")
    assert (train.get_task("train_tensorflow").queue, train.get_task("train_tensorflow").pool) == ("gpu", "gpu")
    assert train.get_task("train_sklearn").pool == "default_pool"


def test_gpu_queue_and_pool_are_configurable():
    probe = (
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT / 'plugins')!r}]\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"t = DagBag({str(ROOT / 'dags')!r}).dags['train']\n"
        "print(t.get_task('train_torch').queue, t.get_task('train_tensorflow').pool)\n"
    )
    env = {**os.environ, "MLPIPE_GPU_QUEUE": "cuda_a100", "MLPIPE_GPU_POOL": "a100_slots"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "cuda_a100 a100_slots"
