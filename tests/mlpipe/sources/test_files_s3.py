"""File sources on object storage (a real S3 server process on 127.0.0.1), in-process:
what a missing object, refused credentials or an unreachable store look like, and that
none of them writes a partition."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from mlpipe import ingest
from mlpipe.context import Context
from mlpipe.errors import AccessDenied, SourceError, StorageError
from mlpipe.settings import get_settings
from mlpipe.spec import load_spec
from mlpipe.storage import Store, listing, location

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 1, 2)


def _context(spec, root, cache) -> Context:
    settings = dataclasses.replace(get_settings(), data_root=location(root), cache_dir=cache)
    return Context(settings, spec, Store(settings.data_root, spec.name))


@pytest.fixture
def per_day_spec(spec_dict, toy_dir, tmp_path, s3_root, write_spec, events):
    """The toy spec with its events as one object per day under the bucket's ``drops/``."""
    import pandas as pd

    bucket = s3_root.rsplit("/", 1)[0]
    dates = pd.to_datetime(events["ts"]).dt.date
    for day in sorted(set(dates) - {DAY}):  # DAY's object never arrived
        location(f"{bucket}/drops/{day}.csv").write_text(events[dates == day].to_csv(index=False))
    data = {**spec_dict, "sources": {**spec_dict["sources"], "events": {"path": f"{bucket}/drops/{{date}}.csv"}}}
    return load_spec(write_spec(tmp_path, data, "drops.yaml")), bucket


def test_a_missing_object_names_the_source_url_and_day_and_writes_nothing(per_day_spec, tmp_path):
    spec, bucket = per_day_spec
    ctx = _context(spec, tmp_path / "data", tmp_path / "cache")
    assert ingest.extract_day(ctx, DAY - dt.timedelta(days=1))["rows"] == 20  # the day before is there
    with pytest.raises(SourceError, match=rf"source 'events' for {DAY}: {bucket}/drops/{DAY}.csv: source file not found"):
        ingest.extract_day(ctx, DAY)
    assert not ctx.store.exists("raw", DAY)


@pytest.fixture
def pointed_at(monkeypatch):
    """``pointed_at(endpoint)``: S3 clients made from now on talk to ``endpoint``."""
    import s3fs

    def point(endpoint: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        s3fs.S3FileSystem.clear_instance_cache()

    yield point
    s3fs.S3FileSystem.clear_instance_cache()


def test_refused_credentials_are_final_and_name_the_url(spec_dict, tmp_path, write_spec, strict_s3_server,
                                                        pointed_at):
    data = {**spec_dict, "sources": {**spec_dict["sources"], "events": {"path": "s3://private/events.csv"}}}
    spec = load_spec(write_spec(tmp_path, data, "private.yaml"))
    ctx = _context(spec, tmp_path / "data", tmp_path / "cache")
    pointed_at(strict_s3_server.endpoint)
    with pytest.raises(AccessDenied, match=rf"source 'events' for {DAY}: s3://private/events.csv: access denied"):
        ingest.extract_day(ctx, DAY)
    assert listing(ctx.store.layer_dir("raw")) == []
    on_s3 = _context(spec, "s3://private/data", tmp_path / "cache")  # a data root we may not write
    with pytest.raises(AccessDenied, match="s3://private/data/toy/raw/date=2024-01-02.parquet: access denied"):
        on_s3.store.write("raw", DAY, __import__("pandas").DataFrame({"a": [1]}))


def test_an_unreachable_store_is_a_storage_error_that_may_be_retried(spec_dict, tmp_path, write_spec, pointed_at):
    data = {**spec_dict, "sources": {**spec_dict["sources"], "events": {"path": "s3://nowhere/events.csv"}}}
    spec = load_spec(write_spec(tmp_path, data, "unreachable.yaml"))
    ctx = _context(spec, tmp_path / "data", tmp_path / "cache")
    pointed_at("http://127.0.0.1:1")  # nothing listens there
    with pytest.raises(StorageError, match=rf"source 'events' for {DAY}: s3://nowhere/events.csv: .*Connect") as info:
        ingest.extract_day(ctx, DAY)
    assert not isinstance(info.value, (AccessDenied, SourceError))
    assert listing(ctx.store.layer_dir("raw")) == []
