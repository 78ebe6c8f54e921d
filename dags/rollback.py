"""Every pipeline's `<pipeline>__rollback` Airflow DAG, one per spec in the pipelines folder.

Point the champion alias at an earlier version in one manual run. Built by
plugins/mlpipe_factory/rollback.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import publish, rollback

publish(globals(), "rollback", rollback.build)
