"""End to end through the distributed topology as processes (scripts/cluster.py): a
CeleryExecutor Airflow on Postgres and Redis, a `default` and a `gpu` Celery worker, and
an MLflow tracking server. Every test runs through the scheduler and the Celery workers
of the session's shared cluster (tests/e2e/conftest.py), whose fixture created an ingest
backfill while the scheduler ran. One train run and one score run follow; the metadata
DB says where each task ran and the MLflow server holds what they logged. Then days with
an injected shift go through the monitor DAG: sustained drift asks for exactly one
retrain, which the scheduler starts from the asset event; drift inside the cooldown and a
backfill ask for none.

Tests in this module run in order. Each reads what other modules left on the shared
cluster (champion, ledger, runs, alerts) and asserts on what its own runs changed.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from pathlib import Path

import pytest
from topology import BAD_DAY, DAYS, INGEST, MONITOR, NEURAL, ROOT, SCORE, TRAIN

pytestmark = pytest.mark.e2e

FIRST, LAST = DAYS[0], dt.date(2013, 1, 8)
TRAIN_RUN = "manual__cluster_2013-01-09"  # its own run id and logical date: test_faults trains on the same window


def test_api_needs_a_login(cluster):
    import urllib.error
    import urllib.request

    base = f"http://localhost:{cluster.env['AIRFLOW__API__PORT']}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/v2/dags", timeout=10)
    assert refused.value.code in (401, 403)
    password = (cluster.state / "admin-password").read_text().strip()
    request = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": "admin", "password": password})
                                     .encode(), headers={"Content-Type": "application/json"})
    token = json.loads(urllib.request.urlopen(request, timeout=30).read())["access_token"]
    dags = urllib.request.urlopen(urllib.request.Request(f"{base}/api/v2/dags",
                                                         headers={"Authorization": f"Bearer {token}"}), timeout=30)
    assert {d["dag_id"] for d in json.loads(dags.read())["dags"]} >= {INGEST, TRAIN, SCORE}


def sent(alerts, kind: str) -> list[dict]:
    return [a for a in alerts["received"] if a["kind"] == kind]


def test_the_ingest_backfill_fails_only_the_bad_day_and_alerts_once(cluster, alerts):
    """Through the scheduler: the fixture's ingest backfill (created while it ran)."""
    rows = cluster.query("SELECT ti.task_id, ti.state, dr.data_interval_start::date FROM task_instance ti JOIN dag_run dr "
                         "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.dag_id = %s AND "
                         "dr.run_id = ANY(%s)", INGEST, cluster.ingest_runs)
    assert {(t, state) for t, state, day in rows if day == BAD_DAY} == {
        ("extract", "success"), ("validate", "failed"), ("build_features", "upstream_failed")}
    assert {state for _, state, day in rows if day != BAD_DAY} == {"success"}
    assert {day for *_, day in rows} == {*DAYS, BAD_DAY}
    (validation,) = [a for a in sent(alerts, "validation_failed") if a["day"] == str(BAD_DAY)]  # once
    assert validation["report"].endswith(f"{BAD_DAY}.json")
    assert {"column": "distance", "rule": "expect_column_values_to_be_between"}.items() <= \
        validation["failures"][0].items()
    assert any(a["task_id"] == "validate" and a["dag_id"] == INGEST for a in sent(alerts, "task_failure"))


def test_the_data_lives_in_the_bucket_and_the_workers_share_no_directory(cluster, cluster_script):
    """Through the scheduler: the fixture's ingest wrote every partition, report and Data
    Docs page as objects on the S3 server (the drops it read are objects there too); the
    cluster has no data folder, each worker caches in its own folder, locks are advisory
    locks in PostgreSQL."""
    from mlpipe import report_index
    from mlpipe.storage import listing

    assert cluster.env["MLPIPE_DATA_ROOT"].startswith("s3://")
    assert cluster.env["MLPIPE_LOCK_URL"].startswith("postgresql")
    store = cluster.store()
    for layer in ("raw", "validated", "features"):
        assert listing(store.layer_dir(layer)) == [f"date={d}.parquet" for d in DAYS], layer
    assert listing(store.layer_dir("quarantine")) == [f"date={BAD_DAY}.parquet"]
    index = report_index.load(store)
    assert set(index) == set(report_index.SECTIONS) and {str(d) for d in (*DAYS, BAD_DAY)} <= set(index["day"])
    page = store.report_dir() / index["day"][str(DAYS[-1])]["data_docs"]
    assert str(page).startswith("s3://") and str(DAYS[-1]) in page.read_text()
    assert not (cluster.state / "data").exists()
    services = cluster_script.services(cluster.state, cluster.env)
    caches = [services[w][1]["MLPIPE_CACHE_DIR"] for w in ("worker-default", "worker-gpu")]
    assert len(set(caches)) == 2 and cluster.env["MLPIPE_CACHE_DIR"] not in caches


def test_train_and_score_run_on_their_queues(cluster, alerts):
    """Through the scheduler: torch and TensorFlow training on the `gpu` worker, the rest on
    the `default` one; an alert for the promotion this train run made, if it made one."""
    from mlpipe.ledger import entries

    mark, trains, scores = len(alerts["received"]), cluster.runs(TRAIN), cluster.runs(SCORE)
    end = LAST + dt.timedelta(days=1)
    conf = {"window_start": str(FIRST), "window_end": str(end), "holdout_days": 2}
    cluster.trigger(TRAIN, conf, TRAIN_RUN, f"{end}T06:00:00+00:00")
    assert cluster.wait_runs(TRAIN, 1, since=trains) == ["success"]
    (entry,) = [e for e in entries(cluster.store()) if e.run_id == TRAIN_RUN]
    promotions = [a for a in alerts["received"][mark:] if a["kind"] == "promotion"]
    # the first champion on a fresh cluster; after test_faults, whatever its champion's holdout says
    assert [(a["from_version"], a["to_version"]) for a in promotions] == \
        ([(entry.champion_before, entry.champion_after)] if entry.moved else [])
    assert entry.champion_before is not None or entry.moved
    cluster.backfill(SCORE, LAST, LAST)
    assert cluster.wait_runs(SCORE, 1, since=scores) == ["success"]
    # run ids repeat across DAGs (backfill__<date>): a run is its DAG and its id
    ours = [f"{INGEST} {r}" for r in cluster.ingest_runs] + [f"{TRAIN} {TRAIN_RUN}"] + \
        [f"{SCORE} {r}" for r in set(cluster.runs(SCORE)) - set(scores)]

    host = socket.gethostname()
    everything = cluster.query("SELECT ti.dag_id, ti.task_id, ti.map_index, ti.state, ti.queue, ti.hostname, "
                               "ti.rendered_map_index, dr.data_interval_start::date FROM task_instance ti JOIN dag_run "
                               "dr ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.dag_id || ' ' || dr.run_id = ANY(%s)",
                               ours)
    tis = [row[:7] for row in everything if not (row[0] == INGEST and row[7] == BAD_DAY)]
    assert tis and all(state == "success" for _, _, _, state, *_ in tis if state != "skipped")
    on_gpu = {(d, t, m) for d, t, m, _, queue, hostname, _ in tis if queue == "gpu" and hostname == f"{host}-gpu"}
    on_default = {(d, t, m) for d, t, m, _, queue, hostname, _ in tis
                  if queue == "default" and hostname == f"{host}-default"}
    assert on_gpu | on_default == {(d, t, m) for d, t, m, state, *_ in tis if state == "success"}
    neural = {(d, t, m) for d, t, m, state, _, _, label in tis if state == "success" and label in NEURAL}
    assert len(neural) == len(NEURAL) and neural <= on_gpu
    assert {t for _, t, _ in on_gpu} == {"train_torch", "train_tensorflow"}
    assert "train_sklearn" in {t for _, t, _ in on_default}


def test_the_mlflow_server_holds_runs_versions_aliases_and_artifacts(cluster):
    import urllib.error
    import urllib.request

    from mlflow.artifacts import list_artifacts
    from mlflow.tracking import MlflowClient

    uri = cluster.env["MLFLOW_TRACKING_URI"]
    assert uri.startswith("http://")
    with pytest.raises(urllib.error.HTTPError) as refused:  # the server wants a login
        urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("flights")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlpipe.step` = 'train'")
    assert {r.data.tags["mlpipe.variant"] for r in runs} >= {"hgb_small", "logreg", *NEURAL}
    versions = client.search_model_versions("name = 'flights'")
    assert len(versions) >= 5  # four variants and the ensemble
    champion = client.get_model_version_by_alias("flights", "champion")
    model_uri = client.get_model_version_download_uri("flights", champion.version)
    assert model_uri.startswith("mlflow-artifacts:")
    assert "MLmodel" in {Path(a.path).name for a in list_artifacts(artifact_uri=model_uri, tracking_uri=uri)}
    served = cluster.state / "mlflow-artifacts"
    assert any(served.rglob("MLmodel")), "the server's artifact store has no model"
    assert not (ROOT / "mlflow" / "artifacts" / experiment.experiment_id).exists()



def test_the_clusters_serving_process_answers_with_the_champion_from_the_data_root(cluster):
    """The `make cluster` serving process (a real uvicorn server): the champion from the
    MLflow server (basic auth), the online snapshot from the cluster's data root."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{cluster.env['MLPIPE_SERVING_PORT']}/v1/flights/predict"
    token = json.loads((cluster.state / "secrets.json").read_text())["serving_token"]
    rows = json.loads(cluster.store().read("raw", LAST).head(3).to_json(orient="records", date_format="iso"))
    champion = str(cluster.mlflow().get_model_version_by_alias("flights", "champion").version)
    request = urllib.request.Request(url, data=json.dumps(rows).encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    deadline = time.time() + 60  # the process polls the registry every second here
    while True:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        if body["model_version"] == champion or time.time() > deadline:
            break
        time.sleep(1)
    assert (body["model_version"], body["role"], len(body["predictions"])) == (champion, "champion", 3)
    assert all(0 <= p["score"] <= 1 for p in body["predictions"]) and dt.date.fromisoformat(body["as_of"]) >= FIRST
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(rows).encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=10)
    assert refused.value.code == 401

# past the cooldown of every train on the shared cluster (test_faults' last window ends Jan 16)
DRIFTED = [dt.date(2013, 1, d) for d in (21, 22, 23, 24)]  # nothing scored on Jan 20
BACKFILLED = [dt.date(2013, 1, 30), dt.date(2013, 1, 31), dt.date(2013, 2, 1)]  # past the retrain's cooldown


def _shifted_day(cluster, day: dt.date) -> None:
    """Day ``day`` as a copy of the last scored day with distance moved by ~3 standard deviations."""
    from mlpipe.features import PARTITION_DATE

    store = cluster.store()
    features, predictions = store.read("features", LAST), store.read("predictions", LAST)
    features["distance"] = features["distance"] + 2100.0
    store.write("features", day, features.assign(**{PARTITION_DATE: day}))
    store.write("predictions", day, predictions.assign(**{PARTITION_DATE: day}))


def _monitor(cluster, day: dt.date) -> dict:
    before = cluster.runs(MONITOR)
    cluster.trigger(MONITOR, {"day": str(day)})
    assert cluster.wait_runs(MONITOR, 1, since=before) == ["success"]
    return json.loads(cluster.store().report_path("drift", day).read_text())


def _asset_triggered(cluster) -> int:
    return cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = %s AND run_type = 'asset_triggered'", TRAIN)[0][0]


def test_sustained_drift_asks_for_one_retrain_and_the_cooldown_holds_the_next(cluster):
    """Through the scheduler: monitor runs, and the train run the asset event starts."""
    for day in [*DRIFTED, *BACKFILLED]:
        _shifted_day(cluster, day)
    cluster.unpause(MONITOR)
    trains, requested = cluster.runs(TRAIN), _asset_triggered(cluster)
    first, second = _monitor(cluster, DRIFTED[0]), _monitor(cluster, DRIFTED[1])
    assert first["drifted_columns"] == ["distance"] and first["decision"]["action"] == "none"
    assert second["decision"]["drift_streak"] == 2 and second["decision"]["action"] == "none"
    third = _monitor(cluster, DRIFTED[2])
    assert third["decision"]["action"] == "trigger", third["decision"]
    assert cluster.wait_runs(TRAIN, 1, since=trains) == ["success"]  # the one the request started
    assert _asset_triggered(cluster) == requested + 1
    fourth = _monitor(cluster, DRIFTED[3])
    assert fourth["decision"]["action"] == "blocked" and "cooldown" in fourth["decision"]["reason"]
    time.sleep(10)  # a second request would have created a run by now
    (retrain_run,) = set(cluster.runs(TRAIN)) - set(trains)

    from mlpipe.ledger import entries

    (retrain,) = [e for e in entries(cluster.store()) if e.run_id == retrain_run]
    assert retrain.kind == "train" and retrain.trigger.startswith("dataset drift on 3 consecutive days (distance)")
    assert retrain.window.end == DRIFTED[2] + dt.timedelta(days=1)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("flights").experiment_id
    tagged = client.search_runs([experiment], "tags.`mlpipe.trigger` LIKE 'dataset drift%'")
    assert {r.data.tags.get("mlpipe.variant") for r in tagged} >= {"hgb_small", "logreg", *NEURAL, "ensemble"}


def test_a_monitor_backfill_over_drifted_days_records_would_trigger_and_starts_nothing(cluster):
    """Through the scheduler: a monitor backfill."""
    before, trains = cluster.runs(MONITOR), cluster.runs(TRAIN)
    cluster.backfill(MONITOR, BACKFILLED[0], BACKFILLED[-1])
    assert cluster.wait_runs(MONITOR, len(BACKFILLED), since=before) == ["success"] * len(BACKFILLED)
    decisions = [json.loads(cluster.store().report_path("drift", d).read_text())["decision"] for d in BACKFILLED]
    assert [d["action"] for d in decisions] == ["none", "none", "would-trigger"]
    time.sleep(10)
    assert cluster.runs(TRAIN) == trains


def _token(base: str, user: str, password: str) -> str:
    import urllib.request

    request = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": user, "password": password})
                                     .encode(), headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["access_token"]


def test_a_viewer_cannot_trigger_train_and_an_operator_can(cluster):
    import urllib.error
    import urllib.request

    """Through the api-server and the scheduler: the operator's run goes through."""
    base = f"http://localhost:{cluster.env['AIRFLOW__API__PORT']}"
    logins = json.loads((cluster.state / "logins.json").read_text())
    trains = cluster.runs(TRAIN)
    conf = {"dry_run": True, "variants": ["logreg"], "window_start": str(FIRST),
            "window_end": str(LAST + dt.timedelta(days=1)), "holdout_days": 2}
    body = json.dumps({"logical_date": None, "conf": conf}).encode()

    def trigger(user: str):
        headers = {"Authorization": f"Bearer {_token(base, user, logins[user])}", "Content-Type": "application/json"}
        request = urllib.request.Request(f"{base}/api/v2/dags/{TRAIN}/dagRuns", data=body, headers=headers)
        return urllib.request.urlopen(request, timeout=30)

    with pytest.raises(urllib.error.HTTPError) as refused:
        trigger("viewer")
    assert refused.value.code == 403
    viewer_runs = urllib.request.urlopen(urllib.request.Request(
        f"{base}/api/v2/dags/{TRAIN}/dagRuns", headers={"Authorization": f"Bearer {_token(base, 'viewer', logins['viewer'])}"}),
        timeout=30)
    assert json.loads(viewer_runs.read())["total_entries"] >= 2  # a viewer sees the runs
    assert trigger("operator").status == 200
    # the dry run records a decision and moves nothing (and is over before another module's tests)
    assert cluster.wait_runs(TRAIN, 1, since=trains) == ["success"]
