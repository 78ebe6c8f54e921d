"""What every stage works with: the settings, the spec and the data store, plus the
training window and its split into training and holdout rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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

    @classmethod
    def load(cls, settings: Settings | None = None) -> Context:
        settings = settings or get_settings()
        spec = load_spec(settings.spec_path)
        return cls(settings, spec, Store(settings.data_root, spec.name))

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.data_root) / self.spec.name / ".cache"


def resolve_window(spec: PipelineSpec, end: dt.date, start: dt.date | None = None,
                   holdout_days: int | None = None) -> Window:
    """Training window ending before ``end`` (the logical date); the last days are holdout."""
    start = start or end - dt.timedelta(days=spec.training.lookback_days)
    holdout_start = end - dt.timedelta(days=holdout_days or spec.training.holdout_days)
    if not start < holdout_start < end:
        raise TrainingError(f"bad window: start {start}, holdout from {holdout_start}, end {end}")
    return Window(start, holdout_start, end)


def load_split(ctx: Context, win: Window) -> tuple[pd.DataFrame, pd.DataFrame, list[dt.date]]:
    """The window's labelled feature rows split into (training, holdout), and the days read."""
    frame, days = ctx.store.read_range("features", win.start, win.end)
    if not days:
        raise PartitionMissing(f"no feature partitions in [{win.start}, {win.end}): run ingest first")
    target = ctx.spec.target.name
    frame = frame[frame[target].notna()]
    dates = pd.to_datetime(frame[PARTITION_DATE]).dt.date
    train, holdout = frame[dates < win.holdout_start], frame[dates >= win.holdout_start]
    for name, part in (("training", train), ("holdout", holdout)):
        if len(part) < ctx.spec.training.min_rows:
            raise TrainingError(f"{name} split has {len(part)} labelled rows in {win.to_dict()}; "
                                f"need at least {ctx.spec.training.min_rows}")
    return train, holdout, days
