"""The task entry points, one per Airflow task, in one explicit table that the DAGs'
``run_step`` reads. Each takes a :class:`~mlpipe.context.Context` and small values
(dates, names, records) and returns small values fit for XCom (URIs, counts, hashes,
metrics, records)."""

from __future__ import annotations

from collections.abc import Callable

from mlpipe import ingest, monitoring, promotion, scoring, training
from mlpipe.serving import canary

STEPS: dict[str, Callable] = {
    # ingest DAG
    "extract_day": ingest.extract_day,
    "validate_day": ingest.validate_day,
    "build_day_features": ingest.build_day_features,
    # ingest_range DAG
    "plan_range": ingest.plan_range,
    "validate_range": ingest.validate_range,
    "features_range": ingest.features_range,
    "check_range": ingest.check_range,
    # train DAG
    "plan_training": training.plan_training,
    "train_variant": training.train_variant,
    "build_ensemble": training.build_ensemble,
    "evaluate_and_promote": promotion.evaluate_and_promote,
    # rollback DAG
    "rollback": promotion.rollback,
    # canary DAG
    "canary_step": canary.step,
    # score DAG
    "score_day": scoring.score_day,
    # monitor DAG
    "monitor_day": monitoring.monitor_day,
    # score_range DAG
    "plan_score_range": scoring.plan_range,
    "score_range": scoring.score_range,
    "monitor_range": monitoring.monitor_range,
    "check_score_range": scoring.check_range,
}
