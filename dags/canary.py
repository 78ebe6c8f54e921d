"""Every pipeline's `<pipeline>__canary` Airflow DAG, one per spec in the pipelines folder.

The daily look of a canary release under `serving.policy: canary`. Built by
plugins/mlpipe_factory/canary.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import canary, publish

publish(globals(), "canary", canary.build)
