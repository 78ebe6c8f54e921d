"""A multi-class pipeline end to end through Airflow: the bundled pizza spec (four kinds of
pizza) on two weeks of 2015. ``make demo``'s code path (scripts/demo.py: its own
scheduler, LocalExecutor and api-server on a fresh SQLite metadata DB and MLflow store)
ingests, trains, evaluates, promotes, scores and monitors; then the rollback DAG and a
live score run, each run by ``airflow dags test`` (in-process in that CLI process, no
scheduler), re-point the champion and score a day again with it. Checked from the metadata DB, the
ledger, the store and the MLflow registry.

A serving process (``python -m mlpipe.serving``, a real uvicorn server) then answers
requests for the pipeline's champion over HTTP, under the canary policy. A load generator
runs while the rollback DAG rolls back, a train run (``airflow dags test``) puts a new
winner into ``challenger`` and the canary DAG (``airflow dags test``) starts its canary and
then promotes it: no request fails, and each answer's version is the one behind the alias
(or the canary's arm) at its time, within the poll. A second serving process shares the
request log's folder and, on SIGTERM, finishes its request in flight and writes out its
buffered rows; neither overwrites the other's.

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

import pandas as pd
import pytest
import yaml
from topology import ROOT, free_port

from mlpipe.pipelines import dag_id

pytestmark = pytest.mark.e2e

PIPELINE = "pizza"
POLL = 1  # the serving processes' poll of the registry, seconds
SLACK = 10  # seconds a swap may take past the poll (loading and warming a version on a busy machine)
CLASSES = ["chicken", "classic", "supreme", "veggie"]
FROM, TO, HOLDOUT = dt.date(2015, 1, 1), dt.date(2015, 1, 14), 5
HOLDOUT_DAYS = [TO - dt.timedelta(days=i) for i in range(HOLDOUT - 1, -1, -1)]
TRAIN, SCORE, ROLLBACK, SCORE_RANGE, CANARY = (dag_id(PIPELINE, d) for d in ("train", "score", "rollback",
                                                                             "score_range", "canary"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The bundled pizza spec with two quick variants and their ensemble, and the
    environment `make demo` gives scripts/demo.py, in a fresh folder."""
    work = tmp_path_factory.mktemp("multiclass")
    spec = yaml.safe_load((ROOT / "include/pipelines/pizza.yaml").read_text())
    spec["variants"] = [{"name": "hgb", "backend": "sklearn_hgb", "params": {"max_iter": 60, "max_leaf_nodes": 15}},
                        {"name": "logreg", "backend": "sklearn_linear", "params": {"C": 1.0}}]
    spec["serving"] = {"policy": "canary", "canary": {"steps": [0.5, 1.0], "min_rows": 30}, "log_seconds": 0.5}
    (work / "pizza.yaml").write_text(yaml.safe_dump(spec))
    spec["serving"] |= {"log_seconds": 3600, "log_rows": 100000}  # a second server: writes only at shutdown
    (work / "pizza-sigterm.yaml").write_text(yaml.safe_dump(spec))
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


def _serve(home, spec: str = "pizza.yaml") -> dict:
    """A serving process over the demo's registry and data (token, a poll every second)."""
    import time
    import urllib.request

    port = free_port()
    env = {**home["env"], "MLPIPE_SERVING_TOKEN": "e2e-token", "MLPIPE_SERVING_PORT": str(port),
           "MLPIPE_SERVING_POLL_SECONDS": str(POLL), "MLPIPE_SPEC": str(home["work"] / spec)}
    log = open(home["work"] / f"serving-{port}.log", "wb")
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
        raise AssertionError((home["work"] / f"serving-{port}.log").read_text()[-3000:])
    return {"url": url, "proc": proc, "log": log}


@pytest.fixture(scope="module")
def server(home):
    served = _serve(home)
    yield served
    served["proc"].terminate()
    served["proc"].wait(30)
    served["log"].close()


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


class Load:
    """A load generator: one-row requests back to back from a thread (cycling through
    ``rows``), each recorded as (sent, received, status, version, role)."""

    def __init__(self, server, rows: list[dict]):
        import threading

        self.server, self.rows, self.answers, self.stop = server, rows, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time

        i = 0
        while not self.stop.is_set():
            sent = time.time()
            status, answer = _post(self.server, [self.rows[i % len(self.rows)]])
            self.answers.append((sent, time.time(), status, answer.get("model_version"), answer.get("role")))
            i += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)

    def wait_for(self, version: str, role: str = "champion", timeout: float = 60) -> None:
        import time

        deadline = time.time() + timeout
        while not any((v, r) == (version, role) for *_, v, r in self.answers[-20:]):
            assert time.time() < deadline, f"no answer from v{version} ({role}) within {timeout}s"
            time.sleep(0.2)

    def check(self, moved_at: float, before: set, after: set) -> None:
        """No request failed; answers received before the move came from ``before``, those
        sent a poll (and a load) after it from ``after``; none went back."""
        assert self.answers and all(a[2] == 200 for a in self.answers), [a for a in self.answers if a[2] != 200][:3]
        assert all((v, r) in before for s, got, _, v, r in self.answers if got < moved_at)
        settled = moved_at + POLL + SLACK
        assert all((v, r) in after for s, got, _, v, r in self.answers if s > settled)
        assert any(s > settled for s, *_ in self.answers)
        first_new = next(i for i, a in enumerate(self.answers) if (a[3], a[4]) in after - before)
        assert all((a[3], a[4]) in after for a in self.answers[first_new:]), "an answer went back to the old version"


def _raw_rows(home, days) -> list[dict]:
    frames = [_store(home).read("raw", d) for d in days]
    return json.loads(pd.concat(frames).to_json(orient="records", date_format="iso"))


def _ledger_time(entry) -> float:
    return dt.datetime.fromisoformat(entry.time).timestamp()


def test_the_rollback_dag_repoints_the_champion_under_load_and_the_next_score_run_uses_it(home, server):
    """In-process in `airflow dags test` (no scheduler): the rollback DAG while a load
    generator runs, then the score DAG; the serving process follows the alias within its
    poll, and no request fails."""
    from mlpipe import ledger

    conf = json.dumps({"version": home["challenger"], "reason": "e2e multiclass rollback"})
    with Load(server, _raw_rows(home, HOLDOUT_DAYS[-1:])) as load:
        load.wait_for(home["champion"])
        _airflow(home, "dags", "test", ROLLBACK, "--conf", conf)
        load.wait_for(home["challenger"])
        last = ledger.entries(_store(home))[-1]
        import time

        time.sleep(POLL + SLACK + 1)
    assert (last.kind, last.champion_before, last.champion_after) == ("rollback", home["champion"], home["challenger"])
    load.check(_ledger_time(last), {(home["champion"], "champion")}, {(home["challenger"], "champion")})
    assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == home["challenger"]

    day = HOLDOUT_DAYS[-1]  # scored by the first champion; a live run scores it again with the current one
    _airflow(home, "dags", "test", SCORE, f"{day + dt.timedelta(days=1)}T00:00:00+00:00")
    scored = _store(home).read("predictions", day)
    assert set(scored["model_version"].astype(str)) == {home["challenger"]} and len(scored) > 20
    assert {f"score_{c}" for c in CLASSES} <= set(scored.columns)


def test_a_train_run_starts_a_canary_that_served_labelled_traffic_promotes_under_load(home, server):
    """In-process in `airflow dags test` (no scheduler): under the canary policy the train
    DAG moves only `challenger`; the canary DAG starts the canary (50 %), the served rows of
    labelled days reach the request log, and its next look promotes the canary through the
    alias transaction. The serving process follows each move within its poll; no request fails."""
    import time

    from mlpipe import ledger
    from mlpipe.serving import requestlog

    champion, rows = home["challenger"], _raw_rows(home, HOLDOUT_DAYS)
    conf = json.dumps({"window_start": str(FROM), "window_end": str(TO + dt.timedelta(days=1)),
                       "holdout_days": HOLDOUT})
    with Load(server, rows[:200]) as load:
        load.wait_for(champion)
        _airflow(home, "dags", "test", TRAIN, f"{TO + dt.timedelta(days=1)}T06:00:00+00:00", "--conf", conf)
        trained = ledger.entries(_store(home))[-1]
        assert (trained.kind, trained.decision, trained.moved) == ("train", "challenger", False), trained.reason
        canary_version = trained.challenger_after
        assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == champion

        _airflow(home, "dags", "test", CANARY, f"{TO + dt.timedelta(days=1)}T06:00:00+00:00")
        started = ledger.entries(_store(home))[-1]
        assert (started.decision, started.canary["share"]) == ("canary-start", 0.5)
        load.wait_for(canary_version, "canary")
        for chunk in range(0, len(rows), 500):  # every labelled holdout row, in batches
            status, answer = _post(server, rows[chunk:chunk + 500])
            assert status == 200 and {p["role"] for p in answer["predictions"]} == {"champion", "canary"}
        time.sleep(2)  # the request log writes every half second
        _airflow(home, "dags", "test", CANARY, f"{TO + dt.timedelta(days=1)}T07:00:00+00:00")
        promoted = ledger.entries(_store(home))[-1]
        assert promoted.decision == "canary-promote", promoted.reason
        load.wait_for(canary_version)
        time.sleep(POLL + SLACK + 1)
    figures = promoted.canary["comparison"]
    assert figures["n_control"] >= 30 and figures["n_treatment"] >= 30 and figures["verdict"] in ("not_worse", "better")
    assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == canary_version
    load.check(_ledger_time(started), {(champion, "champion")},
               {(champion, "champion"), (canary_version, "canary"), (canary_version, "champion")})
    load.check(_ledger_time(promoted), {(champion, "champion"), (canary_version, "canary")},
               {(canary_version, "champion")})
    served = requestlog.read_served(_store(home), HOLDOUT_DAYS[0], TO + dt.timedelta(days=1))
    assert {"champion", "canary"} <= set(served["arm"]) and len(served) >= len(rows)
    assert {f"score_{c}" for c in CLASSES} <= set(served.columns) and served["as_of"].notna().all()


def test_sigterm_finishes_the_request_in_flight_and_writes_out_the_buffered_log(home, server):
    """A second serving process (its log written only at shutdown) beside the first, on
    the same request log folder: SIGTERM while a 1,000-row request is in flight."""
    import signal
    import threading
    import time

    from mlpipe.serving import requestlog

    other = _serve(home, "pizza-sigterm.yaml")
    rows = (_raw_rows(home, HOLDOUT_DAYS) * 2)[:1000]
    status, first = _post(other, rows[:3])
    assert status == 200
    in_flight: list = []
    sender = threading.Thread(target=lambda: in_flight.append(_post(other, rows)))
    sender.start()
    time.sleep(0.05)
    other["proc"].terminate()
    sender.join(60)
    # uvicorn shuts down gracefully, then raises the signal again: the exit status says SIGTERM
    assert other["proc"].wait(60) == -signal.SIGTERM
    other["log"].close()
    status, answer = in_flight[0]
    assert status == 200 and len(answer["predictions"]) == 1000
    served = requestlog.read_served(_store(home), HOLDOUT_DAYS[0], TO + dt.timedelta(days=1))
    counts = served["request_id"].value_counts()
    assert (counts.get(first["request_id"]), counts.get(answer["request_id"])) == (3, 1000)
    parts = [n for d in HOLDOUT_DAYS for n in os.listdir(requestlog.day_dir(_store(home), d))]
    writers = {n.split("-", 2)[2].rsplit("-", 1)[0] for n in parts}
    assert len(writers) == 2 and len(parts) == len(set(parts))  # one writer each, no name reused


def test_the_monitor_dag_reports_the_served_traffic_and_compares_the_arms(home, server):
    """In-process in `airflow dags test` (no scheduler): the monitor DAG's day reports the
    request log's rows of it beside the batch predictions, the arms on labelled rows."""
    day = HOLDOUT_DAYS[-1]
    _airflow(home, "dags", "test", dag_id(PIPELINE, "monitor"), f"{day + dt.timedelta(days=1)}T00:00:00+00:00",
             "--conf", json.dumps({"day": str(day)}))
    summary = json.loads(_store(home).report_path("drift", day).read_text())
    served = summary["served"]
    assert served["rows"] > 0 and {"champion", "canary"} <= set(served["arms"])
    assert isinstance(served["drift"]["dataset_drift"], bool)
    quality = served["arms_quality"]  # the served days up to the day before, whose labels have arrived
    assert quality["metric"] == "log_loss" and {a["arm"] for a in quality["arms"]} >= {"champion", "canary"}
    assert all(a["rows"] > 0 and a["metrics"]["log_loss"] > 0 for a in quality["arms"])
    assert quality["comparison"]["against"] == "canary"
    page = _store(home).report_path("served", day, ".html").read_text()
    assert "Arms on labelled served rows" in page
