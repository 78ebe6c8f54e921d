"""Faults a production deployment meets, injected into the distributed topology
(scripts/cluster.py: CeleryExecutor, Postgres, Redis, an MLflow tracking server). Every
test runs through the scheduler and the Celery workers of the session's shared cluster
(tests/e2e/conftest.py):

- two manual train runs at once move the champion once, and both ledger entries agree;
- the process running a training task is killed with SIGKILL mid-fit, and the MLflow
  server is stopped while ``evaluate`` runs and started again: the run completes with one
  ledger entry, the killed attempt ends `KILLED` with no model version, nothing is
  registered twice;
- a score backfill uses, for each day, the champion the ledger had in place for it (point
  in time), and fails with the documented message for a day before any eligible model;
- a champion whose artifact changed since it was registered is refused at load: a score
  run scores with the previous champion, marks the rows, and alerts.

The dataset is scaled down to keep the module within minutes: the first champion is
trained on days up to Jan 8 (holdout Jan 7-8) and the second through Jan 15 (holdout
Jan 14-15); the backfill covers Jan 9-14 between them, like October between a
January-September and a through-November champion.

Tests in this module run in order. Other modules may have trained and promoted on the
shared cluster before: each test reads the state it starts from (the champion, the
ledger, runs and alerts so far) and asserts on what its own runs changed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time
from pathlib import Path

import pytest
from topology import DAYS, ROLLBACK, SCORE, SLOW, STUMP, TRAIN

pytestmark = pytest.mark.e2e

FIRST_END, SECOND_END = dt.date(2013, 1, 9), dt.date(2013, 1, 16)  # window ends (exclusive)
PAIR = [f"manual__{FIRST_END}T00:00:0{s}" for s in (0, 1)]  # the two runs at once
SECOND = f"manual__{SECOND_END}T00:00:00"  # the run whose fit is killed: the second champion


def _train(cluster, end: dt.date, at: str, **conf) -> str:
    conf = {"window_start": str(DAYS[0]), "window_end": str(end), "holdout_days": 2, **conf}
    run_id = f"manual__{end}T{at}"
    cluster.trigger(TRAIN, conf, run_id, f"{end}T{at}+00:00")
    return run_id


def _entries(cluster):
    from mlpipe.ledger import entries

    return [e for e in entries(cluster.store()) if e.kind == "train"]


def _entry(cluster, run_id: str):
    (entry,) = [e for e in _entries(cluster) if e.run_id == run_id]
    return entry


def _champion(cluster) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(cluster.mlflow().get_model_version_by_alias("flights", "champion").version)
    except MlflowException:
        return None


def _weak_champion(cluster) -> str:
    """Make a one-split stump the champion, whatever champion other modules left: a stump
    version trained on the first window (by another module's train run, or trained here,
    which promotes it on a fresh registry), rolled back to unless it is the champion."""
    stumps = [e.candidates[STUMP]["version"] for e in _entries(cluster) if e.window and e.window.end == FIRST_END
              and (e.candidates or {}).get(STUMP, {}).get("version")]
    if not stumps:
        before = cluster.runs(TRAIN)
        stump = _train(cluster, FIRST_END, "00:00:02", variants=[STUMP])
        assert cluster.wait_runs(TRAIN, 1, since=before) == ["success"]
        stumps = [_entry(cluster, stump).candidates[STUMP]["version"]]
    if _champion(cluster) != stumps[-1]:
        cluster.unpause(ROLLBACK)
        rollbacks = cluster.runs(ROLLBACK)
        cluster.trigger(ROLLBACK, {"version": stumps[-1], "reason": "test_faults: a weak champion"})
        assert cluster.wait_runs(ROLLBACK, 1, since=rollbacks) == ["success"]
    assert _champion(cluster) == stumps[-1]
    return stumps[-1]


def test_two_train_runs_at_once_move_the_champion_once(cluster, alerts):
    """Through the scheduler: two train runs in flight at once, against a champion both beat."""
    stump = _weak_champion(cluster)
    mark, before = len(alerts["received"]), cluster.runs(TRAIN)
    runs = [_train(cluster, FIRST_END, at, variants=["logreg"]) for at in ("00:00:00", "00:00:01")]
    assert runs == PAIR
    assert cluster.wait_runs(TRAIN, 2, since=before) == ["success", "success"]
    (a_start, a_end), (b_start, b_end) = cluster.query(
        "SELECT start_date, end_date FROM dag_run WHERE dag_id = %s AND run_id = ANY(%s) ORDER BY start_date", TRAIN,
        runs)
    assert b_start < a_end, "the two runs did not overlap"
    first, second = sorted((_entry(cluster, run) for run in runs), key=lambda e: e.seq)
    assert (first.moved, first.champion_before) == (True, stump)
    # the second committed after the first and decided against the champion it moved
    assert (second.moved, second.champion_before, second.champion_after) == (False, first.champion_after,
                                                                             first.champion_after)
    assert second.champion_metrics is not None
    assert _champion(cluster) == first.champion_after
    assert [(a["run_id"], a["to_version"]) for a in alerts["received"][mark:] if a["kind"] == "promotion"] == [
        (first.run_id, first.champion_after)]


def _running_try(cluster, run_id: str, variant: str, timeout: float = 300) -> int:
    """The pid of the variant's first training try once its fit has started (its MLflow
    run exists: the fit follows at once)."""
    deadline, client = time.time() + timeout, cluster.mlflow()
    experiment = client.get_experiment_by_name("flights").experiment_id
    while time.time() < deadline:
        started = client.search_runs([experiment], f"tags.`airflow.run_id` = '{run_id}' and "
                                                   f"tags.`mlpipe.variant` = '{variant}'")
        rows = started and cluster.query(
            "SELECT pid FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = %s "
            "AND state = 'running' AND try_number = 1", TRAIN, run_id, started[0].data.tags["airflow.task_id"],
            int(started[0].data.tags["airflow.map_index"]))
        if rows and rows[0][0]:
            return rows[0][0]
        time.sleep(0.2)
    raise AssertionError(f"{variant}'s training never started in {run_id}")


def _wait_state(cluster, run_id: str, task_id: str, state: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.query("SELECT 1 FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s AND "
                         "state = %s", TRAIN, run_id, task_id, state):
            return
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} never {state}")


def test_a_killed_fit_and_an_mlflow_outage_during_evaluate_leave_one_decision(cluster, alerts):
    """Through the scheduler: SIGKILL to a Celery task's process, a tracking-server outage."""
    client = cluster.mlflow()
    mark, before, seen = len(alerts["received"]), cluster.runs(TRAIN), len(_entries(cluster))
    versions_before = len(client.search_model_versions("name = 'flights'"))
    run_id = _train(cluster, SECOND_END, "00:00:00", variants=["logreg", SLOW])
    assert run_id == SECOND
    os.kill(_running_try(cluster, run_id, SLOW), signal.SIGKILL)
    _wait_state(cluster, run_id, "evaluate", "running")
    cluster.service("stop", "mlflow")
    try:
        time.sleep(20)
    finally:
        cluster.service("start", "mlflow")
    assert cluster.wait_runs(TRAIN, 1, since=before) == ["success"]

    (tries,) = cluster.query("SELECT try_number FROM task_instance WHERE dag_id = %s AND run_id = %s AND "
                             "rendered_map_index = %s AND state = 'success'", TRAIN, run_id, SLOW)
    assert tries == (2,)  # the killed try failed and the retry succeeded
    entry = _entry(cluster, run_id)
    assert len(_entries(cluster)) == seen + 1
    experiment = client.get_experiment_by_name("flights").experiment_id
    attempts = {r.data.tags["airflow.try_number"]: r for r in client.search_runs(
        [experiment], f"tags.`airflow.run_id` = '{run_id}' and tags.`mlpipe.variant` = '{SLOW}'")}
    assert sorted(attempts) == ["1", "2"]
    assert attempts["1"].info.status == "KILLED"  # ended by the retry: a SIGKILLed process ends nothing
    assert attempts["1"].data.tags["mlpipe.superseded_by"] == attempts["2"].info.run_id
    assert entry.candidates[SLOW]["run_id"] == attempts["2"].info.run_id
    versions = client.search_model_versions("name = 'flights'")
    by_run = [v.run_id for v in versions]
    assert attempts["1"].info.run_id not in by_run
    assert len(by_run) == len(set(by_run)), "a run registered two versions"
    ours = {c["version"] for c in entry.candidates.values()}
    assert ours == {str(v.version) for v in versions if v.run_id in {c["run_id"] for c in entry.candidates.values()}}
    assert len(versions) == versions_before + len(ours)  # this run's candidates, the killed try's none
    # at most one alias move, and the ledger says which
    champion = str(client.get_model_version_by_alias("flights", "champion").version)
    assert champion == entry.champion_after
    promotions = [a for a in alerts["received"][mark:] if a["kind"] == "promotion" and a.get("run_id") == run_id]
    assert len(promotions) == (1 if entry.moved else 0)
    assert entry.moved, f"the second champion is needed by the next test: {entry.reason}"


def test_a_score_backfill_uses_each_days_champion_and_refuses_a_day_before_any(cluster, alerts):
    """Through the scheduler: two score backfills."""
    first = next(e for e in (_entry(cluster, run) for run in PAIR) if e.moved)
    second = _entry(cluster, SECOND)
    days = [dt.date(2013, 1, d) for d in range(9, 15)]
    mark, before = len(alerts["received"]), cluster.runs(SCORE)
    cluster.backfill(SCORE, days[0], days[-1])
    assert cluster.wait_runs(SCORE, len(days), since=before) == ["success"] * len(days)
    store = cluster.store()
    used = {day: set(store.read("predictions", day)["model_version"]) for day in days}
    roles = {day: set(store.read("predictions", day)["model_role"]) for day in days}
    assert used == {**{d: {first.champion_after} for d in days[:-1]}, days[-1]: {second.champion_after}}
    assert set().union(*roles.values()) == {"point_in_time"}

    early = dt.date(2013, 1, 5)  # before the first champion's holdout: every model saw it
    cluster.backfill(SCORE, early, early)
    assert cluster.wait_runs(SCORE, len(days) + 1, since=before) == ["success"] * len(days) + ["failed"]
    failure = [a for a in alerts["received"][mark:] if a["kind"] == "task_failure" and a["dag_id"] == SCORE]
    assert failure and f"no model trained only on data before {early}" in failure[-1]["error"]
    assert not store.path("predictions", early).exists()


TAMPER = "tampered-by-test_faults"  # a file added to a model's bundle: its hash no longer matches the ledger's


def _bundles(cluster, version: str) -> list[Path]:
    """The bundle directories of ``version``: in the tracking server's artifact store and
    in each worker's model cache (a copy downloaded earlier; every worker has its own)."""
    client = cluster.mlflow()
    run_id = client.get_model_version("flights", version).run_id
    uri = client.get_model_version_download_uri("flights", version)  # mlflow-artifacts:[//host]/<path>
    served = cluster.state / "mlflow-artifacts" / re.sub(r"^mlflow-artifacts:(//[^/]*)?/", "", uri)
    cached = [bundle for cache in cluster.state.glob("cache-*")
              for bundle in (cache / "model_cache").glob(f"*/flights/{version}-{run_id}/**/bundle")]
    return [*served.rglob("bundle"), *cached]


def test_a_champion_whose_artifact_changed_is_replaced_by_the_previous_one_and_alerts(cluster, alerts):
    """Through the scheduler: a live score run whose champion fails its hash check at load."""
    from mlpipe.ledger import previous_champion

    store, champion = cluster.store(), _champion(cluster)
    previous = previous_champion(store, champion)
    assert champion == _entry(cluster, SECOND).champion_after and previous == _entry(cluster, SECOND).champion_before
    day = dt.date(2013, 1, 15)
    mark, before = len(alerts["received"]), cluster.runs(SCORE)
    bundles = _bundles(cluster, champion)
    assert bundles, "no bundle directory of the champion found"
    try:
        for bundle in bundles:
            (bundle / TAMPER).write_text("changed after registration")
        # a live (manual) run whose data interval is the day
        cluster.api(f"/api/v2/dags/{SCORE}/dagRuns", {"logical_date": f"{day}T12:00:00Z",
                                                    "data_interval_start": f"{day}T00:00:00Z",
                                                    "data_interval_end": f"{day + dt.timedelta(days=1)}T00:00:00Z"})
        assert cluster.wait_runs(SCORE, 1, since=before) == ["success"]
    finally:  # other modules score with this champion
        for bundle in _bundles(cluster, champion):
            (bundle / TAMPER).unlink(missing_ok=True)
    rows = store.read("predictions", day)
    assert set(rows["model_role"]) == {"fallback"} and set(rows["model_version"]) == {previous}
    assert len(rows) == len(store.read("features", day))
    (alert,) = [a for a in alerts["received"][mark:] if a["kind"] == "fallback"]
    assert (alert["day"], alert["failed_version"], alert["version"]) == (str(day), champion, previous)
    assert "artifact changed since it was registered" in alert["error"]
