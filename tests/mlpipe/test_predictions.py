"""The predictions partition's schema and its join with the labels (in-process, files only)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlpipe import predictions
from mlpipe.features import PARTITION_DATE

D1, D2, D3 = (dt.date(2024, 1, d) for d in (1, 2, 3))


def _features(day: dt.date, ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"event_id": ids, PARTITION_DATE: day, "distance": 1.0})


def test_a_days_frame_has_the_declared_columns_and_dtypes(spec):
    out = predictions.build(spec, _features(D1, [1, 2]), np.array([0.2, 0.7]), "3", "champion", None, None)
    assert list(out.columns) == [*predictions.keys(spec), *predictions.DTYPES]
    assert out[list(predictions.DTYPES)].dtypes.astype(str).to_dict() == predictions.DTYPES
    assert out[predictions.PREDICTED_LABEL].tolist() == [0, 1]
    assert out[predictions.CHALLENGER_SCORE].isna().all() and out[predictions.CHALLENGER_VERSION].isna().all()
    assert predictions.summarise(out)["positive_rate"] == 0.5


def test_regression_has_no_predicted_label(spec, with_target):
    regression = with_target(spec, task="regression", when_null="drop")
    out = predictions.build(regression, _features(D1, [1]), np.array([4.0]), "1", "champion", np.array([5.0]), "2")
    assert predictions.PREDICTED_LABEL not in out and "positive_rate" not in predictions.summarise(out)
    assert (out[predictions.CHALLENGER_SCORE].tolist(), out[predictions.CHALLENGER_VERSION].tolist()) == ([5.0], ["2"])


def test_a_multiclass_day_has_a_probability_column_per_class_and_the_predicted_class(multiclass_spec):
    champion = predictions.score_frame(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]), ["a", "b", "c"])
    challenger = predictions.score_frame(np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    out = predictions.build(multiclass_spec, _features(D1, [1, 2]), champion, "3", "champion", challenger, "4")
    assert [c for c in out.columns if "score" in c] == ["score_a", "score_b", "score_c", "challenger_score_a",
                                                        "challenger_score_b"]
    assert out[predictions.PREDICTED_LABEL].tolist() == ["b", "a"]
    assert predictions.classes_in(out) == ["a", "b", "c"]
    assert predictions.classes_in(out, predictions.CHALLENGER_SCORE) == ["a", "b"]
    # the challenger's scores on the champion's classes: a class it does not know scores 0
    np.testing.assert_array_equal(predictions.scores_of(out, ["a", "b", "c"], predictions.CHALLENGER_SCORE),
                                  [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    assert predictions.summarise(out) == {"class_shares": {"a": 0.5, "b": 0.5, "c": 0.0},
                                          "mean_probabilities": {"a": 0.4, "b": 0.3, "c": 0.3}}
    alone = predictions.build(multiclass_spec, _features(D1, [1, 2]), champion, "3", "champion", None, None)
    assert alone[predictions.CHALLENGER_SCORE].isna().all() and alone[predictions.CHALLENGER_VERSION].isna().all()


def test_with_labels_joins_on_row_id_and_day_and_keeps_labelled_rows(spec, store):
    target = spec.target.name
    for day, score in ((D1, 0.1), (D2, 0.9)):  # the same row ids on both days
        scored = predictions.build(spec, _features(day, [1, 2]), np.full(2, score), "1", "champion", None, None)
        store.write("predictions", day, scored)
    store.write("features", D1, _features(D1, [1, 2]).assign(**{target: [1.0, None]}))  # row 2: no label yet
    store.write("features", D2, _features(D2, [1, 2]).assign(**{target: [0.0, 1.0]}))

    rows, days = predictions.with_labels(store, spec, D1, D3)

    assert days == [D1, D2]
    got = sorted(zip(rows[PARTITION_DATE], rows["event_id"], rows[predictions.SCORE], rows[target], strict=True))
    assert got == [(D1, 1, 0.1, 1.0), (D2, 1, 0.9, 0.0), (D2, 2, 0.9, 1.0)]
    assert predictions.with_labels(store, spec, D3, D3 + dt.timedelta(days=1))[1] == []  # nothing scored
