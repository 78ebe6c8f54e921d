"""MLflow: tracking store, candidate logging, registry aliases, uniform model loading.

Every model is logged as one pyfunc wrapping a :class:`~mlpipe.model.ModelBundle`
(preprocessing included), so scoring and evaluation call the same API for every backend.
Stages reach MLflow through :class:`Tracking` (``ctx.tracking``), a client built from the
settings; the module-level functions are pure (URIs, hashing, predicting).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from mlflow.utils.time import get_current_time_millis  # noqa: E402

from mlpipe.bands import BANDS_FILE  # noqa: E402
from mlpipe.errors import RegistryError  # noqa: E402
from mlpipe.predictions import classes_in, score_frame, scores_of  # noqa: E402
from mlpipe.records import Candidate  # noqa: E402
from mlpipe.settings import Settings  # noqa: E402
from mlpipe.storage import atomic_write_dir  # noqa: E402

CHAMPION = "champion"
CHALLENGER = "challenger"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # models-from-code: no pickled Python object


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a ModelBundle: predict(frame of features) -> frame of its scores
    (``score``, or a ``score_<class>`` probability per class)."""

    def load_context(self, context):
        from mlpipe.ensemble import load_bundle

        self.bundle_dir = context.artifacts["bundle"]
        self.bundle = load_bundle(self.bundle_dir)

    def predict(self, context, model_input, params=None):
        return score_frame(self.bundle.score(model_input), self.bundle.classes)


MODEL_CACHE = "model_cache"
VERSION_URI = re.compile(r"models:/([^/@]+)/(\d+)")  # a registered version, as version_uri writes it
REFERENCE_DIR = "reference"


class AliasMoved(Exception):
    """An alias no longer points where the caller last saw it."""


class Logged(NamedTuple):
    model_uri: str
    version: str | None  # None when not registered
    sha256: str


class Tracking:
    """MLflow as one pipeline's tasks reach it: a client with its own tracking and
    registry URI, built from the settings. Nothing here reads or sets MLflow's
    process-global state (``set_tracking_uri``, the fluent active run), so tasks of
    pipelines with different stores can run one after another in one worker process."""

    def __init__(self, settings: Settings):
        self.settings, self.uri = settings, settings.tracking_uri
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._bands: dict[tuple[str, str], dict | None] = {}  # read once per task (a chunk monitors many days)

    def __reduce__(self):  # a Context sent to another process carries its settings, not a live client
        return Tracking, (self.settings,)

    # -- experiments and runs ---------------------------------------------------------

    def experiment(self, name: str) -> str:
        """The id of the experiment ``name``, created if missing."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None  # a tracking server keeps the artifacts where it is configured to (served artifacts)
        if not self.uri.startswith(("http://", "https://")):
            self.settings.artifact_root.mkdir(parents=True, exist_ok=True)
            location = self.settings.artifact_root.as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another task
            return self.client.get_experiment_by_name(name).experiment_id

    @contextmanager
    def run(self, experiment_id: str, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED if the block raises; yields its id."""
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    @contextmanager
    def candidate_run(self, experiment_id: str, variant: str, backend: str, tags: dict[str, str]) -> Iterator[str]:
        """An MLflow run for one candidate (a variant or the ensemble); yields its run id."""
        tags = {**tags, "mlpipe.step": "train", "mlpipe.variant": variant, "mlpipe.backend": backend}
        with self.run(experiment_id, f"train-{variant}", tags) as run_id:
            self.retire_earlier_attempts(experiment_id, variant, tags, run_id)
            yield run_id

    def recent_fit_seconds(self, experiment_id: str, limit: int = 200) -> dict[str, float]:
        """Each variant's fit time in its most recent train run of the experiment."""
        runs = self.client.search_runs([experiment_id], "tags.`mlpipe.step` = 'train'", max_results=limit,
                                       order_by=["attributes.start_time DESC"])
        latest: dict[str, float] = {}
        for run in runs:
            variant, seconds = run.data.tags.get("mlpipe.variant"), run.data.metrics.get("fit_seconds")
            if variant and seconds is not None:
                latest.setdefault(variant, seconds)
        return latest

    def retire_earlier_attempts(self, experiment_id: str, variant: str, tags: dict[str, str], current: str) -> list[str]:
        """Clean up after earlier tries of this Airflow run's candidate that did not finish
        (a killed worker, a timeout): their runs end KILLED and any version registered from
        them is deleted (unless an alias points at it), so only the attempt that returns a
        candidate leaves one. Returns the deleted versions."""
        if not tags.get("airflow.run_id"):
            return []
        client, deleted = self.client, []
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

    # -- logging to an explicit run ---------------------------------------------------

    def log_params(self, run_id: str, params: dict) -> None:
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = get_current_time_millis()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_json(self, run_id: str, payload: dict, name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=str), name)

    def log_candidate(self, run_id: str, variant: str, model, example: pd.DataFrame, metrics: dict[str, float],
                      registered_model: str | None, fit_seconds: float | None = None, **members) -> Candidate:
        """Log a candidate's holdout metrics (and fit time) and its model in its
        ``candidate_run``, register a new version unless ``registered_model`` is None, and
        return its record (``members``: the record's other fields: the ensemble's
        ``members`` and ``weights``, a multi-class model's ``per_class`` figures)."""
        self.log_metrics(run_id, {**metrics, **({"fit_seconds": fit_seconds} if fit_seconds is not None else {})})
        logged = self.log_bundle(run_id, model, example, registered_model)
        if logged.version:
            self.client.set_model_version_tag(registered_model, logged.version, "mlpipe.sha256", logged.sha256)
        return Candidate(variant=variant, backend=model.backend_name, run_id=run_id, model_uri=logged.model_uri,
                         version=logged.version, metrics=metrics, fit_seconds=fit_seconds, sha256=logged.sha256,
                         **members)

    def log_bundle(self, run_id: str, bundle, example: pd.DataFrame, registered_model: str | None) -> Logged:
        """Log the bundle as the pyfunc model ``model`` of the run and register it as a new
        version of ``registered_model`` (unless None). ``mlflow.pyfunc.log_model`` would
        need the fluent active run, so the model is saved locally, uploaded as the run's
        artifacts and registered from there through the client."""
        with tempfile.TemporaryDirectory() as tmp:
            path = bundle.save(Path(tmp) / "bundle")
            mlflow.pyfunc.save_model(Path(tmp) / "model", python_model=str(ENTRY), artifacts={"bundle": str(path)},
                                     signature=_signature(bundle, example),
                                     pip_requirements=_requirements(bundle.backend_names))
            self.client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
            digest = bundle_hash(path)
        version = self._register(registered_model, run_id) if registered_model else None
        return Logged(f"runs:/{run_id}/model", version, digest)

    def _register(self, name: str, run_id: str) -> str:
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        return str(self.client.create_model_version(name, source, run_id=run_id).version)

    def log_reference(self, run_id: str, features: pd.DataFrame, scores: pd.DataFrame) -> None:
        """The monitoring reference of a candidate run (and so of its version)."""
        with tempfile.TemporaryDirectory() as tmp:
            features.to_parquet(Path(tmp) / "features.parquet", index=False)
            scores.to_parquet(Path(tmp) / "scores.parquet", index=False)
            self.client.log_artifacts(run_id, tmp, REFERENCE_DIR)

    def log_trial(self, experiment_id: str, parent_run_id: str, number: int, params: dict, metric: str,
                  value: float) -> None:
        """One hyperparameter-search trial as a run nested in the candidate run."""
        with self.run(experiment_id, f"trial-{number}", {MLFLOW_PARENT_RUN_ID: parent_run_id}) as run_id:
            self.log_params(run_id, {f"hp.{k}": v for k, v in params.items()})
            self.log_metrics(run_id, {f"validation_{metric}": value})

    def log_bands(self, registered_model: str, version: str, bands: dict) -> None:
        """A version's calibrated drift bands (:mod:`mlpipe.bands`), beside its reference; a
        re-learn replaces them and keeps the earlier ones as ``bands-<learnt_at>.json``."""
        run_id = self.client.get_model_version(registered_model, str(version)).run_id
        earlier = self.bands_of(registered_model, version)
        if earlier is not None:
            self.log_json(run_id, earlier, f"{REFERENCE_DIR}/bands-{earlier['learnt_at'].replace(':', '')}.json")
        self.log_json(run_id, bands, f"{REFERENCE_DIR}/{BANDS_FILE}")
        self._bands[(registered_model, str(version))] = bands

    def bands_of(self, registered_model: str, version: str) -> dict | None:
        """A version's bands, or None for a version that has none (read once by this object,
        which lives one task: a re-learn is seen by the next task)."""
        key = (registered_model, str(version))
        if key not in self._bands:
            run_id = self.client.get_model_version(registered_model, str(version)).run_id
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = self.client.download_artifacts(run_id, f"{REFERENCE_DIR}/{BANDS_FILE}", tmp)
                except (MlflowException, OSError):
                    return None  # not remembered: the train run that promoted it may still be learning them
                self._bands[key] = json.loads(Path(path).read_text())
        return self._bands[key]

    def log_evaluation(self, experiment_id: str, tags: dict[str, str], metrics: dict[str, float], decision: dict,
                       page: str, figures: dict) -> str:
        """The ``evaluate`` run of a train run: its tags, every model's metrics, the decision
        (``decision.json``), the report page (``report.html``) and its charts
        (``plots/<name>.png``, shown on the run's page in the MLflow UI); returns its id."""
        with self.run(experiment_id, "evaluate", tags) as run_id:
            self.log_metrics(run_id, metrics)
            self.log_json(run_id, decision, "decision.json")
            self.client.log_text(run_id, page, "report.html")
            for name, figure in figures.items():
                self.client.log_figure(run_id, figure, f"plots/{name}.png")
            return run_id

    def log_monitoring(self, experiment: str, summary: dict, html: str, page_png: bytes | None = None) -> None:
        """One ``monitor`` run per monitored day: drift scores, live quality, the report, and
        the monitoring page's chart (``page_png``, its bytes) when it was rebuilt."""
        tags = {"mlpipe.step": "monitor", "mlpipe.day": summary["day"], "mlpipe.model_version": summary["model_version"],
                "mlpipe.decision": summary["decision"]["action"]}
        quality = summary.get("quality") or {}
        with self.run(self.experiment(experiment), f"monitor {summary['day']}", tags) as run_id:
            self.log_metrics(run_id, {
                "drift_share": summary["drift_share"], "dataset_drift": float(summary["dataset_drift"]),
                "prediction_drift": summary["prediction_drift"]["score"],
                **{f"drift.{c}": v["score"] for c, v in summary["columns"].items()},
                **({f"live_{quality['metric']}": quality["live"]} if quality.get("live") is not None else {}),
                **({f"estimated_{e['metric']}": e["value"]} if (e := summary.get("estimated")) else {})})
            self.log_json(run_id, summary, "drift.json")
            self.client.log_text(run_id, html, "drift.html")
            if page_png is not None:  # from bytes: the page may live on object storage
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "monitoring.png").write_bytes(page_png)
                    self.client.log_artifact(run_id, str(Path(tmp) / "monitoring.png"))

    # -- the registry -----------------------------------------------------------------

    def alias_version(self, registered_model: str, alias: str):
        """The ModelVersion behind ``@alias``, or None if the alias (or the model) does not exist."""
        try:
            return self.client.get_model_version_by_alias(registered_model, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def champion_version(self, registered_model: str):
        return self.alias_version(registered_model, CHAMPION)

    def version_exists(self, registered_model: str, version: str) -> bool:
        try:
            self.client.get_model_version(registered_model, str(version))
            return True
        except MlflowException:
            return False

    def move_alias(self, registered_model: str, alias: str, version: str | None, expected: str | None) -> None:
        """Compare-and-set: point ``alias`` at ``version`` (or delete it when None) only if
        it still points at ``expected`` (None: unset). Callers hold the pipeline's promotion
        lock, so the check and the move cannot interleave with another promotion."""
        current = self.alias_version(registered_model, alias)
        seen = str(current.version) if current else None
        if seen != (str(expected) if expected is not None else None):
            raise AliasMoved(f"@{alias} of {registered_model} moved from v{expected} to v{seen} meanwhile")
        if version is None:
            if current is not None:
                self.client.delete_registered_model_alias(registered_model, alias)
            return
        self.client.set_registered_model_alias(registered_model, alias, str(version))

    def tag_version(self, registered_model: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(registered_model, str(version), key, value)

    def describe_version(self, registered_model: str, version: str, description: str, tags: dict[str, str]) -> None:
        self.client.update_model_version(registered_model, str(version), description=description)
        self.tag_version(registered_model, version, tags)

    def describe_model(self, registered_model: str, description: str) -> None:
        self.client.update_registered_model(registered_model, description=description)

    def version_metrics(self, registered_model: str, version: str) -> dict[str, float]:
        """The holdout metrics logged on a version's run."""
        run_id = self.client.get_model_version(registered_model, str(version)).run_id
        return dict(self.client.get_run(run_id).data.metrics)

    # -- reading models and references ------------------------------------------------

    def load_model(self, uri: str, sha256: str | None = None):
        """The pyfunc at ``uri``; with ``sha256``, refuse it unless its bundle has that hash.
        A registered version (``models:/name/N``) is loaded once per process (see
        :func:`_load_local`): a task that scores a range of days loads its models once."""
        if VERSION_URI.fullmatch(uri):
            return _load_local(self.local_copy(uri), sha256, uri)
        return _load_checked(self.local_copy(uri), sha256, uri)

    def local_copy(self, uri: str) -> str:
        """The model at ``uri`` as a local directory. A registered version
        (``models:/name/N``) is downloaded once per host, under the cache's ``model_cache/``: a
        version's artifacts never change, so a score backfill fetches its model once rather
        than once a day (over HTTP from the tracking server in the distributed mode). The
        key holds the tracking URI and the version's run id, so a re-created model's
        version N is another entry. Other URIs are fetched as they are (a local store's
        files are used in place)."""
        match = VERSION_URI.fullmatch(uri)
        if not match:
            return self._download(uri, None)
        name, version = match.groups()
        run_id = self.client.get_model_version(name, version).run_id
        server = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        target = self.settings.cache_root / MODEL_CACHE / server / name / f"{version}-{run_id}"
        if not target.exists():  # whole or not at all; a concurrent download that got there first wins
            atomic_write_dir(target, lambda scratch: Path(self._download(uri, scratch / "model")))
        return str(target)

    def _download(self, uri: str, into: Path | None) -> str:
        """Download with this store's URIs. MLflow resolves ``models:/`` URIs through the
        global registry URI, so they are turned into their artifact location here: a
        version's source, or (a version logged by MLflow 3's ``log_model``) its logged model's."""
        if match := VERSION_URI.fullmatch(uri):
            uri = self.client.get_model_version_download_uri(*match.groups())
        if match := re.fullmatch(r"models:/(m-[0-9a-f]+)", uri):
            uri = self.client.get_logged_model(match.group(1)).artifact_location
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into) if into else None,
                                                   tracking_uri=self.uri, registry_uri=self.uri)

    def reference_of(self, registered_model: str, version: str, into: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """A version's reference (features, scores), downloaded once into ``into``; None
        for a version trained before references were logged."""

        def download(scratch: Path) -> Path | None:
            run_id = self.client.get_model_version(registered_model, str(version)).run_id
            try:
                got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_DIR,
                                                               dst_path=str(scratch), tracking_uri=self.uri))
            except (MlflowException, OSError):
                return None
            return got if (got / "scores.parquet").exists() else None

        # a parallel monitor task may put it there first
        if not (into / "scores.parquet").exists() and not atomic_write_dir(into, download):
            return None
        return pd.read_parquet(into / "features.parquet"), pd.read_parquet(into / "scores.parquet")


def _load_checked(path: str, sha256: str | None, uri: str):
    model = mlflow.pyfunc.load_model(path)
    if sha256 is not None:
        found = bundle_hash(model.unwrap_python_model().bundle_dir)
        if found != sha256:
            raise RegistryError(f"{uri}: the model's artifact changed since it was registered (sha256 "
                                f"{found[:12]}... but the ledger recorded {sha256[:12]}...): refusing to use it")
    return model


# A version's local copy never changes (its directory is keyed by the version's run id), so
# a loaded and checked one is reused; a few at most: the champion, the challenger, a fallback.
_load_local = functools.lru_cache(maxsize=4)(_load_checked)


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


def _signature(bundle, example: pd.DataFrame):
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    features = _as_model_input(example[bundle.features])
    inferred = infer_signature(features, score_frame(bundle.score(features), bundle.classes))
    # Every input may be null at scoring time (the preprocessing imputes), so none is required.
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def bundle_hash(directory: str | Path) -> str:
    """sha256 over a saved bundle's files (relative paths and contents, in sorted order)."""
    digest, root = hashlib.sha256(), Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def version_uri(registered_model: str, version: str) -> str:
    return f"models:/{registered_model}/{version}"


def _as_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Integers as floats: MLflow will not cast int64 to double, and ints turn into floats
    as soon as a value is missing."""
    ints = frame.select_dtypes("integer").columns
    return frame.astype({c: "float64" for c in ints})


def predict(model, frame: pd.DataFrame, classes: list[str] | None = None):
    """Score a frame through the pyfunc, passing only the columns its signature names: one
    score per row, or (multi-class) a probability per class, in ``classes`` order when
    given (a class the model does not know scores 0), else in the model's."""
    out = predict_frame(model, frame)
    return scores_of(out, classes if classes is not None else classes_in(out))


def predict_frame(model, frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's output for ``frame`` (only the columns its signature names go in):
    ``score``, or a ``score_<class>`` column per class."""
    names = model.metadata.get_input_schema().input_names()
    return model.predict(_as_model_input(frame[names]))


def bundle_of(model):
    """The ModelBundle (or Ensemble) inside a loaded pyfunc."""
    return model.unwrap_python_model().bundle
