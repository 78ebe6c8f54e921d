"""Online serving's logic (mlpipe.serving.server), in-process: the toy pipeline of
conftest.py, its versions in a real MLflow (SQLite) registry (the served process itself:
tests/e2e)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlpipe import online, registry
from mlpipe.serving.server import BadRequest, PipelineServer

pytestmark = pytest.mark.integration


def test_a_request_is_scored_as_the_batch_scores_the_day_and_the_champion_is_followed(ctx, days, make_champion,
                                                                                         records):
    first, second = ctx.versions
    make_champion(ctx, first)
    server = PipelineServer(ctx)
    assert server.readiness()[0] is False
    assert server.refresh() == [f"toy: snapshot as of {days[-1]}", f"toy: champion vNone -> v{first}"]
    assert server.refresh() == []  # nothing moved
    day = days[-1]
    server.snapshot = online.load(ctx.store, day - dt.timedelta(days=1))  # what serving day D had
    answer = server.predict(records(ctx.store.read("raw", day)))
    assert (answer["model_version"], answer["role"], answer["as_of"]) == (first, "champion", str(day - dt.timedelta(days=1)))
    batch = registry.predict(ctx.tracking.load_model(registry.version_uri("toy", first)), ctx.store.read("features", day))
    got = np.array([p["score"] for p in answer["predictions"]])
    order = ctx.store.read("raw", day)["event_id"].argsort(kind="stable")  # the batch partition is in row-id order
    np.testing.assert_allclose(got[order.to_numpy()], batch, rtol=1e-12)
    assert {p["label"] for p in answer["predictions"]} <= {0, 1}

    make_champion(ctx, second)  # a promotion or rollback moves the alias: the next refresh swaps the model in
    assert server.refresh() == [f"toy: snapshot as of {days[-1]}",  # back to the current one
                                f"toy: champion v{first} -> v{second}"]
    assert server.predict(records(ctx.store.read("raw", day).head(1)))["model_version"] == second
    assert server.readiness(today=days[-1] + dt.timedelta(days=1))[0]
    aged = PipelineServer(ctx, max_snapshot_age_days=2)
    aged.refresh()
    ok, why = aged.readiness(today=days[-1] + dt.timedelta(days=5))
    assert not ok and "5 days old (> 2)" in why


@pytest.mark.parametrize("change, field, status, message", [
    (lambda r: r.pop("amount"), "amount", 422, "missing columns ['amount']"),
    (lambda r: r.update(amount="lots"), "amount", 422, "amount: not a number: 'lots'"),
    (lambda r: r.update(channel="fax"), "channel", 422, "channel: unknown category 'fax'"),
    (lambda r: r.update(ts="yesterday-ish"), "ts", 422, "no readable timestamp"),
])
def test_bad_rows_are_refused_naming_the_field(ctx, days, change, field, status, message, make_champion, records):
    make_champion(ctx, ctx.versions[0])
    server = PipelineServer(ctx, max_rows=3)
    server.refresh()
    row = records(ctx.store.read("raw", days[-1]).head(1))[0]
    change(row)
    with pytest.raises(BadRequest) as info:
        server.predict([row])
    assert (info.value.field, info.value.status) == (field, status) and message in str(info.value)
    with pytest.raises(BadRequest, match="at most 3 a request") as info:
        server.predict(records(ctx.store.read("raw", days[-1]).head(4)))
    assert info.value.status == 413


def _served(ctx, server, rows):
    """The request log's rows after answering ``rows`` (written out, read back)."""
    from mlpipe.serving import requestlog

    answer = server.predict(rows)
    server.log.flush()
    return answer, requestlog.read_served(ctx.store, dt.date.min, dt.date.max)


def test_shadow_scores_with_the_challenger_and_the_log_holds_the_batch_features(ctx, days, make_champion, records,
                                                                                with_policy):
    """Shadow: the champion answers every row, the challenger's scores are logged beside its."""
    from mlpipe.serving.requestlog import RequestLog

    first, second = ctx.versions
    make_champion(ctx, first)
    make_champion(ctx, second, "challenger")
    shadow = with_policy(ctx, policy="shadow")
    server = PipelineServer(shadow, request_log=RequestLog(shadow.store, shadow.spec))
    server.refresh()
    day = days[-1]
    server.snapshot = online.load(ctx.store, day - dt.timedelta(days=1))
    answer, logged = _served(ctx, server, records(ctx.store.read("raw", day)))
    assert {(p["model_version"], p["role"]) for p in answer["predictions"]} == {(first, "champion")}
    batch = ctx.store.read("features", day)
    logged = logged.sort_values("event_id").reset_index(drop=True)
    assert len(logged) == len(batch) and logged["request_id"].nunique() == 1
    for column in [*ctx.spec.features.all_names, "partition_date"]:  # the feature vector the model scored
        pd.testing.assert_series_equal(logged[column], batch[column], check_dtype=False, obj=column)
    challenger = registry.predict(ctx.tracking.load_model(registry.version_uri("toy", second)), batch)
    np.testing.assert_allclose(logged["challenger_score"], challenger, rtol=1e-12)
    assert set(logged["challenger_version"]) == {second} and set(logged["arm"]) == {"champion"}
    assert set(logged["as_of"]) == {day - dt.timedelta(days=1)}


def test_ab_arms_are_sticky_by_key_and_each_arm_scores_with_its_version(ctx, days, make_champion, records,
                                                                        with_policy):
    from mlpipe.serving.requestlog import RequestLog

    first, second = ctx.versions
    make_champion(ctx, first)
    make_champion(ctx, second, "challenger")
    ab = with_policy(ctx, policy="ab", share=0.5)
    server = PipelineServer(ab, request_log=RequestLog(ab.store, ab.spec))
    server.refresh()
    rows = records(ctx.store.read("raw", days[-1]))
    answer, logged = _served(ctx, server, rows)
    arms = [p["role"] for p in answer["predictions"]]
    assert set(arms) == {"champion", "challenger"} and answer["model_version"] is None  # two arms answered
    assert [p["role"] for p in server.predict(rows[::-1])["predictions"]] == arms[::-1]  # the same key, the same arm
    for prediction in answer["predictions"]:
        assert prediction["model_version"] == (second if prediction["role"] == "challenger" else first)
    assert sorted(logged["arm"]) == sorted(arms) and len(logged) == len(rows)
    key = next(iter(ab.spec.request_columns))  # the serving key defaults to the first row id
    with pytest.raises(BadRequest, match="the key that assigns a row's arm") as info:
        server.predict([{**rows[0], key: None}])
    assert info.value.field == "event_id"
    server.log.flush()


def test_a_refused_request_logs_nothing_and_two_writers_never_overwrite(ctx, days, make_champion, records):
    from mlpipe.serving import requestlog
    from mlpipe.serving.requestlog import RequestLog

    make_champion(ctx, ctx.versions[0])
    one, two = (PipelineServer(ctx, request_log=RequestLog(ctx.store, ctx.spec)) for _ in range(2))
    rows = records(ctx.store.read("raw", days[-1]))
    for server in (one, two):
        server.refresh()
        with pytest.raises(BadRequest):
            server.predict([{**rows[0], "amount": "lots"}])
        assert server.log.flush() == []  # nothing logged for a refused request
        server.predict(rows[:3])
    assert one.log.writer != two.log.writer
    written = one.log.flush() + two.log.flush()
    assert len(set(written)) == 2
    assert len(requestlog.read_served(ctx.store, days[0], days[-1] + dt.timedelta(days=1))) == 6


def test_a_failed_write_keeps_the_rows_for_the_next_flush(ctx, days, make_champion, records, monkeypatch):
    from mlpipe.serving import requestlog
    from mlpipe.serving.requestlog import RequestLog

    make_champion(ctx, ctx.versions[0])
    server = PipelineServer(ctx, request_log=RequestLog(ctx.store, ctx.spec))
    server.refresh()
    server.predict(records(ctx.store.read("raw", days[-1]).head(4)))
    real = requestlog.atomic_write

    def failing(*args, **kwargs):
        raise OSError("the store is down")

    monkeypatch.setattr(requestlog, "atomic_write", failing)
    with pytest.raises(OSError):
        server.log.flush()
    monkeypatch.setattr(requestlog, "atomic_write", real)
    assert len(server.log.flush()) == 1
    assert len(requestlog.read_served(ctx.store, dt.date.min, dt.date.max)) == 4


def test_numbers_sent_as_text_take_the_frame_path_with_the_same_answer_and_log(ctx, days, make_champion, records):
    """Text where a number goes leaves the value-by-value features (pandas types it, as the
    ingest would): the same scores, and the request log holds both requests alike."""
    from mlpipe.serving.requestlog import RequestLog

    make_champion(ctx, ctx.versions[0])
    server = PipelineServer(ctx, request_log=RequestLog(ctx.store, ctx.spec))
    server.refresh()
    rows = records(ctx.store.read("raw", days[-1]).head(5))
    texts = [{**r, "amount": None if r["amount"] is None else f" {r['amount']} "} for r in rows]
    assert online.plain_features(ctx.spec, *online.request_values(ctx.spec, texts), server.snapshot) is None
    plain = server.predict(rows)
    typed, logged = _served(ctx, server, texts)
    assert [p["score"] for p in typed["predictions"]] == [p["score"] for p in plain["predictions"]]
    by_request = [part.drop(columns=["request_id", "served_at"]).reset_index(drop=True)
                  for _, part in logged.groupby("request_id", sort=False)]
    assert len(by_request) == 2
    pd.testing.assert_frame_equal(by_request[0], by_request[1], check_dtype=False)
