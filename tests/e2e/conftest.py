"""Fixtures shared by the end-to-end modules: the session's one distributed cluster and the
webhook it sends its alerts to.

``cluster`` starts once per session, the first time a module asks for it, and stops at
the end of the session. Every module that needs the distributed topology
(test_cluster.py, test_faults.py, and later ones) uses it rather than starting its own:
a start costs a minute or two, and the ingest backfill below as much again.

What a module may rely on when its first test runs (see topology.shared_spec):

- the spec of ``topology.shared_spec`` (every variant of ``topology.VARIANTS``, the
  ``topology.MONITORING`` settings, two train runs at once);
- ``topology.INGEST``, ``TRAIN`` and ``SCORE`` (the ``flights__*`` DAGs) unpaused; one ingest backfill over
  ``topology.DAYS`` and ``topology.BAD_DAY``, created while the scheduler ran, finished:
  every day validated and featurised except ``BAD_DAY``, whose validation failed
  (``cluster.ingest_runs`` holds those runs' ids).

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
from topology import BAD_DAY, DAYS, INGEST, SCORE, TRAIN, running, shared_spec


@pytest.fixture(scope="session")
def alerts(serve_webhook):
    """The webhook on 127.0.0.1 the shared cluster sends its alerts to: {"url", "received"}
    (every alert of the session, in arrival order)."""
    with serve_webhook() as hook:
        yield hook


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, alerts, cluster_script):
    """The session's distributed cluster (topology.Cluster), ingested as described above."""
    work = tmp_path_factory.mktemp("cluster")
    with running(work, "mlpipe_e2e", 13, shared_spec(work), alerts["url"], cluster_script.group_alive) as handle:
        for dag_id in (INGEST, TRAIN, SCORE):
            handle.airflow("dags", "unpause", dag_id)
        # created while the scheduler runs (Postgres allows it; SQLite does not)
        assert handle.query("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'") == [(1,)]
        handle.backfill(INGEST, DAYS[0], BAD_DAY)
        states = handle.wait_runs(INGEST, len(DAYS) + 1)
        assert sorted(states) == ["failed"] + ["success"] * len(DAYS), states
        handle.ingest_runs = list(handle.runs(INGEST))
        yield handle
