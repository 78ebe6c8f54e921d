"""MLflow registry against a real (SQLite) tracking store: pyfunc logging, uniform
predict, champion alias, and no process-global MLflow state."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlpipe import registry
from mlpipe.errors import RegistryError
from mlpipe.model import ModelBundle
from mlpipe.settings import get_settings

pytestmark = pytest.mark.integration


def _tracking(root) -> registry.Tracking:
    return registry.Tracking(dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                                                 artifact_root=root / "artifacts", data_root=root / "data"))


@pytest.fixture
def tracking(tmp_path):
    found = _tracking(tmp_path)
    found.experiment("toy")
    return found


def _log(tracking, spec, frame, variant_index=0, name="toy"):
    bundle = ModelBundle.train(spec, spec.variants[variant_index], frame)
    with tracking.run(tracking.experiment(name), "train") as run_id:
        logged = tracking.log_bundle(run_id, bundle, frame.head(50), name)
    return bundle, logged, run_id


def test_logged_pyfunc_predicts_like_the_bundle(tracking, spec, model_frame):
    bundle, logged, _ = _log(tracking, spec, model_frame)
    model = tracking.load_model(logged.model_uri)

    scores = registry.predict(model, model_frame)

    np.testing.assert_allclose(scores, bundle.score(model_frame), rtol=1e-12)
    assert logged.version == "1"
    assert logged.sha256 == registry.bundle_hash(model.unwrap_python_model().bundle_dir)


def test_predict_accepts_integers_and_nulls_in_any_input(tracking, spec, model_frame):
    _, logged, _ = _log(tracking, spec, model_frame.assign(store_size=model_frame["store_size"].fillna(0)))
    model = tracking.load_model(logged.model_uri)
    odd = model_frame.head(20).copy()
    odd["store_size"] = np.nan  # no nulls when the signature was inferred
    odd["day_of_week"] = odd["day_of_week"].astype("int64")

    scores = registry.predict(model, odd)

    assert scores.shape == (20,) and np.isfinite(scores).all()


def test_move_alias_is_a_compare_and_set(tracking, spec, model_frame):
    assert tracking.champion_version("toy") is None
    _log(tracking, spec, model_frame, 0)
    _log(tracking, spec, model_frame, 1)

    tracking.move_alias("toy", registry.CHAMPION, "2", None)
    tracking.tag_version("toy", "2", {"mlpipe.reason": "test"})

    current = tracking.champion_version("toy")
    assert str(current.version) == "2" and current.tags["mlpipe.reason"] == "test"
    with pytest.raises(registry.AliasMoved, match="moved from vNone to v2"):
        tracking.move_alias("toy", registry.CHAMPION, "1", None)  # a stale view loses
    assert str(tracking.champion_version("toy").version) == "2"
    tracking.move_alias("toy", registry.CHAMPION, "1", "2")
    assert str(tracking.champion_version("toy").version) == "1"
    tracking.move_alias("toy", registry.CHAMPION, None, "1")  # None deletes the alias
    assert tracking.champion_version("toy") is None
    assert tracking.version_exists("toy", "2") and not tracking.version_exists("toy", "3")


def test_recent_fit_seconds_keeps_each_variants_latest_train_run(tracking):
    experiment = tracking.experiment("toy")
    for variant, seconds, step in (("a", 5.0, "train"), ("b", 1.0, "train"), ("a", 2.0, "train"),
                                   ("b", 9.0, "evaluate")):
        with tracking.run(experiment, "run", {"mlpipe.step": step, "mlpipe.variant": variant}) as run_id:
            tracking.log_metrics(run_id, {"fit_seconds": seconds})
    with tracking.run(experiment, "run", {"mlpipe.step": "train", "mlpipe.variant": "c"}):  # a failed fit logs no time
        pass

    assert tracking.recent_fit_seconds(experiment) == {"a": 2.0, "b": 1.0}


def test_a_new_attempt_retires_an_unfinished_earlier_one_and_its_version(tracking, spec, model_frame):
    """A killed try leaves its run RUNNING, maybe with a registered version: the retry
    ends that run KILLED and deletes the version; finished tries and other runs are kept."""
    experiment = tracking.experiment("toy")
    bundle = ModelBundle.train(spec, spec.variants[0], model_frame)
    tags = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}

    def died(run_tags):
        """A try that registered its version and died before ending its run."""
        run_id = tracking.client.create_run(experiment, tags={**run_tags, "mlpipe.step": "train",
                                                              "mlpipe.variant": "v"}).info.run_id
        return run_id, tracking.log_bundle(run_id, bundle, model_frame.head(50), "toy").version

    killed, killed_version = died(tags)
    other_run, other_version = died({**tags, "airflow.run_id": "manual__2"})
    with tracking.candidate_run(experiment, "v", "sklearn_logreg", tags) as retry:
        pass

    client = tracking.client
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["mlpipe.superseded_by"] == retry
    assert client.get_run(retry).info.status == "FINISHED"
    assert {str(v.version) for v in client.search_model_versions("name = 'toy'")} == {other_version}
    assert killed_version != other_version
    assert client.get_run(other_run).info.status == "RUNNING"


def test_a_version_is_downloaded_once_and_loads_from_the_cache(tracking, spec, model_frame, monkeypatch,
                                                               tmp_path):
    bundle, logged, run_id = _log(tracking, spec, model_frame)
    uri = registry.version_uri("toy", "1")
    downloads = []
    real = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: downloads.append(kw) or real(**kw))

    loads = []
    real_load = mlflow.pyfunc.load_model
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda path: loads.append(path) or real_load(path))
    sha256 = registry.bundle_hash(Path(tracking.local_copy(uri)) / "artifacts" / "bundle")

    first = registry.predict(tracking.load_model(uri, sha256), model_frame)
    again = registry.predict(tracking.load_model(uri, sha256), model_frame)
    with pytest.raises(RegistryError, match="artifact changed since it was registered"):
        tracking.load_model(uri, "0" * 64)  # another expected hash: loaded and checked again

    cached = tracking.local_copy(uri)
    assert len(downloads) == 1 and cached.startswith(str(tmp_path / "data" / registry.MODEL_CACHE))
    assert loads == [cached, cached]  # once per process for each expected hash
    assert cached.endswith(f"/toy/1-{run_id}")
    np.testing.assert_allclose(first, bundle.score(model_frame), rtol=1e-12)
    np.testing.assert_allclose(again, first)
    assert not [p for p in (tmp_path / "data" / registry.MODEL_CACHE).rglob(".download-*")]  # no partial copy left
    assert not tracking.local_copy(logged.model_uri).startswith(str(tmp_path / "data"))  # only versions are cached


def test_a_version_logged_by_mlflows_log_model_still_loads(tracking, spec, model_frame):
    """Versions registered before the client object (``mlflow.pyfunc.log_model`` in a
    fluent run: an MLflow 3 logged model, source ``models:/m-...``) load through it, with
    the process-global tracking URI pointing elsewhere."""
    bundle = ModelBundle.train(spec, spec.variants[0], model_frame)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.uri)
    try:
        with mlflow.start_run(experiment_id=tracking.experiment("toy")), tempfile.TemporaryDirectory() as tmp:
            path = bundle.save(f"{tmp}/bundle")
            info = mlflow.pyfunc.log_model(name="model", python_model=str(registry.ENTRY),
                                           artifacts={"bundle": str(path)}, registered_model_name="toy",
                                           signature=registry._signature(bundle, model_frame.head(50)))
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)
    assert tracking.client.get_model_version("toy", "1").source.startswith("models:/m-")

    model = tracking.load_model(registry.version_uri("toy", str(info.registered_model_version)))

    np.testing.assert_allclose(registry.predict(model, model_frame), bundle.score(model_frame), rtol=1e-12)


def test_two_stores_in_one_process_do_not_see_each_other(tmp_path, spec, model_frame):
    """Two pipelines' tasks in one worker process: what one logs, registers and promotes
    is invisible through the other, and MLflow's global tracking URI is never touched."""
    before = mlflow.get_tracking_uri()
    first, second = _tracking(tmp_path / "one"), _tracking(tmp_path / "two")
    experiment = first.experiment("alpha")
    with first.candidate_run(experiment, "v", "sklearn_logreg", {}) as run_id:
        candidate = first.log_candidate(run_id, "v", ModelBundle.train(spec, spec.variants[0], model_frame),
                                        model_frame.head(50), {"roc_auc": 0.5}, "alpha")
    first.move_alias("alpha", registry.CHAMPION, candidate.version, None)
    second.experiment("beta")

    assert str(first.champion_version("alpha").version) == candidate.version == "1"
    assert second.client.get_experiment_by_name("alpha") is None
    assert first.client.get_experiment_by_name("beta") is None
    assert not second.client.search_registered_models() and second.champion_version("alpha") is None
    assert not second.version_exists("alpha", "1")
    assert mlflow.get_tracking_uri() == before


def test_a_monitor_run_logs_the_pages_png_from_its_bytes(tracking):
    """The page may live on object storage: the PNG reaches MLflow as bytes, not a path."""
    summary = {"day": "2024-01-05", "model_version": "1", "decision": {"action": "none"}, "drift_share": 0.0,
               "dataset_drift": False, "prediction_drift": {"score": 0.1}, "columns": {"a": {"score": 0.2}}}
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    tracking.log_monitoring("toy", summary, "<html></html>", png)
    (run,) = tracking.client.search_runs([tracking.experiment("toy")], "tags.`mlpipe.step` = 'monitor'")
    local = tracking.client.download_artifacts(run.info.run_id, "monitoring.png", tempfile.mkdtemp())
    assert Path(local).read_bytes() == png and run.data.metrics["drift.a"] == 0.2
