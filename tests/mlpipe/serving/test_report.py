"""Served traffic monitored (mlpipe.serving.report), in-process: the toy pipeline's
versions in a real MLflow (SQLite) registry, rows answered by a real PipelineServer under
the A/B policy, real Evidently drift against the champion's reference."""

from __future__ import annotations

import datetime as dt

import pytest
from sklearn.metrics import roc_auc_score

from mlpipe import registry
from mlpipe.errors import MlpipeError
from mlpipe.serving import report, requestlog
from mlpipe.serving.requestlog import RequestLog
from mlpipe.serving.server import PipelineServer

pytestmark = pytest.mark.integration


def test_a_served_day_is_monitored_and_its_arms_compared_on_labelled_rows(ctx, days, make_champion, with_policy,
                                                                         records):
    first, second = ctx.versions
    make_champion(ctx, first)
    make_champion(ctx, second, registry.CHALLENGER)
    ab = with_policy(ctx, policy="ab", share=0.5)
    server = PipelineServer(ab, request_log=RequestLog(ab.store, ab.spec))
    server.refresh()
    for day in days:
        server.predict(records(ctx.store.read("raw", day)))
    server.log.flush()
    from mlpipe.monitoring import _against_reference

    def drift(current, version):
        return _against_reference(ab, current, version)

    assert report.served_day(ab, days[0] - dt.timedelta(days=1), drift) is None  # nothing served that day

    found = report.served_day(ab, days[-1], drift)
    assert found["rows"] == 20 and sum(found["arms"].values()) == 20 and set(found["arms"]) == {"champion", "challenger"}
    assert found["drift"]["model_version"] == first and isinstance(found["drift"]["dataset_drift"], bool)
    quality = found["arms_quality"]  # label delay 1 day: the served days up to the day before
    assert quality["days"] == [str(d) for d in days[:-1]] and quality["rows"] == 20 * (len(days) - 1)
    labelled = requestlog.with_labels(ab.store, ab.spec, days[0], days[-1])
    for arm in quality["arms"]:
        mine = labelled[labelled["arm"] == arm["arm"]]
        assert arm["model_version"] == (first if arm["arm"] == "champion" else second)
        assert arm["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(mine["late"], mine["score"]))
    assert quality["comparison"]["against"] == "challenger" and quality["comparison"]["verdict"] in (
        "hold", "worse", "not_worse", "better")
    page = ab.store.report_path("served", days[-1], ".html").read_text()
    assert "Arms on labelled served rows" in page and "<td>challenger</td>" in page

    def no_reference(current, version):
        raise MlpipeError(f"version {version} of 'toy' has no monitoring reference")

    skipped = report.served_day(ab, days[-1], no_reference)  # the arms still compared, the drift said skipped
    assert skipped["drift"] == {"model_version": first, "rows": found["drift"]["rows"],
                                "skipped": f"version {first} of 'toy' has no monitoring reference"}
    assert skipped["arms_quality"] == quality
    assert "no reference to compare them with" in ab.store.report_path("served", days[-1], ".html").read_text()
