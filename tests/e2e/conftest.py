"""Fixtures shared by the end-to-end modules: the session's one distributed cluster and the
webhook it sends its alerts to.

``cluster`` starts once per session, the first time a module asks for it, and stops at
the end of the session. Every module that needs the distributed topology
(test_cluster.py, test_faults.py, test_side_by_side.py, and later ones) uses it rather
than starting its own: a start costs a minute or two, and the ingest backfills below as
much again.

What a module may rely on when its first test runs (see topology.shared_pipelines):

- no shared data directory: the data root is a bucket on the session's S3 server
  (``cluster.env["MLPIPE_DATA_ROOT"]``, ``s3://...``; read it with ``cluster.store()``),
  flights' daily drops are objects there too, locks are PostgreSQL advisory locks on the
  cluster's Airflow DB, and each worker keeps its caches in its own folder;
- two pipelines side by side, from a pipelines folder (MLPIPE_PIPELINES_DIR):
  ``flights`` (``topology.PIPELINE``: every variant of ``topology.VARIANTS``, the
  ``topology.MONITORING`` settings, two train runs at once) and ``bikes``
  (``topology.BIKES``, ``topology.bikes_spec``);
- ``topology.INGEST``, ``TRAIN`` and ``SCORE`` (the ``flights__*`` DAGs) and
  ``BIKES_INGEST``, ``BIKES_TRAIN`` and ``BIKES_SCORE`` unpaused; one ingest backfill of
  each pipeline, created at once while the scheduler ran, finished: flights over
  ``topology.DAYS`` and ``topology.BAD_DAY``, every day validated and featurised except
  ``BAD_DAY``, whose validation failed (``cluster.ingest_runs`` holds those runs' ids);
  bikes over ``topology.BIKE_DAYS``, all featurised (``cluster.bike_ingest_runs``).

What a module must not assume: anything another module may have done before it. Modules
run in any order (`pytest -p randomly`, `-k`, one module alone), so a test reads the
state it starts from (the champion, the ledger, the runs and alerts so far) and asserts
on what its own runs changed: ``cluster.runs(dag_id)`` before, then
``cluster.wait_runs(dag_id, n, since=before)``; ``alerts["received"][mark:]``; ledger
entries by run id. A test that changes shared state other modules read (an artifact, a
service) restores it before it ends, even when it fails.
"""

from __future__ import annotations

import pytest
from topology import (
    BAD_DAY,
    BIKE_DAYS,
    BIKES_INGEST,
    BIKES_SCORE,
    BIKES_TRAIN,
    DAYS,
    INGEST,
    SCORE,
    TRAIN,
    running,
    shared_pipelines,
)


@pytest.fixture(scope="session")
def alerts(serve_webhook):
    """The webhook on 127.0.0.1 the shared cluster sends its alerts to: {"url", "received"}
    (every alert of the session, in arrival order)."""
    with serve_webhook() as hook:
        yield hook


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, alerts, cluster_script, s3_server):
    """The session's distributed cluster (topology.Cluster), ingested as described above."""
    work = tmp_path_factory.mktemp("cluster")
    bucket = s3_server.bucket("mlpipe-e2e")
    with running(work, "mlpipe_e2e", 13, shared_pipelines(work, bucket), alerts["url"], cluster_script.group_alive,
                 data_root=f"{bucket}/data") as handle:
        for dag_id in (INGEST, TRAIN, SCORE, BIKES_INGEST, BIKES_TRAIN, BIKES_SCORE):
            handle.unpause(dag_id)
        # created while the scheduler runs (Postgres allows it; SQLite does not)
        assert handle.query("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'") == [(1,)]
        handle.backfill(INGEST, DAYS[0], BAD_DAY)
        handle.backfill(BIKES_INGEST, BIKE_DAYS[0], BIKE_DAYS[-1])
        states = handle.wait_runs(INGEST, len(DAYS) + 1)
        assert sorted(states) == ["failed"] + ["success"] * len(DAYS), states
        assert handle.wait_runs(BIKES_INGEST, len(BIKE_DAYS)) == ["success"] * len(BIKE_DAYS)
        handle.ingest_runs, handle.bike_ingest_runs = list(handle.runs(INGEST)), list(handle.runs(BIKES_INGEST))
        yield handle
