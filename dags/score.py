"""Every pipeline's `<pipeline>__score` Airflow DAG, one per spec in the pipelines folder.

Score one day's features with the champion (point in time in a backfill) into predictions.
Built by plugins/mlpipe_factory/score.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import publish, score

publish(globals(), "score", score.build)
