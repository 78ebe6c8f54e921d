"""End to end through the distributed topology as processes (scripts/cluster.py): a
CeleryExecutor Airflow on Postgres and Redis, a `default` and a `gpu` Celery worker, and
an MLflow tracking server. An ingest backfill is created while the scheduler runs, then
one train run and one score run; the metadata DB says where each task ran and the MLflow
server holds what they logged. Then days with an injected shift go through the monitor
DAG: sustained drift asks for exactly one retrain, which the scheduler starts from the
asset event; drift inside the cooldown and a backfill ask for none.

Tests in this module run in order and share one cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from pathlib import Path

import pytest
from topology import ROOT, drops, running, small_spec

pytestmark = pytest.mark.e2e

FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 1, 8)
BAD_DAY = dt.date(2013, 1, 9)
NEURAL = {"mlp_torch_small", "mlp_tf"}


def _spec(work: Path) -> Path:
    days = [FIRST + dt.timedelta(days=i) for i in range((BAD_DAY - FIRST).days + 1)]
    variants = {"hgb_small": {}, "logreg": {}, "mlp_torch_small": {"max_epochs": 3}, "mlp_tf": {"max_epochs": 3, "hidden": [32]}}
    # columns stable from day to day (weather and late rates move daily); one drifted column is
    # dataset drift, three such days in a row ask for a retrain
    monitoring = {"columns": ["distance", "carrier", "origin"], "drift_share": 0.3, "label_delay_days": 1,
                  "tolerance": 1.0, "retrain": {"drift_days": 3, "cooldown_days": 7, "min_new_labelled_rows": 0}}
    return small_spec(work, drops(work, days, bad_days=(BAD_DAY,)), variants, monitoring=monitoring)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, alerts, cluster_script):
    work = tmp_path_factory.mktemp("cluster")
    with running(work, "mlpipe_e2e", 13, _spec(work), alerts["url"], cluster_script.group_alive) as handle:
        yield handle


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
    assert {d["dag_id"] for d in json.loads(dags.read())["dags"]} >= {"ingest", "train", "score"}


def sent(alerts, kind: str) -> list[dict]:
    return [a for a in alerts["received"] if a["kind"] == kind]


def test_backfill_train_and_score_run_on_their_queues(cluster, alerts):
    for dag_id in ("ingest", "train", "score"):
        cluster.airflow("dags", "unpause", dag_id)
    assert cluster.query("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'")[0][0] == 1
    # created while the scheduler runs (Postgres allows it; SQLite does not)
    cluster.airflow("backfill", "create", "--dag-id", "ingest", "--from-date", str(FIRST), "--to-date", str(BAD_DAY))
    days = (BAD_DAY - FIRST).days + 1
    assert sorted(cluster.wait_runs("ingest", days)) == ["failed"] + ["success"] * (days - 1)
    (validation,) = sent(alerts, "validation_failed")  # the bad day, once
    assert validation["day"] == str(BAD_DAY) and validation["report"].endswith(f"{BAD_DAY}.json")
    assert {"column": "distance", "rule": "expect_column_values_to_be_between"}.items() <= \
        validation["failures"][0].items()
    assert any(a["task_id"] == "validate" for a in sent(alerts, "task_failure"))

    end = LAST + dt.timedelta(days=1)
    conf = {"window_start": str(FIRST), "window_end": str(end), "holdout_days": 2}
    cluster.airflow("dags", "trigger", "train", "--conf", json.dumps(conf), "--logical-date", f"{end}T00:00:00+00:00")
    assert cluster.wait_runs("train", 1) == ["success"]
    (promotion,) = sent(alerts, "promotion")  # the first champion
    assert promotion["from_version"] is None and promotion["to_version"]
    cluster.airflow("backfill", "create", "--dag-id", "score", "--from-date", str(LAST), "--to-date", str(LAST))
    assert cluster.wait_runs("score", 1) == ["success"]

    host = socket.gethostname()
    everything = cluster.query("SELECT ti.dag_id, ti.task_id, ti.map_index, ti.state, ti.queue, ti.hostname, "
                       "ti.rendered_map_index, dr.data_interval_start::date FROM task_instance ti JOIN dag_run dr "
                       "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id")
    bad = {(t, state) for d, t, _, state, *_, day in everything if d == "ingest" and day == BAD_DAY}
    assert bad == {("extract", "success"), ("validate", "failed"), ("build_features", "upstream_failed")}
    tis = [row[:7] for row in everything if not (row[0] == "ingest" and row[7] == BAD_DAY)]
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


DRIFTED = [dt.date(2013, 1, d) for d in (16, 17, 18, 19)]  # past the first train's cooldown; none scored on 15
BACKFILLED = [dt.date(2013, 1, d) for d in (27, 28, 29)]


def _shifted_day(cluster, day: dt.date) -> None:
    """Day ``day`` as a copy of the last scored day with distance moved by ~3 standard deviations."""
    from mlpipe.features import PARTITION_DATE

    store = cluster.store()
    features, predictions = store.read("features", LAST), store.read("predictions", LAST)
    features["distance"] = features["distance"] + 2100.0
    store.write("features", day, features.assign(**{PARTITION_DATE: day}))
    store.write("predictions", day, predictions.assign(**{PARTITION_DATE: day}))


def _monitor(cluster, day: dt.date) -> dict:
    before = len(cluster.query("SELECT 1 FROM dag_run WHERE dag_id = 'monitor' AND run_type <> 'scheduled'"))
    cluster.airflow("dags", "trigger", "monitor", "--conf", json.dumps({"day": str(day)}))
    assert cluster.wait_runs("monitor", before + 1) == ["success"] * (before + 1)
    return json.loads(cluster.store().report_path("drift", day).read_text())


def test_sustained_drift_asks_for_one_retrain_and_the_cooldown_holds_the_next(cluster):
    for day in [*DRIFTED, *BACKFILLED]:
        _shifted_day(cluster, day)
    cluster.airflow("dags", "unpause", "monitor")
    first, second = _monitor(cluster, DRIFTED[0]), _monitor(cluster, DRIFTED[1])
    assert first["drifted_columns"] == ["distance"] and first["decision"]["action"] == "none"
    assert second["decision"]["drift_streak"] == 2 and second["decision"]["action"] == "none"
    third = _monitor(cluster, DRIFTED[2])
    assert third["decision"]["action"] == "trigger", third["decision"]
    runs = cluster.wait_runs("train", 2)  # the manual run of the first test, and the one the request started
    assert runs == ["success", "success"]
    assert cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'train' AND run_type = 'asset_triggered'")[0][0] == 1
    fourth = _monitor(cluster, DRIFTED[3])
    assert fourth["decision"]["action"] == "blocked" and "cooldown" in fourth["decision"]["reason"]
    time.sleep(10)  # a second request would have created a run by now
    assert cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'train' AND run_type <> 'scheduled'")[0][0] == 2

    from mlpipe.ledger import entries

    retrain = entries(cluster.store())[-1]
    assert retrain.kind == "train" and retrain.trigger.startswith("dataset drift on 3 consecutive days (distance)")
    assert retrain.window.end == DRIFTED[2] + dt.timedelta(days=1)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("flights").experiment_id
    tagged = client.search_runs([experiment], "tags.`mlpipe.trigger` LIKE 'dataset drift%'")
    assert {r.data.tags.get("mlpipe.variant") for r in tagged} >= {"hgb_small", "logreg", *NEURAL, "ensemble"}


def test_a_monitor_backfill_over_drifted_days_records_would_trigger_and_starts_nothing(cluster):
    before = len(cluster.query("SELECT 1 FROM dag_run WHERE dag_id = 'monitor' AND run_type <> 'scheduled'"))
    cluster.airflow("backfill", "create", "--dag-id", "monitor", "--from-date", str(BACKFILLED[0]),
            "--to-date", str(BACKFILLED[-1]))
    assert set(cluster.wait_runs("monitor", before + len(BACKFILLED))) == {"success"}
    decisions = [json.loads(cluster.store().report_path("drift", d).read_text())["decision"] for d in BACKFILLED]
    assert [d["action"] for d in decisions] == ["none", "none", "would-trigger"]
    time.sleep(10)
    assert cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'train' AND run_type <> 'scheduled'")[0][0] == 2


def _token(base: str, user: str, password: str) -> str:
    import urllib.request

    request = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": user, "password": password})
                                     .encode(), headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["access_token"]


def test_a_viewer_cannot_trigger_train_and_an_operator_can(cluster):
    import urllib.error
    import urllib.request

    base = f"http://localhost:{cluster.env['AIRFLOW__API__PORT']}"
    logins = json.loads((cluster.state / "logins.json").read_text())
    body = json.dumps({"logical_date": None, "conf": {"dry_run": True}}).encode()

    def trigger(user: str):
        headers = {"Authorization": f"Bearer {_token(base, user, logins[user])}", "Content-Type": "application/json"}
        request = urllib.request.Request(f"{base}/api/v2/dags/train/dagRuns", data=body, headers=headers)
        return urllib.request.urlopen(request, timeout=30)

    with pytest.raises(urllib.error.HTTPError) as refused:
        trigger("viewer")
    assert refused.value.code == 403
    viewer_runs = urllib.request.urlopen(urllib.request.Request(
        f"{base}/api/v2/dags/train/dagRuns", headers={"Authorization": f"Bearer {_token(base, 'viewer', logins['viewer'])}"}),
        timeout=30)
    assert json.loads(viewer_runs.read())["total_entries"] >= 2  # a viewer sees the runs
    assert trigger("operator").status == 200
