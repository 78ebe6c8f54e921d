"""The canary's daily look (mlpipe.serving.canary), in-process: the toy pipeline's two
versions in a real MLflow (SQLite) registry, served rows from a real PipelineServer and
its request log, labels from the ingested features partitions."""

from __future__ import annotations

import pytest

from mlpipe import ledger, registry
from mlpipe.serving import canary, sequential
from mlpipe.serving.requestlog import RequestLog
from mlpipe.serving.server import PipelineServer
from mlpipe.spec import CanarySpec

pytestmark = pytest.mark.integration
TAGS = {"airflow.dag_id": "toy__canary", "airflow.run_id": "scheduled__1"}


@pytest.fixture
def canaried(ctx, make_champion, with_policy):
    """The toy pipeline under the canary policy (25 %, 50 %, then champion; 20 labelled rows an arm),
    champion v1, challenger v2."""
    first, second = ctx.versions
    make_champion(ctx, first)
    make_champion(ctx, second, registry.CHALLENGER)
    return with_policy(ctx, policy="canary", canary=CanarySpec(steps=[0.25, 0.5, 1.0], min_rows=20))


def _serve(ctx, days, records) -> PipelineServer:
    """Every ingested day's rows answered by a server following the canary, the log written out."""
    server = PipelineServer(ctx, request_log=RequestLog(ctx.store, ctx.spec))
    server.refresh()
    for day in days:
        server.predict(records(ctx.store.read("raw", day)))
    server.log.flush()
    return server


def _aliases(ctx):
    found = [ctx.tracking.alias_version("toy", a) for a in (registry.CHAMPION, registry.CHALLENGER)]
    return [str(f.version) if f else None for f in found]


def test_a_canary_starts_holds_on_too_little_data_advances_and_promotes(canaried, days, records):
    ctx, (first, second) = canaried, canaried.versions
    assert canary.step(ctx, TAGS)["action"] == "start"
    assert canary.state(ctx.store)["share"] == 0.25
    held = canary.step(ctx, TAGS)  # nothing served yet: hold, never pass
    assert (held["action"], held["comparison"]["n_control"], held["comparison"]["verdict"]) == ("hold", 0, "hold")

    server = _serve(ctx, days, records)
    arms = server.predict(records(ctx.store.read("raw", days[-1])))["predictions"]
    assert {p["role"] for p in arms} == {"champion", "canary"}  # a quarter of the keys in canary
    advanced = canary.step(ctx, TAGS)
    assert advanced["action"] == "advance", advanced
    found = advanced["comparison"]
    assert found["n_control"] >= 20 and found["n_treatment"] >= 20 and found["verdict"] in ("not_worse", "better")
    assert canary.state(ctx.store)["share"] == 0.5 and _aliases(ctx) == [first, second]

    assert canary.step(ctx, TAGS)["action"] == "hold"  # rows served before the step do not count for it
    server = _serve(ctx, days, records)
    assert {p["role"] for p in server.predict(records(ctx.store.read("raw", days[-1])))["predictions"]} == {
        "champion", "canary"}
    promoted = canary.step(ctx, TAGS)
    assert (promoted["action"], promoted["moved"]) == ("promote", True), promoted
    assert _aliases(ctx) == [second, None]
    looks = [e for e in ledger.entries(ctx.store) if e.kind == "canary"]
    assert [e.decision for e in looks] == ["canary-start", "canary-hold", "canary-advance", "canary-hold",
                                           "canary-promote"]
    assert looks[-1].canary["comparison"]["n_treatment"] >= 20 and looks[-1].canary["share"] == 0.5
    assert ledger.previous_champion(ctx.store, second) == first  # a rollback of "previous" undoes the canary
    described = ctx.tracking.client.get_registered_model("toy").description
    assert f"**Champion: v{second}**, made champion by its canary" in described
    assert canary.step(ctx, TAGS)["action"] == "none"  # no challenger left


def test_a_significantly_worse_canary_is_rolled_back(canaried, monkeypatch):
    ctx, first = canaried, canaried.versions[0]
    canary.step(ctx, TAGS)
    worse = sequential.compare([0.3] * 200 + [0.4] * 200, [0.9] * 200 + [1.0] * 200, min_rows=20)
    assert worse.verdict == "worse"
    monkeypatch.setattr(canary, "compare", lambda *_: worse)
    done = canary.step(ctx, TAGS)
    assert (done["action"], done["status"], done["share"]) == ("rollback", "rolled_back", 0.0)
    assert _aliases(ctx) == [first, None]  # the challenger cleared, the champion kept
    assert ledger.entries(ctx.store)[-1].decision == "canary-rollback"
    assert ledger.entries(ctx.store)[-1].canary["comparison"]["verdict"] == "worse"


def test_other_policies_do_nothing(ctx, make_champion):
    make_champion(ctx, ctx.versions[0])
    assert canary.step(ctx, TAGS) == {"action": "none", "reason": "serving.policy is 'champion', not canary"}
