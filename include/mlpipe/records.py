"""Typed records that cross layers: a training window, a job (one variant to train), a
trained candidate, and a ledger entry.

Each is a frozen dataclass with ``to_dict()`` (a small JSON-able dict, what XCom and the
ledger files hold) and ``from_dict()`` (which refuses missing or unknown keys, so a
contract change fails where it is read, not three tasks later). Standard library only:
DAG files and the scheduler's plugins import this module at parse time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["live", "dry_run", "backfill"]
MODES: tuple[str, ...] = ("live", "dry_run", "backfill")
CHAMPION_KEY = "champion"  # the current champion's name among scored models
ENSEMBLE = "ensemble"  # the soft-voting candidate's variant and backend name


def _strict(cls, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` checked against the dataclass's fields: unknown keys and missing required ones fail."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    required = {n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(raw))
    if unknown or missing:
        raise ValueError(f"not a {cls.__name__} record: unknown keys {unknown}, missing keys {missing}")
    return dict(raw)


@dataclass(frozen=True)
class Window:
    """Training days ``[start, holdout_start)``, holdout days ``[holdout_start, end)``."""

    start: dt.date
    holdout_start: dt.date
    end: dt.date  # exclusive

    def to_dict(self) -> dict[str, str]:
        return {"start": str(self.start), "holdout_start": str(self.holdout_start), "end": str(self.end)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Window:
        raw = _strict(cls, raw)
        return cls(*(dt.date.fromisoformat(str(raw[k])) for k in ("start", "holdout_start", "end")))


@dataclass(frozen=True)
class Job:
    """One variant to train in a train run, as ``plan`` resolved it. ``promote``: the run
    may register versions and move aliases."""

    variant: str
    family: str
    window: Window
    mode: Mode
    promote: bool
    trigger: str | None = None  # why the run started, when a retrain request started it

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "window": self.window.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Job:
        raw = _strict(cls, raw)
        return cls(**{**raw, "window": Window.from_dict(raw["window"])})


@dataclass(frozen=True)
class Candidate:
    """A trained model logged to MLflow: a variant, or the ensemble (with its members'
    versions and weights). ``version`` is None when the run registered nothing."""

    variant: str
    backend: str
    run_id: str
    model_uri: str
    version: str | None
    metrics: dict[str, float]
    fit_seconds: float | None = None
    members: dict[str, str | None] | None = None
    weights: dict[str, float] | None = None
    sha256: str | None = None  # content hash of the model's bundle, checked when it is loaded
    per_class: dict | None = None  # multi-class: holdout figures per class (mlpipe.metric_functions.per_class)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Candidate:
        return cls(**_strict(cls, raw))


@dataclass(frozen=True)
class LedgerEntry:
    """One train decision or rollback in the promotion ledger. ``seq`` and ``time`` are
    set when the ledger stores it; the train-only fields stay empty on a rollback."""

    kind: Literal["train", "rollback", "canary"]
    pipeline: str
    model: str
    mode: Mode
    decision: str  # promote | would-promote | challenger | keep | rollback | canary-<start|hold|advance|promote|rollback>
    reason: str
    dag_id: str | None = None
    run_id: str | None = None
    moved: bool = False
    champion_before: str | None = None
    champion_after: str | None = None
    spec_hash: str = ""
    seq: int | None = None
    time: str | None = None
    # train decisions
    metric: str | None = None
    margin: float | None = None
    confidence: float | None = None
    winner: str | None = None
    would_promote: bool = False
    challenger_before: str | None = None
    challenger_after: str | None = None
    champion_metrics: dict[str, float] | None = None
    champion_error: str | None = None
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> version, run_id, backend, metrics
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    ineligible: dict[str, str] = field(default_factory=dict)
    failed_variants: list[str] = field(default_factory=list)
    window: Window | None = None
    partitions: list[str] = field(default_factory=list)
    data_hash: str | None = None  # sha256 over the window's feature partitions (their file hashes, in order)
    trigger: str | None = None  # a retrain request's reason, when monitoring started the run
    # rollbacks
    requested: str | None = None
    # canary looks: step, share, status and the comparison's figures (mlpipe.serving.canary)
    canary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "window": self.window.to_dict() if self.window else None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LedgerEntry:
        raw = _strict(cls, raw)
        window = raw.get("window")
        return cls(**{**raw, "window": Window.from_dict(window) if window else None})


def to_xcom(value: Any) -> Any:
    """A step's return value as XCom holds it: records (also in lists) become dicts."""
    if isinstance(value, list):
        return [to_xcom(v) for v in value]
    return value.to_dict() if hasattr(value, "to_dict") else value
