"""The scoring stage: a day's features scored by the model behind ``champion``, and in
shadow by ``challenger`` when there is one, into one predictions partition."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from mlpipe import features as feat
from mlpipe.context import Context
from mlpipe.errors import MlpipeError
from mlpipe.ingest import written

log = logging.getLogger(__name__)


def score_day(ctx: Context, day: dt.date) -> dict:
    """Write the day's predictions partition (challenger columns null without a challenger)."""
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
    shadow, shadow_version = _shadow_scores(name, str(current.version), frame, day)
    out["challenger_score"] = pd.Series(shadow, index=out.index, dtype="float64")
    out["challenger_version"] = pd.Series(shadow_version, index=out.index, dtype="string")
    return {**written(ctx.store.write("predictions", day, out), len(out)), "model_version": str(current.version),
            "challenger_version": shadow_version}


def _shadow_scores(name: str, champion: str, frame: pd.DataFrame, day: dt.date) -> tuple[np.ndarray | None, str | None]:
    """The challenger's scores and version, or (None, None): a shadow never blocks the champion."""
    from mlpipe import registry

    challenger = registry.alias_version(name, registry.CHALLENGER)
    if challenger is None or str(challenger.version) == champion:
        return None, None
    try:
        return registry.predict(registry.load_model(registry.version_uri(name, challenger.version)), frame), \
            str(challenger.version)
    except Exception as exc:  # noqa: BLE001 - the shadow must never block the champion's scores
        log.warning("challenger v%s cannot score %s: %s", challenger.version, day, exc)
        return None, None
