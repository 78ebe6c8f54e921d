"""Online serving's logic, one :class:`PipelineServer` per pipeline: the versions behind
``champion`` (and ``challenger``, when the traffic policy uses it) loaded the way batch scoring loads them (the registered version's artifact,
refused unless it has the hash the ledger recorded; preprocessing inside the bundle),
the online snapshot (:mod:`mlpipe.online`), a request's checks, features and answer.

``refresh`` follows the registry: when an alias moves (a promotion, a rollback, a canary
step) it loads the new version, scores a row with it (warm-up) and only then swaps it in, one
attribute assignment, so a request in flight keeps the models it started with and none
waits on a load. Each row's arm comes from the policy (:mod:`mlpipe.serving.policy`); every
answered row goes to the request log (:mod:`mlpipe.serving.requestlog`). The HTTP face is :mod:`mlpipe.serving.app`.
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
from mlpipe.serving import canary, policy
from mlpipe.serving.requestlog import Answered, RequestLog

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
    def __init__(self, ctx: Context, max_rows: int = 1000, max_snapshot_age_days: int | None = None,
                 request_log: RequestLog | None = None):
        self.ctx, self.max_rows, self.max_age, self.log = ctx, max_rows, max_snapshot_age_days, request_log
        self.models: dict[str, Served] = {}  # alias -> loaded version; replaced whole, never changed in place
        self.snapshot: dict | None = None
        self.canary: dict | None = None
        self._refreshing = threading.Lock()

    @property
    def champion(self) -> Served | None:
        return self.models.get("champion")

    @property
    def aliases(self) -> list[str]:
        """The aliases served: the challenger too unless the policy is champion only."""
        from mlpipe import registry

        return [registry.CHAMPION] + ([registry.CHALLENGER] if self.ctx.spec.serving.policy != "champion" else [])

    @property
    def name(self) -> str:
        return self.ctx.spec.name

    def required_columns(self) -> list[str]:
        """What a request row must hold: the request columns (``spec.request_columns``) but
        the row ids, which are optional, unless one is the key that assigns an A/B or canary arm."""
        spec = self.ctx.spec
        sticky = spec.serving_key if spec.serving.policy in ("ab", "canary") else None
        return [c for c in spec.request_columns if c not in spec.row_id or c == sticky]

    def refresh(self) -> list[str]:
        """Load what moved since the last call (the served aliases' versions, the snapshot's
        pointer, the canary's state) and swap it in; what was swapped, as log lines."""
        with self._refreshing:  # one refresh at a time; requests never take this lock
            done = []
            pointer = online.current(self.ctx.store)
            if pointer and (self.snapshot is None or str(self.snapshot["as_of"]) != pointer["as_of"]):
                snapshot = online.load(self.ctx.store)
                self._warm_up(snapshot, self.champion)  # its lookups built before a request needs them
                self.snapshot = snapshot
                done.append(f"{self.name}: snapshot as of {self.snapshot['as_of']}")
            self.canary = canary.state(self.ctx.store) if self.ctx.spec.serving.policy == "canary" else None
            for alias in self.aliases:
                done += self._follow(alias)
            for line in done:
                log.info("serving %s", line)
            return done

    def _follow(self, alias: str) -> list[str]:
        """Load and swap in the version behind ``alias`` if it moved (a version another alias
        already serves is reused, not loaded again)."""
        from mlpipe import ledger, registry

        tracking, name = self.ctx.tracking, self.ctx.spec.registered_model
        found = tracking.alias_version(name, alias)
        version, before = (str(found.version) if found else None), self.models.get(alias)
        if version == (before.version if before else None):
            return []
        if version is None:
            self.models = {a: s for a, s in self.models.items() if a != alias}
        else:
            loaded = next((s.bundle for s in self.models.values() if s.version == version), None)
            if loaded is None:
                model = tracking.load_model(registry.version_uri(name, version),
                                            ledger.recorded_hash(self.ctx.store, version))
                loaded = registry.bundle_of(model)
            candidate = Served(version, alias, loaded)
            if self.snapshot is not None:
                self._warm_up(self.snapshot, candidate)
            self.models = {**self.models, alias: candidate}
        return [f"{self.name}: {alias} v{before.version if before else None} -> v{version}"]

    def _warm_up(self, snapshot: dict, served: Served | None) -> None:
        """Build the features of one made-up row (the snapshot's lookups) and score it, so
        the first request pays no first-call cost."""
        row = {c: None for c in self.required_columns()}
        row[self.ctx.spec.partition.column] = f"{snapshot['as_of'] + dt.timedelta(days=1)}T12:00:00Z"
        features = self._features([row], *online.request_values(self.ctx.spec, [row]), snapshot)
        if served is not None:
            served.bundle.score(features)

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
        """The answer to a request of source-shaped ``records`` (or ``BadRequest``); each
        row is answered by its arm's model and logged."""
        models, snapshot, state = self.models, self.snapshot, self.canary  # one view for the whole request
        served = models.get("champion")
        if served is None or snapshot is None:
            raise BadRequest(self.readiness()[1], status=503)
        values, kinds = online.request_values(self.ctx.spec, records)
        self.checked(records, values, kinds)
        features = self._features(records, values, kinds, snapshot)
        request_id, now = uuid.uuid4().hex, dt.datetime.now(dt.timezone.utc)
        answers: list[dict] = [{}] * len(records)
        for arm, model, index in self._arms(records, models, state):
            part = features if len(index) == len(records) else online.take(features, index)
            scores = model.bundle.score(part)
            classes = getattr(model.bundle, "classes", None)
            shadow = self._shadow(models, part, classes) if arm == policy.CHAMPION else None
            if self.log is not None:
                self.log.add(Answered(request_id, now, arm, model.version, snapshot["as_of"], part, scores, classes,
                                      shadow))
            for i, answer in zip(index, self.answers(scores, classes), strict=True):
                answers[i] = {**answer, "model_version": model.version, "role": arm}
        versions = {(a["model_version"], a["role"]) for a in answers}
        version, role = next(iter(versions)) if len(versions) == 1 else (None, None)
        return {"request_id": request_id, "pipeline": self.name, "model_version": version, "role": role,
                "as_of": str(snapshot["as_of"]), "predictions": answers}

    def _arms(self, records: list[dict], models: dict[str, Served], state: dict | None):
        """``(arm, model, row positions)`` per arm answering some of ``records``."""
        serving, challenger = self.ctx.spec.serving, models.get("challenger")
        share = policy.challenger_share(serving.policy, serving.share, state, challenger and challenger.version)
        if share <= 0:
            return [(policy.CHAMPION, models["champion"], np.arange(len(records)))]
        key = self.ctx.spec.serving_key
        keys = [record.get(key) for record in records]
        absent = next((i for i, k in enumerate(keys) if k is None or k != k), None)
        if absent is not None:
            raise BadRequest(f"{key}: the key that assigns a row's arm is missing (row {absent})", key)
        picked = policy.to_challenger(_key_texts(keys), share, self.name)
        arms = [(policy.CHAMPION, models["champion"], np.flatnonzero(~picked)),
                (policy.challenger_role(serving.policy), challenger, np.flatnonzero(picked))]
        return [arm for arm in arms if len(arm[2])]

    def _shadow(self, models: dict[str, Served], features: pd.DataFrame,
                classes: list[str] | None) -> tuple[str, np.ndarray] | None:
        """The challenger's scores of rows the champion answers, under the shadow policy (a
        multi-class challenger's on the champion's ``classes``, as batch scoring reads them)."""
        from mlpipe import predictions

        challenger = models.get("challenger")
        if self.ctx.spec.serving.policy != "shadow" or challenger is None:
            return None
        scores = challenger.bundle.score(features)
        if classes is not None:
            own = getattr(challenger.bundle, "classes", None)
            scores = predictions.scores_of(predictions.score_frame(scores, own), classes)
        return challenger.version, scores

    def checked(self, records: list[dict], values: dict[str, list], kinds: dict[str, str | None]) -> None:
        """Refuse the request (naming the field) when a column is missing, a number is not
        one, or a category is not among the spec's for its column; ``values`` and ``kinds``:
        ``online.request_values`` of ``records``."""
        if not records:
            raise BadRequest("no rows: send one record or a list of them", "rows")
        if len(records) > self.max_rows:
            raise BadRequest(f"{len(records)} rows: at most {self.max_rows} a request", "rows", status=413)
        missing = [c for c in self.required_columns() if kinds[c] == "null" and not any(c in r for r in records)]
        if missing:
            raise BadRequest(f"missing columns {missing}", missing[0])
        # plain values need no more checks; pandas (what decides) looks at a column of others
        for column in self.ctx.spec.features.numeric:
            if kinds[column] in ("null", "number"):
                continue
            column_values = pd.Series(values[column])
            numbers = pd.to_numeric(column_values, errors="coerce")
            bad = column_values.notna() & numbers.isna()
            if bad.any():
                raise BadRequest(f"{column}: not a number: {column_values[bad].iloc[0]!r} (row {int(bad.idxmax())})",
                                 column)
        for column, rule in self.ctx.spec.validation.columns.items():
            if rule.categories is None or column not in values or kinds[column] == "null":
                continue
            known = {str(c) for c in rule.categories}
            if kinds[column] == "text":
                unknown = next((v for v in values[column] if v is not None and v not in known), None)
            else:
                column_values = pd.Series(values[column])
                bad = column_values.notna() & ~column_values.astype(str).isin(known)
                unknown = column_values[bad].iloc[0] if bad.any() else None
            if unknown is not None:
                raise BadRequest(f"{column}: unknown category {unknown!r}; known: {rule.categories}", column)

    def _features(self, records: list[dict], values: dict[str, list], kinds: dict[str, str | None],
                  snapshot: dict) -> pd.DataFrame | dict:
        """The features of checked ``records``: value by value when their values are plain,
        else through a frame (a value whose typing pandas decides)."""
        features = online.plain_features(self.ctx.spec, values, kinds, snapshot)
        if features is not None:
            return features
        try:
            return online.request_features(self.ctx.spec, self._frame(records), snapshot)
        except SourceError as exc:
            raise BadRequest(str(exc), self.ctx.spec.partition.column) from exc

    def _frame(self, records: list[dict]) -> pd.DataFrame:
        """The rows of checked ``records`` as a frame of the columns the features read."""
        present = dict.fromkeys(k for record in records for k in record)
        keep = set(self.required_columns()) | set(self.ctx.spec.row_id)
        return pd.DataFrame.from_records(records, columns=[c for c in present if c in keep])

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


def _key_texts(keys: list) -> list[str]:
    """Arm keys as text, as a frame's column would print them (an integral float as 7.0 in a
    column of floats, as 7 among ints: what the policy hashed before)."""
    return pd.Series(keys).astype(str).tolist() if any(type(k) is float for k in keys) else list(map(str, keys))
