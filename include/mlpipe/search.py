"""Per-variant hyperparameter search with Optuna (seeded TPE).

Trials never see the holdout: each is fitted on the training split minus its last
``validation_days`` days and scored on those days with the gate's metric. The caller
logs each trial (``on_trial``) as a nested MLflow run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd

from mlpipe.errors import TrainingError
from mlpipe.features import PARTITION_DATE
from mlpipe.model import ModelBundle
from mlpipe.spec import ParamSpace, PipelineSpec, VariantSpec


def _suggest(trial, name: str, space: ParamSpace):
    if space.type == "int":
        return trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
    if space.type == "float":
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    return trial.suggest_categorical(name, space.choices)


def search(spec: PipelineSpec, variant: VariantSpec, train: pd.DataFrame, n_threads: int = 1,
           on_trial: Callable[[int, dict, float], None] | None = None) -> tuple[dict, float]:
    """Return the best full parameter set (fixed params overlaid with the best found) and
    its validation score."""
    import optuna

    plan = variant.search
    dates = pd.to_datetime(train[PARTITION_DATE]).dt.date
    cut = max(dates) - dt.timedelta(days=plan.validation_days - 1)
    fit_part, val_part = train[dates < cut], train[dates >= cut]
    if fit_part.empty or val_part[spec.target.name].nunique() < 2:
        raise TrainingError(f"variant {variant.name!r}: search needs training days before {cut} "
                            f"and both classes in the {plan.validation_days} validation days")
    metric = spec.gate.metric

    def objective(trial) -> float:
        params = {**variant.params, **{n: _suggest(trial, n, s) for n, s in plan.space.items()}}
        bundle = ModelBundle.train(spec, variant.model_copy(update={"params": params}), fit_part, n_threads)
        value = spec.target_type.metrics(val_part[spec.target.name], bundle.score(val_part), bundle.classes)[metric]
        if on_trial:
            on_trial(trial.number, params, value)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=spec.metric().direction,
                                sampler=optuna.samplers.TPESampler(seed=spec.training.seed))
    study.optimize(objective, n_trials=plan.trials)
    return {**variant.params, **study.best_params}, float(study.best_value)
