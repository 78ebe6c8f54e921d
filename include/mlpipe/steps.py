"""The pipeline's steps, one function per Airflow task. Each takes small values (dates,
names) and returns small dicts (URIs, counts, hashes, metrics) fit for XCom."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlpipe import features as feat
from mlpipe.errors import MlpipeError, PartitionMissing, TrainingError
from mlpipe.settings import Settings, get_settings
from mlpipe.sources import day_has_rows, read_day
from mlpipe.spec import PipelineSpec, load_spec, spec_hash
from mlpipe.storage import Store, file_hash


@dataclass(frozen=True)
class Context:
    settings: Settings
    spec: PipelineSpec
    store: Store

    @classmethod
    def load(cls, settings: Settings | None = None) -> Context:
        settings = settings or get_settings()
        spec = load_spec(settings.spec_path)
        return cls(settings, spec, Store(settings.data_root, spec.name))

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.data_root) / self.spec.name / ".cache"


def _written(path: Path, rows: int) -> dict:
    return {"uri": str(path), "rows": rows, "sha256": file_hash(path)}


# ---------------------------------------------------------------- ingest
def extract(ctx: Context, day: dt.date) -> dict:
    frame = read_day(ctx.spec, day, ctx.cache_dir)
    return _written(ctx.store.write("raw", day, frame), len(frame))


def validate(ctx: Context, day: dt.date) -> dict:
    from mlpipe.validation import validate as run_suite

    frame = ctx.store.read("raw", day)
    summary = run_suite(frame, ctx.spec, str(ctx.store.path("raw", day)),
                        lambda payload: ctx.store.write_report("validation", day, payload))
    return {**_written(ctx.store.write("validated", day, frame), len(frame)), "report": summary["report"]}


def build_features(ctx: Context, day: dt.date) -> dict:
    spec, store = ctx.spec, ctx.store
    rows = store.read("validated", day)
    start, end = feat.history_days(spec, day)
    past, days = store.read_range("validated", start, end, columns=feat.history_columns(spec),
                                  date_column=feat.PARTITION_DATE)
    expected = [start + dt.timedelta(days=i) for i in range((end - start).days)]
    pending = [d for d in expected if d not in days and day_has_rows(spec, d, ctx.cache_dir)]
    if pending:  # point in time means *all* earlier days: wait rather than build from a partial history
        raise PartitionMissing(f"features for {day} need validated partitions for {[str(d) for d in pending]}, "
                               "which the source has rows for: ingest those days first")
    frame = feat.build_features(spec, day, rows, past)
    return {**_written(store.write("features", day, frame), len(frame)), "history_days": [str(d) for d in days]}


# ---------------------------------------------------------------- train
@dataclass(frozen=True)
class Window:
    start: dt.date
    holdout_start: dt.date
    end: dt.date  # exclusive

    def to_dict(self) -> dict:
        return {"start": str(self.start), "holdout_start": str(self.holdout_start), "end": str(self.end)}

    @classmethod
    def from_dict(cls, raw: dict) -> Window:
        return cls(*(dt.date.fromisoformat(raw[k]) for k in ("start", "holdout_start", "end")))


def window(spec: PipelineSpec, end: dt.date, start: dt.date | None = None, holdout_days: int | None = None) -> Window:
    """Training window ending before ``end`` (the logical date); the last days are holdout."""
    start = start or end - dt.timedelta(days=spec.training.lookback_days)
    holdout_start = end - dt.timedelta(days=holdout_days or spec.training.holdout_days)
    if not start < holdout_start < end:
        raise TrainingError(f"bad window: start {start}, holdout from {holdout_start}, end {end}")
    return Window(start, holdout_start, end)


def _date(value: str | dt.date | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def plan_training(ctx: Context, logical_date: dt.date, window_start=None, window_end=None, holdout_days=None,
                  variants: list[str] | None = None, dry_run: bool = False, backfill: bool = False,
                  promote_in_backfill: bool = False) -> list[dict]:
    """Resolve a train run's Params into one job per variant to train, slowest first.

    ``mode`` is ``dry_run``, ``backfill`` (a run for a past interval) or ``live``;
    ``promote`` says whether the run may register versions and move aliases: live runs
    do, dry runs never, backfills only with ``promote_in_backfill``. Jobs are ordered by
    each variant's fit time in its last train run (variants never trained first, then
    spec order), so the stage starts long fits first and ends with short ones.
    """
    known = [v.name for v in ctx.spec.variants]
    unknown = sorted(set(variants or []) - set(known))
    if unknown:
        raise TrainingError(f"unknown variants {unknown}; the spec has {known}")
    win = window(ctx.spec, _date(window_end) or logical_date, _date(window_start), holdout_days)
    load_split(ctx, win)  # fail here, once, if the data cannot support the window
    backends = {v.name: v.backend for v in ctx.spec.variants}
    mode = "dry_run" if dry_run else "backfill" if backfill else "live"
    promote = not dry_run and (not backfill or bool(promote_in_backfill))
    wanted = set(variants or known)
    names = [name for name in known if name in wanted]
    return [{"variant": name, "family": backends[name].split("_", 1)[0], "window": win.to_dict(), "mode": mode,
             "promote": promote} for name in slowest_first(ctx, names)]


def slowest_first(ctx: Context, names: list[str]) -> list[str]:
    from mlpipe import registry

    seconds = registry.recent_fit_seconds(registry.connect(ctx.settings, ctx.spec.name))
    return sorted(names, key=lambda name: -seconds.get(name, float("inf")))


def load_split(ctx: Context, win: Window) -> tuple[pd.DataFrame, pd.DataFrame, list[dt.date]]:
    frame, days = ctx.store.read_range("features", win.start, win.end)
    if not days:
        raise PartitionMissing(f"no feature partitions in [{win.start}, {win.end}): run ingest first")
    target = ctx.spec.target.name
    frame = frame[frame[target].notna()]
    dates = pd.to_datetime(frame[feat.PARTITION_DATE]).dt.date
    train, holdout = frame[dates < win.holdout_start], frame[dates >= win.holdout_start]
    for name, part in (("training", train), ("holdout", holdout)):
        if len(part) < ctx.spec.training.min_rows:
            raise TrainingError(f"{name} split has {len(part)} labelled rows in {win.to_dict()}; "
                                f"need at least {ctx.spec.training.min_rows}")
    return train, holdout, days


def train_variant(ctx: Context, name: str, window: dict, run_tags: dict[str, str], register: bool = True,
                  n_threads: int | None = None) -> dict:
    """Fit one variant on the window's training days, log it to MLflow with its holdout
    metrics and data partitions, and (when ``register``) register it as a new version."""
    import mlflow

    from mlpipe import registry
    from mlpipe.evaluation import compute_metrics
    from mlpipe.model import ModelBundle

    spec = ctx.spec
    variant = next((v for v in spec.variants if v.name == name), None)
    if variant is None:
        raise TrainingError(f"unknown variant {name!r}; the spec has {[v.name for v in spec.variants]}")
    win = Window.from_dict(window)
    train, holdout, days = load_split(ctx, win)
    experiment = registry.connect(ctx.settings, spec.name)
    with mlflow.start_run(experiment_id=experiment, run_name=f"train-{name}") as run:
        mlflow.set_tags({**run_tags, "mlpipe.step": "train", "mlpipe.variant": name,
                         "mlpipe.backend": variant.backend, "mlpipe.spec_hash": spec_hash(spec)})
        mlflow.log_params({**{f"hp.{k}": v for k, v in variant.params.items()}, **win.to_dict(),
                           "train_rows": len(train), "holdout_rows": len(holdout)})
        threads = n_threads or ctx.settings.task_cpus
        started = time.perf_counter()
        if variant.search:
            variant = _searched(spec, variant, train, threads)
        bundle = ModelBundle.train(spec, variant, train, n_threads=threads)
        fit_seconds = time.perf_counter() - started
        metrics = compute_metrics(spec.target.task, holdout[spec.target.name], bundle.score(holdout))
        mlflow.log_metrics({**metrics, "fit_seconds": fit_seconds})
        mlflow.set_tag("mlpipe.device", getattr(bundle.backend, "device_", "cpu"))
        registry.log_json({"window": win.to_dict(), "partitions": [str(d) for d in days],
                           "hashes": {str(d): file_hash(ctx.store.path("features", d)) for d in days}},
                          "data/partitions.json")
        info = registry.log_bundle(bundle, train.head(200), spec.registered_model if register else None)
    version = str(info.registered_model_version) if register else None
    return {"variant": name, "backend": variant.backend, "run_id": run.info.run_id, "model_uri": info.model_uri,
            "version": version, "metrics": metrics, "fit_seconds": round(fit_seconds, 3)}


def _searched(spec: PipelineSpec, variant, train: pd.DataFrame, threads: int):
    """Run the variant's Optuna search, one nested MLflow run per trial; return the
    variant with the best parameters."""
    import mlflow

    from mlpipe.search import search

    experiment = mlflow.active_run().info.experiment_id

    def log_trial(number: int, params: dict, value: float) -> None:
        with mlflow.start_run(experiment_id=experiment, run_name=f"trial-{number}", nested=True):
            mlflow.log_params({f"hp.{k}": v for k, v in params.items()})
            mlflow.log_metric(f"validation_{spec.gate.metric}", value)

    best, value = search(spec, variant, train, threads, log_trial)
    mlflow.log_params({f"best.{k}": v for k, v in best.items()})
    mlflow.log_metrics({f"search.validation_{spec.gate.metric}": value, "search.trials": variant.search.trials})
    return variant.model_copy(update={"params": best})


def build_ensemble(ctx: Context, **kwargs) -> dict | None:
    from mlpipe.promotion import build_ensemble as build

    return build(ctx, **kwargs)


def evaluate(ctx: Context, **kwargs) -> dict:
    from mlpipe.promotion import evaluate as run

    return run(ctx, **kwargs)


def rollback(ctx: Context, **kwargs) -> dict:
    from mlpipe.promotion import rollback as run

    return run(ctx, **kwargs)


# ---------------------------------------------------------------- score
def score(ctx: Context, day: dt.date) -> dict:
    """Score a day's features with ``champion``, and in shadow with ``challenger`` when
    there is one, into one predictions partition (challenger columns null otherwise)."""
    import logging

    from mlpipe import registry

    spec, name = ctx.spec, ctx.spec.registered_model
    frame = ctx.store.read("features", day)
    registry.connect(ctx.settings, spec.name)
    current = registry.champion_version(name)
    if current is None:
        raise MlpipeError(f"no '{registry.CHAMPION}' alias on model {name!r}: run the train DAG first")
    scores = registry.predict(registry.load_model(registry.version_uri(name, current.version)), frame)
    out = frame[spec.row_id].copy()
    out[feat.PARTITION_DATE] = frame[feat.PARTITION_DATE]
    out["score"] = scores
    if spec.target.task == "binary":
        out["predicted_label"] = (scores >= 0.5).astype("int8")
    out["model_name"] = name
    out["model_version"] = str(current.version)
    shadow, shadow_version = None, None
    challenger = registry.alias_version(name, registry.CHALLENGER)
    if challenger is not None and str(challenger.version) != str(current.version):
        try:
            shadow = registry.predict(registry.load_model(registry.version_uri(name, challenger.version)), frame)
            shadow_version = str(challenger.version)
        except Exception as exc:  # noqa: BLE001 - the shadow must never block the champion's scores
            logging.getLogger(__name__).warning("challenger v%s cannot score %s: %s", challenger.version, day, exc)
    out["challenger_score"] = pd.Series(shadow, index=out.index, dtype="float64")
    out["challenger_version"] = pd.Series(shadow_version, index=out.index, dtype="string")
    return {**_written(ctx.store.write("predictions", day, out), len(out)), "model_version": str(current.version),
            "challenger_version": shadow_version}
