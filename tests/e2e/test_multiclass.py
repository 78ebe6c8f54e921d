"""A multi-class pipeline end to end through Airflow: the bundled pizza spec (four kinds of
pizza) on two weeks of 2015. ``make demo``'s code path (scripts/demo.py: its own
scheduler, LocalExecutor and api-server on a fresh SQLite metadata DB and MLflow store)
ingests, trains, evaluates, promotes, scores and monitors. Checked from the metadata DB,
the ledger, the store and the MLflow registry.

A serving process (``python -m mlpipe.serving``, a real uvicorn server) then answers
requests for the pipeline's champion over HTTP, under the canary policy, while a load
generator runs and the registry's aliases move. Every move below is a DAG run through a
real scheduler: the demo's api-server again, and an ``airflow scheduler``
(mlpipe_executor.PreloadingLocalExecutor) started once the runs exist (SQLite serves one
writer at a time, so runs are created while no scheduler runs, as scripts/demo.py does)
and stopped once they have finished:

- the rollback DAG re-points ``champion``;
- the pipeline switched to ``serving.policy: shadow`` (a second spec file, read by the
  scheduler's tasks and by a new serving process: a spec change and a restart), a train
  run promotes a new champion and the rollback DAG rolls it back, under one load;
- back on the canary policy, a train run puts a new winner into ``challenger`` only (a
  live score run beside it uses the champion the rollback restored), unpausing the canary
  DAG starts its daily look, which starts the canary, and a manual look, once labelled
  rows were served, promotes it.

No request fails, and each answer's version is the one behind the alias (or the canary's
arm) at its time, within the poll. A second serving process shares the request log's
folder and, on SIGTERM, finishes its request in flight and writes out its buffered rows;
neither overwrites the other's. Last, the monitor DAG, run by ``airflow dags test``
(in-process in that CLI process, no scheduler), reports the served traffic.

Tests in this module run in order and share one Airflow home.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
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
# the load generator's pace, seconds a request: back to back, the serving process would take
# one of this machine's two cores from the scheduler and the tasks
PACE = 0.02
STAMP = 1  # the ledger stamps an entry's time to the second, just after the move: a move may precede it by that
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
    (work / "pizza-shadow.yaml").write_text(yaml.safe_dump({**spec, "serving": {**spec["serving"], "policy": "shadow"}}))
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


AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _airflow(home, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([AIRFLOW, *args], env=home["env"], cwd=ROOT, capture_output=True, text=True, timeout=600)
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


def _serve(home, spec: str = "pizza.yaml", ready: bool = True) -> dict:
    """A serving process over the demo's registry and data (token, a poll every second),
    answering once it returns (``ready=False``: started, not waited for; see _ready)."""
    port = free_port()
    env = {**home["env"], "MLPIPE_SERVING_TOKEN": "e2e-token", "MLPIPE_SERVING_PORT": str(port),
           "MLPIPE_SERVING_POLL_SECONDS": str(POLL), "MLPIPE_SPEC": str(home["work"] / spec)}
    log = open(home["work"] / f"serving-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlpipe.serving"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    served = {"url": f"http://127.0.0.1:{port}", "proc": proc, "log": log}
    if ready:
        _ready(served)
    return served


def _ready(served: dict) -> None:
    """Wait until the serving process says it is ready (its models loaded and warmed)."""
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{served['url']}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    served["proc"].kill()
    raise AssertionError(Path(served["log"].name).read_text()[-3000:])


def _stop_serving(served: dict) -> None:
    served["proc"].terminate()
    served["proc"].wait(30)
    served["log"].close()


@pytest.fixture(scope="module")
def server(home):
    served = _serve(home)
    yield served
    _stop_serving(served)


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
    """A load generator: one-row requests from a thread, one every PACE seconds at most
    (cycling through ``rows``), each recorded as (sent, received, status, version, role)."""

    def __init__(self, server, rows: list[dict]):
        import threading

        self.server, self.rows, self.answers, self.stop = server, rows, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            sent = time.time()
            status, answer = _post(self.server, [self.rows[i % len(self.rows)]])
            self.answers.append((sent, time.time(), status, answer.get("model_version"), answer.get("role")))
            i += 1
            self.stop.wait(max(0.0, sent + PACE - time.time()))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)

    def wait_for(self, version: str, role: str = "champion", timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not any((v, r) == (version, role) for *_, v, r in self.answers[-20:]):
            assert time.time() < deadline, f"no answer from v{version} ({role}) within {timeout}s"
            time.sleep(0.2)

    def check(self, moved_at: float, before: set, after: set) -> None:
        """No request failed; answers received before the move came from ``before``; the
        first from ``after`` arrived within a poll (and a swap) of the move, and from it on
        every answer came from ``after``: none went back."""
        assert self.answers and all(a[2] == 200 for a in self.answers), [a for a in self.answers if a[2] != 200][:3]
        assert all((v, r) in before for s, got, _, v, r in self.answers if got < moved_at)
        first_new = next(i for i, a in enumerate(self.answers) if (a[3], a[4]) in after - before)
        assert self.answers[first_new][1] <= moved_at + STAMP + POLL + SLACK, "the swap took longer than the poll"
        assert all((a[3], a[4]) in after for a in self.answers[first_new:]), "an answer went back to the old version"

    def follows(self, moves: list[tuple[float, str]]) -> None:
        """No request failed, and each answer came from a version that was behind
        `champion` at some time between a poll (and a swap) before it was sent and when it
        was received; none went back, and each move's version answered within a poll (and
        a swap) of it. ``moves``: (ledger time, version) in order, the first the version
        before any move (its time unused); a move's time is known to STAMP."""
        assert self.answers and all(a[2] == 200 for a in self.answers), [a for a in self.answers if a[2] != 200][:3]
        starts = [float("-inf"), *(t for t, _ in moves[1:])]
        ends = [*starts[1:], float("inf")]
        at, first = 0, {0: float("-inf")}  # the move the last answer came from (never earlier for a later one)
        for sent, got, _, version, role in self.answers:
            behind = [i for i in range(at, len(moves)) if moves[i][1] == version and role == "champion"
                      and starts[i] - STAMP <= got and ends[i] + STAMP > sent - POLL - SLACK]
            assert behind, f"v{version} ({role}) answered {got - sent:.2f}s after {sent:.2f}, not behind the alias " \
                           f"then (moves: {moves})"
            at = behind[0]
            first.setdefault(at, got)
        late = [(moves[i][1], first.get(i, float("inf")) - starts[i]) for i in range(1, len(moves))
                if first.get(i, float("inf")) > starts[i] + STAMP + POLL + SLACK]
        assert not late, f"versions answered late (seconds after their move), or never: {late}"


def _raw_rows(home, days) -> list[dict]:
    frames = [_store(home).read("raw", d) for d in days]
    return json.loads(pd.concat(frames).to_json(orient="records", date_format="iso"))


def _ledger_time(entry) -> float:
    return dt.datetime.fromisoformat(entry.time).timestamp()


def _hold() -> None:
    """Let the load generator run a few polls more: the version it just saw stays."""
    time.sleep(3 * POLL)


def _entries_after(home, entry) -> list:
    from mlpipe import ledger

    return [e for e in ledger.entries(_store(home)) if e.seq > entry.seq]


# Runs through a real scheduler, as scripts/demo.py's phase() makes them: created while no
# scheduler runs (SQLite serves one writer at a time), then `airflow scheduler` in its own
# process group until they have finished. The demo serialized the DAGs (`airflow dags
# reserialize`) and no DAG changed shape since, so no dag-processor runs: each task parses
# its DAG file itself, with the scheduler's environment (its spec). Runs are created through
# the REST API, as the UI's trigger form does: `airflow dags trigger --logical-date` infers
# a manual run's data interval from the time it runs, not from its logical date (Airflow
# 3.3), so a live score run of a past day could not be made with it. The demo's helpers
# read os.environ; these take the module's environment.
def _service(home, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    with open(home["work"] / f"{name}.log", "ab") as log:
        return subprocess.Popen([AIRFLOW, *args], env=env or home["env"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def api_server(home):
    """The demo's api-server again (the REST API, and the execution API tasks report
    through), started here and waited for by its first use."""
    port = home["env"]["MLPIPE_AIRFLOW_PORT"]
    proc = _service(home, "api-server", "api-server", "--port", port)
    home["api"] = {"url": f"http://localhost:{port}", "proc": proc}
    yield home["api"]
    _quiet(home)
    _stop(proc, _sigterm(proc))


def _api(home, path: str, body: dict, method: str = "POST") -> dict:
    """A REST API request as the admin (the simple auth manager's generated password),
    once the api-server answers."""
    import urllib.request

    api, started = home["api"], time.time()
    while "token" not in api:
        try:
            login = json.loads((Path(home["env"]["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
                               .read_text())
            request = urllib.request.Request(f"{api['url']}/auth/token", method="POST",
                                             data=json.dumps({"username": "admin", "password": login["admin"]}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                api["token"] = json.loads(answer.read())["access_token"]
        except (OSError, ValueError):  # not up yet (its password file written at start-up)
            assert api["proc"].poll() is None and time.time() < started + 120, \
                (home["work"] / "api-server.log").read_text()[-3000:]
            time.sleep(0.5)
    request = urllib.request.Request(f"{api['url']}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": f"Bearer {api['token']}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _sigterm(proc: subprocess.Popen, group: bool = True) -> float:
    """SIGTERM the process's group (``group=False``: the process alone); when."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(proc.pid, signal.SIGTERM)
    return time.time()


def _stop(proc: subprocess.Popen, signalled: float) -> None:
    """Wait for a process SIGTERMed at ``signalled`` to exit; SIGKILL its group 30 s after."""
    try:
        proc.wait(max(0.0, signalled + 30 - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _quiet(home) -> None:
    """Wait for the last scheduler to exit (SIGTERMed when its runs finished)."""
    stopping = home.pop("stopping", None)
    if stopping:
        _stop(*stopping)


def _unpause(home, *dags: str) -> None:
    _quiet(home)
    for dag in dags:
        assert _api(home, f"/api/v2/dags/{dag}", {"is_paused": False}, "PATCH")["is_paused"] is False


def _trigger(home, dag: str, run_id: str, conf: dict | None = None, logical_date: str | None = None) -> None:
    """A manual run (``logical_date``: ISO with offset, or none), made while no scheduler runs."""
    _quiet(home)
    _api(home, f"/api/v2/dags/{dag}/dagRuns", {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}})


def _run_states(home, runs: list[tuple[str, str | None]]) -> dict[str, str]:
    """run_id -> state of ``runs``: (DAG id, run id), or (DAG id, None) for all its runs."""
    found: dict[str, str] = {}
    with contextlib.closing(sqlite3.connect(Path(home["env"]["AIRFLOW_HOME"]) / "airflow.db", timeout=30)) as db:
        for dag, run_id in runs:
            found |= dict(db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? AND run_id = coalesce(?, run_id)",
                                     (dag, run_id)).fetchall())
    return found


def _schedule(home, runs: list[tuple[str, str | None]], spec: str = "pizza.yaml", preload: bool = True,
              timeout: float = 600) -> None:
    """Start a scheduler (its tasks reading ``spec``) and wait until ``runs`` (see
    _run_states; a DAG's runs: at least one) have all finished, then SIGTERM it without
    waiting: the next run created waits for it to exit. Every run must succeed.
    ``preload=False``: for one short task, whose own imports (the MLflow client) take a
    second where preloading the data stack before forking the workers takes ten."""
    api, started = home["api"], time.time()  # answering: runs were created through it
    _quiet(home)
    home["schedulers"] = n = home.get("schedulers", 0) + 1
    env = {**home["env"], "MLPIPE_SPEC": str(home["work"] / spec),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api['url']}/execution/",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()), **({} if preload else {"MLPIPE_PRELOAD": ""})}
    proc = _service(home, f"scheduler-{n}", "scheduler", env=env)
    try:
        while True:
            states = _run_states(home, runs)
            if len(states) >= len(runs) and all(s in ("success", "failed") for s in states.values()):
                break
            log = (home["work"] / f"scheduler-{n}.log").read_text()[-3000:]
            assert proc.poll() is None, f"the scheduler exited ({proc.returncode}): {log}"
            assert time.time() < started + timeout, f"runs not finished after {timeout}s: {states}; {log}"
            time.sleep(0.5)
    finally:
        # the scheduler alone: it stops its workers and log server itself. A SIGTERM to its
        # whole group (the workers too) now and then left it waiting in LocalExecutor.end()
        # for a worker until the SIGKILL
        home["stopping"] = (proc, _sigterm(proc, group=False))
    assert set(states.values()) == {"success"}, f"{states}; {_task_logs(home, states)}"


def _task_logs(home, states: dict[str, str]) -> str:
    """The end of each task log of the runs that did not succeed."""
    logs = Path(home["env"]["AIRFLOW_HOME"]) / "logs"
    return "\n".join(f"{path}: {path.read_text()[-2000:]}" for run_id, state in states.items() if state != "success"
                     for path in sorted(logs.glob(f"dag_id=*/run_id={run_id}/**/*.log")))


def test_the_rollback_dag_repoints_the_champion_under_load(home, server, api_server):
    """Through a real scheduler: a rollback run while a load generator runs; the serving
    process follows the alias within its poll, and no request fails."""
    from mlpipe import ledger

    _unpause(home, ROLLBACK, SCORE)  # score has no scheduled runs left: its schedule ended in 2015
    _trigger(home, ROLLBACK, "e2e-rollback", {"version": home["challenger"], "reason": "e2e multiclass rollback"})
    with Load(server, _raw_rows(home, HOLDOUT_DAYS[-1:])) as load:
        load.wait_for(home["champion"])
        _schedule(home, [(ROLLBACK, "e2e-rollback")], preload=False)
        last = ledger.entries(_store(home))[-1]
        load.wait_for(home["challenger"])
        _hold()
    assert (last.kind, last.champion_before, last.champion_after) == ("rollback", home["champion"], home["challenger"])
    load.check(_ledger_time(last), {(home["champion"], "champion")}, {(home["challenger"], "champion")})
    assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == home["challenger"]


def test_under_the_shadow_policy_a_train_run_promotes_and_the_rollback_dag_rolls_back_under_load(home, api_server):
    """Through a real scheduler: the pipeline switched to `serving.policy: shadow` (a
    second spec file, which the scheduler's tasks and a new serving process read: a spec
    change and a restart). One load generator on that serving process while a train run
    (one variant) beats the champion and promotes it, then a rollback run ("previous")
    puts the champion back: no request fails, and each answer comes from the version
    behind `champion` at its time, within the poll. The requests are rows of a training
    day: the request log of the holdout days stays the canary's (tests below)."""
    from mlpipe import ledger

    champion = home["challenger"]  # since the rollback above
    _trigger(home, TRAIN, "e2e-shadow-train", {"window_start": str(FROM), "window_end": str(TO + dt.timedelta(days=1)),
                                               "holdout_days": HOLDOUT, "variants": ["hgb"]},
             f"{TO + dt.timedelta(days=1)}T05:00:00+00:00")
    shadow = _serve(home, "pizza-shadow.yaml", ready=False)
    try:
        _ready(shadow)
        with Load(shadow, _raw_rows(home, [FROM])[:200]) as load:
            load.wait_for(champion)
            _schedule(home, [(TRAIN, "e2e-shadow-train")], spec="pizza-shadow.yaml")
            promoted = ledger.entries(_store(home))[-1]
            assert (promoted.kind, promoted.decision, promoted.champion_before) == ("train", "promote", champion), \
                promoted.reason
            load.wait_for(promoted.champion_after)
            _trigger(home, ROLLBACK, "e2e-shadow-rollback", {"version": "previous", "reason": "e2e shadow rollback"})
            _schedule(home, [(ROLLBACK, "e2e-shadow-rollback")], spec="pizza-shadow.yaml", preload=False)
            rolled = ledger.entries(_store(home))[-1]
            load.wait_for(champion)
            _hold()
    finally:
        _stop_serving(shadow)
    assert set(promoted.candidates) == {"hgb"} and promoted.champion_after not in (None, champion)
    assert (rolled.kind, rolled.champion_before, rolled.champion_after) == ("rollback", promoted.champion_after,
                                                                           champion)
    load.follows([(0.0, champion), (_ledger_time(promoted), promoted.champion_after), (_ledger_time(rolled), champion)])
    assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == champion


def test_a_train_run_starts_a_canary_that_served_labelled_traffic_promotes_under_load(home, server, api_server):
    """Through a real scheduler: under the canary policy a train run moves only
    `challenger` (beside it, a live score run uses the champion the rollback restored);
    unpausing the canary DAG starts its daily look, which starts the canary (50 %); the
    served rows of labelled days reach the request log, and a manual look promotes the
    canary through the alias transaction. The serving process follows each move within
    its poll; no request fails."""
    from mlpipe import ledger
    from mlpipe.serving import requestlog

    champion, rows, day = home["challenger"], _raw_rows(home, HOLDOUT_DAYS), HOLDOUT_DAYS[-1]
    _trigger(home, TRAIN, "e2e-canary-train", {"window_start": str(FROM), "window_end": str(TO + dt.timedelta(days=1)),
                                               "holdout_days": HOLDOUT}, f"{TO + dt.timedelta(days=1)}T06:00:00+00:00")
    # the day was scored by the first champion; a live run scores it again with the current one
    _trigger(home, SCORE, "e2e-score", logical_date=f"{day + dt.timedelta(days=1)}T00:00:00+00:00")
    before = ledger.entries(_store(home))[-1]
    with Load(server, rows[:200]) as load:
        load.wait_for(champion)
        _schedule(home, [(TRAIN, "e2e-canary-train"), (SCORE, "e2e-score")])
        (trained,) = _entries_after(home, before)
        assert (trained.kind, trained.decision, trained.moved) == ("train", "challenger", False), trained.reason
        canary_version = trained.challenger_after
        assert str(_client(home).get_model_version_by_alias(PIPELINE, "champion").version) == champion

        # its latest daily run is due: the scheduler starts it (and one more, should 06:00 UTC pass
        # meanwhile: the looks are found by their decisions)
        _unpause(home, CANARY)
        _schedule(home, [(CANARY, None)], preload=False)
        started = next(e for e in _entries_after(home, trained) if e.decision == "canary-start")
        assert started.canary["share"] == 0.5
        load.wait_for(canary_version, "canary")
        for chunk in range(0, len(rows), 500):  # every labelled holdout row, in batches
            status, answer = _post(server, rows[chunk:chunk + 500])
            assert status == 200 and {p["role"] for p in answer["predictions"]} == {"champion", "canary"}
        # the request log writes every half second: out long before the next scheduler starts
        _trigger(home, CANARY, "e2e-canary-look")
        _schedule(home, [(CANARY, None)], preload=False)
        promoted = next((e for e in _entries_after(home, started) if e.decision == "canary-promote"), None)
        assert promoted, [(e.decision, e.reason) for e in _entries_after(home, started)]
        load.wait_for(canary_version)
        _hold()
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

    scored = _store(home).read("predictions", day)
    assert set(scored["model_version"].astype(str)) == {champion} and len(scored) > 20
    assert {f"score_{c}" for c in CLASSES} <= set(scored.columns)


def test_sigterm_finishes_the_request_in_flight_and_writes_out_the_buffered_log(home, server):
    """A second serving process (its log written only at shutdown) beside the first, on
    the same request log folder: SIGTERM while a 1,000-row request is in flight."""
    import threading

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
