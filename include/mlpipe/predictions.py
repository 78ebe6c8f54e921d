"""The predictions partition (``predictions/date=<day>.parquet``), in one place: its
columns and their dtypes, how a day's frame is built, its summary, and the join of
scored rows with their labels.

Each row holds the spec's row id columns and the partition date (together the key that
joins it with the features partitions, where the label arrives later), then the columns
below. A new output of the model (e.g. a probability per class) is a column here.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlpipe.features import PARTITION_DATE
from mlpipe.spec import PipelineSpec
from mlpipe.storage import Store

SCORE = "score"  # the model's output; also the pyfunc's output column and the monitoring reference's
PREDICTED_LABEL = "predicted_label"  # binary targets only: score >= 0.5
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"  # the version that scored the row
MODEL_ROLE = "model_role"  # champion, point_in_time, current_champion or fallback
CHALLENGER_SCORE = "challenger_score"  # the challenger's shadow score; null without a challenger
CHALLENGER_VERSION = "challenger_version"

DTYPES = {SCORE: "float64", PREDICTED_LABEL: "int8", MODEL_NAME: "str", MODEL_VERSION: "str", MODEL_ROLE: "str",
          CHALLENGER_SCORE: "float64", CHALLENGER_VERSION: "string"}  # "string": nullable


def keys(spec: PipelineSpec) -> list[str]:
    """The columns that identify a scored row: row ids are unique within a day."""
    return [*spec.row_id, PARTITION_DATE]


def build(spec: PipelineSpec, features: pd.DataFrame, scores: np.ndarray, version: str, role: str,
          challenger_scores: np.ndarray | None, challenger_version: str | None) -> pd.DataFrame:
    """A day's predictions of ``features`` (the rows scored, with their keys)."""
    out = features[keys(spec)].copy()
    out[SCORE] = scores
    if spec.target.task == "binary":
        out[PREDICTED_LABEL] = scores >= 0.5
    out[MODEL_NAME] = spec.registered_model
    out[MODEL_VERSION] = version
    out[MODEL_ROLE] = role
    out[CHALLENGER_SCORE] = challenger_scores
    out[CHALLENGER_VERSION] = challenger_version
    return out.astype({c: t for c, t in DTYPES.items() if c in out})


def summarise(frame: pd.DataFrame) -> dict:
    """The day's figures for its predictions report: score mean and quantiles, positive rate."""
    scores = frame[SCORE]
    return {"score_mean": float(scores.mean()),
            "score_quantiles": {str(q): float(scores.quantile(q)) for q in (0.05, 0.5, 0.95)},
            **({"positive_rate": float(frame[PREDICTED_LABEL].mean())} if PREDICTED_LABEL in frame else {})}


def with_labels(store: Store, spec: PipelineSpec, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, list[dt.date]]:
    """The scored rows of [start, end) whose label has arrived, each with its label (the
    target column of the features partitions), and the scored days."""
    predictions, days = store.read_range("predictions", start, end, date_column=PARTITION_DATE)
    if not days:
        return predictions, days
    target = spec.target.name
    labels, _ = store.read_range("features", start, end, columns=[*spec.row_id, target], date_column=PARTITION_DATE)
    joined = predictions.merge(labels, on=keys(spec), how="inner", validate="one_to_one")
    return joined[joined[target].notna()], days
