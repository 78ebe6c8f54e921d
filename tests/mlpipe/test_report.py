"""The demo summary: best variant first, the decision and the champion."""

from __future__ import annotations

import dataclasses

import mlflow
import pytest

from mlpipe.report import latest_decision, summary
from mlpipe.settings import get_settings
from mlpipe.steps import Context

pytestmark = pytest.mark.integration


def test_summary_lists_variants_best_first_and_the_decision(tmp_path, spec, store):
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=store.root)
    ctx = Context(settings, spec, store)
    assert latest_decision(ctx) is None
    record = {"metric": "roc_auc", "promoted": True, "reason": "no champion yet", "previous_champion": None,
              "champion": None, "failed_variants": ["broken"], "window": {}, "run_tags": {"airflow.run_id": "r1"},
              "candidates": {"linear": {"roc_auc": 0.61}, "hgb": {"roc_auc": 0.74}}}
    store.write_report("decisions", "20240101T000000Z", {**record, "reason": "older"})
    store.write_report("decisions", "20240102T000000Z", record)

    text = summary(ctx)

    assert latest_decision(ctx)["reason"] == "no champion yet"
    assert text.index("hgb ") < text.index("linear ")
    assert "failed variants: ['broken']" in text
    assert "gate: PROMOTED: no champion yet" in text
    assert "champion: none yet" in text
    mlflow.set_tracking_uri(get_settings().tracking_uri)
