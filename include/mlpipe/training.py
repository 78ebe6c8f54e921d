"""The training stage: plan a train run's jobs, train one variant, build the ensemble
candidate. Every candidate is logged to MLflow (params, holdout metrics, data
partitions, model) through ``ctx.tracking.log_candidate``."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd

from mlpipe.backends import backend_entry
from mlpipe.context import Context, load_split, resolve_window
from mlpipe.errors import TrainingError
from mlpipe.features import PARTITION_DATE
from mlpipe.predictions import reference_scores
from mlpipe.records import ENSEMBLE, Candidate, Job, Window
from mlpipe.spec import VariantSpec, spec_hash
from mlpipe.storage import file_hash


def _date(value: str | dt.date | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def plan_training(ctx: Context, logical_date: dt.date, window_start=None, window_end=None, holdout_days=None,
                  variants: list[str] | None = None, dry_run: bool = False, backfill: bool = False,
                  promote_in_backfill: bool = False, trigger: str | None = None) -> list[Job]:
    """Resolve a train run's Params into one job per variant to train, slowest first.

    ``mode`` is ``dry_run``, ``backfill`` (a run for a past interval) or ``live``;
    ``promote`` says whether the run may register versions and move aliases: live runs
    do, dry runs never, backfills only with ``promote_in_backfill``. Jobs are ordered by
    each variant's fit time in its last train run (variants never trained first, then
    spec order), so the stage starts long fits first and ends with short ones.
    ``trigger``: a retrain request's reason, carried to the runs' tags and the ledger.
    """
    known = [v.name for v in ctx.spec.variants]
    unknown = sorted(set(variants or []) - set(known))
    if unknown:
        raise TrainingError(f"unknown variants {unknown}; the spec has {known}")
    win = resolve_window(ctx.spec, _date(window_end) or logical_date, _date(window_start), holdout_days)
    load_split(ctx, win)  # fail here, once, if the data cannot support the window
    backends = {v.name: v.backend for v in ctx.spec.variants}
    mode = "dry_run" if dry_run else "backfill" if backfill else "live"
    promote = not dry_run and (not backfill or bool(promote_in_backfill))
    wanted = set(variants or known)
    names = [name for name in known if name in wanted]
    return [Job(name, backend_entry(backends[name]).family, win, mode, promote, trigger)
            for name in slowest_first(ctx, names)]


def slowest_first(ctx: Context, names: list[str]) -> list[str]:
    seconds = ctx.tracking.recent_fit_seconds(ctx.tracking.experiment(ctx.spec.name))
    return sorted(names, key=lambda name: -seconds.get(name, float("inf")))


def _variant(ctx: Context, name: str) -> VariantSpec:
    found = next((v for v in ctx.spec.variants if v.name == name), None)
    if found is None:
        raise TrainingError(f"unknown variant {name!r}; the spec has {[v.name for v in ctx.spec.variants]}")
    return found


def _lineage(ctx: Context, win: Window, days: list[dt.date]) -> dict:
    return {"window": win.to_dict(), "partitions": [str(d) for d in days],
            "hashes": {str(d): file_hash(ctx.store.path("features", d)) for d in days}}


def train_variant(ctx: Context, job: Job, run_tags: dict[str, str], n_threads: int | None = None) -> Candidate:
    """Fit one variant on the job's training days, log it to MLflow with its holdout
    metrics and data partitions, and (when the job may promote) register a new version."""
    from mlpipe.model import ModelBundle

    spec, variant, tracking = ctx.spec, _variant(ctx, job.variant), ctx.tracking
    train, holdout, days = load_split(ctx, job.window)
    experiment = tracking.experiment(spec.name)
    tags = {**run_tags, "mlpipe.spec_hash": spec_hash(spec), **({"mlpipe.trigger": job.trigger} if job.trigger else {})}
    with tracking.candidate_run(experiment, variant.name, variant.backend, tags) as run_id:
        tracking.log_params(run_id, {**{f"hp.{k}": v for k, v in variant.params.items()}, **job.window.to_dict(),
                                     "train_rows": len(train), "holdout_rows": len(holdout)})
        threads = n_threads or ctx.settings.task_cpus
        started = time.perf_counter()
        if variant.search:
            variant = _searched(ctx, variant, train, threads, experiment, run_id)
        bundle = ModelBundle.train(spec, variant, train, n_threads=threads)
        fit_seconds = time.perf_counter() - started
        scores = bundle.score(holdout)
        metrics = spec.target_type.metrics(holdout[spec.target.name], scores, bundle.classes)
        tracking.set_tags(run_id, {"mlpipe.device": getattr(bundle.backend, "device_", "cpu")})
        tracking.log_reference(run_id, *reference_sample(spec, train, holdout, scores, bundle.classes))
        tracking.log_json(run_id, _lineage(ctx, job.window, days), "data/partitions.json")
        return tracking.log_candidate(run_id, variant.name, bundle, train.head(200), metrics,
                                      spec.registered_model if job.promote else None,
                                      fit_seconds=round(fit_seconds, 3),
                                      per_class=spec.target_type.per_class(holdout[spec.target.name], scores,
                                                                           bundle.classes))


def reference_sample(spec, train: pd.DataFrame, holdout: pd.DataFrame, holdout_scores,
                     classes: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What monitoring compares a scored day with: a seeded sample of the training rows'
    monitored columns (at most ``monitoring.reference_rows``) and the holdout scores (a
    multi-class model's: its predicted class and each ``classes`` probability), each row
    with its ``partition_date`` (calibration leaves a day's own rows out)."""
    rows = min(spec.monitoring.reference_rows, len(train))
    columns = list(dict.fromkeys([*spec.monitored_columns, PARTITION_DATE]))
    features = train[columns].sample(n=rows, random_state=spec.training.seed).reset_index(drop=True)
    return features, reference_scores(spec, np.asarray(holdout_scores, dtype="float64"), classes,
                                      holdout[PARTITION_DATE].to_numpy())


def _searched(ctx: Context, variant: VariantSpec, train: pd.DataFrame, threads: int, experiment: str,
              run_id: str) -> VariantSpec:
    """Run the variant's Optuna search, one MLflow run per trial nested in the
    candidate run ``run_id``; return the variant with the best parameters."""
    from mlpipe.search import search

    metric, tracking = ctx.spec.gate.metric, ctx.tracking
    best, value = search(ctx.spec, variant, train, threads, lambda number, params, score:
                         tracking.log_trial(experiment, run_id, number, params, metric, score))
    tracking.log_params(run_id, {f"best.{k}": v for k, v in best.items()})
    tracking.log_metrics(run_id, {f"search.validation_{metric}": value, "search.trials": variant.search.trials})
    return variant.model_copy(update={"params": best})


def build_ensemble(ctx: Context, candidates: list[Candidate], window: Window, run_tags: dict[str, str],
                   register: bool) -> Candidate | None:
    """Soft-vote the top-K trained variants into one model, logged and (unless
    ``register`` is false) registered like a variant. None when disabled or < 2 trained."""
    from mlpipe import registry
    from mlpipe.ensemble import Ensemble, choose_members

    spec, metric = ctx.spec, ctx.spec.gate.metric
    usable = {c.variant: c for c in candidates if metric in c.metrics}
    if spec.ensemble is None or len(usable) < 2:
        return None
    weights = choose_members(spec.ensemble, {n: c.metrics[metric] for n, c in usable.items()}, spec.metric())
    tracking = ctx.tracking
    experiment = tracking.experiment(spec.name)
    ensemble = Ensemble({n: registry.bundle_of(tracking.load_model(usable[n].model_uri)) for n in weights}, weights)
    train, holdout, _ = load_split(ctx, window)
    tags = {**run_tags, "mlpipe.spec_hash": spec_hash(spec)}
    with tracking.candidate_run(experiment, ENSEMBLE, ENSEMBLE, tags) as run_id:
        tracking.log_params(run_id, {f"weight.{n}": round(w, 6) for n, w in ensemble.weights.items()})
        tracking.log_params(run_id, {f"member.{n}": usable[n].version or usable[n].run_id for n in ensemble.weights})
        scores = ensemble.score(holdout)
        metrics = spec.target_type.metrics(holdout[spec.target.name], scores, ensemble.classes)
        tracking.log_reference(run_id, *reference_sample(spec, train, holdout, scores, ensemble.classes))
        return tracking.log_candidate(run_id, ENSEMBLE, ensemble, train.head(200), metrics,
                                      spec.registered_model if register else None,
                                      members={n: usable[n].version for n in ensemble.weights},
                                      weights=ensemble.weights,
                                      per_class=spec.target_type.per_class(holdout[spec.target.name], scores,
                                                                           ensemble.classes))
