"""Every pipeline's `<pipeline>__monitor` Airflow DAG, one per spec in the pipelines folder.

Monitor one scored day (Evidently drift, live quality) and ask for a retrain when due. Built
by plugins/mlpipe_factory/monitor.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import monitor, publish

publish(globals(), "monitor", monitor.build)
