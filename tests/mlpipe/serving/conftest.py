"""Fixtures of the serving tests: a toy pipeline ingested with real Great Expectations,
trained and registered in a real MLflow (SQLite) registry, one version per variant."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from mlpipe import ingest, ledger, registry, training
from mlpipe.backends import backend_entry
from mlpipe.context import Context
from mlpipe.records import Job, LedgerEntry, Window
from mlpipe.settings import get_settings

TAGS = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}


@pytest.fixture
def ctx(tmp_path, spec, days):
    """The toy pipeline's context; ``ctx.versions``: its registered versions, one per variant."""
    root = tmp_path / "data"
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=root)
    tuned = spec.model_copy(update={"training": spec.training.model_copy(update={"min_rows": 10}), "ensemble": None})
    from mlpipe.storage import Store

    context = Context(settings, tuned, Store(root, tuned.name))
    for day in days:
        ingest.extract_day(context, day)
        ingest.validate_day(context, day)
        ingest.build_day_features(context, day)
    context.tracking.experiment(tuned.name)
    window = Window(days[0], days[4], days[-1] + dt.timedelta(days=1))
    versions = [training.train_variant(context, Job(v.name, backend_entry(v.backend).family, window, "live", True),
                                       TAGS).version for v in tuned.variants]
    context.__dict__["versions"] = versions  # frozen: set past __setattr__, as cached properties are
    return context


@pytest.fixture
def with_policy():
    """``with_policy(ctx, **serving) -> ctx``: the same pipeline under another ``serving`` section."""
    def make(ctx, **serving):
        spec = ctx.spec.model_copy(update={"serving": ctx.spec.serving.model_copy(update=serving)})
        out = dataclasses.replace(ctx, spec=spec)
        out.__dict__["versions"] = ctx.versions
        return out

    return make


@pytest.fixture
def make_champion():
    """``make_champion(ctx, version, alias="champion")``: point the alias at ``version`` (recorded in the ledger)."""
    def move(ctx, version: str | None, alias: str = registry.CHAMPION) -> None:
        current = ctx.tracking.alias_version(ctx.spec.registered_model, alias)
        before = str(current.version) if current else None
        if alias == registry.CHAMPION:
            ledger.append(ctx.store, LedgerEntry(kind="rollback", pipeline="toy", model="toy", mode="live",
                                                 decision="rollback", reason="test", moved=True,
                                                 champion_after=version, champion_before=before))
        ctx.tracking.move_alias(ctx.spec.registered_model, alias, version, before)

    return move


@pytest.fixture
def records():
    """``records(frame) -> list[dict]``: rows as a JSON request carries them."""
    return lambda frame: json.loads(frame.to_json(orient="records", date_format="iso"))
