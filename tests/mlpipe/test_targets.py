"""The target types (in-process, no services): labels, classes, encoding, outputs and
the class checks of a training split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.targets import TARGETS, target_type


def test_there_is_one_type_per_task_and_an_unknown_one_is_named():
    assert list(TARGETS) == ["binary", "regression", "multiclass"]
    assert [t.default_gate for t in TARGETS.values()] == ["roc_auc", "rmse", "log_loss"]
    with pytest.raises(KeyError, match="unknown target type 'ordinal'"):
        target_type("ordinal")


def test_a_multiclass_label_is_the_class_as_text_whole_numbers_as_integers():
    kind = target_type("multiclass")
    index = pd.RangeIndex(4)
    assert kind.label(pd.Series([1.0, 2.0, np.nan, 1.0]), index).tolist() == ["1", "2", pd.NA, "1"]
    assert kind.label(pd.Series([True, False, True, True]), index).tolist() == ["1", "0", "1", "1"]
    assert kind.label(pd.Series(["b", "a", None, "c"]), index).tolist() == ["b", "a", pd.NA, "c"]
    assert kind.label(pd.Series([0.5, 1.0, 2.0, 1.0]), index).tolist() == ["0.5", "1.0", "2.0", "1.0"]
    assert target_type("binary").label(pd.Series([True, False, None, True]), index).tolist()[:2] == [1.0, 0.0]


def test_classes_are_listed_or_learnt_and_unknown_ones_encode_as_minus_one():
    kind = target_type("multiclass")
    labels = pd.Series(["b", "a", None, "c", "a"], dtype="string")
    assert kind.classes(labels, None) == ["a", "b", "c"]
    assert kind.classes(labels, ["c", "b", "a"]) == ["c", "b", "a"]
    assert kind.encode(labels, ["a", "b"]).tolist() == [1, 0, -1, -1, 0]
    assert target_type("binary").classes(labels, None) is None


def test_multiclass_metrics_leave_out_rows_of_a_class_the_model_does_not_know():
    kind = target_type("multiclass")
    scores = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    got = kind.metrics(pd.Series(["a", "b", "zzz", "a"]), scores, ["a", "b"])
    assert got["accuracy"] == 1.0  # the "zzz" row is not counted as wrong: it is left out
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.9])))


def test_the_predicted_label_and_the_output_of_each_type():
    assert target_type("multiclass").predicted(np.array([[0.1, 0.9], [0.6, 0.4]]), ["x", "y"]).tolist() == ["y", "x"]
    assert target_type("binary").predicted(np.array([0.2, 0.5]), None).tolist() == [False, True]
    assert target_type("regression").predicted(np.array([0.2]), None) is None


@pytest.mark.parametrize("labels, classes, problem", [
    (["a"] * 5 + ["b"] * 5 + ["c"], None, None),  # a rare class is learnt too
    (["a"] * 5 + ["b"] * 2, None, "need two classes or more with 3 rows each"),
    (["a"] * 5 + ["b"] * 5, ["a", "b", "c"], "has no row of classes ['c']"),
    (["a"] * 9, None, "need two classes or more"),
    (["a"] * 5 + ["b"] * 5 + ["d"] * 5, ["a", "b"], "has labels ['d'] that are not among target.classes"),
    (["a"] * 5 + ["b"] * 5, None, None),
])
def test_a_multiclass_training_split_needs_two_classes_and_a_row_of_every_listed_one(labels, classes, problem):
    found = target_type("multiclass").split_problem(pd.Series(labels, dtype="string"), 3, classes)
    assert (found is None) if problem is None else problem in found


def test_a_multiclass_holdout_needs_two_classes_and_no_unknown_one():
    kind, classes = target_type("multiclass"), ["a", "b", "c"]
    assert kind.split_problem(pd.Series(["a", "b"], dtype="string"), 3, classes, holdout=True) is None
    assert "need two or more" in kind.split_problem(pd.Series(["a"] * 9, dtype="string"), 3, classes, holdout=True)
    assert "not among target.classes" in kind.split_problem(pd.Series(["d"], dtype="string"), 3, classes, holdout=True)


def test_a_binary_split_needs_both_classes():
    found = target_type("binary").split_problem(pd.Series([1.0] * 5 + [0.0]), 2, None)
    assert "has 1 negative and 5 positive rows" in found
    assert target_type("regression").split_problem(pd.Series([1.0]), 2, None) is None
