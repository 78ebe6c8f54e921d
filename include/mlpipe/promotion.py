"""The promotion stage: act on the evaluation. ``evaluate_and_promote`` scores, decides,
then commits: moves the ``champion`` / ``challenger`` aliases (compare-and-set) and
appends the ledger entry. ``rollback`` re-points ``champion`` by hand.

Only the commit (and the rollback) holds the pipeline's ledger lock. It first checks that
the aliases are where they were when the champion was scored; if another run moved them
meanwhile, the new champion is scored and the decision taken again, so two train runs
cannot both move ``champion`` and each compares against the champion it actually
replaces. Commit and rollback run one alias transaction (:func:`_transact`): record the
intent, move, append; if it fails part-way the moves are undone, and if they cannot be
(the tracking server is down) the next commit completes it from the intent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mlpipe import ledger
from mlpipe.context import Context, load_split
from mlpipe.errors import RegistryError, TrainingError
from mlpipe.evaluation import Decision, assess, score_champion, score_models
from mlpipe.records import CHAMPION_KEY, MODES, Candidate, LedgerEntry, Window
from mlpipe.spec import spec_hash
from mlpipe.storage import Location, Store, atomic_write


@dataclass(frozen=True)
class Aliases:
    champion: str | None
    challenger: str | None


@dataclass
class Moves:
    """Alias moves made by one commit or rollback, in order, so they can be undone."""

    champion: str | None
    challenger: str | None
    note: str = ""
    done: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (alias, new, old)


def _aliases(tracking, name: str) -> Aliases:
    from mlpipe import registry

    found = [tracking.alias_version(name, a) for a in (registry.CHAMPION, registry.CHALLENGER)]
    return Aliases(*(str(v.version) if v else None for v in found))


def evaluate_and_promote(ctx: Context, candidates: list[Candidate], requested: list[str], window: Window,
                         run_tags: dict[str, str], mode: str = "live", promote: bool | None = None) -> dict:
    """Score the champion and every candidate on the same holdout, bootstrap each
    candidate's gain over the champion, apply the gate and record the decision; return
    the ledger entry (as a dict) with the evaluation report's path under ``report``.

    Aliases move in ``live`` mode; ``dry_run`` and ``backfill`` record what would have
    been promoted. ``promote=True`` lets a backfill move them (recorded as a backfill);
    a dry run never does. A retried task returns the decision its run already recorded
    (``replayed``: true, so it alerts no second time).
    """
    if mode not in MODES:
        raise TrainingError(f"unknown evaluation mode {mode!r}; expected one of {MODES}")
    if not candidates:
        raise TrainingError("no variant trained successfully; nothing to evaluate")
    name = ctx.spec.registered_model
    train, holdout, days = load_split(ctx, window)
    kind, target = ctx.spec.target_type, ctx.spec.target.name
    classes = kind.classes(train[target], ctx.spec.target.classes)  # the candidates' (trained on train)
    y = kind.encode(holdout[target], classes)
    if kind.has_classes and (y < 0).any():  # a class no candidate learnt: no model can be judged on it
        logging.getLogger(__name__).warning("holdout: %d row(s) of classes %s the training days do not have are left out",
                                            int((y < 0).sum()), sorted(set(holdout[target][y < 0])))
        holdout, y = holdout[y >= 0], y[y >= 0]
    y = y.astype("float64")
    experiment = ctx.tracking.experiment(ctx.spec.name)
    scores = score_models(ctx.tracking, {c.variant: c.model_uri for c in candidates}, holdout, classes=classes)
    entry = _recorded(ctx, run_tags)  # a retry of a run whose decision is in the ledger: never decide twice
    replayed = entry is not None
    if entry is None:
        may_move = mode != "dry_run" and (mode == "live" if promote is None else promote)
        draft = LedgerEntry(kind="train", pipeline=ctx.spec.name, model=name, mode=mode, decision="keep", reason="",
                            dag_id=run_tags.get("airflow.dag_id"), run_id=run_tags.get("airflow.run_id"),
                            window=window, failed_variants=sorted(set(requested) - {c.variant for c in candidates}),
                            partitions=[str(d) for d in days], data_hash=_data_hash(ctx, days),
                            spec_hash=spec_hash(ctx.spec), trigger=run_tags.get("mlpipe.trigger"))
        entry, scores = _decide_and_commit(ctx, holdout, y, classes, scores, candidates, may_move, draft, run_tags)
    if entry.moved and ctx.tracking.bands_of(entry.model, entry.champion_after) is None:  # a retry learns them too
        _learn_bands(ctx, entry, train, holdout, scores, classes)
    report, evaluation_run = _report(ctx, entry, y, scores, experiment, run_tags)
    _publish(ctx, entry, str(report), evaluation_run)
    _index(ctx, entry, str(report))
    return {**entry.to_dict(), "report": str(report), "replayed": replayed}


def _learn_bands(ctx: Context, entry: LedgerEntry, train, holdout, scores: dict[str, np.ndarray],
                 classes: list[str] | None) -> None:
    """The promoted version's bands (:mod:`mlpipe.bands`), logged beside its reference: its
    training days against its reference sample, its holdout days' scores against its
    holdout scores (each less the day's own rows), its gate metric over holdout windows."""
    import time

    from mlpipe import bands
    from mlpipe.training import reference_sample

    started = time.perf_counter()
    variant = next((v for v, c in entry.candidates.items() if str(c.get("version")) == str(entry.champion_after)), None)
    if variant not in scores:
        return
    reference, ref_scores = reference_sample(ctx.spec, train, holdout, scores[variant], classes)
    window = entry.window
    learnt = bands.learn(ctx.spec, reference, train, ref_scores, ref_scores,
                         f"training days {window.start} .. {window.holdout_start - dt.timedelta(days=1)} (features), "
                         f"holdout days (scores, quality) of train run {entry.run_id}",
                         bands.quality_band(ctx.spec, holdout, scores[variant], classes))
    if ctx.spec.target_type.estimates:  # estimated performance before labels: calibrated on the holdout
        from mlpipe.estimate import fit_calibrator

        learnt["calibrator"] = fit_calibrator(holdout[ctx.spec.target.name].to_numpy(), scores[variant])
    ctx.tracking.log_bands(entry.model, entry.champion_after, learnt)
    # bench/monitoring.py reads this line: calibration's share of a train run
    logging.getLogger(__name__).info("mlpipe bands of v%s learnt in %.2fs", entry.champion_after,
                                     time.perf_counter() - started)


def _data_hash(ctx: Context, days) -> str:
    import hashlib

    from mlpipe.storage import file_hash

    return hashlib.sha256("".join(file_hash(ctx.store.path("features", d)) for d in days).encode()).hexdigest()


def _index(ctx: Context, entry: LedgerEntry, report: str | None = None) -> None:
    from mlpipe import report_index

    report_index.record(ctx.store, "train", f"{entry.seq:06d}",
                        {"evaluation": report, "ledger": str(ledger.entry_path(ctx.store, entry.seq))},
                        run_id=entry.run_id or "", decision=entry.decision, evaluation_status="report",
                        ledger_status="entry")


def _publish(ctx: Context, entry: LedgerEntry, report: str, evaluation_run: str | None) -> None:
    """What the MLflow UI shows: each registered candidate's description and tags, the
    promoted version's provenance, and the registered model's description."""
    from mlpipe import model_card

    tracking, name, registered = ctx.tracking, entry.model, {n: c for n, c in entry.candidates.items() if c.get("version")}
    for variant, found in registered.items():
        tracking.describe_version(name, found["version"],
                                  model_card.version_description(entry, variant, report, evaluation_run),
                                  model_card.version_tags(entry, variant, report, evaluation_run))
    if entry.moved:
        tracking.tag_version(name, entry.champion_after, {"mlpipe.promoted_by": entry.run_id or "",
                                                          "mlpipe.reason": entry.reason[:5000]})
    if registered:  # the registered model exists
        champion = tracking.champion_version(name)
        tracking.describe_model(name, model_card.model_description(ledger.entries(ctx.store),
                                                                   str(champion.version) if champion else None))


def _decide_and_commit(ctx: Context, holdout, y: np.ndarray, classes: list[str] | None, scores: dict[str, np.ndarray],
                       candidates: list[Candidate], may_move: bool, draft: LedgerEntry,
                       run_tags: dict[str, str]) -> tuple[LedgerEntry, dict[str, np.ndarray]]:
    """Score the champion, decide, and commit under the lock if the aliases have not moved
    since; otherwise decide again against the new champion. Returns the entry (the one
    already recorded, if a concurrent attempt of this run got there first) and the
    scores it was decided on. A multi-class champion is scored on the candidates'
    ``classes`` (a class it does not know: probability 0)."""
    while True:
        seen = _aliases(ctx.tracking, draft.model)
        champion_scores, champion_error = score_champion(ctx.tracking, draft.model, seen.champion, holdout,
                                                         ledger.recorded_hash(ctx.store, seen.champion or ""), classes)
        scored = {**scores, **({CHAMPION_KEY: champion_scores} if champion_scores is not None else {})}
        decision = assess(ctx.spec, y, scored, champion_error)
        with ledger.locked(ctx.store):
            recover(ctx)
            recorded = _recorded(ctx, run_tags)
            if recorded is not None:
                return recorded, scores
            if _aliases(ctx.tracking, draft.model) == seen:
                return commit(ctx, decision, seen, candidates, may_move,
                              dataclasses.replace(draft, champion_error=champion_error)), scored
        # another run moved the aliases while we scored: decide against its winner


def _recorded(ctx: Context, run_tags: dict[str, str]) -> LedgerEntry | None:
    """The ledger's train entry of this Airflow run, if it already has one."""
    key = (run_tags.get("airflow.dag_id"), run_tags.get("airflow.run_id"))
    if None in key:
        return None
    return next((e for e in ledger.newest_first(ctx.store)
                 if e.kind == "train" and (e.dag_id, e.run_id) == key), None)


def commit(ctx: Context, decision: Decision, seen: Aliases, candidates: list[Candidate], may_move: bool,
           draft: LedgerEntry) -> LedgerEntry:
    """Move the aliases as ``decision`` says (when ``may_move``) and append the ledger
    entry completed from ``draft`` (what the run knew before deciding), in one alias
    transaction (:func:`_transact`). The caller holds the ledger lock and has checked
    the aliases are still ``seen``."""
    by_name = {c.variant: c for c in candidates}
    planned = _planned(decision, by_name, seen, ctx.spec.serving.policy == "canary") if may_move else []
    return _transact(ctx, _entry(ctx, draft, decision, by_name, seen, planned), planned,
                     Moves(seen.champion, seen.challenger),
                     lambda moves: _entry(ctx, draft, decision, by_name, seen, moves.done, moves.note))


def _transact(ctx: Context, intent: LedgerEntry, planned: list[tuple[str, str | None, str | None]], moves: Moves,
              explain: Callable[[Moves], LedgerEntry], strict: bool = False) -> LedgerEntry:
    """The alias transaction of commit and rollback: record the intent (``intent`` and
    its ``planned`` moves), make the moves, append the entry ``explain`` builds from the
    moves made, return it as stored. On any failure the moves made are undone; if even
    that fails the intent stays for the next commit to complete (:func:`recover`), so
    aliases never stay moved without the entry that explains them. ``strict``: a
    champion moved meanwhile fails it (a rollback) rather than being noted (a commit).
    The caller holds the ledger lock."""
    ledger.write_pending(ctx.store, intent, planned)
    try:
        _move_aliases(ctx.tracking, intent.model, planned, moves, strict)
        entry = ledger.append(ctx.store, explain(moves))
    except BaseException:  # nothing half-done: alias moves without their ledger entry are undone
        if _undo(ctx.tracking, intent.model, moves.done):
            ledger.clear_pending(ctx.store)
        raise
    ledger.clear_pending(ctx.store)
    return entry


def _entry(ctx: Context, draft: LedgerEntry, decision: Decision, by_name: dict[str, Candidate], seen: Aliases,
           moves: list[tuple[str, str | None, str | None]], note: str = "") -> LedgerEntry:
    """``draft`` completed with the decision and the alias moves ``(alias, new, old)``."""
    from mlpipe import registry

    gate, after = ctx.spec.gate, {alias: new for alias, new, _ in moves}
    moved = registry.CHAMPION in after
    label = "promote" if moved else ("would-promote" if decision.promote and not note else "keep")
    if label == "would-promote" and registry.CHALLENGER in after \
            and after[registry.CHALLENGER] == by_name[decision.winner].version:
        label = "challenger"  # the canary policy: the winner goes into canary
    outcomes = {n: {"version": by_name[n].version, "run_id": by_name[n].run_id, "backend": by_name[n].backend,
                    "sha256": by_name[n].sha256, "metrics": decision.candidates[n],
                    **({"members": by_name[n].members} if by_name[n].members is not None else {}),
                    **({"per_class": by_name[n].per_class} if by_name[n].per_class is not None else {})}
                for n in decision.candidates}
    return dataclasses.replace(
        draft, decision=label, reason=decision.reason + note, moved=moved, metric=gate.metric,
        margin=gate.min_improvement, confidence=gate.bootstrap.confidence, winner=decision.winner,
        would_promote=decision.promote, champion_before=seen.champion,
        champion_after=after.get(registry.CHAMPION, seen.champion), challenger_before=seen.challenger,
        challenger_after=after.get(registry.CHALLENGER, seen.challenger), champion_metrics=decision.champion,
        candidates=outcomes, intervals=decision.intervals, ineligible=decision.ineligible)


def _planned(decision: Decision, by_name: dict[str, Candidate], seen: Aliases,
             canary: bool = False) -> list[tuple[str, str | None, str | None]]:
    """The alias moves ``(alias, new, old)`` a decision asks for: champion to the winner
    if it won, challenger to the runner-up (cleared if none). ``canary`` (the serving
    policy, once there is a champion): a winner becomes the challenger, and the canary DAG
    may make it champion."""
    from mlpipe import registry

    planned, champion = [], seen.champion
    winner, runner_up = by_name.get(decision.winner), by_name.get(decision.challenger)
    if canary and seen.champion and decision.promote and winner and winner.version:  # the canary DAG decides
        runner_up = winner
    elif decision.promote and winner and winner.version:
        planned.append((registry.CHAMPION, winner.version, seen.champion))
        champion = winner.version
    wanted = runner_up.version if runner_up and runner_up.version != champion else None
    if wanted != seen.challenger:
        planned.append((registry.CHALLENGER, wanted, seen.challenger))
    return planned


def _move_aliases(tracking, name: str, planned: list[tuple[str, str | None, str | None]], moves: Moves,
                  strict: bool = False) -> None:
    """Make the planned moves, recording each in ``moves``; a champion moved outside the
    lock (by hand) is recorded, not fought (``strict``: it fails), and the challenger
    then follows the champion actually in place."""
    from mlpipe import registry

    for alias, new, old in planned:
        if alias == registry.CHALLENGER and new is not None and new == moves.champion:
            continue
        try:
            tracking.move_alias(name, alias, new, old)
        except registry.AliasMoved as exc:
            if strict or alias != registry.CHAMPION:
                raise
            moves.note = f"; not promoted: {exc}"
            moves.champion = _aliases(tracking, name).champion
            continue
        moves.done.append((alias, new, old))
        setattr(moves, alias, new)


def recover(ctx: Context) -> LedgerEntry | None:
    """Complete a commit that was cut short after recording its intent: make the moves
    it had not made (an alias someone else moved since is left alone and noted) and
    append its entry, unless the ledger has it. The caller holds the ledger lock."""

    found = ledger.pending(ctx.store)
    if found is None:
        return None
    entry, planned = found
    notes = []
    for alias, new, old in planned:
        now = ctx.tracking.alias_version(entry.model, alias)
        now = str(now.version) if now else None
        if now == old and now != new:
            ctx.tracking.move_alias(entry.model, alias, new, old)
        elif now != new:
            notes.append(f"@{alias} is v{now}, not v{new}: moved by someone else since")
    stored = next((e for e in ledger.newest_first(ctx.store) if (e.kind, e.dag_id, e.run_id, e.champion_after)
                   == (entry.kind, entry.dag_id, entry.run_id, entry.champion_after)), None)
    if stored is None:
        note = "; completed after an interrupted commit" + "".join(f"; {n}" for n in notes)
        stored = ledger.append(ctx.store, dataclasses.replace(entry, reason=entry.reason + note))
    ledger.clear_pending(ctx.store)
    return stored


def _undo(tracking, name: str, moves: list[tuple[str, str | None, str | None]]) -> bool:
    """Move the aliases back; whether every one went back."""

    undone = True
    for alias, new, old in reversed(moves):
        try:
            tracking.move_alias(name, alias, old, new)
        except Exception:  # noqa: BLE001 - keep undoing the others; the original error is re-raised
            logging.getLogger(__name__).exception("could not move @%s of %s back to v%s", alias, name, old)
            undone = False
    return undone


def _report(ctx: Context, entry: LedgerEntry, y: np.ndarray, scores: dict[str, np.ndarray], experiment: str,
            run_tags: dict[str, str]):
    """The evaluate MLflow run (tags, metrics, decision, report page, charts) and the page
    on disk: (page path, run id)."""
    import matplotlib.pyplot as plt

    from mlpipe.evaluation_page import charts, render
    from mlpipe.metric_functions import curves

    two_classes = ctx.spec.target_type.curves and len(np.unique(y)) == 2
    figures = charts(entry, {n: curves(y, s) for n, s in scores.items()} if two_classes else {})
    page = render(entry, figures)
    path = atomic_write(evaluation_page(ctx.store, entry.seq), page)
    metrics = {f"{n}.{k}": v for n, c in entry.candidates.items() for k, v in c["metrics"].items()}
    metrics.update({f"{CHAMPION_KEY}.{k}": v for k, v in (entry.champion_metrics or {}).items()})
    try:
        run_id = ctx.tracking.log_evaluation(
            experiment, {**run_tags, "mlpipe.step": "evaluate", "mlpipe.decision": entry.decision,
                         "mlpipe.mode": entry.mode, "mlpipe.ledger_seq": str(entry.seq),
                         "mlpipe.reason": entry.reason[:5000]}, metrics, entry.to_dict(), page, figures)
    finally:
        for figure in figures.values():
            plt.close(figure)
    return path, run_id


def evaluation_page(store: Store, seq: int) -> Location:
    """The evaluation report of the train run recorded as ledger entry ``seq``."""
    return store.report_path("evaluation", f"{seq:06d}", ".html")


def rollback(ctx: Context, version: str, reason: str, run_tags: dict[str, str]) -> LedgerEntry:
    """Point ``champion`` at ``version`` ("previous": the champion before the current
    one, per the ledger) and record it in the ledger."""
    from mlpipe import registry

    name, tracking = ctx.spec.registered_model, ctx.tracking
    with ledger.locked(ctx.store):
        recover(ctx)
        before = _aliases(tracking, name).champion
        target = ledger.previous_champion(ctx.store, before) if version == "previous" else str(version).lstrip("v")
        if target is None:
            raise RegistryError(f"the ledger records no champion of {name} before v{before}: "
                                "give an explicit version to roll back to")
        if not tracking.version_exists(name, target):
            raise RegistryError(f"model {name} has no version {target!r}")
        if target == before:
            raise RegistryError(f"version {target} of {name} is already the champion")
        intent = LedgerEntry(kind="rollback", pipeline=ctx.spec.name, model=name, mode="live", decision="rollback",
                             reason=reason or f"rollback to {version}", dag_id=run_tags.get("airflow.dag_id"),
                             run_id=run_tags.get("airflow.run_id"), requested=version, moved=True,
                             champion_before=before, champion_after=target, spec_hash=spec_hash(ctx.spec))
        entry = _transact(ctx, intent, [(registry.CHAMPION, target, before)], Moves(before, None),
                          lambda _: intent, strict=True)
    tracking.tag_version(name, target, {"mlpipe.rolled_back_by": run_tags.get("airflow.run_id") or "",
                                        "mlpipe.ledger_seq": str(entry.seq), "mlpipe.reason": reason})
    from mlpipe import model_card

    tracking.describe_model(name, model_card.model_description(ledger.entries(ctx.store), target))
    _index(ctx, entry)
    return entry
