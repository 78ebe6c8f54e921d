from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.errors import NotFittedError
from mlpipe.preprocessing import Encoded, Preprocessor


def _train() -> pd.DataFrame:
    return pd.DataFrame({
        "a": [1.0, 2.0, np.nan, 4.0, 5.0],
        "b": [10.0, 10.0, 10.0, 10.0, 10.0],  # constant: scale must not divide by zero
        "c": pd.Series(["x", "y", "x", None, "z"], dtype="string"),
        "d": ["p", "p", "q", "q", "r"],
    })


def _fitted() -> Preprocessor:
    return Preprocessor(["a", "b"], ["c", "d"]).fit(_train())


def test_fit_learns_medians_scales_indicators_and_vocab():
    pre = _fitted()
    assert pre.medians_ == {"a": 3.0, "b": 10.0}
    assert pre.means_["a"] == pytest.approx(3.0)
    assert pre.scales_["a"] == pytest.approx(np.std([1, 2, 3, 4, 5]))
    assert pre.scales_["b"] == 1.0
    assert pre.indicators_ == ["a"]  # only a had nulls at fit time
    assert pre.output_numeric == ["a", "b", "a__missing"]
    assert pre.vocab_["c"] == ["x", "y", "z"]  # by frequency, ties alphabetical
    assert pre.vocab_["d"] == ["p", "q", "r"]


def test_transform_shapes_and_values():
    pre = _fitted()
    enc = pre.transform(_train())
    assert isinstance(enc, Encoded) and len(enc) == 5
    assert enc.numeric.shape == (5, 3) and enc.numeric.dtype == np.float32
    assert enc.categorical.shape == (5, 2) and enc.categorical.dtype == np.int64
    assert enc.cardinalities == (4, 4)
    expected_a = (np.array([1, 2, 3, 4, 5]) - 3.0) / np.std([1, 2, 3, 4, 5])  # NaN imputed with the median
    np.testing.assert_allclose(enc.numeric[:, 0], expected_a, rtol=1e-6)
    np.testing.assert_array_equal(enc.numeric[:, 1], np.zeros(5))
    np.testing.assert_array_equal(enc.numeric[:, 2], [0, 0, 1, 0, 0])  # the missing indicator
    np.testing.assert_array_equal(enc.categorical[:, 0], [1, 2, 1, 0, 3])
    np.testing.assert_array_equal(enc.categorical[:, 1], [1, 1, 2, 2, 3])


def test_unseen_categories_and_nan_map_to_zero():
    pre = _fitted()
    new = pd.DataFrame({"a": [np.nan, 100.0], "b": [1.0, 2.0], "c": ["never", np.nan], "d": [None, "p"]})
    enc = pre.transform(new)
    np.testing.assert_array_equal(enc.categorical, [[0, 0], [0, 1]])
    np.testing.assert_array_equal(enc.numeric[:, 2], [1, 0])
    assert enc.numeric[0, 0] == pytest.approx(0.0)  # median of a == its mean here


def test_no_indicator_for_columns_without_nulls_at_fit_time():
    pre = _fitted()
    enc = pre.transform(pd.DataFrame({"a": [1.0], "b": [np.nan], "c": ["x"], "d": ["q"]}))
    assert enc.numeric.shape == (1, 3)  # b has no indicator column even though it is null now
    assert enc.numeric[0, 1] == 0.0  # imputed with its median


def test_max_categories_keeps_the_most_frequent():
    frame = pd.DataFrame({"n": [1.0] * 6, "c": ["a", "b", "b", "c", "c", "c"]})
    pre = Preprocessor(["n"], ["c"], max_categories=2).fit(frame)
    assert pre.vocab_["c"] == ["c", "b"]
    np.testing.assert_array_equal(pre.transform(frame).categorical[:, 0], [0, 2, 2, 1, 1, 1])


def test_extra_columns_ignored_and_missing_columns_rejected():
    pre = _fitted()
    extra = _train().assign(other=1)
    np.testing.assert_array_equal(pre.transform(extra).numeric, pre.transform(_train()).numeric)
    with pytest.raises(KeyError, match="lacks feature columns"):
        pre.transform(_train().drop(columns=["d"]))


def test_only_numeric_or_only_categorical():
    frame = _train()
    num = Preprocessor(["a"], []).fit(frame).transform(frame)
    assert num.numeric.shape == (5, 2) and num.categorical.shape == (5, 0) and num.cardinalities == ()
    cat = Preprocessor([], ["d"]).fit(frame).transform(frame)
    assert cat.numeric.shape == (5, 0) and cat.categorical.shape == (5, 1)


def test_save_load_round_trip(tmp_path):
    pre = _fitted()
    pre.save(tmp_path)
    assert (tmp_path / "preprocessor.json").exists()
    loaded = Preprocessor.load(tmp_path)
    new = pd.DataFrame({"a": [np.nan, 7.5, -1.0], "b": [10.0, 3.0, np.nan], "c": ["z", "unseen", None],
                        "d": ["r", "p", "q"]})
    for frame in (_train(), new):
        a, b = pre.transform(frame), loaded.transform(frame)
        np.testing.assert_array_equal(a.numeric, b.numeric)
        np.testing.assert_array_equal(a.categorical, b.categorical)
        assert a.cardinalities == b.cardinalities
    assert loaded.output_numeric == pre.output_numeric


def test_not_fitted(tmp_path):
    pre = Preprocessor(["a"], ["c"])
    with pytest.raises(NotFittedError):
        pre.transform(_train())
    with pytest.raises(NotFittedError):
        _ = pre.output_numeric
    with pytest.raises(NotFittedError):
        pre.save(tmp_path)
    assert not (tmp_path / "preprocessor.json").exists()
