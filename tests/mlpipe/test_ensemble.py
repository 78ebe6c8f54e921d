from __future__ import annotations

import numpy as np
import pytest

from mlpipe.ensemble import Ensemble, choose_members, load_bundle
from mlpipe.errors import TrainingError
from mlpipe.metrics import metric
from mlpipe.model import ModelBundle
from mlpipe.spec import EnsembleSpec


@pytest.fixture
def members(spec, model_frame):
    return {v.name: ModelBundle.train(spec, v, model_frame) for v in spec.variants}


def test_scores_are_the_weighted_mean_of_the_members(members, model_frame):
    ensemble = Ensemble(members, {"hgb": 3.0, "linear": 1.0})
    assert ensemble.weights == {"hgb": 0.75, "linear": 0.25}  # normalised
    expected = 0.75 * members["hgb"].score(model_frame) + 0.25 * members["linear"].score(model_frame)
    np.testing.assert_allclose(ensemble.score(model_frame), expected, rtol=1e-12)
    assert ensemble.backend_names == ["sklearn_hgb", "sklearn_linear"]
    assert set(ensemble.features) == set(members["hgb"].features) | set(members["linear"].features)


def test_save_and_load_give_identical_scores(members, model_frame, tmp_path):
    ensemble = Ensemble(members, {"hgb": 1.0, "linear": 2.0})
    ensemble.save(tmp_path / "e")
    loaded = load_bundle(tmp_path / "e")
    assert isinstance(loaded, Ensemble) and loaded.weights == ensemble.weights
    np.testing.assert_array_equal(loaded.score(model_frame), ensemble.score(model_frame))
    members["hgb"].save(tmp_path / "single")
    assert isinstance(load_bundle(tmp_path / "single"), ModelBundle)


def test_needs_two_members_with_weights(members):
    with pytest.raises(TrainingError, match="two or more members"):
        Ensemble({"hgb": members["hgb"]}, {"hgb": 1.0})
    with pytest.raises(TrainingError, match="each with a weight"):
        Ensemble(members, {"hgb": 1.0})


def test_members_are_the_top_k_with_metric_or_equal_weights():
    metrics = {"a": 0.70, "b": 0.80, "c": 0.75, "d": 0.60}
    assert choose_members(EnsembleSpec(top_k=3), metrics, metric("roc_auc")) == {"b": 0.80, "c": 0.75, "a": 0.70}
    assert choose_members(EnsembleSpec(top_k=2, weighting="equal"), metrics, metric("roc_auc")) == {"b": 1.0, "c": 1.0}
    losses = choose_members(EnsembleSpec(top_k=2), {"a": 0.5, "b": 0.25, "c": 1.0}, metric("log_loss"))
    assert losses == {"b": 4.0, "a": 2.0}  # lower is better: inverse weights


def test_a_multiclass_ensemble_averages_class_probabilities_of_members_with_the_same_classes(multiclass_spec,
                                                                                            model_frame):
    members = {v.name: ModelBundle.train(multiclass_spec, v, model_frame) for v in multiclass_spec.variants}
    ensemble = Ensemble(members, {"hgb": 1.0, "linear": 1.0})
    scores = ensemble.score(model_frame)
    assert ensemble.classes == ["0", "1", "2"] and scores.shape == (len(model_frame), 3)
    expected = (members["hgb"].score(model_frame) + members["linear"].score(model_frame)) / 2
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    members["linear"].classes = ["0", "1", "3"]
    with pytest.raises(TrainingError, match="must predict the same classes"):
        Ensemble(members, {"hgb": 1.0, "linear": 1.0})
