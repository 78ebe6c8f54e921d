"""Every pipeline's `<pipeline>__train` Airflow DAG, one per spec in the pipelines folder.

Train the variants in parallel, evaluate them with the champion, promote through the gate.
Built by plugins/mlpipe_factory/train.py, whose docstring is each DAG's docs.
"""

from mlpipe_factory import publish, train

publish(globals(), "train", train.build)
