"""Scoring against a real MLflow (SQLite) registry: the point-in-time champion of a
backfilled day, and the fallback to the previous champion when the champion is broken."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mlpipe import ledger, registry, scoring, training
from mlpipe.backends import backend_entry
from mlpipe.context import Context
from mlpipe.errors import MlpipeError
from mlpipe.records import Job, LedgerEntry, Window
from mlpipe.settings import get_settings

pytestmark = pytest.mark.integration
TAGS = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}
DAY = dt.date(2024, 1, 6)


@pytest.fixture
def ctx(tmp_path, spec, store, model_frame_factory):
    for day, part in model_frame_factory(n=900, seed=3).groupby("partition_date"):
        store.write("features", day, part)
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=store.root)
    tuned = spec.model_copy(update={"training": spec.training.model_copy(update={"min_rows": 10}), "ensemble": None})
    context = Context(settings, tuned, store)
    context.tracking.experiment(tuned.name)
    return context


@pytest.fixture
def versions(ctx) -> list[str]:
    """Both variants registered: [v1, v2]."""
    win = Window(dt.date(2024, 1, 1), DAY, DAY + dt.timedelta(days=1))
    return [training.train_variant(ctx, Job(v.name, backend_entry(v.backend).family, win, "live", True), TAGS).version
            for v in ctx.spec.variants]


def promoted(ctx, before: str | None, after: str, holdout_start: dt.date) -> None:
    """A train promotion in the ledger, and the alias where it left it."""
    window = Window(holdout_start - dt.timedelta(days=30), holdout_start, holdout_start + dt.timedelta(days=7))
    ledger.append(ctx.store, LedgerEntry(kind="train", pipeline="toy", model="toy", mode="live", decision="promote",
                                         reason="test", moved=True, champion_before=before, champion_after=after,
                                         window=window))
    current = ctx.tracking.champion_version(ctx.spec.registered_model)
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, after, str(current.version) if current else None)


def break_model(ctx, version: str) -> None:
    uri = ctx.tracking.client.get_model_version_download_uri(ctx.spec.registered_model, version)
    shutil.rmtree(Path(urlparse(uri).path))


def test_a_broken_champion_falls_back_to_the_previous_one_and_flags_the_rows(ctx, versions):
    v1, v2 = versions
    promoted(ctx, None, v1, DAY)
    promoted(ctx, v1, v2, DAY)
    break_model(ctx, v2)
    out = scoring.score_day(ctx, DAY)
    assert out["fallback"]["failed_version"] == v2 and out["fallback"]["version"] == v1
    assert out["model_version"] == v1 and out["model_role"] == "fallback"
    rows = ctx.store.read("predictions", DAY)
    assert set(rows["model_role"]) == {"fallback"} and set(rows["model_version"]) == {v1}


def test_with_no_fallback_a_broken_champion_fails_and_writes_nothing(ctx, versions):
    promoted(ctx, None, versions[1], DAY)
    break_model(ctx, versions[1])
    with pytest.raises(MlpipeError, match="no previous champion to fall back to: no predictions written"):
        scoring.score_day(ctx, DAY)
    assert not ctx.store.exists("predictions", DAY)


def test_a_backfill_scores_with_the_champion_in_place_for_the_day(ctx, versions):
    v1, v2 = versions
    promoted(ctx, None, v1, dt.date(2024, 1, 3))  # fitted on data before Jan 3
    promoted(ctx, v1, v2, dt.date(2024, 1, 20))  # the current champion, fitted on later data
    out = scoring.score_day(ctx, DAY, backfill=True)
    assert (out["model_version"], out["model_role"]) == (v1, "point_in_time")
    assert scoring.score_day(ctx, DAY)["model_version"] == v2  # a live run: the current champion
    early = dt.date(2024, 1, 2)
    with pytest.raises(MlpipeError, match="no model trained only on data before 2024-01-02"):
        scoring.score_day(ctx, early, backfill=True)
    allowed = scoring.score_day(ctx, early, backfill=True, allow_current_champion=True)
    assert (allowed["model_version"], allowed["model_role"]) == (v2, "current_champion")
    assert set(ctx.store.read("predictions", early)["model_role"]) == {"current_champion"}


def test_an_altered_artifact_is_refused_and_the_fallback_scores(ctx, versions):
    v1, v2 = versions
    recorded = {"a": {"version": v1, "sha256": None}, "b": {"version": v2, "sha256": None}}
    for name, version in (("a", v1), ("b", v2)):
        uri = ctx.tracking.client.get_model_version_download_uri(ctx.spec.registered_model, version)
        recorded[name]["sha256"] = registry.bundle_hash(Path(urlparse(uri).path) / "artifacts" / "bundle")
        tags = ctx.tracking.client.get_model_version(ctx.spec.registered_model, version).tags
        assert tags["mlpipe.sha256"] == recorded[name]["sha256"]  # the hash taken at logging time is the stored one
    ledger.append(ctx.store, LedgerEntry(kind="train", pipeline="toy", model="toy", mode="live", decision="keep",
                                         reason="candidates", candidates=recorded))
    promoted(ctx, None, v1, DAY)
    promoted(ctx, v1, v2, DAY)
    uri = ctx.tracking.client.get_model_version_download_uri(ctx.spec.registered_model, v2)
    victim = next(p for p in (Path(urlparse(uri).path) / "artifacts" / "bundle").rglob("*") if p.is_file())
    victim.write_bytes(victim.read_bytes() + b" ")
    out = scoring.score_day(ctx, DAY)
    assert out["model_role"] == "fallback" and out["model_version"] == v1
    assert "artifact changed since it was registered" in out["fallback"]["error"]


def test_a_score_range_scores_each_day_as_a_backfill_loading_each_model_once(ctx, versions, monkeypatch):
    """In-process: the days of a chunk are scored as backfill runs of the score DAG are (point
    in time), a day that cannot be scored is listed and writes nothing, the others go on,
    and the chunk loads each model once."""
    import mlflow.pyfunc

    from mlpipe.errors import DaysFailed

    v1, v2 = versions
    promoted(ctx, None, v1, dt.date(2024, 1, 3))
    promoted(ctx, v1, v2, dt.date(2024, 1, 20))
    loads = []
    real = mlflow.pyfunc.load_model
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda path, *a, **k: loads.append(path) or real(path, *a, **k))
    chunks = scoring.plan_range(ctx, dt.date(2024, 1, 2), DAY, chunk_days=3)
    assert [(c["start"], c["end"]) for c in chunks] == [("2024-01-02", "2024-01-04"), ("2024-01-05", "2024-01-06")]
    scored = [scoring.score_range(ctx, **chunk) for chunk in chunks]
    assert scored[0]["passed"] == ["2024-01-03", "2024-01-04"] and scored[1]["passed"] == ["2024-01-05", "2024-01-06"]
    (failed,) = scored[0]["failed"]
    assert failed["day"] == "2024-01-02" and "no model trained only on data before 2024-01-02" in failed["error"]
    assert not ctx.store.exists("predictions", dt.date(2024, 1, 2))
    assert len(loads) == 1  # v1, point in time for every scored day, loaded once in this process
    daily = ctx.store.read("predictions", DAY)
    assert set(daily["model_version"]) == {v1} and set(daily["model_role"]) == {"point_in_time"}
    with pytest.raises(DaysFailed, match=r"(?s)1 day\(s\) of the range failed \(4 scored\).*2024-01-02: "
                                         r"RegistryError.*trigger toy__score_range with start = end = <day>"):
        scoring.check_range(ctx, scored, [])
    assert scoring.check_range(ctx, scored[1:], [{"passed": ["2024-01-05"], "failed": []}]) == \
        {"days": 2, "chunks": 1, "monitored": 1}
