"""The request log: every row a serving process answered, for monitoring and labelling.

A row holds its request id, when it was served, its arm and the answering version, the
snapshot's as-of day, the feature vector the model scored (row ids and ``partition_date``
included: the key that joins it with the features partitions, where its label arrives) and
the scores as the predictions partitions name them (``score`` / ``score_<class>``, and the
shadow challenger's ``challenger_score``).

The request path only appends to a buffer; a background thread writes it out every
``serving.log_seconds`` or ``serving.log_rows`` rows, and ``close`` (the process's shutdown)
writes what is left. Each write is one Parquet object per partition day,
``served/date=<day>/part-<written>-<writer>-<n>.parquet``, written exclusively under a name
unique to the process (host, pid, a random tag): several servers never overwrite each
other's parts. ``<written>`` (UTC, ``%Y%m%dT%H%M%S%f``) lets a reader skip parts written
before a time (the canary's step) without opening them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe import predictions
from mlpipe.features import PARTITION_DATE
from mlpipe.spec import PipelineSpec
from mlpipe.storage import Store, atomic_write, is_remote, listing, location, read_parquet

log = logging.getLogger(__name__)

LAYER = "served"
REQUEST_ID, SERVED_AT, ARM, AS_OF = "request_id", "served_at", "arm", "as_of"
STAMP = "%Y%m%dT%H%M%S%f"


@dataclass(frozen=True)
class Answered:
    """One arm's rows of one request, as the request path hands them over (no frame built)."""

    request_id: str
    served_at: dt.datetime
    arm: str
    version: str
    as_of: dt.date
    features: pd.DataFrame | dict  # a frame, or mlpipe.online.plain_features' columns
    scores: np.ndarray
    classes: list[str] | None
    shadow: tuple[str, np.ndarray] | None = None  # (challenger version, its scores)


def day_dir(store: Store, day: dt.date):
    return store.base / LAYER / f"date={day.isoformat()}"


def frame_of(spec: PipelineSpec, items: list[Answered]) -> pd.DataFrame:
    """The log rows of ``items``: their features, their outputs as predictions name them,
    the requests' fields. Built once for all the items of one kind (one concat, one
    :func:`mlpipe.predictions.build`): a flush of many one-row requests costs one frame."""
    kinds: dict[tuple, list[Answered]] = {}
    for item in items:
        kinds.setdefault((tuple(item.classes or ()), item.shadow is not None), []).append(item)
    return pd.concat([_frame(spec, same) for same in kinds.values()], ignore_index=True)


def _features(spec: PipelineSpec, items: list[Answered]) -> pd.DataFrame:
    """The items' features as one frame: columns joined first when every item has columns."""
    from mlpipe import online

    if all(isinstance(i.features, dict) for i in items):
        picked = online.transposed((i.features for i in items), list(items[0].features))
        return online.features_frame(spec, {c: np.concatenate(parts) if isinstance(parts[0], np.ndarray)
                                            else list(itertools.chain.from_iterable(parts))
                                            for c, parts in picked.items()})
    return pd.concat([i.features if isinstance(i.features, pd.DataFrame) else online.features_frame(spec, i.features)
                      for i in items], ignore_index=True)


def _frame(spec: PipelineSpec, items: list[Answered]) -> pd.DataFrame:
    features = _features(spec, items)
    counts, classes = [len(i.scores) for i in items], items[0].classes

    def each(values) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype="object"), counts)

    def outputs(scores: list[np.ndarray]):
        joined = np.concatenate([np.asarray(s, dtype="float64").reshape(n, -1) for s, n in zip(scores, counts,
                                                                                                  strict=True)])
        return predictions.score_frame(joined, classes) if classes is not None else joined.ravel()

    shadowed = items[0].shadow is not None
    built = predictions.build(spec, features, outputs([i.scores for i in items]), each([i.version for i in items]),
                              each([i.arm for i in items]),
                              outputs([i.shadow[1] for i in items]) if shadowed else None,
                              each([i.shadow[0] for i in items]) if shadowed else None)
    out = pd.concat([features, built.drop(columns=predictions.keys(spec))], axis=1)
    out.insert(0, REQUEST_ID, each([i.request_id for i in items]))
    out.insert(1, SERVED_AT, pd.to_datetime(each([i.served_at for i in items]), utc=True))
    out.insert(2, ARM, each([i.arm for i in items]))
    out.insert(3, AS_OF, each([i.as_of for i in items]))
    return out


class RequestLog:
    """One pipeline's buffered request log (see the module's docstring)."""

    def __init__(self, store: Store, spec: PipelineSpec, rows: int | None = None, seconds: float | None = None):
        self.store, self.spec = store, spec
        self.rows, self.seconds = rows or spec.serving.log_rows, seconds or spec.serving.log_seconds
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._buffer: list[Answered] = []
        self._unwritten: list[pd.DataFrame] = []  # parts a failed write left
        self._buffered, self._written = 0, 0
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, item: Answered) -> None:
        """The request path's part: an append, and a nudge when the buffer is full."""
        with self._lock:
            self._buffer.append(item)
            self._buffered += len(item.scores)
            full = self._buffered >= self.rows
        if full:
            self._wake.set()

    def flush(self) -> list[str]:
        """Write out what is buffered, one part per partition day; the paths written. A part
        that fails to write is kept for the next flush (nothing answered is dropped)."""
        with self._write_lock:
            with self._lock:
                items, self._buffer, self._buffered = self._buffer, [], 0
            if items:
                frame = frame_of(self.spec, items)
                self._unwritten += [part.reset_index(drop=True) for _, part in frame.groupby(PARTITION_DATE)]
            written = []
            while self._unwritten:
                rows = self._unwritten[0]
                self._written += 1
                stamp = dt.datetime.now(dt.timezone.utc).strftime(STAMP)
                name = f"part-{stamp}-{self.writer}-{self._written:06d}.parquet"
                path = day_dir(self.store, rows[PARTITION_DATE].iloc[0]) / name
                atomic_write(path, lambda tmp, rows=rows: rows.to_parquet(tmp, index=False, compression="zstd"),
                             exclusive=True)
                self._unwritten.pop(0)
                written.append(str(path))
            if written:
                log.info("request log %s: %d parts written", self.spec.name, len(written))
            return written

    def start(self) -> RequestLog:
        def run() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.seconds)
                self._wake.clear()
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - a store hiccup: the parts stay buffered for the next try
                    log.exception("request log %s: a write failed; retried at the next flush", self.spec.name)

        self._thread = threading.Thread(target=run, name=f"mlpipe-requestlog-{self.spec.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> list[str]:
        """Stop the writer and write out the rest (a shutdown's last step)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        return self.flush()


def served_days(store: Store, start: dt.date, end: dt.date) -> list[dt.date]:
    """Days in [start, end) with served rows, from the folder names."""
    names = [n for n in listing(store.base / LAYER) if n.startswith("date=")]
    return sorted(d for d in (dt.date.fromisoformat(n[5:15]) for n in names) if start <= d < end)


def read_served(store: Store, start: dt.date, end: dt.date, columns: list[str] | None = None,
                since: dt.datetime | None = None) -> pd.DataFrame:
    """The served rows of the partition days in [start, end), every process's parts; with
    ``since``, only rows served from then on (parts written before it are not read)."""
    frames = []
    after = since.astimezone(dt.timezone.utc).strftime(STAMP) if since else ""
    for day in served_days(store, start, end):
        folder = day_dir(store, day)
        parts = sorted(n for n in listing(folder) if n.startswith("part-") and n.endswith(".parquet")
                       and n[5:5 + len(after)] >= after)
        frames += [read_parquet(location(folder) / n if is_remote(folder) else folder / n, columns) for n in parts]
    if not frames:
        return pd.DataFrame(columns=columns or [])
    served = pd.concat(frames, ignore_index=True)
    return served[served[SERVED_AT] >= pd.Timestamp(since)] if since else served


def with_labels(store: Store, spec: PipelineSpec, start: dt.date, end: dt.date,
                since: dt.datetime | None = None) -> pd.DataFrame:
    """The served rows of [start, end) (served from ``since`` on) whose label has arrived
    (the features partitions' target column, joined on the row ids and the day), each with
    its label."""
    served = read_served(store, start, end, since=since)
    target = spec.target.name
    if served.empty:
        return served.assign(**{target: pd.Series(dtype="float64")})
    days = sorted(set(served[PARTITION_DATE]))
    labels, _ = store.read_range("features", days[0], days[-1] + dt.timedelta(days=1),
                                 columns=[*spec.row_id, target], date_column=PARTITION_DATE)
    if labels.empty:
        return served.iloc[:0].assign(**{target: pd.Series(dtype="float64")})
    served = served.drop(columns=[target], errors="ignore").dropna(subset=spec.row_id)
    served = served.astype({c: labels[c].dtype for c in spec.row_id}, errors="ignore")
    joined = served.merge(labels, on=predictions.keys(spec), how="inner")  # a row served twice: both answered
    return joined[joined[target].notna()]
