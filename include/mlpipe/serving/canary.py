"""A canary release decided by data: the ``<pipeline>__canary`` DAG's one step.

Under ``serving.policy: canary`` a train run that would promote moves only ``challenger``
(:mod:`mlpipe.promotion`). The canary's state, ``serving/canary.json``, says which
challenger is in canary against which champion, its step and its share of the traffic;
serving processes read it at each poll (:mod:`mlpipe.serving.policy`). Each run of the
canary DAG looks once:

- a challenger not in canary yet (or a new champion) starts one at the first step;
- otherwise the arms are compared on the rows they served since the step began whose
  labels have arrived (each row's loss: :meth:`~mlpipe.targets.TargetType.row_loss`) with
  the always-valid test of :mod:`mlpipe.serving.sequential`, so looking every day does not
  inflate false alarms. Fewer than ``canary.min_rows`` labelled rows in an arm: hold.
  Significantly worse: ``challenger`` is cleared (the canary gets no more traffic) and it
  alerts. Otherwise the share moves to the next step; when that is the last (1.0: all the
  traffic, no champion arm left to compare with) ``champion`` moves to the canary instead,
  through the alias transaction promotion and rollback use.

Every look is a ledger entry (``kind: canary``) with its figures: rows, mean losses, the
difference's confidence sequence, the always-valid p-value and each arm's metrics.
"""

from __future__ import annotations

import datetime as dt
import json

from mlpipe import ledger
from mlpipe.context import Context
from mlpipe.records import LedgerEntry
from mlpipe.serving import policy, requestlog, sequential
from mlpipe.spec import spec_hash
from mlpipe.storage import Store, atomic_write, read_json


def state_path(store: Store):
    return store.base / "serving" / "canary.json"


def state(store: Store) -> dict | None:
    """The canary's state (None: none ever started)."""
    try:
        return read_json(state_path(store))
    except FileNotFoundError:
        return None


def _save(store: Store, found: dict) -> None:
    atomic_write(state_path(store), json.dumps(found, indent=1))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def step(ctx: Context, run_tags: dict[str, str]) -> dict:
    """One look of the canary (see the module's docstring); what it did, fit for XCom."""
    from mlpipe.promotion import _aliases, recover

    spec = ctx.spec
    if spec.serving.policy != "canary":
        return {"action": "none", "reason": f"serving.policy is {spec.serving.policy!r}, not canary"}
    with ledger.locked(ctx.store):
        recover(ctx)
        seen, current = _aliases(ctx.tracking, spec.registered_model), state(ctx.store)
        if seen.challenger is None or seen.champion is None or seen.challenger == seen.champion:
            return {"action": "none", "reason": "no challenger to put in canary"}
        if current is None or (current["challenger"], current["champion"]) != (seen.challenger, seen.champion):
            return _start(ctx, seen, run_tags)
        if current["status"] != "running":
            return {"action": "none", "reason": f"the canary of v{seen.challenger} is {current['status']}"}
        found = compare(ctx, current)
        return _decide(ctx, current, found, seen, run_tags)


def _start(ctx: Context, seen, run_tags: dict[str, str]) -> dict:
    steps = ctx.spec.serving.canary.steps
    fresh = {"challenger": seen.challenger, "champion": seen.champion, "step": 0, "share": steps[0],
             "status": "running", "started": _now(), "step_since": _now(), "look": None}
    entry = _record(ctx, "canary-start", f"v{seen.challenger} in canary against v{seen.champion} at "
                    f"{steps[0]:.0%} of the traffic", seen, fresh, run_tags)
    _save(ctx.store, fresh)
    return {"action": "start", **_result(entry, fresh)}


def compare(ctx: Context, current: dict) -> sequential.Comparison:
    """The arms' comparison on the labelled rows they served since the step began."""
    spec, conf = ctx.spec, ctx.spec.serving.canary
    rows = requestlog.with_labels(ctx.store, spec, dt.date.min, dt.date.max,
                                  since=dt.datetime.fromisoformat(current["step_since"]))
    losses = {}
    for arm, version in ((policy.CHAMPION, current["champion"]), (policy.CANARY, current["challenger"])):
        mine = rows[(rows[requestlog.ARM] == arm) & (rows["model_version"].astype(str) == version)] \
            if len(rows) else rows
        losses[arm] = _losses(spec, mine)
    look = current.get("look") or {}
    return sequential.compare(losses[policy.CHAMPION], losses[policy.CANARY], alpha=conf.alpha,
                              min_rows=conf.min_rows, previous_p=look.get("p_value", 1.0),
                              previous_low=look.get("low", float("-inf")), previous_high=look.get("high", float("inf")))


def _losses(spec, rows):
    import numpy as np

    from mlpipe.predictions import classes_in, scores_of

    if rows.empty:
        return np.zeros(0)
    classes = classes_in(rows)
    return spec.target_type.row_loss(rows[spec.target.name], scores_of(rows, classes), classes)


def _decide(ctx: Context, current: dict, found: sequential.Comparison, seen, run_tags: dict[str, str]) -> dict:
    from mlpipe import registry

    steps, figures = ctx.spec.serving.canary.steps, found.to_dict()
    where = f"step {current['step'] + 1}/{len(steps) - 1} ({current['share']:.0%})"
    if found.verdict == "hold":
        after = {**current, "look": figures}
        entry = _record(ctx, "canary-hold", f"{where}: too little labelled data ({found.n_control} champion, "
                        f"{found.n_treatment} canary rows; {ctx.spec.serving.canary.min_rows} needed per arm)",
                        seen, after, run_tags, figures)
    elif found.verdict == "worse":
        after = {**current, "status": "rolled_back", "share": 0.0, "look": figures, "ended": _now()}
        entry = _record(ctx, "canary-rollback", f"{where}: v{seen.challenger} is significantly worse (mean loss "
                        f"{found.mean_treatment:.4g} against {found.mean_control:.4g}, p={found.p_value:.3g}): "
                        "challenger cleared", seen, after, run_tags, figures,
                        moves=[(registry.CHALLENGER, None, seen.challenger)])
    elif steps[current["step"] + 1] < 1.0:
        share = steps[current["step"] + 1]
        after = {**current, "step": current["step"] + 1, "share": share, "step_since": _now(), "look": None}
        entry = _record(ctx, "canary-advance", f"{where} passed ({found.verdict}, p={found.p_value:.3g}): "
                        f"{share:.0%} of the traffic next", seen, after, run_tags, figures)
    else:
        after = {**current, "status": "promoted", "look": figures, "ended": _now()}
        entry = _record(ctx, "canary-promote", f"{where} passed ({found.verdict}, p={found.p_value:.3g}): "
                        f"v{seen.challenger} becomes champion", seen, after, run_tags, figures,
                        moves=[(registry.CHAMPION, seen.challenger, seen.champion),
                               (registry.CHALLENGER, None, seen.challenger)])
    _save(ctx.store, after)
    if entry.moved:  # the registered model's description names its champion and why
        from mlpipe import model_card

        ctx.tracking.describe_model(ctx.spec.registered_model,
                                    model_card.model_description(ledger.entries(ctx.store), entry.champion_after))
    return {"action": entry.decision.removeprefix("canary-"), **_result(entry, after)}


def _record(ctx: Context, decision: str, reason: str, seen, after: dict, run_tags: dict[str, str],
            figures: dict | None = None, moves: list | None = None) -> LedgerEntry:
    """The look's ledger entry, with the alias ``moves`` (alias, new, old) made in the alias
    transaction of promotion and rollback. The caller holds the ledger lock."""
    from mlpipe import promotion, registry

    moved = {alias: new for alias, new, _ in moves or []}
    intent = LedgerEntry(kind="canary", pipeline=ctx.spec.name, model=ctx.spec.registered_model, mode="live",
                         decision=decision, reason=reason, dag_id=run_tags.get("airflow.dag_id"),
                         run_id=run_tags.get("airflow.run_id"), moved=registry.CHAMPION in moved,
                         champion_before=seen.champion, champion_after=moved.get(registry.CHAMPION, seen.champion),
                         challenger_before=seen.challenger,
                         challenger_after=moved.get(registry.CHALLENGER, seen.challenger), spec_hash=spec_hash(ctx.spec),
                         canary={"step": after["step"], "share": after["share"], "status": after["status"],
                                 **({"comparison": figures} if figures else {})})
    if not moves:
        return ledger.append(ctx.store, intent)
    return promotion._transact(ctx, intent, moves, promotion.Moves(seen.champion, seen.challenger),
                               lambda _: intent, strict=True)


def _result(entry: LedgerEntry, after: dict) -> dict:
    return {"seq": entry.seq, "decision": entry.decision, "reason": entry.reason, "moved": entry.moved,
            "model": entry.model, "champion_before": entry.champion_before, "champion_after": entry.champion_after,
            "challenger_after": entry.challenger_after, "share": after["share"], "status": after["status"],
            "run_id": entry.run_id, "mode": entry.mode, "comparison": (entry.canary or {}).get("comparison")}

