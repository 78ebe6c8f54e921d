"""Feature partitions: the spec's columns, calendar fields, the target label, and
point-in-time historical aggregates computed only from partitions before the day built.

A feature partition holds the row ids, ``partition_date``, every feature and the label
(NaN where unknown and ``when_null: drop``). Excluded columns never enter it unless they
are row ids, and training selects features by name, so ids cannot become features.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlpipe.errors import SourceError
from mlpipe.spec import HistorySpec, PipelineSpec, TargetSpec

PARTITION_DATE = "partition_date"


def compute_target(frame: pd.DataFrame, target: TargetSpec) -> pd.Series:
    """The label per row as its target type derives it (binary and regression: float;
    multi-class: the class as text), null where an input is null and the policy is ``drop``."""
    missing = [c for c in target.inputs if c not in frame.columns]
    if missing:
        raise SourceError(f"target {target.name!r}: input columns {missing} not found")
    if frame.empty:
        return target.type.label([], frame.index).rename(target.name)
    value = pd.eval(target.expression, local_dict={c: frame[c] for c in target.inputs}, engine="python")
    label = target.type.label(value, frame.index).rename(target.name)
    unknown = frame[target.inputs].isna().any(axis=1)
    fill = {"drop": None, "positive": 1.0, "negative": 0.0}[target.when_null]
    return label.mask(unknown, fill)


def as_category_text(values: pd.Series) -> pd.Series:
    """Categories as text; integral numbers print without a decimal point, so a numeric
    code reads the same on days with and without nulls (100, never 100.0)."""
    if pd.api.types.is_numeric_dtype(values):
        values = values.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)),
                            na_action=None)
    return values.astype("string")


def history_days(spec: PipelineSpec, day: dt.date) -> tuple[dt.date, dt.date]:
    """The ``[start, end)`` range of earlier partitions the historical features read."""
    longest = max((h.window_days for h in spec.features.history), default=0)
    return day - dt.timedelta(days=longest), day


def history_columns(spec: PipelineSpec) -> list[str]:
    keys = {k for h in spec.features.history for k in h.group_by}
    return sorted(keys | set(spec.target.inputs))


def history_stats(spec: PipelineSpec, past: pd.DataFrame, day: dt.date) -> dict[str, pd.DataFrame | float]:
    """Each history feature's statistic for rows of ``day``, from ``past`` (validated rows
    with ``partition_date``; only its ``window_days`` days before ``day`` count): a frame of
    the group columns and the value per group, or one value when it has no groups. The
    batch features and the online snapshot (:func:`snapshot_day`) are both these."""
    past = past[past[PARTITION_DATE] < day].copy()
    past["__label"] = compute_target(past, spec.target)
    out: dict[str, pd.DataFrame | float] = {}
    for hist in spec.features.history:
        window = past[past[PARTITION_DATE] >= day - dt.timedelta(days=hist.window_days)]
        if not hist.group_by:  # one value for every row: the whole window's statistic
            out[hist.name] = float(len(window)) if hist.stat == "count" else float(window["__label"].mean())
        elif hist.stat == "count":
            out[hist.name] = window.groupby(hist.group_by, dropna=False).size().rename(hist.name).reset_index()
        else:
            out[hist.name] = (window.groupby(hist.group_by, dropna=False)["__label"].mean().rename(hist.name)
                              .reset_index())
    return out


def calendar_values(day: dt.date) -> dict[str, float]:
    """The calendar fields of a partition day."""
    return {"day_of_week": float(day.weekday()), "day_of_year": float(day.timetuple().tm_yday),
            "month": float(day.month), "is_weekend": float(day.weekday() >= 5)}


def _null_as_none(value):
    """One null for every kind of missing value (None, NaN, pd.NA), as the merge matches them."""
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else value


class GroupLookup:
    """A group statistic (:func:`history_stats`'s frame) as a dict from the group's values
    to the value: what the left merge of a few rows finds, without its fixed cost (a
    serving request). Build it from the frame with its key columns of the rows' dtypes."""

    def __init__(self, stat: pd.DataFrame, name: str, group_by: list[str]):
        keys = zip(*(map(_null_as_none, stat[c].tolist()) for c in group_by), strict=True)
        self.table = dict(zip(keys, stat[name].astype("float64").tolist(), strict=True))  # groupby keys: unique

    def __call__(self, rows: pd.DataFrame, group_by: list[str]) -> np.ndarray:
        return self.find([rows[c].tolist() for c in group_by])

    def find(self, columns: list[list], nulls_are_none: bool = False) -> np.ndarray:
        """The value of each row's group, from the group columns' values (NaN: no such group;
        ``nulls_are_none``: no NaN or NA among them)."""
        keys = zip(*(columns if nulls_are_none else (map(_null_as_none, values) for values in columns)), strict=True)
        get = self.table.get
        return np.array([get(key, np.nan) for key in keys], dtype="float64")


def _looked_up(rows: pd.DataFrame, hist: HistorySpec, stat: pd.DataFrame | GroupLookup | float) -> pd.Series:
    """A history feature's value for each row: its group's statistic (a group absent from
    the window: count 0, mean unknown)."""
    if not hist.group_by:
        return pd.Series(stat, index=rows.index, name=hist.name, dtype="float64")
    if isinstance(stat, GroupLookup):
        out = pd.Series(stat(rows, hist.group_by))
    else:
        joined = rows[hist.group_by].merge(stat, on=hist.group_by, how="left")
        out = joined[hist.name].astype("float64")
    if hist.stat == "count":
        out = out.fillna(0.0)
    return pd.Series(out.to_numpy(), index=rows.index, name=hist.name)


def build_features(spec: PipelineSpec, day: dt.date, rows: pd.DataFrame, past: pd.DataFrame) -> pd.DataFrame:
    """One day's feature partition.

    ``rows`` is the day's validated partition; ``past`` holds earlier validated rows
    (``history_columns`` plus ``partition_date``), only days before ``day`` are used.
    """
    stats = history_stats(spec, past, day) if spec.features.history else {}
    return features_from(spec, day, rows, stats).sort_values(spec.row_id, kind="stable").reset_index(drop=True)


def features_from(spec: PipelineSpec, day: dt.date, rows: pd.DataFrame,
                  stats: dict[str, pd.DataFrame | float], label: bool = True) -> pd.DataFrame:
    """The features of ``rows`` of ``day`` with the history statistics ``stats``
    (:func:`history_stats`), in the rows' order; with ``label``, the label too (a request
    to a serving process has none)."""
    feats = spec.features
    wanted = [*spec.row_id, *feats.numeric, *feats.categorical]
    missing = [c for c in dict.fromkeys(wanted) if c not in rows.columns]
    if missing:
        raise SourceError(f"features for {day}: columns {missing} not in the validated partition")
    # built as a dict of columns and made a frame once: a column set on a frame costs
    # about as much for one row as for a day's (a serving request)
    ids, others = list(dict.fromkeys(spec.row_id)), [c for c in dict.fromkeys(wanted) if c not in spec.row_id]
    out = {c: rows[c] for c in ids}
    out[PARTITION_DATE] = pd.Series([day] * len(rows), index=rows.index, dtype="object")
    out.update({c: rows[c] for c in others})
    calendar = calendar_values(day)
    for name in feats.calendar:
        out[name] = pd.Series(calendar[name], index=rows.index, dtype="float64")
    for hist in feats.history:
        out[hist.name] = _looked_up(rows, hist, stats[hist.name])
    for column in feats.numeric:
        if column not in spec.row_id:  # ids keep their stored type
            values = out[column]
            if not pd.api.types.is_numeric_dtype(values):  # to_numeric leaves numbers as they are
                values = pd.to_numeric(values, errors="raise")
            out[column] = values.astype("float64")
    for column in feats.categorical:
        out[column] = as_category_text(out[column])
    if label:
        out[spec.target.name] = compute_target(rows, spec.target)
    # every column is on rows' index: their arrays need no alignment (nor copies: copy on write)
    return pd.DataFrame({c: v.array for c, v in out.items()}, index=rows.index, copy=False)
