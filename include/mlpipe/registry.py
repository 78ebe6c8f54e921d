"""MLflow: tracking store, candidate logging, registry aliases, uniform model loading.

Every model is logged as one pyfunc wrapping a :class:`~mlpipe.model.ModelBundle`
(preprocessing included), so scoring and evaluation call the same API for every backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from mlpipe.errors import RegistryError  # noqa: E402
from mlpipe.predictions import SCORE  # noqa: E402
from mlpipe.records import Candidate  # noqa: E402
from mlpipe.settings import Settings  # noqa: E402
from mlpipe.storage import atomic_write_dir  # noqa: E402

CHAMPION = "champion"
CHALLENGER = "challenger"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # models-from-code: no pickled Python object


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a ModelBundle: predict(frame of features) -> frame with ``score``."""

    def load_context(self, context):
        from mlpipe.ensemble import load_bundle

        self.bundle_dir = context.artifacts["bundle"]
        self.bundle = load_bundle(self.bundle_dir)

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({SCORE: self.bundle.score(model_input)})


def connect(settings: Settings, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; return its id."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None  # a tracking server keeps the artifacts where it is configured to (served artifacts)
    if not settings.tracking_uri.startswith(("http://", "https://")):
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    try:
        return mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException:  # created concurrently by another task
        return mlflow.get_experiment_by_name(experiment).experiment_id


def recent_fit_seconds(experiment_id: str, limit: int = 200) -> dict[str, float]:
    """Each variant's fit time in its most recent train run of the experiment."""
    runs = MlflowClient().search_runs([experiment_id], "tags.`mlpipe.step` = 'train'", max_results=limit,
                                      order_by=["attributes.start_time DESC"])
    latest: dict[str, float] = {}
    for run in runs:
        variant, seconds = run.data.tags.get("mlpipe.variant"), run.data.metrics.get("fit_seconds")
        if variant and seconds is not None:
            latest.setdefault(variant, seconds)
    return latest


def _requirements(backends: list[str]) -> list[str]:
    from mlpipe.backends import backend_entry

    names = ["pandas", "numpy", "pyarrow", "scikit-learn", *(r for b in backends for r in backend_entry(b).requirements)]
    found = []
    for name in dict.fromkeys(names):
        try:
            found.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return found


@contextmanager
def candidate_run(experiment_id: str, variant: str, backend: str, tags: dict[str, str]) -> Iterator[str]:
    """An MLflow run for one candidate (a variant or the ensemble); yields its run id."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{variant}") as run:
        mlflow.set_tags({**tags, "mlpipe.step": "train", "mlpipe.variant": variant, "mlpipe.backend": backend})
        retire_earlier_attempts(experiment_id, variant, tags, run.info.run_id)
        yield run.info.run_id


def retire_earlier_attempts(experiment_id: str, variant: str, tags: dict[str, str], current: str) -> list[str]:
    """Clean up after earlier tries of this Airflow run's candidate that did not finish
    (a killed worker, a timeout): their runs end KILLED and any version registered from
    them is deleted (unless an alias points at it), so only the attempt that returns a
    candidate leaves one. Returns the deleted versions."""
    if not tags.get("airflow.run_id"):
        return []
    client, deleted = MlflowClient(), []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in (("airflow.dag_id", tags.get("airflow.dag_id", "")),
                         ("airflow.run_id", tags["airflow.run_id"]), ("mlpipe.step", "train"),
                         ("mlpipe.variant", variant)))
    for run in client.search_runs([experiment_id], query):
        if run.info.run_id == current or run.info.status == "FINISHED":
            continue
        for version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            if not version.aliases:
                client.delete_model_version(version.name, version.version)
                deleted.append(str(version.version))
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
        client.set_tag(run.info.run_id, "mlpipe.superseded_by", current)
    return deleted


def log_candidate(run_id: str, variant: str, model, example: pd.DataFrame, metrics: dict[str, float],
                  registered_model: str | None, fit_seconds: float | None = None, **members) -> Candidate:
    """Log a candidate's holdout metrics (and fit time) and its model in the active
    ``candidate_run``, register a new version unless ``registered_model`` is None, and
    return its record (``members``: the ensemble's ``members`` and ``weights``)."""
    mlflow.log_metrics({**metrics, **({"fit_seconds": fit_seconds} if fit_seconds is not None else {})})
    info, digest = log_bundle(model, example, registered_model)
    version = str(info.registered_model_version) if registered_model else None
    if version:
        MlflowClient().set_model_version_tag(registered_model, version, "mlpipe.sha256", digest)
    return Candidate(variant=variant, backend=model.backend_name, run_id=run_id, model_uri=info.model_uri,
                     version=version, metrics=metrics, fit_seconds=fit_seconds, sha256=digest, **members)


def log_evaluation(experiment_id: str, tags: dict[str, str], metrics: dict[str, float], decision: dict,
                   page: str, figures: dict) -> str:
    """The ``evaluate`` run of a train run: its tags, every model's metrics, the decision
    (``decision.json``), the report page (``report.html``) and its charts
    (``plots/<name>.png``, shown on the run's page in the MLflow UI); returns its id."""
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate") as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        log_json(decision, "decision.json")
        mlflow.log_text(page, "report.html")
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        return run.info.run_id


def describe_version(registered_model: str, version: str, description: str, tags: dict[str, str]) -> None:
    MlflowClient().update_model_version(registered_model, str(version), description=description)
    tag_version(registered_model, version, tags)


def describe_model(registered_model: str, description: str) -> None:
    MlflowClient().update_registered_model(registered_model, description=description)


def log_trial(experiment_id: str, number: int, params: dict, metric: str, value: float) -> None:
    """One hyperparameter-search trial as a run nested in the active one."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{number}", nested=True):
        mlflow.log_params({f"hp.{k}": v for k, v in params.items()})
        mlflow.log_metric(f"validation_{metric}", value)


def bundle_hash(directory: str | Path) -> str:
    """sha256 over a saved bundle's files (relative paths and contents, in sorted order)."""
    import hashlib

    digest, root = hashlib.sha256(), Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def log_bundle(bundle, example: pd.DataFrame, registered_model: str | None) -> tuple[mlflow.models.model.ModelInfo, str]:
    """Log the bundle as a pyfunc model in the active run and register a new version;
    returns the model info and the bundle's content hash."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    features = _as_model_input(example[bundle.features])
    inferred = infer_signature(features, pd.DataFrame({SCORE: bundle.score(features)}))
    # Every input may be null at scoring time (the preprocessing imputes), so none is required.
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    signature = ModelSignature(inputs=inputs, outputs=inferred.outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = bundle.save(Path(tmp) / "bundle")
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(ENTRY), artifacts={"bundle": str(path)}, signature=signature,
            registered_model_name=registered_model, pip_requirements=_requirements(bundle.backend_names)), \
            bundle_hash(path)


def alias_version(registered_model: str, alias: str):
    """The ModelVersion behind ``@alias``, or None if the alias (or the model) does not exist."""
    try:
        return MlflowClient().get_model_version_by_alias(registered_model, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_version(registered_model: str):
    return alias_version(registered_model, CHAMPION)


def version_exists(registered_model: str, version: str) -> bool:
    try:
        MlflowClient().get_model_version(registered_model, str(version))
        return True
    except MlflowException:
        return False


class AliasMoved(Exception):
    """An alias no longer points where the caller last saw it."""


def move_alias(registered_model: str, alias: str, version: str | None, expected: str | None) -> None:
    """Compare-and-set: point ``alias`` at ``version`` (or delete it when None) only if
    it still points at ``expected`` (None: unset). Callers hold the pipeline's promotion
    lock, so the check and the move cannot interleave with another promotion."""
    current = alias_version(registered_model, alias)
    seen = str(current.version) if current else None
    if seen != (str(expected) if expected is not None else None):
        raise AliasMoved(f"@{alias} of {registered_model} moved from v{expected} to v{seen} meanwhile")
    client = MlflowClient()
    if version is None:
        if current is not None:
            client.delete_registered_model_alias(registered_model, alias)
        return
    client.set_registered_model_alias(registered_model, alias, str(version))


def tag_version(registered_model: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, str(version), key, value)


def version_uri(registered_model: str, version: str) -> str:
    return f"models:/{registered_model}/{version}"


MODEL_CACHE = "model_cache"


def load_model(uri: str, sha256: str | None = None):
    """The pyfunc at ``uri``; with ``sha256``, refuse it unless its bundle has that hash."""
    model = mlflow.pyfunc.load_model(local_copy(uri))
    if sha256 is not None:
        found = bundle_hash(model.unwrap_python_model().bundle_dir)
        if found != sha256:
            raise RegistryError(f"{uri}: the model's artifact changed since it was registered (sha256 {found[:12]}... "
                                f"but the ledger recorded {sha256[:12]}...): refusing to use it")
    return model


def local_copy(uri: str) -> str:
    """A registered version (``models:/name/N``) as a local directory under the data
    root's ``model_cache/``, downloaded once: a version's artifacts never change, so a
    score backfill fetches its model once rather than once a day (over HTTP from the
    tracking server in the distributed mode). The key holds the tracking URI and the
    version's run id, so a re-created model's version N is another entry. Other URIs
    are returned as they are."""
    from mlpipe.settings import get_settings

    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", uri)
    if not match:
        return uri
    name, version = match.groups()
    run_id = MlflowClient().get_model_version(name, version).run_id
    server = hashlib.sha256(mlflow.get_tracking_uri().encode()).hexdigest()[:12]
    target = get_settings().data_root / MODEL_CACHE / server / name / f"{version}-{run_id}"

    def download(scratch: Path) -> Path:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch / "model"))
        return scratch / "model"

    if not target.exists():  # whole or not at all; a concurrent download that got there first wins
        atomic_write_dir(target, download)
    return str(target)


def _as_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Integers as floats: MLflow will not cast int64 to double, and ints turn into floats
    as soon as a value is missing."""
    ints = frame.select_dtypes("integer").columns
    return frame.astype({c: "float64" for c in ints})


def predict(model, frame: pd.DataFrame) -> pd.Series:
    """Score a frame through the pyfunc, passing only the columns its signature names."""
    names = model.metadata.get_input_schema().input_names()
    return model.predict(_as_model_input(frame[names]))[SCORE].to_numpy()


def bundle_of(model):
    """The ModelBundle (or Ensemble) inside a loaded pyfunc."""
    return model.unwrap_python_model().bundle


REFERENCE_DIR = "reference"


def log_reference(features: pd.DataFrame, scores: pd.DataFrame) -> None:
    """The monitoring reference of the active candidate run (and so of its version)."""
    with tempfile.TemporaryDirectory() as tmp:
        features.to_parquet(Path(tmp) / "features.parquet", index=False)
        scores.to_parquet(Path(tmp) / "scores.parquet", index=False)
        mlflow.log_artifacts(tmp, REFERENCE_DIR)


def reference_of(registered_model: str, version: str, into: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """A version's reference (features, scores), downloaded once into ``into``; None
    for a version trained before references were logged."""
    from mlflow.artifacts import download_artifacts

    def download(scratch: Path) -> Path | None:
        run_id = MlflowClient().get_model_version(registered_model, str(version)).run_id
        try:
            got = Path(download_artifacts(run_id=run_id, artifact_path=REFERENCE_DIR, dst_path=str(scratch)))
        except (MlflowException, OSError):
            return None
        return got if (got / "scores.parquet").exists() else None

    # a parallel monitor task may put it there first
    if not (into / "scores.parquet").exists() and not atomic_write_dir(into, download):
        return None
    return pd.read_parquet(into / "features.parquet"), pd.read_parquet(into / "scores.parquet")


def version_metrics(registered_model: str, version: str) -> dict[str, float]:
    """The holdout metrics logged on a version's run."""
    client = MlflowClient()
    return dict(client.get_run(client.get_model_version(registered_model, str(version)).run_id).data.metrics)


def log_monitoring(experiment: str, summary: dict, html: str) -> None:
    """One ``monitor`` run per monitored day: drift scores, live quality, the report."""
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor {summary['day']}"):
        mlflow.set_tags({"mlpipe.step": "monitor", "mlpipe.day": summary["day"],
                         "mlpipe.model_version": summary["model_version"],
                         "mlpipe.decision": summary["decision"]["action"]})
        quality = summary.get("quality") or {}
        mlflow.log_metrics({"drift_share": summary["drift_share"], "dataset_drift": float(summary["dataset_drift"]),
                            "prediction_drift": summary["prediction_drift"]["score"],
                            **{f"drift.{c}": v["score"] for c, v in summary["columns"].items()},
                            **({f"live_{quality['metric']}": quality["live"]} if quality.get("live") is not None
                               else {})})
        log_json(summary, "drift.json")
        mlflow.log_text(html, "drift.html")


def log_json(payload: dict, name: str) -> None:
    mlflow.log_text(json.dumps(payload, indent=2, default=str), name)


def log_params(params: dict) -> None:
    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float]) -> None:
    mlflow.log_metrics(metrics)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def active_experiment_id() -> str:
    return mlflow.active_run().info.experiment_id
