from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.errors import NotFittedError, TrainingError
from mlpipe.model import ModelBundle
from mlpipe.spec import FeaturesSpec


def _variant(spec, name):
    return next(v for v in spec.variants if v.name == name)


@pytest.mark.parametrize("variant", ["hgb", "linear"])
def test_train_binary_and_score(spec, model_frame, variant):
    bundle = ModelBundle.train(spec, _variant(spec, variant), model_frame)
    assert bundle.task == "binary" and bundle.target == "late"
    assert bundle.backend_name == _variant(spec, variant).backend
    assert bundle.features == ["amount", "store_size", "day_of_week", "is_weekend", "late_rate_store_2d",
                               "count_channel_1d", "channel", "store", "region"]
    assert not set(bundle.features) & spec.leakage
    scores = bundle.score(model_frame)
    assert scores.shape == (len(model_frame),) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(model_frame["late"], scores) > 0.8
    assert bundle.backend.seed == spec.training.seed
    assert bundle.backend.params == _variant(spec, variant).params


@pytest.mark.parametrize("variant", ["hgb", "linear"])
def test_train_regression(regression_spec, model_frame, variant):
    bundle = ModelBundle.train(regression_spec, _variant(regression_spec, variant), model_frame)
    scores = bundle.score(model_frame)
    assert bundle.task == "regression" and scores.shape == (len(model_frame),)
    assert np.corrcoef(scores, model_frame["delay_min"])[0, 1] > 0.7
    assert not (((scores == 0) | (scores == 1)).all())


def test_unlabelled_rows_are_not_trained_on(spec, model_frame):
    frame = model_frame.copy()
    frame.loc[frame.index[:40], "late"] = np.nan
    frame.loc[frame.index[:40], "amount"] = 1e9  # would shift the learnt mean if these rows were used
    bundle = ModelBundle.train(spec, _variant(spec, "linear"), frame)
    from mlpipe.preprocessing import Preprocessor

    reference = Preprocessor(bundle.preprocessor.numeric, bundle.preprocessor.categorical).fit(frame.iloc[40:])
    assert bundle.preprocessor.means_ == pytest.approx(reference.means_)
    assert bundle.preprocessor.means_["amount"] < 1000
    with pytest.raises(TrainingError, match="no labelled rows"):
        ModelBundle.train(spec, _variant(spec, "linear"), frame.assign(late=np.nan))


@pytest.mark.parametrize("leak", ["settle_time", "delay", "late"])
def test_train_refuses_excluded_columns(spec, model_frame, leak):
    # the spec validator forbids this, so build the bad spec without validation
    features = spec.features.model_copy(update={"numeric": [*spec.features.numeric, leak]})
    leaky = spec.model_copy(update={"features": features})
    with pytest.raises(TrainingError, match=f"excluded columns \\['{leak}'\\] would reach the model"):
        ModelBundle.train(leaky, _variant(spec, "hgb"), model_frame)
    categorical = spec.model_copy(update={"features": FeaturesSpec(numeric=["amount"], categorical=["channel", leak])})
    with pytest.raises(TrainingError, match=leak):
        ModelBundle.train(categorical, _variant(spec, "linear"), model_frame)


@pytest.mark.parametrize("variant", ["hgb", "linear"])
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_save_load_round_trip(spec, regression_spec, model_frame_factory, tmp_path, variant, task):
    chosen = spec if task == "binary" else regression_spec
    bundle = ModelBundle.train(chosen, _variant(chosen, variant), model_frame_factory(seed=1))
    path = bundle.save(tmp_path / "bundle")
    assert {p.name for p in path.iterdir()} == {"preprocessor.json", "backend", "bundle.json"}
    loaded = ModelBundle.load(path)
    assert (loaded.backend_name, loaded.task, loaded.target, loaded.features) == \
        (bundle.backend_name, bundle.task, bundle.target, bundle.features)
    fresh = model_frame_factory(n=60, seed=5)
    np.testing.assert_array_equal(loaded.score(fresh), bundle.score(fresh))


def test_training_is_deterministic(spec, model_frame):
    a = ModelBundle.train(spec, _variant(spec, "hgb"), model_frame).score(model_frame)
    b = ModelBundle.train(spec, _variant(spec, "hgb"), model_frame).score(model_frame)
    np.testing.assert_array_equal(a, b)


def test_score_handles_unseen_categories_and_missing_values(spec, model_frame):
    bundle = ModelBundle.train(spec, _variant(spec, "hgb"), model_frame)
    odd = model_frame.head(3).copy()
    odd["channel"] = pd.Series(["fax", None, "web"], dtype="string", index=odd.index)
    odd["amount"] = [np.nan, 5.0, np.nan]
    scores = bundle.score(odd)
    assert np.isfinite(scores).all()


def test_unfitted_backend_in_bundle_raises(spec, model_frame):
    from mlpipe.backends.sklearn import Linear
    from mlpipe.preprocessing import Preprocessor

    pre = Preprocessor(["amount"], ["channel"]).fit(model_frame)
    bundle = ModelBundle("sklearn_linear", pre, Linear(task="binary"), "binary", "late")
    with pytest.raises(NotFittedError):
        bundle.score(model_frame)


@pytest.mark.parametrize("variant", ["hgb", "linear"])
def test_train_multiclass_scores_a_probability_per_class_and_saves_its_classes(multiclass_spec, model_frame,
                                                                               variant, tmp_path):
    bundle = ModelBundle.train(multiclass_spec, _variant(multiclass_spec, variant), model_frame)
    assert bundle.task == "multiclass" and bundle.classes == ["0", "1", "2"]  # learnt from the rows, sorted
    scores = bundle.score(model_frame)
    assert scores.shape == (len(model_frame), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    truth = model_frame["delay_band"].astype(int).to_numpy()
    assert (scores.argmax(axis=1) == truth).mean() > 0.6  # chance: about 1/3
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.classes == bundle.classes
    np.testing.assert_allclose(loaded.score(model_frame), scores)


def test_listed_classes_fix_the_order_and_an_unlisted_label_is_refused(multiclass_spec, model_frame):
    target = multiclass_spec.target.model_copy(update={"classes": ["2", "1", "0"]})
    listed = multiclass_spec.model_copy(update={"target": target})
    bundle = ModelBundle.train(listed, _variant(listed, "hgb"), model_frame)
    assert bundle.classes == ["2", "1", "0"]
    assert (bundle.score(model_frame).argmax(axis=1) == 2 - model_frame["delay_band"].astype(int)).mean() > 0.6
    target = multiclass_spec.target.model_copy(update={"classes": ["0", "1", "2", "3"]})
    for variant in ("hgb", "linear"):  # "3" has no row (a search's fitting days may lack a rare class)
        padded = ModelBundle.train(listed.model_copy(update={"target": target}), _variant(listed, variant),
                                   model_frame).score(model_frame)
        assert padded.shape == (len(model_frame), 4) and (padded[:, 3] == 0).all(), variant
        np.testing.assert_allclose(padded.sum(axis=1), 1.0, rtol=1e-6)
    target = multiclass_spec.target.model_copy(update={"classes": ["0", "1"]})
    with pytest.raises(TrainingError, match=r"labels \['2'\] are not among target.classes \['0', '1'\]"):
        ModelBundle.train(multiclass_spec.model_copy(update={"target": target}), _variant(listed, "hgb"), model_frame)
