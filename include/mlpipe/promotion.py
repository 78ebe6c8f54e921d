"""Promotion: build the ensemble candidate, evaluate every candidate and the champion on
one holdout, apply the gate, move the ``champion`` / ``challenger`` aliases, roll back.

Whatever may move an alias runs under the pipeline's ledger lock: the champion is read,
compared against and replaced (compare-and-set) inside it, and the decision is appended
to the ledger before the lock is released, so two train runs cannot both move
``champion`` and every decision is recorded.
"""

from __future__ import annotations

import numpy as np

from mlpipe import ledger
from mlpipe.errors import RegistryError, TrainingError
from mlpipe.spec import spec_hash
from mlpipe.steps import Context, Window, load_split

CHAMPION_KEY = "champion"
ENSEMBLE = "ensemble"
MODES = ("live", "dry_run", "backfill")


def build_ensemble(ctx: Context, candidates: list[dict], window: dict, run_tags: dict[str, str],
                   register: bool) -> dict | None:
    """Soft-vote the top-K trained variants into one model, logged and (unless
    ``register`` is false) registered like a variant. None when disabled or < 2 trained."""
    import mlflow

    from mlpipe import registry
    from mlpipe.ensemble import Ensemble, choose_members
    from mlpipe.evaluation import compute_metrics

    spec, metric = ctx.spec, ctx.spec.gate.metric
    usable = {c["variant"]: c for c in candidates if c and metric in c["metrics"]}
    if spec.ensemble is None or len(usable) < 2:
        return None
    weights = choose_members(spec.ensemble, {n: c["metrics"][metric] for n, c in usable.items()},
                             spec.greater_is_better())
    experiment = registry.connect(ctx.settings, spec.name)
    ensemble = Ensemble({n: registry.bundle_of(registry.load_model(usable[n]["model_uri"])) for n in weights}, weights)
    train, holdout, _ = load_split(ctx, Window.from_dict(window))
    with mlflow.start_run(experiment_id=experiment, run_name=f"train-{ENSEMBLE}") as run:
        mlflow.set_tags({**run_tags, "mlpipe.step": "train", "mlpipe.variant": ENSEMBLE, "mlpipe.backend": ENSEMBLE,
                         "mlpipe.spec_hash": spec_hash(spec)})
        mlflow.log_params({f"weight.{n}": round(w, 6) for n, w in ensemble.weights.items()})
        mlflow.log_params({f"member.{n}": usable[n]["version"] or usable[n]["run_id"] for n in ensemble.weights})
        metrics = compute_metrics(spec.target.task, holdout[spec.target.name], ensemble.score(holdout))
        mlflow.log_metrics(metrics)
        info = registry.log_bundle(ensemble, train.head(200), spec.registered_model if register else None)
    return {"variant": ENSEMBLE, "backend": ENSEMBLE, "run_id": run.info.run_id, "model_uri": info.model_uri,
            "version": str(info.registered_model_version) if register else None, "metrics": metrics,
            "members": {n: usable[n]["version"] for n in ensemble.weights}, "weights": ensemble.weights}


def evaluate(ctx: Context, candidates: list[dict], requested: list[str], window: dict, run_tags: dict[str, str],
             mode: str = "live", promote: bool | None = None) -> dict:
    """Score the champion and every candidate on the same holdout, bootstrap each
    candidate's gain over the champion, apply the gate and record the decision.

    Aliases move in ``live`` mode; ``dry_run`` and ``backfill`` record what would have
    been promoted. ``promote=True`` lets a backfill move them (recorded as a backfill);
    a dry run never does. A retried task returns the decision its run already recorded.
    """
    from mlpipe import registry
    from mlpipe.evaluation import compute_metrics, decide

    if mode not in MODES:
        raise TrainingError(f"unknown evaluation mode {mode!r}; expected one of {MODES}")
    if not candidates:
        raise TrainingError("no variant trained successfully; nothing to evaluate")
    spec, gate, task, name = ctx.spec, ctx.spec.gate, ctx.spec.target.task, ctx.spec.registered_model
    win = Window.from_dict(window)
    _, holdout, days = load_split(ctx, win)
    y = holdout[spec.target.name].to_numpy(dtype="float64")
    experiment = registry.connect(ctx.settings, spec.name)
    scores = {c["variant"]: registry.predict(registry.load_model(c["model_uri"]), holdout) for c in candidates}
    by_name = {c["variant"]: c for c in candidates}

    with ledger.locked(ctx.store):
        recorded = _recorded(ctx, run_tags)
        if recorded is not None:  # a retry of a run whose decision is in the ledger: never decide twice
            return {**recorded, "report": str(_report(ctx, recorded, y, scores, experiment, run_tags))}
        current, challenger = (registry.alias_version(name, a) for a in (registry.CHAMPION, registry.CHALLENGER))
        before = str(current.version) if current else None
        challenger_before = str(challenger.version) if challenger else None
        champion_error = None
        if current is not None:
            try:
                scores[CHAMPION_KEY] = registry.predict(registry.load_model(registry.version_uri(name, before)), holdout)
            except Exception as exc:  # noqa: BLE001 - e.g. a schema change: the gate's policy decides
                champion_error = f"v{before}: {type(exc).__name__}: {str(exc)[:300]}"
        metrics = {n: compute_metrics(task, y, s) for n, s in scores.items()}
        champion_metrics = metrics.pop(CHAMPION_KEY, None)
        reference = CHAMPION_KEY if champion_metrics and gate.metric in champion_metrics else None
        intervals = _intervals(spec, y, scores, metrics, champion_metrics, reference)
        decision = decide(gate, task, metrics, champion_metrics, intervals, champion_error)
        winner, runner_up = by_name.get(decision.winner), by_name.get(decision.challenger)
        may_move = mode != "dry_run" and (mode == "live" if promote is None else promote)
        after, challenger_after, note, moves = before, challenger_before, "", []
        try:
            if may_move and decision.promote and winner and winner["version"]:
                try:
                    registry.move_alias(name, registry.CHAMPION, winner["version"], before)
                    moves.append((registry.CHAMPION, winner["version"], before))
                    after = winner["version"]
                except registry.AliasMoved as exc:
                    note = f"; not promoted: {exc}"
                    seen = registry.champion_version(name)
                    after = str(seen.version) if seen else None
            wanted = runner_up["version"] if runner_up and runner_up["version"] != after else None
            if may_move and wanted != challenger_before:
                registry.move_alias(name, registry.CHALLENGER, wanted, challenger_before)
                moves.append((registry.CHALLENGER, wanted, challenger_before))
                challenger_after = wanted
            moved = any(alias == registry.CHAMPION for alias, _, _ in moves)
            label = "promote" if moved else ("would-promote" if decision.promote and not note else "keep")
            entry = ledger.append(ctx.store, {
                "kind": "train", "pipeline": spec.name, "model": name, "mode": mode, "decision": label,
                "reason": decision.reason + note, "dag_id": run_tags.get("airflow.dag_id"),
                "run_id": run_tags.get("airflow.run_id"), "metric": gate.metric, "margin": gate.min_improvement,
                "confidence": gate.bootstrap.confidence, "winner": decision.winner,
                "would_promote": decision.promote, "moved": moved, "champion_before": before,
                "champion_after": after, "challenger_before": challenger_before,
                "challenger_after": challenger_after, "champion_metrics": champion_metrics,
                "champion_error": champion_error,
                "candidates": {n: {"version": by_name[n]["version"], "run_id": by_name[n]["run_id"],
                                   "backend": by_name[n]["backend"], "metrics": metrics[n],
                                   **({"members": by_name[n]["members"]} if "members" in by_name[n] else {})}
                               for n in metrics},
                "intervals": intervals, "ineligible": decision.ineligible,
                "failed_variants": sorted(set(requested) - set(by_name)), "window": win.to_dict(),
                "partitions": [str(d) for d in days], "spec_hash": spec_hash(spec)})
        except BaseException:  # nothing half-done: alias moves without their ledger entry are undone
            _undo(name, moves)
            raise
    if moved:
        registry.tag_version(name, after, {"mlpipe.promoted_by": entry["run_id"] or "",
                                           "mlpipe.ledger_seq": str(entry["seq"]),
                                           "mlpipe.reason": entry["reason"][:5000]})
    return {**entry, "report": str(_report(ctx, entry, y, scores, experiment, run_tags))}


def _recorded(ctx: Context, run_tags: dict[str, str]) -> dict | None:
    """The ledger's train entry of this Airflow run, if it already has one."""
    key = (run_tags.get("airflow.dag_id"), run_tags.get("airflow.run_id"))
    if None in key:
        return None
    return next((e for e in reversed(ledger.entries(ctx.store))
                 if e["kind"] == "train" and (e.get("dag_id"), e.get("run_id")) == key), None)


def _intervals(spec, y, scores, metrics, champion_metrics, reference) -> dict[str, dict]:
    """Bootstrap intervals of every model's gate metric and of each candidate's gain."""
    from mlpipe.bootstrap import paired_bootstrap

    gate, sign = spec.gate, 1.0 if spec.greater_is_better() else -1.0
    values = {**metrics, CHAMPION_KEY: champion_metrics or {}}
    usable = {n: s for n, s in scores.items() if gate.metric in values[n]}  # e.g. roc_auc needs two classes
    if not usable:
        return {}
    out = paired_bootstrap(gate.metric, spec.greater_is_better(), y, usable, reference, gate.bootstrap.resamples,
                           gate.bootstrap.confidence, gate.bootstrap.seed)
    for n, iv in out.items():
        iv["value"] = values[n][gate.metric]
        if reference and n != reference:
            iv["gain"] = sign * (iv["value"] - champion_metrics[gate.metric])
    return out


def _undo(name: str, moves: list[tuple[str, str | None, str | None]]) -> None:
    import logging

    from mlpipe import registry

    for alias, new, old in reversed(moves):
        try:
            registry.move_alias(name, alias, old, new)
        except Exception:  # noqa: BLE001 - keep undoing the others; the original error is re-raised
            logging.getLogger(__name__).exception("could not move @%s of %s back to v%s", alias, name, old)


def _report(ctx: Context, entry: dict, y: np.ndarray, scores: dict[str, np.ndarray], experiment: str,
            run_tags: dict[str, str]):
    """The evaluate MLflow run (tags, metrics, decision, report page) and the page on disk."""
    import mlflow

    from mlpipe import registry
    from mlpipe.eval_report import render
    from mlpipe.evaluation import curves

    binary = ctx.spec.target.task == "binary" and len(np.unique(y)) == 2
    page = render(entry, {n: curves(y, s) for n, s in scores.items()} if binary else {})
    path = ledger.ledger_dir(ctx.store).parent / "reports" / "evaluation" / f"{entry['seq']:06d}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    with mlflow.start_run(experiment_id=experiment, run_name="evaluate"):
        mlflow.set_tags({**run_tags, "mlpipe.step": "evaluate", "mlpipe.decision": entry["decision"],
                         "mlpipe.mode": entry["mode"], "mlpipe.ledger_seq": str(entry["seq"]),
                         "mlpipe.reason": entry["reason"][:5000]})
        for n, c in entry["candidates"].items():
            mlflow.log_metrics({f"{n}.{k}": v for k, v in c["metrics"].items()})
        if entry["champion_metrics"]:
            mlflow.log_metrics({f"{CHAMPION_KEY}.{k}": v for k, v in entry["champion_metrics"].items()})
        registry.log_json(entry, "decision.json")
        mlflow.log_text(page, "report.html")
    return path


def rollback(ctx: Context, version: str, reason: str, run_tags: dict[str, str]) -> dict:
    """Point ``champion`` at ``version`` ("previous": the champion before the current
    one, per the ledger) and record it in the ledger."""
    from mlpipe import registry

    name = ctx.spec.registered_model
    registry.connect(ctx.settings, ctx.spec.name)
    with ledger.locked(ctx.store):
        current = registry.champion_version(name)
        before = str(current.version) if current else None
        target = ledger.previous_champion(ctx.store, before) if version == "previous" else str(version).lstrip("v")
        if target is None:
            raise RegistryError(f"the ledger records no champion of {name} before v{before}: "
                                "give an explicit version to roll back to")
        if not registry.version_exists(name, target):
            raise RegistryError(f"model {name} has no version {target!r}")
        if target == before:
            raise RegistryError(f"version {target} of {name} is already the champion")
        registry.move_alias(name, registry.CHAMPION, target, before)
        try:
            entry = ledger.append(ctx.store, {
                "kind": "rollback", "pipeline": ctx.spec.name, "model": name, "mode": "live", "decision": "rollback",
                "reason": reason or f"rollback to {version}", "dag_id": run_tags.get("airflow.dag_id"),
                "run_id": run_tags.get("airflow.run_id"), "requested": version, "moved": True,
                "champion_before": before, "champion_after": target, "spec_hash": spec_hash(ctx.spec)})
        except BaseException:
            _undo(name, [(registry.CHAMPION, target, before)])
            raise
    registry.tag_version(name, target, {"mlpipe.rolled_back_by": run_tags.get("airflow.run_id") or "",
                                        "mlpipe.ledger_seq": str(entry["seq"]), "mlpipe.reason": reason})
    return entry
