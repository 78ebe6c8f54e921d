"""Every pipeline's `<pipeline>__ingest_range` Airflow DAG, one per spec in the pipelines folder.

Ingest a range of days (a backfill) in one task per chunk of days, writing what the daily
ingest DAG writes. Built by plugins/mlpipe_factory/ingest_range.py, whose docstring is
each DAG's docs.
"""

from mlpipe_factory import ingest_range, publish

publish(globals(), "ingest_range", ingest_range.build)
