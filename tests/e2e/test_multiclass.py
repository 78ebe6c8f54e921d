"""A multi-class pipeline end to end through Airflow: the bundled pizza spec (four kinds of
pizza) on two weeks of 2015. ``make demo``'s code path (scripts/demo.py: its own
scheduler, LocalExecutor and api-server on a fresh SQLite metadata DB and MLflow store)
ingests, trains, evaluates, promotes, scores and monitors; then the rollback DAG and a
live score run, each run by ``airflow dags test`` (in-process in that CLI process, no
scheduler), re-point the champion and score a day again with it. Checked from the metadata DB, the
ledger, the store and the MLflow registry.

A serving process (``python -m mlpipe.serving``, a real uvicorn server) then answers
requests for the pipeline's champion over HTTP and follows the rollback.

Tests in this module run in order and share one Airflow home.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from topology import ROOT, free_port

from mlpipe.pipelines import dag_id

pytestmark = pytest.mark.e2e

PIPELINE = "pizza"
CLASSES = ["chicken", "classic", "supreme", "veggie"]
FROM, TO, HOLDOUT = dt.date(2015, 1, 1), dt.date(2015, 1, 14), 5
HOLDOUT_DAYS = [TO - dt.timedelta(days=i) for i in range(HOLDOUT - 1, -1, -1)]
TRAIN, SCORE, ROLLBACK, SCORE_RANGE = (dag_id(PIPELINE, d) for d in ("train", "score", "rollback", "score_range"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The bundled pizza spec with two quick variants and their ensemble, and the
    environment `make demo` gives scripts/demo.py, in a fresh folder."""
    work = tmp_path_factory.mktemp("multiclass")
    spec = yaml.safe_load((ROOT / "include/pipelines/pizza.yaml").read_text())
    spec["variants"] = [{"name": "hgb", "backend": "sklearn_hgb", "params": {"max_iter": 60, "max_leaf_nodes": 15}},
                        {"name": "logreg", "backend": "sklearn_linear", "params": {"C": 1.0}}]
    (work / "pizza.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow"), "MLPIPE_DATA_ROOT": str(work / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow' / 'mlflow.db'}",
           "MLPIPE_ARTIFACTS": str(work / "mlflow" / "artifacts"), "MLPIPE_SPEC": str(work / "pizza.yaml"),
           "AIRFLOW__CORE__EXECUTOR": "mlpipe_executor.PreloadingLocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
           "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2", "MLPIPE_AIRFLOW_PORT": str(free_port())}
    (work / "mlflow").mkdir()
    return {"work": work, "env": env}


def _store(home):
    from mlpipe.storage import Store

    return Store(Path(home["env"]["MLPIPE_DATA_ROOT"]), PIPELINE)


def _client(home):
    from mlflow import MlflowClient

    uri = home["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _airflow(home, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=home["env"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _states(home, dag: str) -> list[str]:
    with sqlite3.connect(Path(home["env"]["AIRFLOW_HOME"]) / "airflow.db") as db:
        return [s for (s,) in db.execute("SELECT state FROM dag_run WHERE dag_id = ? AND run_type <> 'scheduled'",
                                         (dag,))]


def test_the_demo_trains_promotes_scores_and_monitors_a_multiclass_pipeline(home):
    """Through the demo's scheduler (LocalExecutor)."""
    from mlpipe import ledger

    done = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--from", str(FROM), "--to", str(TO),
                           "--holdout-days", str(HOLDOUT)], env=home["env"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _states(home, TRAIN) == ["success"] and _states(home, SCORE_RANGE) == ["success"]
    store = _store(home)
    (entry,) = ledger.entries(store)
    assert (entry.decision, entry.moved, entry.metric) == ("promote", True, "log_loss"), entry.reason
    assert set(entry.candidates) == {"hgb", "logreg", "ensemble"}
    for name, found in entry.candidates.items():
        assert found["per_class"]["classes"] == CLASSES, name
        assert {"log_loss", "accuracy", "f1_macro", "f1_weighted", "roc_auc", "brier"} <= set(found["metrics"]), name
    assert entry.intervals[entry.winner]["ci"][0] < entry.candidates[entry.winner]["metrics"]["log_loss"]
    home["champion"], home["challenger"] = entry.champion_after, entry.challenger_after
    assert home["challenger"] not in (None, home["champion"])

    predictions = store.read("predictions", HOLDOUT_DAYS[-1])
    probabilities = predictions[[f"score_{c}" for c in CLASSES]]
    assert ((probabilities.sum(axis=1) - 1).abs() < 1e-6).all()
    assert set(predictions["predicted_label"]) <= set(CLASSES)
    assert (predictions["predicted_label"] == probabilities.idxmax(axis=1).str[len("score_"):]).all()
    assert predictions["challenger_version"].eq(home["challenger"]).all()  # scored in shadow
    assert {f"challenger_score_{c}" for c in CLASSES} <= set(predictions.columns)

    drift = json.loads(store.report_path("drift", HOLDOUT_DAYS[-1], ".json").read_text())
    assert set(drift["prediction_drift"]["outputs"]) == {"predicted_label", *(f"score_{c}" for c in CLASSES)}
    assert drift["quality"]["metric"] == "log_loss" and drift["quality"]["live"] > 0
    from mlpipe.promotion import evaluation_page

    page = evaluation_page(store, entry.seq).read_text()
    assert "true \\ predicted" in page and "hgb: per class" in page

    client = _client(home)
    version = client.get_model_version(PIPELINE, home["champion"])
    assert "| Classes | `chicken`, `classic`, `supreme`, `veggie` |" in version.description
    from urllib.parse import urlparse

    from mlflow.models import Model

    logged = Model.load(urlparse(version.source).path)  # the version's files in the local artifact store
    outputs = logged.signature.outputs.input_names()
    assert outputs == [f"score_{c}" for c in CLASSES]  # the pyfunc signature names the class outputs


@pytest.fixture(scope="module")
def server(home):
    """The serving process over the demo's registry and data (token, a poll every second)."""
    import time
    import urllib.request

    port = free_port()
    env = {**home["env"], "MLPIPE_SERVING_TOKEN": "e2e-token", "MLPIPE_SERVING_PORT": str(port),
           "MLPIPE_SERVING_POLL_SECONDS": "1"}
    log = open(home["work"] / "serving.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlpipe.serving"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError((home["work"] / "serving.log").read_text()[-3000:])
    yield {"url": url, "proc": proc}
    proc.terminate()
    proc.wait(30)
    log.close()


def _post(server, rows, token="e2e-token"):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{server['url']}/v1/{PIPELINE}/predict", data=json.dumps(rows).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_serving_process_answers_with_the_champion_over_http(home, server):
    """A real uvicorn process: class probabilities from the champion, the snapshot the
    demo's ingest published, and a refusal without the token."""
    rows = json.loads(_store(home).read("raw", HOLDOUT_DAYS[-1]).head(5).to_json(orient="records",
                                                                                   date_format="iso"))
    status, answer = _post(server, rows)
    assert status == 200, answer
    assert (answer["model_version"], answer["role"], answer["as_of"]) == (home["champion"], "champion", str(TO))
    assert len(answer["predictions"]) == 5
    for prediction in answer["predictions"]:
        assert set(prediction["probabilities"]) == set(CLASSES) and prediction["label"] in CLASSES
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-6
    assert _post(server, rows, token=None)[0] == 401
    status, refused = _post(server, [{**rows[0], "size": "XXXL"}])
    assert (status, refused["field"]) == (422, "size")


def test_the_rollback_dag_repoints_the_champion_and_the_next_score_run_uses_it(home, server):
    """In-process in `airflow dags test` (no scheduler): the rollback DAG, then the score DAG;
    the serving process follows the alias within its poll."""
    import time

    from mlpipe import ledger

    conf = json.dumps({"version": home["challenger"], "reason": "e2e multiclass rollback"})
    _airflow(home, "dags", "test", ROLLBACK, "--conf", conf)
    assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == home["challenger"]
    row = json.loads(_store(home).read("raw", HOLDOUT_DAYS[-1]).head(1).to_json(orient="records", date_format="iso"))
    deadline = time.time() + 60
    while _post(server, row)[1]["model_version"] != home["challenger"]:
        assert time.time() < deadline, "the serving process did not follow the rollback"
        time.sleep(0.5)
    last = ledger.entries(_store(home))[-1]
    assert (last.kind, last.champion_before, last.champion_after) == ("rollback", home["champion"], home["challenger"])

    day = HOLDOUT_DAYS[-1]  # scored by the first champion; a live run scores it again with the current one
    _airflow(home, "dags", "test", SCORE, f"{day + dt.timedelta(days=1)}T00:00:00+00:00")
    scored = _store(home).read("predictions", day)
    assert set(scored["model_version"].astype(str)) == {home["challenger"]} and len(scored) > 20
    assert {f"score_{c}" for c in CLASSES} <= set(scored.columns)
