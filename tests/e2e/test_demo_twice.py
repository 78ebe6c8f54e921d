"""`make demo` twice on one short window: the demo (scripts/demo.py, run as `make demo`
runs it) through its own scheduler, LocalExecutor and api-server, on the embedded SQLite
metadata DB and MLflow store of a fresh Airflow home. The first run ingests, trains and
promotes a first champion, scores and monitors the holdout (the ingest as one run of the
ingest_range DAG, every day's features written; the score and monitor as one run of the
score_range DAG, every holdout day's predictions and drift report written); the second,
on the same window, creates no new ingest, score or monitor run and promotes nothing: its
train run keeps the champion. Checked from the Airflow metadata DB, the ledger, the store
and the MLflow aliases, not from the printed text alone.

A small spec (two quick variants on daily drops of the bundled data) keeps the module to
a few minutes; the demo's code path is the one `make demo` runs.

Tests in this module run in order and share one Airflow home.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from topology import INGEST, MONITOR, PIPELINE, ROOT, SCORE, TRAIN, drops, free_port, small_spec

from mlpipe.pipelines import dag_id as dag_id_of

pytestmark = pytest.mark.e2e

FROM, TO, HOLDOUT = dt.date(2013, 1, 1), dt.date(2013, 1, 7), 2
DAYS = [FROM + dt.timedelta(days=i) for i in range((TO - FROM).days + 1)]
INGEST_RANGE, SCORE_RANGE = (dag_id_of(PIPELINE, name) for name in ("ingest_range", "score_range"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The environment `make demo` gives scripts/demo.py (see the Makefile), in a fresh folder."""
    work = tmp_path_factory.mktemp("demo")
    spec = small_spec(work, drops(work, DAYS), {"logreg": {}, "hgb_small": {}})
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow"), "MLPIPE_DATA_ROOT": str(work / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow' / 'mlflow.db'}",
           "MLPIPE_ARTIFACTS": str(work / "mlflow" / "artifacts"), "MLPIPE_SPEC": str(spec),
           "AIRFLOW__CORE__EXECUTOR": "mlpipe_executor.PreloadingLocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
           "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2", "MLPIPE_AIRFLOW_PORT": str(free_port())}
    (work / "mlflow").mkdir()
    return {"work": work, "env": env, "out": []}


def _demo(home) -> str:
    started = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--from", str(FROM), "--to", str(TO),
                           "--holdout-days", str(HOLDOUT)], env=home["env"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"demo took {time.time() - started:.0f}s")  # shown with -s; --durations has it too
    return done.stdout


def _runs(home) -> dict[str, dict[str, str]]:
    """dag_id -> {run_id: state} from the demo's metadata DB (scheduled runs left out: unpausing
    starts each DAG's latest one, past the data)."""
    with sqlite3.connect(Path(home["env"]["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("SELECT dag_id, run_id, state FROM dag_run WHERE run_type <> 'scheduled'").fetchall()
    runs: dict[str, dict[str, str]] = {}
    for dag_id, run_id, state in rows:
        runs.setdefault(dag_id, {})[run_id] = state
    return runs


def _state(home) -> dict:
    """The runs, the ledger and the champion alias after a demo."""
    from mlflow import MlflowClient

    from mlpipe.ledger import entries
    from mlpipe.storage import Store

    uri = home["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {"runs": _runs(home), "ledger": entries(Store(Path(home["env"]["MLPIPE_DATA_ROOT"]), "flights")),
            "champion": str(client.get_model_version_by_alias("flights", "champion").version),
            "versions": len(client.search_model_versions("name = 'flights'"))}


def test_the_first_demo_ingests_the_window_promotes_a_champion_and_scores_the_holdout(home):
    """Through the demo's scheduler (LocalExecutor)."""
    from mlpipe.storage import Store

    out = _demo(home)
    home["first"] = state = _state(home)
    holdout = len(DAYS[-HOLDOUT:])
    assert list(state["runs"][INGEST_RANGE].values()) == ["success"] and INGEST not in state["runs"]
    store = Store(Path(home["env"]["MLPIPE_DATA_ROOT"]), PIPELINE)
    assert [d for d in DAYS if store.exists("features", d)] == DAYS
    assert list(state["runs"][TRAIN].values()) == ["success"]
    assert list(state["runs"][SCORE_RANGE].values()) == ["success"] and SCORE not in state["runs"]
    assert MONITOR not in state["runs"]
    for day in DAYS[-holdout:]:
        assert store.exists("predictions", day) and store.report_path("drift", day, ".html").exists(), day
    assert not store.exists("predictions", DAYS[-holdout - 1])
    (entry,) = state["ledger"]
    assert (entry.decision, entry.moved, entry.champion_after) == ("promote", True, state["champion"])
    assert "stage times: ingest" in out


def test_a_second_demo_creates_no_new_ingest_score_or_monitor_run_and_promotes_nothing(home):
    """Through the demo's scheduler (LocalExecutor), on the state the first demo left."""
    first = home["first"]
    _demo(home)
    second = _state(home)
    for dag in (INGEST_RANGE, SCORE_RANGE):
        assert second["runs"][dag] == first["runs"][dag], dag  # the same runs, no new one
    (new_train,) = set(second["runs"][TRAIN]) - set(first["runs"][TRAIN])  # the demo always trains
    assert second["runs"][TRAIN][new_train] == "success"
    (entry,) = second["ledger"][len(first["ledger"]):]
    assert entry.run_id == new_train
    assert (entry.decision, entry.moved) == ("keep", False), entry.reason
    assert second["champion"] == first["champion"] == entry.champion_before == entry.champion_after
