"""Calibrated drift: each column's normal band, learnt from how ordinary days vary.

Evidently's fixed thresholds answer "is today's distribution the reference's?", which a
single day of autumn weather never is. A band answers what a user asks: is today unusual
compared with how days normally differ from the reference? For each monitored column
(and the scores) the same Evidently statistic the day's report shows is computed for
each ``window_days`` chunk of a calibration period against the version's reference:

- features: the version's training days, each against the reference sample less that
  chunk's own rows (so a day is never compared with itself);
- scores: the version's holdout days against its holdout scores less that chunk's.

A column's band reaches from the statistics' median ``band_width`` times as far as their
``band_quantile`` quantile (by default twice as far as the 99th percentile: with some
thirty columns, one outside its band by chance is then rare); for p-value tests, where a
small value is drift, the same on -log10(p). A day drifts on a column when its statistic
is outside the band. A column's *excess* is how far outside, in those spreads; the day's
drift score is the sum of its columns' excesses, and the day is dataset drift when that
score is outside its own band: the ``band_quantile`` quantile of the calibration chunks'
scores (often 0: then any column outside its band).

Bands are learnt when a version is promoted and logged beside its reference
(``reference/bands.json``); ``python -m mlpipe.monitoring --relearn`` learns them again on
recent ordinary days without retraining.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from mlpipe.features import PARTITION_DATE
from mlpipe.metrics import metric as metric_of
from mlpipe.predictions import PREDICTED_LABEL, SCORE, outputs

BANDS_FILE = "bands.json"  # in the version's reference/ artifact folder
MIN_CHUNKS = 5  # fewer calibration values than this: no band (Evidently's fixed threshold)
# Evidently stattests whose score is a p-value: a small value is drift
P_VALUE_TESTS = frozenset({"anderson", "chisquare", "cramer_von_mises", "es", "fisher_exact", "g_test", "ks", "mannw",
                           "t_test", "z", "empirical_mmd"})


def categorical(spec, column: str) -> bool:
    """A categorical feature, or a multi-class model's predicted class."""
    return column in spec.features.categorical or column == PREDICTED_LABEL


def _column_type(spec, column: str):
    from evidently.legacy.core import ColumnType

    return ColumnType.Categorical if categorical(spec, column) else ColumnType.Numerical


def _clean(series: pd.Series, categorical: bool) -> pd.Series:
    """As Evidently's column drift prepares a column: no infinities, no nulls."""
    series = series.replace([np.inf, -np.inf], np.nan).dropna()
    return series.astype("string") if categorical else series


def choose_tests(spec, reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Each column's Evidently stattest: the spec's method for its type, else the one
    Evidently picks for this reference and these current values (the score: numeric)."""
    from evidently.legacy.calculations.stattests import get_stattest

    mon, tests = spec.monitoring, {}
    for column in columns:
        is_categorical = categorical(spec, column)
        ref, cur = _clean(reference[column], is_categorical), _clean(current[column], is_categorical)
        if ref.empty or cur.empty:
            continue
        method = mon.cat_method if is_categorical else mon.num_method
        tests[column] = get_stattest(ref, cur, _column_type(spec, column), method).name
    return tests


def method(spec, column: str, name: str) -> str | None:
    """The stattest to ask Evidently for by name, or None where Evidently only picks it
    itself (chi-square or z on a numeric column of a few values, which it will not take
    by name): its choice is then the same test."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest

    try:
        get_registered_stattest(name, _column_type(spec, column))
    except Exception:  # noqa: BLE001 - Evidently's "not applicable to this column type"
        return None
    return name


def statistics(spec, reference: pd.DataFrame, current: pd.DataFrame, tests: dict[str, str]) -> dict[str, float]:
    """Each column's statistic (``tests``: column -> Evidently stattest name); a column
    with no values on either side has none."""
    from evidently.legacy.calculations.stattests import get_stattest

    found = {}
    for column, name in tests.items():
        is_categorical = categorical(spec, column)
        ref, cur = _clean(reference[column], is_categorical), _clean(current[column], is_categorical)
        if ref.empty or cur.empty:
            continue
        kind = _column_type(spec, column)
        found[column] = float(get_stattest(ref, cur, kind, method(spec, column, name))(ref, cur, kind, None).drift_score)
    return found


def _chunks(frame: pd.DataFrame, window_days: int) -> list[pd.DataFrame]:
    """``frame`` cut into chunks of ``window_days`` consecutive calendar days, in order."""
    days = pd.to_datetime(frame[PARTITION_DATE]).dt.date
    first = days.min()
    index = days.map(lambda d: (d - first).days // window_days)
    return [part for _, part in frame.groupby(index.to_numpy(), sort=True)]


def _leave_out(reference: pd.DataFrame, chunk: pd.DataFrame) -> pd.DataFrame:
    if PARTITION_DATE not in reference.columns:
        return reference
    return reference[~reference[PARTITION_DATE].isin(set(chunk[PARTITION_DATE])).to_numpy()]


def _oriented(value: float, lower_is_drift: bool) -> float:
    """Larger is more drift: a p-value as -log10(p) (its spread is on a log scale)."""
    return -math.log10(max(value, 1e-300)) if lower_is_drift else value


def _band(values: list[float], test: str, quantile: float, width: float) -> dict | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < MIN_CHUNKS:
        return None
    lower = test in P_VALUE_TESTS
    oriented = [_oriented(v, lower) for v in values]
    median, high = float(np.median(oriented)), float(np.quantile(oriented, quantile))
    spread = max(high - median, 1e-9)
    edge = median + width * spread
    return {"test": test, "lower_is_drift": lower, "band": 10 ** -edge if lower else edge, "edge": edge,
            "median": median, "spread": spread, "chunks": len(values)}


def excess(band: dict, value: float) -> float:
    """How far ``value`` is outside ``band``, in spreads (0 inside)."""
    return max(0.0, (_oriented(value, band["lower_is_drift"]) - band["edge"]) / band["spread"])


def outside(band: dict, value: float) -> bool:
    return _oriented(value, band["lower_is_drift"]) > band["edge"]


def learn(spec, reference: pd.DataFrame, days: pd.DataFrame, ref_scores: pd.DataFrame, score_days: pd.DataFrame,
          source: str, quality: dict | None = None) -> dict:
    """The bands of every monitored column (``days``: the calibration rows, with their
    ``partition_date``, against ``reference``) and of the scores (``score_days`` against
    ``ref_scores``), the band of the day's drift score, and ``quality``
    (:func:`quality_band`). ``source`` says what the calibration period was."""
    mon = spec.monitoring
    columns = [c for c in spec.monitored_columns if c in reference.columns and c in days.columns]
    tests = choose_tests(spec, reference, days, columns)
    chunks = _chunks(days, mon.window_days)
    per_chunk = [statistics(spec, _leave_out(reference, chunk), chunk, tests) for chunk in chunks]
    bands = {c: b for c in tests
             if (b := _band([s.get(c) for s in per_chunk], tests[c], mon.band_quantile, mon.band_width))}
    outs = outputs(ref_scores)
    score_tests = choose_tests(spec, ref_scores, score_days, outs) if len(score_days) and len(ref_scores) else {}
    per_score_chunk = [statistics(spec, _leave_out(ref_scores, chunk), chunk, score_tests)
                       for chunk in (_chunks(score_days, mon.window_days) if score_tests else [])]
    output_bands = {c: b for c in score_tests
                    if (b := _band([s.get(c) for s in per_score_chunk], score_tests[c], mon.band_quantile,
                                   mon.band_width))}
    drift_scores = [drift_score(bands, s) for s in per_chunk]
    dataset = {"band": float(np.quantile(drift_scores, mon.band_quantile)), "median": float(np.median(drift_scores)),
               "chunks": len(drift_scores)} if len(drift_scores) >= MIN_CHUNKS else None
    first, last = (str(pd.to_datetime(days[PARTITION_DATE]).dt.date.agg(f)) for f in ("min", "max"))
    return {"quantile": mon.band_quantile, "width": mon.band_width, "window_days": mon.window_days, "source": source, "from": first,
            "to": last, "learnt_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "columns": bands, "score": output_bands.get(outs[0]), "outputs": output_bands, "dataset": dataset,
            "quality": quality}


def output_bands(learnt: dict | None) -> dict[str, dict]:
    """The bands of the model's outputs (:func:`mlpipe.predictions.outputs`); bands learnt
    before there were several keep only the score's."""
    learnt = learnt or {}
    if "outputs" in learnt:
        return learnt["outputs"] or {}
    return {SCORE: learnt["score"]} if learnt.get("score") else {}


BOOTSTRAP_WINDOWS = 200  # windows drawn when the holdout has too few days for MIN_CHUNKS windows


def quality_band(spec, holdout: pd.DataFrame, scores, classes: list[str] | None = None) -> dict | None:
    """The gate metric over every window of ``quality_days`` consecutive holdout days (or,
    with fewer than ``MIN_CHUNKS`` such windows, over windows of days drawn with
    replacement): the spread live quality is judged against, not the pooled holdout
    figure, which a window's figure sits structurally below (the pooled figure includes
    the separation between days). Its ``bound`` is the windows' ``1 - band_quantile``
    quantile on the bad side; None when no window has a figure."""
    metric, span = spec.gate.metric, spec.monitoring.quality_days
    labels, scores = holdout[spec.target.name].reset_index(drop=True), np.asarray(scores)
    by_day = {day: rows.to_numpy() for day, rows in
              pd.Series(np.arange(len(labels))).groupby(holdout[PARTITION_DATE].to_numpy(), sort=True)}
    days = list(by_day)
    windows = [days[i:i + span] for i in range(len(days) - span + 1)]
    method = "windows"
    if len(windows) < MIN_CHUNKS:
        rng = np.random.default_rng(spec.training.seed)
        windows = [list(rng.choice(np.array(days, dtype=object), size=min(span, len(days)))) for _ in
                   range(BOOTSTRAP_WINDOWS)]
        method = "bootstrap"
    values = []
    for window in windows:
        rows = np.concatenate([by_day[d] for d in window])
        value = spec.target_type.metrics(labels.iloc[rows], scores[rows], classes).get(metric)
        if value is not None and math.isfinite(value):
            values.append(value)
    if not values:
        return None
    q = spec.monitoring.band_quantile
    bound = float(np.quantile(values, spec.metric().bad_side(q)))
    return {"metric": metric, "days": span, "method": method, "windows": len(values), "median": float(np.median(values)),
            "bound": bound}


def degraded(band: dict, live: float, tolerance: float) -> bool:
    """Live quality worse than the band's bound by more than ``tolerance``."""
    return -metric_of(band["metric"]).gain(live, band["bound"]) > tolerance


def drift_score(bands: dict[str, dict], stats: dict[str, float]) -> float:
    """The day's drift score: its columns' excesses summed."""
    return float(sum(excess(bands[c], v) for c, v in stats.items() if c in bands))


def assess(learnt: dict, stats: dict[str, float]) -> dict:
    """A day's columns (``stats``) against the bands: each column's excess, the columns
    outside their bands, the drift score and whether it is dataset drift."""
    bands = learnt["columns"]
    score = drift_score(bands, stats)
    dataset = learnt.get("dataset")
    return {"excess": {c: round(excess(bands[c], v), 4) for c, v in stats.items() if c in bands},
            "outside": sorted(c for c, v in stats.items() if c in bands and outside(bands[c], v)),
            "drift_score": score, "drift_score_band": dataset["band"] if dataset else None,
            "dataset_drift": bool(dataset) and score > dataset["band"]}
