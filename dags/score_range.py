"""Every pipeline's `<pipeline>__score_range` Airflow DAG, one per spec in the pipelines folder.

Score and monitor a range of days (a backfill) in one task per chunk of days, writing what
the daily score and monitor DAGs write. Built by plugins/mlpipe_factory/score_range.py,
whose docstring is each DAG's docs.
"""

from mlpipe_factory import publish, score_range

publish(globals(), "score_range", score_range.build)
