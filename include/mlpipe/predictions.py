"""The predictions partition (``predictions/date=<day>.parquet``), in one place: its
columns and their dtypes, how a day's frame is built, its summary, and the join of
scored rows with their labels.

Each row holds the spec's row id columns and the partition date (together the key that
joins it with the features partitions, where the label arrives later), then the columns
below. A new output of the model is a column here. A multi-class model's output is a
probability per class (``score_<class>``, in the version's class order) and its predicted
class; its challenger's, ``challenger_score_<class>``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlpipe.features import PARTITION_DATE
from mlpipe.spec import PipelineSpec
from mlpipe.storage import Store

SCORE = "score"  # the model's output; also the pyfunc's output column and the monitoring reference's
PREDICTED_LABEL = "predicted_label"  # binary: score >= 0.5 (int8); multi-class: the most probable class
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"  # the version that scored the row
MODEL_ROLE = "model_role"  # champion, point_in_time, current_champion or fallback
CHALLENGER_SCORE = "challenger_score"  # the challenger's shadow score; null without a challenger
CHALLENGER_VERSION = "challenger_version"

DTYPES = {SCORE: "float64", PREDICTED_LABEL: "int8", MODEL_NAME: "str", MODEL_VERSION: "str", MODEL_ROLE: "str",
          CHALLENGER_SCORE: "float64", CHALLENGER_VERSION: "string"}  # "string": nullable


def class_column(cls: str, prefix: str = SCORE) -> str:
    """The column of one class's probability: ``score_<class>`` (``challenger_score_<class>``
    with ``prefix=CHALLENGER_SCORE``)."""
    return f"{prefix}_{cls}"


def score_columns(classes: list[str] | None, prefix: str = SCORE) -> list[str]:
    """A model's score columns: ``score``, or one per class."""
    return [prefix] if classes is None else [class_column(c, prefix) for c in classes]


def score_frame(scores: np.ndarray, classes: list[str] | None, prefix: str = SCORE) -> pd.DataFrame:
    """A model's scores as its columns (the pyfunc's output)."""
    return pd.DataFrame(np.asarray(scores).reshape(len(scores), -1), columns=score_columns(classes, prefix))


def scores_of(frame: pd.DataFrame, classes: list[str] | None, prefix: str = SCORE) -> np.ndarray:
    """The scores in ``frame``'s columns, aligned to ``classes``: a class the frame has no
    column for scores 0 (a model that does not know it), a column of a class not in
    ``classes`` is left out."""
    if classes is None:
        return frame[prefix].to_numpy(dtype="float64")
    return frame.reindex(columns=score_columns(classes, prefix), fill_value=0.0).to_numpy(dtype="float64")


def classes_in(frame: pd.DataFrame, prefix: str = SCORE) -> list[str] | None:
    """The classes of ``frame``'s per-class score columns, in their order (None: one score)."""
    found = [c[len(prefix) + 1:] for c in frame.columns if c.startswith(prefix + "_")]
    return None if prefix in frame.columns or not found else found


def outputs(frame: pd.DataFrame) -> list[str]:
    """The model outputs monitoring compares in ``frame`` (predictions, or a reference's
    scores): ``score``, or the predicted class and each class's probability; the first is
    what prediction drift reports."""
    classes = classes_in(frame)
    return [SCORE] if classes is None else [PREDICTED_LABEL, *score_columns(classes)]


def reference_scores(spec: PipelineSpec, scores: np.ndarray, classes: list[str] | None, days) -> pd.DataFrame:
    """A version's holdout scores as monitoring's reference keeps them: its outputs
    (:func:`outputs`) and each row's ``partition_date``."""
    frame = score_frame(scores, classes)
    if classes is not None:
        frame.insert(0, PREDICTED_LABEL, pd.Series(spec.target_type.predicted(scores, classes), dtype="string"))
    frame[PARTITION_DATE] = np.asarray(days)
    return frame


def keys(spec: PipelineSpec) -> list[str]:
    """The columns that identify a scored row: row ids are unique within a day."""
    return [*spec.row_id, PARTITION_DATE]


def build(spec: PipelineSpec, features: pd.DataFrame, scores, version: str, role: str,
          challenger_scores, challenger_version: str | None) -> pd.DataFrame:
    """A day's predictions of ``features`` (the rows scored, with their keys). ``scores``
    and ``challenger_scores`` (None: no challenger): one score per row, or a model's
    output frame (:func:`score_frame`: a ``score_<class>`` column per class)."""
    out = features[keys(spec)].copy()
    champion = _named(scores, SCORE)
    out[list(champion.columns)] = champion.to_numpy()
    classes = classes_in(champion)
    predicted = spec.target_type.predicted(scores_of(champion, classes), classes)
    if predicted is not None:
        out[PREDICTED_LABEL] = predicted
    out[MODEL_NAME] = spec.registered_model
    out[MODEL_VERSION] = version
    out[MODEL_ROLE] = role
    if challenger_scores is None:
        out[CHALLENGER_SCORE] = None
    else:
        challenger = _named(challenger_scores, CHALLENGER_SCORE)
        out[list(challenger.columns)] = challenger.to_numpy()
    out[CHALLENGER_VERSION] = challenger_version
    dtypes = {**DTYPES, **({PREDICTED_LABEL: "string"} if classes is not None else {})}
    return out.astype({c: t for c, t in dtypes.items() if c in out})


def _named(scores, prefix: str) -> pd.DataFrame:
    """Scores as columns named with ``prefix`` (``score``/``score_<class>`` become
    ``<prefix>``/``<prefix>_<class>``)."""
    if not isinstance(scores, pd.DataFrame):
        return pd.DataFrame({prefix: np.asarray(scores, dtype="float64")})
    return scores.rename(columns=lambda c: prefix + c[len(SCORE):]).astype("float64").reset_index(drop=True)


def summarise(frame: pd.DataFrame) -> dict:
    """The day's figures for its predictions report: score mean and quantiles, positive
    rate; multi-class: each class's share of the predicted labels and mean probability."""
    classes = classes_in(frame)
    if classes is not None:
        shares = frame[PREDICTED_LABEL].value_counts(normalize=True)
        return {"class_shares": {c: float(shares.get(c, 0.0)) for c in classes},
                "mean_probabilities": {c: float(frame[class_column(c)].mean()) for c in classes}}
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
