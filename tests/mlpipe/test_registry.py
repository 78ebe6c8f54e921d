"""MLflow registry against a real (SQLite) tracking store: pyfunc logging, uniform
predict, champion alias."""

from __future__ import annotations

import dataclasses
import threading

import mlflow
import numpy as np
import pytest

from mlpipe import registry
from mlpipe.model import ModelBundle
from mlpipe.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_store(tmp_path):
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts")
    registry.connect(settings, "toy")
    yield settings
    mlflow.set_tracking_uri(get_settings().tracking_uri)


def _log(spec, frame, variant_index=0):
    bundle = ModelBundle.train(spec, spec.variants[variant_index], frame)
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("toy").experiment_id):
        info, _ = registry.log_bundle(bundle, frame.head(50), "toy")
    return bundle, info


def test_logged_pyfunc_predicts_like_the_bundle(mlflow_store, spec, model_frame):
    bundle, info = _log(spec, model_frame)
    model = registry.load_model(info.model_uri)

    scores = registry.predict(model, model_frame)

    np.testing.assert_allclose(scores, bundle.score(model_frame), rtol=1e-12)
    assert str(info.registered_model_version) == "1"


def test_predict_accepts_integers_and_nulls_in_any_input(mlflow_store, spec, model_frame):
    _, info = _log(spec, model_frame.assign(store_size=model_frame["store_size"].fillna(0)))
    model = registry.load_model(info.model_uri)
    odd = model_frame.head(20).copy()
    odd["store_size"] = np.nan  # no nulls when the signature was inferred
    odd["day_of_week"] = odd["day_of_week"].astype("int64")

    scores = registry.predict(model, odd)

    assert scores.shape == (20,) and np.isfinite(scores).all()


def test_move_alias_is_a_compare_and_set(mlflow_store, spec, model_frame):
    assert registry.champion_version("toy") is None
    _log(spec, model_frame, 0)
    _log(spec, model_frame, 1)

    registry.move_alias("toy", registry.CHAMPION, "2", None)
    registry.tag_version("toy", "2", {"mlpipe.reason": "test"})

    current = registry.champion_version("toy")
    assert str(current.version) == "2" and current.tags["mlpipe.reason"] == "test"
    with pytest.raises(registry.AliasMoved, match="moved from vNone to v2"):
        registry.move_alias("toy", registry.CHAMPION, "1", None)  # a stale view loses
    assert str(registry.champion_version("toy").version) == "2"
    registry.move_alias("toy", registry.CHAMPION, "1", "2")
    assert str(registry.champion_version("toy").version) == "1"
    registry.move_alias("toy", registry.CHAMPION, None, "1")  # None deletes the alias
    assert registry.champion_version("toy") is None
    assert registry.version_exists("toy", "2") and not registry.version_exists("toy", "3")


def test_recent_fit_seconds_keeps_each_variants_latest_train_run(mlflow_store):
    experiment = mlflow.get_experiment_by_name("toy").experiment_id
    for variant, seconds, step in (("a", 5.0, "train"), ("b", 1.0, "train"), ("a", 2.0, "train"),
                                   ("b", 9.0, "evaluate")):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.set_tags({"mlpipe.step": step, "mlpipe.variant": variant})
            mlflow.log_metric("fit_seconds", seconds)
    with mlflow.start_run(experiment_id=experiment):  # a failed fit logs no time
        mlflow.set_tags({"mlpipe.step": "train", "mlpipe.variant": "c"})

    assert registry.recent_fit_seconds(experiment) == {"a": 2.0, "b": 1.0}


def test_a_new_attempt_retires_an_unfinished_earlier_one_and_its_version(mlflow_store, spec, model_frame):
    """A killed try leaves its run RUNNING, maybe with a registered version: the retry
    ends that run KILLED and deletes the version; finished tries and other runs are kept."""
    from mlflow import MlflowClient

    experiment = mlflow.get_experiment_by_name("toy").experiment_id
    bundle = ModelBundle.train(spec, spec.variants[0], model_frame)
    tags = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}

    def died(run_tags):
        """A try that registered its version and died before ending its run (MLflow's
        active run is per thread: the thread leaves it RUNNING)."""
        made = {}

        def attempt():
            run = mlflow.start_run(experiment_id=experiment)
            mlflow.set_tags({**run_tags, "mlpipe.step": "train", "mlpipe.variant": "v"})
            info, _ = registry.log_bundle(bundle, model_frame.head(50), "toy")
            made.update(run=run.info.run_id, version=str(info.registered_model_version))

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()
        return made["run"], made["version"]

    killed, killed_version = died(tags)
    other_run, other_version = died({**tags, "airflow.run_id": "manual__2"})
    with registry.candidate_run(experiment, "v", "sklearn_logreg", tags) as retry:
        pass

    client = MlflowClient()
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["mlpipe.superseded_by"] == retry
    assert {str(v.version) for v in client.search_model_versions("name = 'toy'")} == {other_version}
    assert killed_version != other_version
    assert client.get_run(other_run).info.status == "RUNNING"


def test_a_version_is_downloaded_once_and_loads_from_the_cache(mlflow_store, spec, model_frame, monkeypatch,
                                                               tmp_path):
    monkeypatch.setenv("MLPIPE_DATA_ROOT", str(tmp_path / "data"))
    bundle, info = _log(spec, model_frame)
    uri = registry.version_uri("toy", "1")
    downloads = []
    real = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: downloads.append(kw) or real(**kw))

    first = registry.predict(registry.load_model(uri), model_frame)
    again = registry.predict(registry.load_model(uri), model_frame)

    cached = registry.local_copy(uri)
    assert len(downloads) == 1 and cached.startswith(str(tmp_path / "data" / registry.MODEL_CACHE))
    assert cached.endswith(f"/toy/1-{info.run_id}")
    np.testing.assert_allclose(first, bundle.score(model_frame), rtol=1e-12)
    np.testing.assert_allclose(again, first)
    assert not [p for p in (tmp_path / "data" / registry.MODEL_CACHE).rglob(".download-*")]  # no partial copy left
    assert registry.local_copy(info.model_uri) == info.model_uri  # only registered versions are cached
