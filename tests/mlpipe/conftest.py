"""Shared fixtures: a small synthetic pipeline ("toy") written into tmp_path.

* ``events.csv`` (primary source): 20 events a day for six days, 2024-01-01 (Mon)
  to 2024-01-06 (Sat), with a naive (UTC) ``ts`` timestamp column.
* ``stores.csv`` (lookup source): one row per ``store``, joined on ``store``.
* a spec YAML with features, history aggregates, validation rules, a binary target
  (``delay > 10`` with ``when_null: positive``), a training window and two variants.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlpipe.spec import PipelineSpec, TargetSpec, load_spec
from mlpipe.storage import Store

FIRST_DAY = dt.date(2024, 1, 1)
DAYS = [FIRST_DAY + dt.timedelta(days=i) for i in range(6)]
ROWS_PER_DAY = 20
STORES = ["s1", "s2", "s3", "s4"]
CHANNELS = ["web", "app", "store"]


def make_events(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(DAYS) * ROWS_PER_DAY
    day_index = np.repeat(np.arange(len(DAYS)), ROWS_PER_DAY)
    minutes = rng.integers(0, 24 * 60, size=n)
    stamps = [pd.Timestamp(DAYS[d]) + pd.Timedelta(minutes=int(m)) for d, m in zip(day_index, minutes, strict=True)]
    delay = rng.normal(8.0, 10.0, size=n).round(1)
    delay[rng.random(n) < 0.1] = np.nan
    amount = rng.uniform(1, 999, size=n).round(2)
    amount[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame({
        "event_id": np.arange(1, n + 1),
        "ts": [s.strftime("%Y-%m-%d %H:%M:%S") for s in stamps],
        "store": rng.choice(STORES, size=n),
        "channel": rng.choice(CHANNELS, size=n),
        "amount": amount,
        "delay": delay,
        "settle_time": (delay + rng.uniform(0, 5, size=n)).round(1),  # known only afterwards
    })
    # stored shuffled, so the cache and read_day must sort and filter for themselves
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def make_stores() -> pd.DataFrame:
    return pd.DataFrame({"store": STORES, "region": ["north", "north", "south", "east"],
                         "size": [100, 250, 80, 400]})


def base_spec_dict(events_path: Path, stores_path: Path) -> dict:
    return {
        "name": "toy",
        "description": "synthetic test pipeline",
        "sources": {
            "events": {"path": str(events_path)},
            "stores": {"path": str(stores_path), "rename": {"size": "store_size"},
                       "join": {"keys": ["store"], "how": "left"}},
        },
        "row_id": ["event_id"],
        "partition": {"column": "ts", "timezone": "UTC"},
        "schedule": {"start": "2024-01-01", "end": "2024-01-06"},
        "target": {"name": "late", "expression": "delay > 10", "task": "binary", "when_null": "positive"},
        "features": {
            "numeric": ["amount", "store_size"],
            "categorical": ["channel", "store", "region"],
            "calendar": ["day_of_week", "is_weekend"],
            "history": [
                {"name": "late_rate_store_2d", "group_by": ["store"], "window_days": 2},
                {"name": "count_channel_1d", "group_by": ["channel"], "window_days": 1, "stat": "count"},
            ],
        },
        "exclude": ["settle_time", "ts"],
        "validation": {
            "min_rows": 1,
            "max_rows": 1000,
            "columns": {
                "event_id": {"type": "int", "min": 1},
                "amount": {"type": "number", "max_null_fraction": 0.5, "min": 0, "max": 1000},
                "channel": {"type": "string", "categories": CHANNELS},
                "store": {"type": "string"},
            },
        },
        "training": {"lookback_days": 5, "holdout_days": 1, "min_rows": 10, "seed": 7},
        "variants": [
            {"name": "hgb", "backend": "sklearn_hgb", "params": {"max_iter": 20}},
            {"name": "linear", "backend": "sklearn_linear", "params": {"C": 1.0}},
        ],
        "gate": {"metric": "roc_auc", "floors": {"roc_auc": 0.5}, "min_improvement": 0.01},
    }


def _write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# Test modules use fixtures only (no ``import conftest``), so the suite does not depend on
# how pytest names conftest modules or on the import mode.
@pytest.fixture
def write_spec():
    """``write_spec(folder, data, name="spec.yaml") -> path``: dump a spec dict as YAML."""
    return _write_spec


@pytest.fixture
def days() -> list[dt.date]:
    """The six days the toy events cover, 2024-01-01 (Monday) to 2024-01-06 (Saturday)."""
    return list(DAYS)


@pytest.fixture
def events() -> pd.DataFrame:
    return make_events()


@pytest.fixture
def toy_dir(tmp_path: Path, events: pd.DataFrame) -> Path:
    folder = tmp_path / "toy"
    folder.mkdir()
    events.to_csv(folder / "events.csv", index=False)
    make_stores().to_csv(folder / "stores.csv", index=False)
    return folder


@pytest.fixture
def spec_dict(toy_dir: Path) -> dict:
    return copy.deepcopy(base_spec_dict(toy_dir / "events.csv", toy_dir / "stores.csv"))


@pytest.fixture
def spec_path(toy_dir: Path, spec_dict: dict) -> Path:
    return _write_spec(toy_dir, spec_dict)


@pytest.fixture
def spec(spec_path: Path) -> PipelineSpec:
    return load_spec(spec_path)


@pytest.fixture
def regression_spec(toy_dir: Path, spec_dict: dict) -> PipelineSpec:
    data = copy.deepcopy(spec_dict)
    data["target"] = {"name": "delay_min", "expression": "delay * 1.0", "task": "regression"}
    data["gate"] = {"metric": "rmse", "floors": {"rmse": 100.0}, "min_improvement": 0.1}
    data["variants"][1]["params"] = {"alpha": 1.0}  # Ridge, not LogisticRegression
    return load_spec(_write_spec(toy_dir, data, "regression.yaml"))


@pytest.fixture
def multiclass_spec(toy_dir: Path, spec_dict: dict) -> PipelineSpec:
    """The toy spec with a three-class target: the delay's band (0: early, 1: up to 10
    minutes late, 2: later), and no target-mean history (a mean of classes means nothing)."""
    data = copy.deepcopy(spec_dict)
    data["target"] = {"name": "delay_band", "expression": "(delay > 0) * 1 + (delay > 10) * 1", "task": "multiclass"}
    data["features"]["history"] = [h for h in data["features"]["history"] if h.get("stat") == "count"]
    data["gate"] = {"metric": "log_loss", "floors": {"accuracy": 0.4}, "min_improvement": 0.005}
    return load_spec(_write_spec(toy_dir, data, "multiclass.yaml"))


def _with_target(spec: PipelineSpec, **changes) -> PipelineSpec:
    target = TargetSpec(**{**spec.target.model_dump(), **changes})
    return spec.model_copy(update={"target": target})


@pytest.fixture
def with_target():
    """``with_target(spec, **changes)``: a copy of ``spec`` with a changed (validated) target."""
    return _with_target


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "data", "toy")


def make_model_frame(n: int = 240, seed: int = 1) -> pd.DataFrame:
    """A feature-partition-like frame for the toy spec with a learnable signal."""
    rng = np.random.default_rng(seed)
    amount = rng.uniform(0, 1000, size=n)
    amount[rng.random(n) < 0.05] = np.nan
    store = rng.choice(STORES, size=n)
    channel = rng.choice(CHANNELS, size=n)
    region = pd.Series(store).map(dict(zip(STORES, ["north", "north", "south", "east"], strict=True)))
    signal = np.nan_to_num(amount, nan=500.0) / 250.0 + (channel == "web") * 1.5 - 2.5
    delay = (signal * 6 + rng.normal(0, 4, size=n) + 8).round(1)
    frame = pd.DataFrame({
        "event_id": np.arange(1, n + 1),
        "partition_date": [DAYS[i % len(DAYS)] for i in range(n)],
        "amount": amount,
        "store_size": pd.Series(store).map(dict(zip(STORES, [100.0, 250.0, 80.0, 400.0], strict=True))).to_numpy(),
        "channel": pd.Series(channel, dtype="string"),
        "store": pd.Series(store, dtype="string"),
        "region": region.astype("string"),
        "day_of_week": [float(DAYS[i % len(DAYS)].weekday()) for i in range(n)],
        "is_weekend": [float(DAYS[i % len(DAYS)].weekday() >= 5) for i in range(n)],
        "late_rate_store_2d": rng.uniform(0, 1, size=n),
        "count_channel_1d": rng.integers(0, 10, size=n).astype("float64"),
        "delay": delay,
        "settle_time": delay + 1.0,
    })
    frame["late"] = (frame["delay"] > 10).astype("float64")
    frame["delay_min"] = frame["delay"]
    frame["delay_band"] = ((frame["delay"] > 0) * 1 + (frame["delay"] > 10) * 1).astype("string")  # "0", "1", "2"
    return frame


@pytest.fixture
def model_frame() -> pd.DataFrame:
    return make_model_frame()


@pytest.fixture
def model_frame_factory():
    """``model_frame_factory(n=240, seed=1)``: a fresh synthetic feature frame."""
    return make_model_frame
