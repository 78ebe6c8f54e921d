"""What every stage works with: the settings, the spec and the data store, plus the
training window and its split into training and holdout rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from mlpipe.errors import PartitionMissing, TrainingError
from mlpipe.features import PARTITION_DATE
from mlpipe.records import Window
from mlpipe.settings import Settings, get_settings
from mlpipe.spec import PipelineSpec, load_spec
from mlpipe.storage import Store


@dataclass(frozen=True)
class Context:
    settings: Settings
    spec: PipelineSpec
    store: Store
    # conn_id -> SQLAlchemy URI of the SQL sources' connections, resolved by the Airflow layer
    # (mlpipe never imports airflow); a conn_id missing here is read from AIRFLOW_CONN_<CONN_ID>
    connections: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, spec_path: str | Path | None = None, settings: Settings | None = None,
             connections: Mapping[str, str] | None = None) -> Context:
        """The context of the pipeline whose spec is ``spec_path`` (default: the only
        configured one; see mlpipe.pipelines)."""
        from mlpipe.pipelines import spec_file

        settings = settings or get_settings()
        spec = load_spec(spec_path or spec_file(settings=settings))
        return cls(settings, spec, Store(settings.data_root, spec.name, settings.lock_url),
                   {} if connections is None else connections)

    def connection(self, conn_id: str) -> str:
        """The SQLAlchemy URI of ``conn_id``, or a ``SourceError`` saying it is not defined."""
        from mlpipe.sources.sql import connection_uri

        return connection_uri(conn_id, self.connections)

    @classmethod
    def of(cls, pipeline: str | None, settings: Settings | None = None) -> Context:
        """The context of the pipeline named ``pipeline`` (the CLIs' ``--pipeline``)."""
        from mlpipe.pipelines import spec_file

        settings = settings or get_settings()
        return cls.load(spec_file(pipeline, settings), settings)

    @classmethod
    def for_cli(cls, pipeline: str | None) -> Context:
        """The context of a command line's ``--pipeline``, or exit with the error (no such
        pipeline; several and none named)."""
        from mlpipe.errors import SpecError

        try:
            return cls.of(pipeline)
        except SpecError as exc:
            raise SystemExit(f"error: {exc}") from None

    @cached_property
    def tracking(self):
        """MLflow for this pipeline's settings (a client with its own tracking URI):
        never MLflow's process-global state, which another pipeline's task in the same
        worker process may have pointed elsewhere. Built on first use: MLflow is heavy."""
        from mlpipe.registry import Tracking

        return Tracking(self.settings)

    @property
    def cache_dir(self) -> Path:
        """This host's cache for the pipeline (never shared: see mlpipe.settings)."""
        return self.settings.cache_root / self.spec.name / ".cache"


def resolve_window(spec: PipelineSpec, end: dt.date, start: dt.date | None = None,
                   holdout_days: int | None = None) -> Window:
    """Training window ending before ``end`` (the logical date); the last days are holdout."""
    start = start or end - dt.timedelta(days=spec.training.lookback_days)
    holdout_start = end - dt.timedelta(days=holdout_days or spec.training.holdout_days)
    if not start < holdout_start < end:
        raise TrainingError(f"bad window: start {start}, holdout from {holdout_start}, end {end}")
    return Window(start, holdout_start, end)


def load_split(ctx: Context, win: Window) -> tuple[pd.DataFrame, pd.DataFrame, list[dt.date]]:
    """The window's labelled feature rows split into (training, holdout), and the days read.

    Each split needs ``training.min_rows`` labelled rows and, for a binary or multi-class
    target, ``training.min_class_rows`` of each class of the window (the target type's
    ``split_problem``); the error names the days without features."""
    frame, days = ctx.store.read_range("features", win.start, win.end)
    missing = _missing_days(win, days)
    if not days:
        raise PartitionMissing(f"no feature partitions in [{win.start}, {win.end}): run ingest first")
    target = ctx.spec.target.name
    frame = frame[frame[target].notna()]
    dates = pd.to_datetime(frame[PARTITION_DATE]).dt.date
    train, holdout = frame[dates < win.holdout_start], frame[dates >= win.holdout_start]
    training, kind = ctx.spec.training, ctx.spec.target_type
    classes = kind.classes(train[target], ctx.spec.target.classes)  # the training split's, as a model learns them
    for name, part in (("training", train), ("holdout", holdout)):
        problem = None
        if len(part) < training.min_rows:
            problem = f"has {len(part)} labelled rows; need at least {training.min_rows} (training.min_rows)"
        else:
            problem = kind.split_problem(part[target], training.min_class_rows, classes, holdout=name == "holdout")
        if problem:
            raise TrainingError(f"{name} split of window {win.to_dict()} {problem}"
                                + (f"; days without feature partitions: {missing}" if missing else ""))
    return train, holdout, days


def _missing_days(win: Window, days: list[dt.date]) -> str:
    """The window's days that have no feature partition, as ranges ("" if none)."""
    have, ranges, day = set(days), [], win.start
    while day < win.end:
        if day not in have:
            first = day
            while day + dt.timedelta(days=1) < win.end and day + dt.timedelta(days=1) not in have:
                day += dt.timedelta(days=1)
            ranges.append(str(first) if first == day else f"{first}..{day}")
        day += dt.timedelta(days=1)
    return ", ".join(ranges)
