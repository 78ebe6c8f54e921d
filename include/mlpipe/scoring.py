"""The scoring stage: a day's features scored by the model behind ``champion``, and in
shadow by ``challenger`` when there is one, into one predictions partition."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

from mlpipe import predictions, ranges
from mlpipe.context import Context
from mlpipe.errors import MlpipeError, RegistryError
from mlpipe.ingest import written

log = logging.getLogger(__name__)


def score_day(ctx: Context, day: dt.date, backfill: bool = False, allow_current_champion: bool = False) -> dict:
    """Write the day's predictions partition (challenger columns null without a challenger).

    A live run scores with the current champion; a backfill run with the champion in
    place for ``day`` (point in time, see :func:`point_in_time_version`). When that model
    cannot be loaded or cannot score, the previous champion from the ledger scores
    instead (``model_role`` ``fallback``, reported under ``fallback``); with no usable
    fallback the run fails and writes nothing.
    """
    from mlpipe import registry

    spec, name = ctx.spec, ctx.spec.registered_model
    frame = ctx.store.read("features", day)
    current = ctx.tracking.champion_version(name)
    if current is None:
        raise MlpipeError(f"no '{registry.CHAMPION}' alias on model {name!r}: run the train DAG first")
    version, role = str(current.version), "champion"
    if backfill:
        version, role = point_in_time_version(ctx, day, version, allow_current_champion)
    scores, version, fallback = _scores_with_fallback(ctx, version, frame, day)
    role = "fallback" if fallback else role
    shadow, shadow_version = _shadow_scores(ctx, version, frame, day)
    out = predictions.build(spec, frame, scores, version, role, shadow, shadow_version)
    result = {**written(ctx.store.write("predictions", day, out), len(out)), "day": str(day),
              "model_version": version, "model_role": role, "challenger_version": shadow_version, "fallback": fallback}
    _summarise(ctx, day, out, result)
    return result


def plan_range(ctx: Context, start: dt.date, end: dt.date, chunk_days: int | None = None, slots: int = 1) -> list[dict]:
    """The score_range DAG's chunks of ``[start, end]`` (:func:`mlpipe.ranges.plan`)."""
    return ranges.plan(start, end, chunk_days, slots)


def score_range(ctx: Context, start: str, end: str, allow_current_champion: bool = False) -> dict:
    """Score each day of ``[start, end]`` in order as a backfill run of the score DAG
    would (point in time); the models are loaded once for the chunk. A day that cannot be
    scored (no features, no model for it) writes nothing and is listed in ``failed``, the
    other days go on; a fallback day is listed in ``fallbacks`` (each alerts)."""
    passed, failed, fallbacks = [], [], []
    for day in ranges.days(start, end):
        try:
            result = score_day(ctx, day, backfill=True, allow_current_champion=allow_current_champion)
        except MlpipeError as exc:
            failed.append(ranges.failure(day, exc))
            continue
        passed.append(str(day))
        if result["fallback"]:
            fallbacks.append({"day": str(day), **result["fallback"]})
    log.info("range %s .. %s: %d day(s) scored, %d failed", start, end, len(passed), len(failed))
    return {"start": start, "end": end, "passed": passed, "failed": failed, "fallbacks": fallbacks}


def check_range(ctx: Context, scored: list[dict], monitored: list[dict]) -> dict:
    """Fail (``DaysFailed``) naming every day of the range that could not be scored or
    monitored and how to rerun it alone; else the range's totals."""
    from mlpipe.pipelines import dag_id

    name = ctx.spec.name
    failed = [*scored, *({"passed": [], "failed": [{**f, "error": f"monitor: {f['error']}"} for f in r["failed"]]}
                         for r in monitored)]
    totals = ranges.check(failed, "scored", "a day that failed keeps what it had before (none is half-written)",
                          f"trigger {dag_id(name, 'score_range')} with start = end = <day>")
    return {"days": totals["days"], "chunks": len(scored), "monitored": sum(len(r["passed"]) for r in monitored)}


def _summarise(ctx: Context, day: dt.date, out: pd.DataFrame, result: dict) -> None:
    """The day's predictions summary (``reports/predictions/<day>.json``), linked from the report index."""
    from mlpipe import report_index

    path = ctx.store.write_report("predictions", day, {**result, **predictions.summarise(out)})
    report_index.record(ctx.store, "day", str(day), {"predictions": str(path)},
                        predictions_status=f"v{result['model_version']} ({result['model_role']})")


def point_in_time_version(ctx: Context, day: dt.date, current: str, allow_current: bool) -> tuple[str, str]:
    """The champion a backfilled ``day`` is scored with: the version the most recent
    promotion moved ``champion`` to among those whose training days ended before ``day``
    (so the model was fitted on no data from ``day`` on); else, if allowed, the current champion
    with every row flagged ``current_champion``."""
    from mlpipe import ledger

    promoted = next((e for e in ledger.newest_first(ctx.store) if e.kind == "train" and e.moved and e.window
                     and e.window.holdout_start <= day), None)  # fitted on [start, holdout_start) only
    if promoted:
        return str(promoted.champion_after), "point_in_time"
    if allow_current:
        return current, "current_champion"
    raise RegistryError(f"no model trained only on data before {day} was ever champion (the ledger's promotions all "
                      f"trained on later data): this backfill day cannot be scored point in time; set the Param "
                      f"allow_current_champion to score it with the current champion v{current} (rows flagged)")


def _scores_with_fallback(ctx: Context, version: str, frame: pd.DataFrame, day: dt.date):
    """(scores, version used, fallback report or None)."""
    from mlpipe import ledger

    try:
        return _score_with(ctx, version, frame), version, None
    except Exception as exc:  # noqa: BLE001 - any failure to load or score the chosen model
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        fallback = ledger.previous_champion(ctx.store, version)
        log.error("champion v%s cannot score %s (%s); fallback: %s", version, day, error,
                  f"v{fallback}" if fallback else "none")
        if fallback is None:
            raise MlpipeError(f"v{version} of {ctx.spec.registered_model!r} cannot score {day} ({error}) and the "
                              f"ledger has no previous champion to fall back to: no predictions written") from exc
        try:
            scores = _score_with(ctx, fallback, frame)
        except Exception as again:  # noqa: BLE001
            raise MlpipeError(f"v{version} cannot score {day} ({error}) and the fallback v{fallback} cannot either "
                              f"({type(again).__name__}: {again}): no predictions written") from again
        return scores, fallback, {"failed_version": version, "version": fallback, "error": error}


def _score_with(ctx: Context, version: str, frame: pd.DataFrame):
    """Scores of ``version``, refused if its artifact no longer has the hash the ledger recorded."""
    import time

    from mlpipe import ledger, registry

    uri, started = registry.version_uri(ctx.spec.registered_model, version), time.perf_counter()
    model = ctx.tracking.load_model(uri, ledger.recorded_hash(ctx.store, version))
    log.info("v%s loaded in %.2fs", version, time.perf_counter() - started)  # bench/backfill.py reads this
    return registry.predict_frame(model, frame)


def _shadow_scores(ctx: Context, champion: str, frame: pd.DataFrame, day: dt.date) -> tuple[pd.DataFrame | None,
                                                                                            str | None]:
    """The challenger's scores and version, or (None, None): a shadow never blocks the champion."""
    from mlpipe import registry

    name = ctx.spec.registered_model
    challenger = ctx.tracking.alias_version(name, registry.CHALLENGER)
    if challenger is None or str(challenger.version) == champion:
        return None, None
    try:
        return registry.predict_frame(ctx.tracking.load_model(registry.version_uri(name, challenger.version)), frame), \
            str(challenger.version)
    except Exception as exc:  # noqa: BLE001 - the shadow must never block the champion's scores
        log.warning("challenger v%s cannot score %s: %s", challenger.version, day, exc)
        return None, None
