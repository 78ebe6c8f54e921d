"""Faults a production deployment meets, injected into the distributed topology
(scripts/cluster.py: CeleryExecutor, Postgres, Redis, an MLflow tracking server):

- two manual train runs at once move the champion once, and both ledger entries agree;
- the process running a training task is killed with SIGKILL mid-fit, and the MLflow
  server is stopped while ``evaluate`` runs and started again: the run completes with one
  ledger entry, the killed attempt leaves no model version, nothing is registered twice;
- a score backfill uses, for each day, the champion the ledger had in place for it (point
  in time), and fails with the documented message for a day before any eligible model.

The dataset is scaled down to keep the module within minutes: the first champion is
trained on days up to Jan 8 (holdout Jan 7-8) and the second through Jan 15 (holdout
Jan 14-15); the backfill covers Jan 9-14 between them, like October between a
January-September and a through-November champion.

Tests in this module run in order and share one cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest
from topology import drops, running, small_spec

pytestmark = pytest.mark.e2e

DAYS = [dt.date(2013, 1, d) for d in range(1, 16)]
FIRST_END, SECOND_END = dt.date(2013, 1, 9), dt.date(2013, 1, 16)  # window ends (exclusive)
SLOW = "hgb_slow"  # the variant whose training process is killed: a fit of several seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, alerts, cluster_script):
    work = tmp_path_factory.mktemp("faults")
    variants = {"logreg": {}, SLOW: {"like": "hgb_small", "max_iter": 600, "learning_rate": 0.03,
                                     "max_leaf_nodes": 31, "early_stopping": False}}
    spec = small_spec(work, drops(work, DAYS), variants, execution={"max_active_train_runs": 2})
    with running(work, "mlpipe_faults", 12, spec, alerts["url"], cluster_script.group_alive) as handle:
        handle.airflow("dags", "unpause", "ingest")
        handle.backfill("ingest", DAYS[0], DAYS[-1])
        assert handle.wait_runs("ingest", len(DAYS)) == ["success"] * len(DAYS)
        for dag_id in ("train", "score"):
            handle.airflow("dags", "unpause", dag_id)
        yield handle


def _train(cluster, end: dt.date, at: str, **conf) -> str:
    conf = {"window_start": str(DAYS[0]), "window_end": str(end), "holdout_days": 2, **conf}
    run_id = f"manual__{end}T{at}"
    cluster.airflow("dags", "trigger", "train", "--conf", json.dumps(conf), "--logical-date", f"{end}T{at}+00:00",
                    "--run-id", run_id)
    return run_id


def _entries(cluster):
    from mlpipe.ledger import entries

    return [e for e in entries(cluster.store()) if e.kind == "train"]


def test_two_train_runs_at_once_move_the_champion_once(cluster, alerts):
    runs = [_train(cluster, FIRST_END, at, variants=["logreg"]) for at in ("00:00:00", "00:00:01")]
    assert cluster.wait_runs("train", 2) == ["success", "success"]
    (a_start, a_end), (b_start, b_end) = cluster.query(
        "SELECT start_date, end_date FROM dag_run WHERE dag_id = 'train' AND run_type = 'manual' ORDER BY start_date")
    assert b_start < a_end, "the two runs did not overlap"
    first, second = _entries(cluster)
    assert {first.run_id, second.run_id} == set(runs)
    assert (first.moved, first.champion_before) == (True, None)
    # the second committed after the first and decided against the champion it moved
    assert (second.moved, second.champion_before, second.champion_after) == (False, first.champion_after,
                                                                             first.champion_after)
    assert second.champion_metrics is not None
    assert str(cluster.mlflow().get_model_version_by_alias("flights", "champion").version) == first.champion_after
    assert len([a for a in alerts["received"] if a["kind"] == "promotion"]) == 1


def _running_try(cluster, run_id: str, variant: str, timeout: float = 300) -> int:
    """The pid of the variant's first training try once its fit has started (its MLflow
    run exists: the fit follows at once)."""
    deadline, client = time.time() + timeout, cluster.mlflow()
    experiment = client.get_experiment_by_name("flights").experiment_id
    while time.time() < deadline:
        started = client.search_runs([experiment], f"tags.`airflow.run_id` = '{run_id}' and "
                                                   f"tags.`mlpipe.variant` = '{variant}'")
        rows = started and cluster.query(
            "SELECT pid FROM task_instance WHERE dag_id = 'train' AND run_id = %s AND task_id = %s AND map_index = %s "
            "AND state = 'running' AND try_number = 1", run_id, started[0].data.tags["airflow.task_id"],
            int(started[0].data.tags["airflow.map_index"]))
        if rows and rows[0][0]:
            return rows[0][0]
        time.sleep(0.2)
    raise AssertionError(f"{variant}'s training never started in {run_id}")


def _wait_state(cluster, run_id: str, task_id: str, state: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.query("SELECT 1 FROM task_instance WHERE dag_id = 'train' AND run_id = %s AND task_id = %s AND "
                         "state = %s", run_id, task_id, state):
            return
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} never {state}")


def test_a_killed_fit_and_an_mlflow_outage_during_evaluate_leave_one_decision(cluster, alerts):
    run_id = _train(cluster, SECOND_END, "00:00:00")
    os.kill(_running_try(cluster, run_id, SLOW), signal.SIGKILL)
    _wait_state(cluster, run_id, "evaluate", "running")
    cluster.service("stop", "mlflow")
    time.sleep(20)
    cluster.service("start", "mlflow")
    assert cluster.wait_runs("train", 3) == ["success"] * 3

    (tries,) = cluster.query("SELECT try_number FROM task_instance WHERE dag_id = 'train' AND run_id = %s AND "
                             "rendered_map_index = %s AND state = 'success'", run_id, SLOW)
    assert tries == (2,)  # the killed try failed and the retry succeeded
    (entry,) = [e for e in _entries(cluster) if e.run_id == run_id]
    assert len(_entries(cluster)) == 3
    client = cluster.mlflow()
    experiment = client.get_experiment_by_name("flights").experiment_id
    attempts = {r.data.tags["airflow.try_number"]: r for r in client.search_runs(
        [experiment], f"tags.`airflow.run_id` = '{run_id}' and tags.`mlpipe.variant` = '{SLOW}'")}
    assert sorted(attempts) == ["1", "2"]
    assert attempts["1"].info.status in ("KILLED", "FAILED")
    assert attempts["1"].data.tags["mlpipe.superseded_by"] == attempts["2"].info.run_id
    assert entry.candidates[SLOW]["run_id"] == attempts["2"].info.run_id
    versions = client.search_model_versions("name = 'flights'")
    by_run = [v.run_id for v in versions]
    assert attempts["1"].info.run_id not in by_run
    assert len(by_run) == len(set(by_run)), "a run registered two versions"
    ours = {c["version"] for c in entry.candidates.values()}
    assert ours == {str(v.version) for v in versions if v.run_id in {c["run_id"] for c in entry.candidates.values()}}
    assert len(versions) == 2 + len(ours)  # one per run of the first test, then this run's candidates
    # at most one alias move, and the ledger says which
    champion = str(client.get_model_version_by_alias("flights", "champion").version)
    assert champion == entry.champion_after
    promotions = [a for a in alerts["received"] if a["kind"] == "promotion" and a.get("run_id") == run_id]
    assert len(promotions) == (1 if entry.moved else 0)
    assert entry.moved, f"the second champion is needed by the next test: {entry.reason}"


def test_a_score_backfill_uses_each_days_champion_and_refuses_a_day_before_any(cluster, alerts):
    first, second = [e for e in _entries(cluster) if e.moved]
    days = [dt.date(2013, 1, d) for d in range(9, 15)]
    cluster.backfill("score", days[0], days[-1])
    assert cluster.wait_runs("score", len(days)) == ["success"] * len(days)
    store = cluster.store()
    used = {day: set(store.read("predictions", day)["model_version"]) for day in days}
    roles = {day: set(store.read("predictions", day)["model_role"]) for day in days}
    assert used == {**{d: {first.champion_after} for d in days[:-1]}, days[-1]: {second.champion_after}}
    assert set().union(*roles.values()) == {"point_in_time"}

    early = dt.date(2013, 1, 5)  # before the first champion's holdout: every model saw it
    cluster.backfill("score", early, early)
    assert sorted(cluster.wait_runs("score", len(days) + 1)) == ["failed"] + ["success"] * len(days)
    failure = [a for a in alerts["received"] if a["kind"] == "task_failure" and a["dag_id"] == "score"]
    assert failure and f"no model trained only on data before {early}" in failure[-1]["error"]
    assert not store.path("predictions", early).exists()
