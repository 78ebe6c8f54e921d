"""Online serving's logic, one :class:`PipelineServer` per pipeline: the version behind
``champion`` loaded the way batch scoring loads it (the registered version's artifact,
refused unless it has the hash the ledger recorded; preprocessing inside the bundle),
the online snapshot (:mod:`mlpipe.online`), a request's checks, features and answer.

``refresh`` follows the registry: when ``champion`` moves (a promotion, a rollback) it
loads the new version, scores a row with it (warm-up) and only then swaps it in, one
attribute assignment, so a request in flight keeps the model it started with and none
waits on a load. The HTTP face is :mod:`mlpipe.serving.app`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe import online
from mlpipe.context import Context
from mlpipe.errors import MlpipeError, SourceError

log = logging.getLogger(__name__)


class BadRequest(MlpipeError):
    """A request the server refuses (a 4xx): ``field`` names what is wrong, ``status`` the code."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


@dataclass(frozen=True)
class Served:
    """A loaded version: ``bundle`` scores feature frames (``ModelBundle.score``)."""

    version: str
    role: str
    bundle: object


class PipelineServer:
    def __init__(self, ctx: Context, max_rows: int = 1000, max_snapshot_age_days: int | None = None):
        self.ctx, self.max_rows, self.max_age = ctx, max_rows, max_snapshot_age_days
        self.champion: Served | None = None
        self.snapshot: dict | None = None
        self._refreshing = threading.Lock()

    @property
    def name(self) -> str:
        return self.ctx.spec.name

    def required_columns(self) -> list[str]:
        """What a request row must hold: the partition column (its day) and the source
        columns the features read (history keys included)."""
        feats = self.ctx.spec.features
        keys = [k for h in feats.history for k in h.group_by]
        return list(dict.fromkeys([self.ctx.spec.partition.column, *feats.numeric, *feats.categorical, *keys]))

    def refresh(self) -> list[str]:
        """Load what moved since the last call (the champion's version, the snapshot's
        pointer) and swap it in; what was swapped, as log lines."""
        from mlpipe import ledger, registry

        with self._refreshing:  # one refresh at a time; requests never take this lock
            done = []
            tracking, name = self.ctx.tracking, self.ctx.spec.registered_model
            pointer = online.current(self.ctx.store)
            if pointer and (self.snapshot is None or str(self.snapshot["as_of"]) != pointer["as_of"]):
                self.snapshot = online.load(self.ctx.store)
                done.append(f"{self.name}: snapshot as of {self.snapshot['as_of']}")
            alias = tracking.champion_version(name)
            version = str(alias.version) if alias else None
            if version and (self.champion is None or self.champion.version != version):
                model = tracking.load_model(registry.version_uri(name, version), ledger.recorded_hash(self.ctx.store,
                                                                                                       version))
                candidate = Served(version, registry.CHAMPION, registry.bundle_of(model))
                if self.snapshot is not None:
                    self._warm_up(candidate)
                before, self.champion = self.champion, candidate
                done.append(f"{self.name}: {registry.CHAMPION} v{before.version if before else None} -> v{version}")
            for line in done:
                log.info("serving %s", line)
            return done

    def _warm_up(self, served: Served) -> None:
        """Score one made-up row, so the first request pays no first-call cost."""
        row = {c: None for c in self.required_columns()}
        row[self.ctx.spec.partition.column] = f"{self.snapshot['as_of'] + dt.timedelta(days=1)}T12:00:00Z"
        served.bundle.score(online.request_features(self.ctx.spec, pd.DataFrame([row]), self.snapshot))

    def readiness(self, today: dt.date | None = None) -> tuple[bool, str]:
        """Ready when a champion is loaded and the snapshot is at most ``max_snapshot_age_days`` old."""
        if self.champion is None:
            return False, f"{self.name}: no champion loaded (none in the registry yet?)"
        if self.snapshot is None:
            return False, f"{self.name}: no online snapshot (no day ingested yet)"
        age = ((today or dt.date.today()) - self.snapshot["as_of"]).days
        if self.max_age is not None and age > self.max_age:
            return False, f"{self.name}: the snapshot is as of {self.snapshot['as_of']}, {age} days old (> {self.max_age})"
        return True, f"{self.name}: v{self.champion.version}, snapshot as of {self.snapshot['as_of']}"

    def predict(self, records: list[dict]) -> dict:
        """The answer to a request of source-shaped ``records`` (or ``BadRequest``)."""
        served, snapshot = self.champion, self.snapshot  # one model and snapshot for the whole request
        if served is None or snapshot is None:
            raise BadRequest(self.readiness()[1], status=503)
        rows = self.checked(records)
        try:
            features = online.request_features(self.ctx.spec, rows, snapshot)
        except SourceError as exc:
            raise BadRequest(str(exc), self.ctx.spec.partition.column) from exc
        scores = served.bundle.score(features)
        return {"request_id": uuid.uuid4().hex, "pipeline": self.name, "model_version": served.version,
                "role": served.role, "as_of": str(snapshot["as_of"]),
                "predictions": self.answers(scores, getattr(served.bundle, "classes", None))}

    def checked(self, records: list[dict]) -> pd.DataFrame:
        """The request's rows, refused (naming the field) when one is missing, a number is
        not one, or a category is not among the spec's for its column."""
        if not records:
            raise BadRequest("no rows: send one record or a list of them", "rows")
        if len(records) > self.max_rows:
            raise BadRequest(f"{len(records)} rows: at most {self.max_rows} a request", "rows", status=413)
        rows = pd.DataFrame.from_records(records)
        missing = [c for c in self.required_columns() if c not in rows.columns]
        if missing:
            raise BadRequest(f"missing columns {missing}", missing[0])
        for column in self.ctx.spec.features.numeric:
            values = rows[column]
            numbers = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & numbers.isna()
            if bad.any():
                raise BadRequest(f"{column}: not a number: {values[bad].iloc[0]!r} (row {int(bad.idxmax())})", column)
        for column, rule in self.ctx.spec.validation.columns.items():
            if rule.categories is not None and column in rows.columns:
                unknown = rows[column].notna() & ~rows[column].astype(str).isin([str(c) for c in rule.categories])
                if unknown.any():
                    raise BadRequest(f"{column}: unknown category {rows[column][unknown].iloc[0]!r}; known: "
                                     f"{rule.categories}", column)
        return rows

    def answers(self, scores: np.ndarray, classes: list[str] | None) -> list[dict]:
        """One answer per row: the score and label, or each class's probability and the class."""
        kind = self.ctx.spec.target_type
        predicted = kind.predicted(scores, classes)
        if classes is not None:
            return [{"probabilities": dict(zip(classes, map(float, row), strict=True)), "label": str(label)}
                    for row, label in zip(scores, predicted, strict=True)]
        if predicted is None:
            return [{"score": float(s)} for s in scores]
        return [{"score": float(s), "label": int(p)} for s, p in zip(scores, predicted, strict=True)]
