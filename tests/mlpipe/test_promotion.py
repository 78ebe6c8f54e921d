"""Promotion against a real MLflow (SQLite) store and registry: the gate on bootstrap
intervals, aliases, the ledger, backfill and dry-run modes, the ensemble, rollback,
concurrent train runs, shadow scoring."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import multiprocessing

import numpy as np
import pytest

from mlpipe import ledger, promotion, registry, scoring, training
from mlpipe.backends import backend_entry
from mlpipe.context import Context, load_split
from mlpipe.errors import RegistryError
from mlpipe.model import ModelBundle
from mlpipe.records import Candidate, Job, Window
from mlpipe.settings import get_settings

pytestmark = pytest.mark.integration
TAGS = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}
RUNS = itertools.count(1)


@pytest.fixture
def ctx(tmp_path, spec, store, model_frame_factory):
    frame = model_frame_factory(n=900, seed=3)
    for day, part in frame.groupby("partition_date"):
        store.write("features", day, part)
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=store.root)
    tuned = spec.model_copy(update={
        "training": spec.training.model_copy(update={"min_rows": 10}),
        "gate": spec.gate.model_copy(update={"bootstrap": spec.gate.bootstrap.model_copy(update={"resamples": 300})}),
        "ensemble": None})
    context = Context(settings, tuned, store)
    context.tracking.experiment(tuned.name)
    return context


def window(ctx) -> Window:
    days = ctx.store.days("features", *_span())
    return Window(days[0], days[-1], days[-1] + (days[1] - days[0]))


def _span():
    return dt.date(2000, 1, 1), dt.date(2100, 1, 1)


def train(ctx, register=True) -> list[dict]:
    """Every variant trained, as the train DAG's XCom holds them."""
    return [training.train_variant(ctx, Job(v.name, backend_entry(v.backend).family, window(ctx), "live", register), TAGS).to_dict()
            for v in ctx.spec.variants]


def register_noise_model(ctx) -> str:
    """A model trained on a shuffled target (AUC about 0.5), registered; its version."""
    train_rows, _, _ = load_split(ctx, window(ctx))
    target = ctx.spec.target.name
    shuffled = train_rows.assign(**{target: np.random.default_rng(0).permutation(train_rows[target].to_numpy())})
    bundle = ModelBundle.train(ctx.spec, ctx.spec.variants[1], shuffled)
    with ctx.tracking.run(ctx.tracking.experiment(ctx.spec.name), "noise") as run_id:
        logged = ctx.tracking.log_bundle(run_id, bundle, shuffled.head(50), ctx.spec.registered_model)
    return {"variant": "noise", "backend": "sklearn_linear", "run_id": run_id, "model_uri": logged.model_uri,
            "version": logged.version, "metrics": {}}


def evaluate(ctx, candidates, mode="live", run_id=None) -> dict:
    """Evaluate as a new Airflow run (``run_id`` default: a fresh one)."""
    tags = {"airflow.dag_id": "train", "airflow.run_id": run_id or f"manual__{next(RUNS)}"}
    return promotion.evaluate_and_promote(ctx, candidates=[Candidate.from_dict(c) for c in candidates],
                                          requested=[c["variant"] for c in candidates], window=window(ctx),
                                          run_tags=tags, mode=mode)


def rollback(ctx, **kwargs) -> dict:
    return promotion.rollback(ctx, **kwargs).to_dict()


def stored_entries(ctx) -> list[dict]:
    return [e.to_dict() for e in ledger.entries(ctx.store)]


def champion(ctx) -> str | None:
    found = ctx.tracking.champion_version(ctx.spec.registered_model)
    return str(found.version) if found else None


def test_first_run_promotes_and_records_everything(ctx):
    results = train(ctx)
    entry = evaluate(ctx, results, run_id="manual__first")

    assert entry["decision"] == "promote" and entry["moved"] and entry["champion_before"] is None
    assert champion(ctx) == entry["champion_after"] == results[[r["variant"] for r in results].index(
        entry["winner"])]["version"]
    challenger = ctx.tracking.alias_version(ctx.spec.registered_model, registry.CHALLENGER)
    assert str(challenger.version) == entry["challenger_after"] != entry["champion_after"]
    stored = stored_entries(ctx)
    assert [e["seq"] for e in stored] == [1] and stored[0]["run_id"] == "manual__first"
    assert stored[0]["partitions"] and stored[0]["spec_hash"]
    assert set(stored[0]["candidates"]) == {"hgb", "linear"}
    assert {"ci"} <= set(stored[0]["intervals"]["hgb"])
    page = open(entry["report"]).read()
    assert "<svg" in page and "ROC" in page and "Precision-recall" in page and entry["reason"][:20] in page
    run = ctx.tracking.client.search_runs([ctx.tracking.experiment(ctx.spec.name)],
                                     "tags.`mlpipe.step` = 'evaluate'")[0]
    assert run.data.tags["mlpipe.decision"] == "promote" and run.data.tags["mlpipe.ledger_seq"] == "1"
    version = ctx.tracking.client.get_model_version(ctx.spec.registered_model, champion(ctx))
    assert version.tags["mlpipe.promoted_by"] == "manual__first" and version.tags["mlpipe.ledger_seq"] == "1"

    learnt = ctx.tracking.bands_of(ctx.spec.registered_model, champion(ctx))  # calibrated drift, beside the reference
    assert set(learnt["columns"]) == set(ctx.spec.monitored_columns) and learnt["dataset"]["chunks"] == 5
    assert "manual__first" in learnt["source"] and learnt["score"] is None  # one holdout day: too few for a band
    assert learnt["quality"]["method"] == "bootstrap" and learnt["quality"]["metric"] == ctx.spec.gate.metric
    assert ctx.tracking.bands_of(ctx.spec.registered_model, entry["challenger_after"]) is None

    retried = evaluate(ctx, results, run_id="manual__first")  # the task retried after recording
    assert {k: v for k, v in retried.items() if k not in ("report", "replayed")} == stored[0]
    assert retried["replayed"] and not entry["replayed"]
    assert len(stored_entries(ctx)) == 1 and champion(ctx) == entry["champion_after"]
    assert str(ctx.tracking.alias_version(ctx.spec.registered_model, registry.CHALLENGER).version) == str(challenger.version)
    assert ctx.tracking.bands_of(ctx.spec.registered_model, champion(ctx))["learnt_at"] == learnt["learnt_at"]


def test_the_registry_explains_each_version_and_the_champion(ctx):
    results = train(ctx)
    entry = evaluate(ctx, results, run_id="manual__explained")
    client, name = ctx.tracking.client, ctx.spec.registered_model

    for result in results:
        version = client.get_model_version(name, result["version"])
        role = "champion" if result["version"] == entry["champion_after"] else "challenger"
        assert version.tags["mlpipe.role"] == role and version.tags["mlpipe.decision"] == "promote"
        assert version.tags["mlpipe.backend"] == result["backend"]
        assert version.tags["mlpipe.airflow_run"] == "train/manual__explained"
        assert version.tags["mlpipe.data_hash"] == entry["data_hash"] and len(entry["data_hash"]) == 64
        assert version.tags["mlpipe.evaluation_report"] == entry["report"]
        low, high = entry["intervals"][result["variant"]]["ci"]
        assert version.tags["mlpipe.holdout.roc_auc_ci"] == f"[{low:.4f}, {high:.4f}]"
        assert f"Holdout roc_auc | {result['metrics']['roc_auc']:.4f} [{low:.4f}, {high:.4f}]" in version.description
        assert entry["report"] in version.description and "manual__explained" in version.description
    described = client.get_registered_model(name).description
    assert described.startswith(f"**Champion: v{entry['champion_after']}**") and "manual__explained" in described
    run = client.get_run(version.tags["mlpipe.evaluation_run"])
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("roc", "precision_recall", "calibration", "score_histogram",
                                                "intervals")}

    back = rollback(ctx, version=entry["challenger_after"], reason="drill", run_tags={"airflow.run_id": "rb"})
    assert client.get_registered_model(name).description.startswith(f"**Champion: v{back['champion_after']}**, "
                                                                    "made champion by rollback")


def test_clearly_better_is_promoted_noise_and_worse_are_not(ctx):
    noise = register_noise_model(ctx)
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, noise["version"], None)

    results = train(ctx)
    better = evaluate(ctx, results)
    assert better["decision"] == "promote" and better["champion_before"] == noise["version"]
    assert better["intervals"][better["winner"]]["gain_ci"][0] > ctx.spec.gate.min_improvement

    again = evaluate(ctx, train(ctx))  # same data, same seeds: a tie with the new champion
    assert again["decision"] == "keep" and champion(ctx) == better["champion_after"]
    worse = evaluate(ctx, [register_noise_model(ctx)])
    assert worse["decision"] == "keep" and champion(ctx) == better["champion_after"]
    assert [e["decision"] for e in stored_entries(ctx)] == ["promote", "keep", "keep"]


@pytest.mark.parametrize("mode", ["backfill", "dry_run"])
def test_backfill_and_dry_run_record_but_move_nothing(ctx, mode):
    entry = evaluate(ctx, train(ctx, register=False), mode=mode)
    assert entry["decision"] == "would-promote" and entry["would_promote"] and not entry["moved"]
    assert entry["mode"] == mode and champion(ctx) is None
    assert ctx.tracking.alias_version(ctx.spec.registered_model, registry.CHALLENGER) is None
    assert stored_entries(ctx)[-1]["decision"] == "would-promote"


def test_unscorable_champion_is_replaced_and_says_why(ctx):
    """The champion was trained on a feature the data no longer has (a schema change)."""
    train_rows, _, _ = load_split(ctx, window(ctx))
    features = ctx.spec.features.model_copy(update={"numeric": [*ctx.spec.features.numeric, "legacy"]})
    old_spec = ctx.spec.model_copy(update={"features": features})
    legacy = train_rows.assign(legacy=1.0)
    bundle = ModelBundle.train(old_spec, old_spec.variants[1], legacy)
    with ctx.tracking.run(ctx.tracking.experiment(ctx.spec.name), "legacy") as run_id:
        logged = ctx.tracking.log_bundle(run_id, bundle, legacy.head(50), ctx.spec.registered_model)
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, logged.version, None)

    entry = evaluate(ctx, train(ctx))

    assert "legacy" in entry["champion_error"] and entry["champion_metrics"] is None
    assert entry["decision"] == "promote" and "policy 'replace'" in entry["reason"]


def test_rollback_to_previous_and_to_a_version(ctx):
    noise = register_noise_model(ctx)
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, noise["version"], None)
    promoted = evaluate(ctx, train(ctx))
    assert promoted["moved"]

    back = rollback(ctx, version="previous", reason="bad live metrics", run_tags={"airflow.run_id": "rb1"})
    assert back["kind"] == "rollback" and back["champion_after"] == noise["version"] == champion(ctx)
    assert back["champion_before"] == promoted["champion_after"]
    forward = rollback(ctx, version=f"v{promoted['champion_after']}", reason="", run_tags={})
    assert champion(ctx) == promoted["champion_after"] and forward["seq"] == back["seq"] + 1
    with pytest.raises(RegistryError, match="already the champion"):
        rollback(ctx, version=promoted["champion_after"], reason="", run_tags={})
    with pytest.raises(RegistryError, match="no version '99'"):
        rollback(ctx, version="99", reason="", run_tags={})
    assert len(stored_entries(ctx)) == 3  # refused rollbacks leave no entry


def test_rollback_without_history_is_refused(ctx):
    with pytest.raises(RegistryError, match="give an explicit version"):
        rollback(ctx, version="previous", reason="", run_tags={})


def test_ensemble_is_a_candidate_and_reloads_identically(ctx):
    results = train(ctx)
    spec = ctx.spec.model_copy(update={"ensemble": ctx.spec.model_fields["ensemble"].annotation.__args__[0](top_k=2)})
    ctx = dataclasses.replace(ctx, spec=spec)
    combined = training.build_ensemble(ctx, candidates=[Candidate.from_dict(r) for r in results], window=window(ctx),
                                       run_tags=TAGS, register=True).to_dict()
    assert combined["variant"] == "ensemble" and set(combined["members"]) == {"hgb", "linear"}
    assert sum(combined["weights"].values()) == pytest.approx(1.0)
    entry = evaluate(ctx, [*results, combined])
    assert "ensemble" in entry["candidates"] and "ensemble" in entry["intervals"]
    _, holdout, _ = load_split(ctx, window(ctx))
    loaded = ctx.tracking.load_model(registry.version_uri(spec.registered_model, combined["version"]))
    members = [registry.predict(ctx.tracking.load_model(r["model_uri"]), holdout) for r in results]
    expected = sum(combined["weights"][r["variant"]] * m for r, m in zip(results, members, strict=True))
    np.testing.assert_allclose(registry.predict(loaded, holdout), expected, rtol=1e-12)
    np.testing.assert_allclose(registry.predict(loaded, holdout), registry.predict(loaded, holdout))


def test_a_commit_cut_short_is_completed_by_the_retry_from_its_intent(ctx, monkeypatch):
    """The tracking server goes away after champion moved: the challenger move and the
    undo fail, so the aliases stay half-moved with no entry. The retry completes the
    commit from the recorded intent: one entry, the moves it planned, made once."""
    results = train(ctx)
    real, calls = ctx.tracking.move_alias, []

    def gone_after_champion(name, alias, version, expected):
        calls.append(alias)
        if len(calls) > 1:
            raise ConnectionError("tracking server unreachable")
        real(name, alias, version, expected)

    monkeypatch.setattr(ctx.tracking, "move_alias", gone_after_champion)
    with pytest.raises(ConnectionError):
        evaluate(ctx, results, run_id="manual__cut")
    assert stored_entries(ctx) == [] and champion(ctx) is not None  # moved, unexplained: what the intent is for
    assert ledger.pending(ctx.store) is not None
    monkeypatch.setattr(ctx.tracking, "move_alias", real)

    retried = evaluate(ctx, results, run_id="manual__cut")

    (entry,) = stored_entries(ctx)
    assert entry["run_id"] == "manual__cut" and entry["moved"] and entry["champion_before"] is None
    assert entry["champion_after"] == champion(ctx) == retried["champion_after"]
    challenger = ctx.tracking.alias_version(ctx.spec.registered_model, registry.CHALLENGER)
    assert entry["challenger_after"] == (str(challenger.version) if challenger else None)
    assert "completed after an interrupted commit" in entry["reason"]
    assert ledger.pending(ctx.store) is None


def test_a_commit_whose_undo_worked_leaves_no_intent(ctx, monkeypatch):
    results = train(ctx)
    monkeypatch.setattr(ledger, "append", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        evaluate(ctx, results)
    assert champion(ctx) is None and ledger.pending(ctx.store) is None


def test_a_rollback_runs_the_same_transaction_undone_or_completed(ctx, monkeypatch):
    """A rollback whose entry cannot be written is undone and leaves no intent; one whose
    undo fails too (the tracking server gone) is completed by the next commit."""
    promoted = evaluate(ctx, train(ctx))
    noise = register_noise_model(ctx)
    real_append, real_move = ledger.append, ctx.tracking.move_alias
    monkeypatch.setattr(ledger, "append", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        rollback(ctx, version=noise["version"], reason="", run_tags={})
    assert champion(ctx) == promoted["champion_after"] and ledger.pending(ctx.store) is None

    calls = []

    def gone_after_the_move(*args):
        calls.append(args)
        if len(calls) > 1:
            raise ConnectionError("tracking server unreachable")
        real_move(*args)

    monkeypatch.setattr(ctx.tracking, "move_alias", gone_after_the_move)
    with pytest.raises(OSError):
        rollback(ctx, version=noise["version"], reason="drill", run_tags={"airflow.run_id": "rb"})
    assert champion(ctx) == noise["version"] and ledger.pending(ctx.store) is not None
    monkeypatch.setattr(ledger, "append", real_append)
    monkeypatch.setattr(ctx.tracking, "move_alias", real_move)

    evaluate(ctx, train(ctx))
    back = next(e for e in stored_entries(ctx) if e["kind"] == "rollback")
    assert back["run_id"] == "rb" and back["champion_after"] == noise["version"]
    assert "completed after an interrupted commit" in back["reason"] and ledger.pending(ctx.store) is None


def _evaluate_in_process(ctx, candidates, barrier, run_id):
    barrier.wait()
    evaluate(ctx, candidates, run_id=run_id)


def test_two_runs_at_once_move_champion_exactly_once(ctx):
    _two_runs_at_once(ctx)


def _two_runs_at_once(ctx):
    noise = register_noise_model(ctx)
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, noise["version"], None)
    first, second = train(ctx), train(ctx)
    mp = multiprocessing.get_context("spawn")
    barrier = mp.Barrier(2)
    procs = [mp.Process(target=_evaluate_in_process, args=(ctx, c, barrier, f"run_{i}"))
             for i, c in enumerate((first, second))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = stored_entries(ctx)
    assert sorted(e["decision"] for e in entries) == ["keep", "promote"]
    moved = [e for e in entries if e["moved"]]
    assert len(moved) == 1 and moved[0]["champion_before"] == noise["version"]
    kept = next(e for e in entries if not e["moved"])
    assert kept["champion_before"] == moved[0]["champion_after"] == champion(ctx)  # compared with the new one


def test_two_runs_with_no_shared_disk_move_champion_exactly_once(ctx, s3_root, lock_database):
    """Two processes whose data root is a bucket on the S3 server (no disk in common) and
    whose lock is a PostgreSQL advisory lock: still one promotion, one keep."""
    from mlpipe.storage import Store, location

    remote = Store(location(s3_root), ctx.store.pipeline, lock_database)
    for day in ctx.store.days("features", *_span()):
        remote.write("features", day, ctx.store.read("features", day))
    ctx = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, data_root=remote.root,
                                                                lock_url=lock_database), store=remote)
    _two_runs_at_once(ctx)


def test_score_shadows_the_challenger(ctx):
    entry = evaluate(ctx, train(ctx))
    day = window(ctx).holdout_start
    out = scoring.score_day(ctx, day)
    predictions = ctx.store.read("predictions", day)
    assert out["challenger_version"] == entry["challenger_after"]
    assert set(predictions["model_version"]) == {entry["champion_after"]}
    assert set(predictions["challenger_version"]) == {entry["challenger_after"]}
    assert predictions["challenger_score"].between(0, 1).all()
    assert not np.allclose(predictions["challenger_score"], predictions["score"])

    from mlpipe.metrics import compute_metrics
    from mlpipe.shadow import compare

    compared = compare(ctx, day, day + dt.timedelta(days=1))
    (pair,) = compared["pairs"]
    labels = ctx.store.read("features", day)[ctx.spec.target.name].to_numpy(dtype="float64")
    assert (pair["champion"], pair["challenger"], pair["rows"]) == (entry["champion_after"],
                                                                    entry["challenger_after"], len(labels))
    assert pair["challenger_metrics"] == compute_metrics("binary", labels, predictions["challenger_score"].to_numpy())
    assert pair["champion_metrics"] == compute_metrics("binary", labels, predictions["score"].to_numpy())
    ctx.tracking.client.delete_registered_model_alias(ctx.spec.registered_model, registry.CHALLENGER)
    scoring.score_day(ctx, day)
    alone = ctx.store.read("predictions", day)
    assert alone["challenger_score"].isna().all() and alone["challenger_version"].isna().all()
    assert list(alone.columns) == list(predictions.columns)


def test_the_bands_are_relearnt_on_scored_days_and_the_earlier_ones_kept(ctx):
    """In-process, real MLflow: monitoring.relearn_bands on the champion's scored days."""
    from mlpipe import monitoring

    entry = evaluate(ctx, train(ctx))
    days = ctx.store.days("features", *_span())
    for day in days:
        scoring.score_day(ctx, day)
    learnt = monitoring.relearn_bands(ctx, days[0], days[-1])
    assert learnt["source"] == f"re-learnt on scored days {days[0]} .. {days[-1]}"
    # the holdout day's scores are all the reference scores: left out for its own chunk, none remain
    assert learnt["dataset"]["chunks"] == len(days) and learnt["score"]["chunks"] == len(days) - 1
    fresh = type(ctx.tracking)(ctx.settings)  # another task: reads what is logged
    assert fresh.bands_of(ctx.spec.registered_model, entry["champion_after"]) == learnt
    run_id = ctx.tracking.client.get_model_version(ctx.spec.registered_model, entry["champion_after"]).run_id
    kept = [a.path for a in ctx.tracking.client.list_artifacts(run_id, "reference")]
    assert "reference/bands.json" in kept and any(p.startswith("reference/bands-") for p in kept)
    assert learnt["quality"] and learnt["calibrator"]  # kept from the promotion's bands


def test_under_the_canary_policy_a_winner_becomes_challenger_once_there_is_a_champion():
    """Pure: the alias moves a decision asks for (no registry)."""
    from mlpipe.evaluation import Decision

    made = {n: Candidate(n, "sklearn_hgb", f"run-{n}", f"runs:/{n}", v, {}) for n, v in (("hgb", "5"), ("lin", "6"))}
    won = Decision(promote=True, winner="hgb", reason="gain", metric="roc_auc", challenger="lin")
    seen = promotion.Aliases("3", "4")
    assert promotion._planned(won, made, seen) == [("champion", "5", "3"), ("challenger", "6", "4")]
    assert promotion._planned(won, made, seen, canary=True) == [("challenger", "5", "4")]
    first = promotion.Aliases(None, None)  # no champion yet: the first winner is promoted outright
    assert promotion._planned(won, made, first, canary=True) == [("champion", "5", None), ("challenger", "6", None)]
