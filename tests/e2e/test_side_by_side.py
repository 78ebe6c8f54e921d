"""Two pipelines side by side through one scheduler: the shared cluster (tests/e2e/conftest.py)
runs a pipelines folder with ``flights`` and ``bikes``, whose ingest backfills its fixture
created at once. Here a train run of each, then a score run of each, go through at the
same time; then neither pipeline's dag runs, asset events, partitions, registry
versions and aliases, ledger entries or report pages touch the other's. Last, a
retrain request emitted by bikes' monitor starts bikes' train DAG and not flights'.

Tests in this module run in order. Other modules may have trained, scored and monitored
flights on the shared cluster before: each test reads the state it starts from and
asserts on what its own runs changed (the isolation checks hold for every run so far).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from topology import BIKE_DAYS, BIKES, BIKES_MONITOR, BIKES_TRAIN, DAYS, PIPELINE, TRAIN

from mlpipe.pipelines import dag_id

pytestmark = pytest.mark.e2e

FLIGHTS = PIPELINE
DAG_NAMES = ("ingest", "ingest_range", "train", "score", "score_range", "monitor", "rollback", "canary")
# run ids and logical dates of their own: other modules' train runs use other ones
RUNS = {FLIGHTS: "manual__side_by_side_flights", BIKES: "manual__side_by_side_bikes"}
# each train run's window [start, end) and the day scored after it (past the window)
WINDOWS = {FLIGHTS: (DAYS[0], dt.date(2013, 1, 9)), BIKES: (BIKE_DAYS[0], BIKE_DAYS[-1])}
SCORED = {FLIGHTS: dt.date(2013, 1, 9), BIKES: BIKE_DAYS[-1]}
VARIANTS = {FLIGHTS: ["logreg"], BIKES: ["hgb_small", "ridge"]}
DRIFTED = BIKE_DAYS[-1] + dt.timedelta(days=1)  # a copy of bikes' scored day, temp and humidity shifted
YEAR = {FLIGHTS: 2013, BIKES: 2011}  # every day either pipeline works on lies in its data's year


def _ids(pipeline: str) -> set[str]:
    return {dag_id(pipeline, name) for name in DAG_NAMES}


def _other(pipeline: str) -> str:
    return BIKES if pipeline == FLIGHTS else FLIGHTS


def test_a_train_run_of_each_pipeline_at_once(cluster):
    """Through the scheduler: a flights__train and a bikes__train run, triggered together."""
    from mlpipe.ledger import entries

    before = {p: cluster.runs(dag_id(p, "train")) for p in RUNS}
    for pipeline, run_id in RUNS.items():
        start, end = WINDOWS[pipeline]
        conf = {"window_start": str(start), "window_end": str(end), "holdout_days": 2,
                "variants": VARIANTS[pipeline]}
        cluster.trigger(dag_id(pipeline, "train"), conf, run_id, f"{end}T12:00:00+00:00")
    for pipeline in RUNS:
        assert cluster.wait_runs(dag_id(pipeline, "train"), 1, since=before[pipeline]) == ["success"], pipeline
    for pipeline, run_id in RUNS.items():
        (entry,) = [e for e in entries(cluster.store(pipeline)) if e.run_id == run_id]
        assert (entry.pipeline, entry.model, entry.dag_id) == (pipeline, pipeline, dag_id(pipeline, "train"))
        assert set(entry.candidates) >= set(VARIANTS[pipeline])
    (bikes,) = [e for e in entries(cluster.store(BIKES)) if e.run_id == RUNS[BIKES]]
    assert bikes.moved and bikes.champion_before is None, bikes.reason  # bikes' first champion


def test_a_score_run_of_each_pipeline_at_once(cluster):
    """Through the scheduler: a live score run of each pipeline (created together) for the
    day after its training window."""
    before = {p: cluster.runs(dag_id(p, "score")) for p in RUNS}
    for pipeline, day in SCORED.items():
        cluster.api(f"/api/v2/dags/{dag_id(pipeline, 'score')}/dagRuns", {
            "logical_date": f"{day}T12:00:00Z", "data_interval_start": f"{day}T00:00:00Z",
            "data_interval_end": f"{day + dt.timedelta(days=1)}T00:00:00Z"})
    for pipeline in RUNS:
        assert cluster.wait_runs(dag_id(pipeline, "score"), 1, since=before[pipeline]) == ["success"], pipeline
    for pipeline, day in SCORED.items():
        store = cluster.store(pipeline)
        assert len(store.read("predictions", day)) == len(store.read("features", day))
    champion = cluster.mlflow().get_model_version_by_alias(BIKES, "champion").version
    assert set(cluster.store(BIKES).read("predictions", SCORED[BIKES])["model_version"]) == {str(champion)}


def test_dag_runs_and_asset_events_stay_with_their_pipeline(cluster):
    runs = cluster.query("SELECT dag_id, run_id FROM dag_run")
    assert {d for d, _ in runs} <= _ids(FLIGHTS) | _ids(BIKES)
    for pipeline, run_id in RUNS.items():
        assert {d for d, r in runs if r == run_id} == {dag_id(pipeline, "train")}
    ingested = {FLIGHTS: cluster.ingest_runs, BIKES: cluster.bike_ingest_runs}
    for pipeline, run_ids in ingested.items():  # backfill run ids repeat across DAGs, their dates do not
        years = cluster.query("SELECT DISTINCT extract(year FROM data_interval_start)::int FROM dag_run "
                              "WHERE dag_id = %s AND run_id = ANY(%s)", dag_id(pipeline, "ingest"), run_ids)
        assert years == [(YEAR[pipeline],)]

    assets = {uri for (uri,) in cluster.query("SELECT uri FROM asset WHERE uri LIKE %s", "mlpipe://%")}
    assert assets == {f"mlpipe://{p}/{what}" for p in RUNS for what in ("features", "retrain-request")}
    events = cluster.query("SELECT a.uri, e.source_dag_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.uri LIKE %s", "mlpipe://%")
    for pipeline in RUNS:
        sources = {source for uri, source in events if uri.startswith(f"mlpipe://{pipeline}/")}
        assert dag_id(pipeline, "ingest") in sources and sources <= _ids(pipeline), (pipeline, sources)


def test_partitions_stay_under_their_pipeline(cluster):
    from mlpipe.storage import LAYERS, listing

    for pipeline in RUNS:
        store = cluster.store(pipeline)
        days = {dt.date.fromisoformat(name[5:15]) for layer in LAYERS for name in listing(store.layer_dir(layer))}
        assert days and {day.year for day in days} == {YEAR[pipeline]}, pipeline
    for day in BIKE_DAYS:
        assert cluster.store(BIKES).exists("features", day) and not cluster.store(FLIGHTS).exists("features", day)
    assert cluster.store(BIKES).exists("predictions", SCORED[BIKES])
    assert not cluster.store(BIKES).exists("features", DAYS[0])


def test_registry_versions_and_aliases_stay_with_their_pipeline(cluster):
    client = cluster.mlflow()
    experiments = {p: client.get_experiment_by_name(p).experiment_id for p in RUNS}
    for pipeline in RUNS:
        versions = client.search_model_versions(f"name = '{pipeline}'")
        assert versions, pipeline
        for version in versions:
            run = client.get_run(version.run_id)
            assert run.info.experiment_id == experiments[pipeline], (pipeline, version.version)
            assert run.data.tags.get("airflow.dag_id") in _ids(pipeline), (pipeline, version.version)
        aliases = client.get_registered_model(pipeline).aliases
        assert "champion" in aliases
        assert set(aliases.values()) <= {str(v.version) for v in versions}
        tagged = {r.data.tags.get("airflow.dag_id") for r in client.search_runs([experiments[pipeline]])}
        assert tagged - {None} <= _ids(pipeline), pipeline
        mine = client.search_runs([experiments[pipeline]], f"tags.`airflow.run_id` = '{RUNS[pipeline]}'")
        assert mine and not client.search_runs([experiments[_other(pipeline)]],
                                               f"tags.`airflow.run_id` = '{RUNS[pipeline]}'")


def test_ledger_entries_and_report_pages_stay_with_their_pipeline(cluster):
    from mlpipe.ledger import entries
    from mlpipe.promotion import evaluation_page

    for pipeline in RUNS:
        store, other = cluster.store(pipeline), _other(pipeline)
        ledger = entries(store)
        assert {e.dag_id for e in ledger} <= _ids(pipeline) and {e.pipeline for e in ledger} == {pipeline}
        assert RUNS[pipeline] in {e.run_id for e in ledger} and RUNS[other] not in {e.run_id for e in ledger}
        (entry,) = [e for e in ledger if e.run_id == RUNS[pipeline]]
        assert evaluation_page(store, entry.seq).exists()
        assert RUNS[pipeline] in (store.report_dir() / "index.html").read_text()
        assert store.report_path("validation", WINDOWS[pipeline][0]).exists()
        pages = [p for p in store.report_dir().rglob("*") if p.is_file()]
        for path in pages:  # nothing names the other pipeline's DAGs or runs
            text = path.read_text(errors="replace")
            assert f"{other}__" not in text and RUNS[other] not in text, path


def _drifted_day(cluster) -> None:
    """DRIFTED: bikes' scored day with temperature and humidity moved far off the training sample."""
    from mlpipe.features import PARTITION_DATE

    store = cluster.store(BIKES)
    features, predictions = store.read("features", SCORED[BIKES]), store.read("predictions", SCORED[BIKES])
    features = features.assign(temp=features["temp"] + 30.0, hum=features["hum"] * 0.2, **{PARTITION_DATE: DRIFTED})
    store.write("features", DRIFTED, features)
    store.write("predictions", DRIFTED, predictions.assign(**{PARTITION_DATE: DRIFTED}))


def _asset_triggered(cluster, train: str) -> dict[str, str]:
    return dict(cluster.query("SELECT run_id, state FROM dag_run WHERE dag_id = %s AND run_type = 'asset_triggered'",
                              train))


def test_a_retrain_request_of_bikes_starts_only_bikes_train(cluster):
    """Through the scheduler: bikes' monitor decides `trigger`, and the asset event it emits
    starts a bikes__train run; flights__train gets none."""
    _drifted_day(cluster)
    cluster.unpause(BIKES_MONITOR)
    monitors, trains = cluster.runs(BIKES_MONITOR), cluster.runs(BIKES_TRAIN)
    requested = {p: _asset_triggered(cluster, dag_id(p, "train")) for p in RUNS}
    cluster.trigger(BIKES_MONITOR, {"day": str(DRIFTED)})
    assert cluster.wait_runs(BIKES_MONITOR, 1, since=monitors) == ["success"]
    decision = json.loads(cluster.store(BIKES).report_path("drift", DRIFTED).read_text())["decision"]
    assert decision["action"] == "trigger", decision
    assert not cluster.store(FLIGHTS).report_path("drift", DRIFTED).exists()

    assert cluster.wait_runs(BIKES_TRAIN, 1, since=trains) == ["success"]  # the one the request started
    (started,) = set(_asset_triggered(cluster, BIKES_TRAIN)) - set(requested[BIKES])
    consumed = cluster.query(
        "SELECT a.uri, e.source_dag_id FROM dagrun_asset_event de JOIN dag_run dr ON dr.id = de.dag_run_id "
        "JOIN asset_event e ON e.id = de.event_id JOIN asset a ON a.id = e.asset_id "
        "WHERE dr.dag_id = %s AND dr.run_id = %s", BIKES_TRAIN, started)
    assert consumed == [(f"mlpipe://{BIKES}/retrain-request", BIKES_MONITOR)]
    assert _asset_triggered(cluster, TRAIN) == requested[FLIGHTS]  # flights' train: no new run
