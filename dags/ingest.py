"""Every pipeline's `<pipeline>__ingest` Airflow DAG, one per spec in the pipelines folder.

Ingest one day of source data: extract, validate (Great Expectations), features. Built by
plugins/mlpipe_factory/ingest.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import ingest, publish

publish(globals(), "ingest", ingest.build)
