"""The demo summary: best candidate first, gains with intervals, the decision, the aliases."""

from __future__ import annotations

import dataclasses

import pytest

from mlpipe import ledger
from mlpipe.context import Context
from mlpipe.records import LedgerEntry, Window
from mlpipe.settings import get_settings
from mlpipe.summary import latest_decision, summary

pytestmark = pytest.mark.integration


def test_summary_lists_candidates_best_first_and_the_decision(tmp_path, spec, store):
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=store.root)
    ctx = Context(settings, spec, store)
    assert latest_decision(ctx) is None
    base = {"pipeline": spec.name, "model": spec.registered_model, "mode": "live"}
    entry = {**base, "kind": "train", "metric": "roc_auc", "decision": "promote", "reason": "clears the margin",
             "run_id": "r1", "window": Window.from_dict({"start": "2013-01-01", "holdout_start": "2013-01-08",
                                                         "end": "2013-01-10"}),
             "champion_before": "1", "failed_variants": ["broken"],
             "champion_metrics": {"roc_auc": 0.70},
             "candidates": {"linear": {"metrics": {"roc_auc": 0.61}}, "hgb": {"metrics": {"roc_auc": 0.74}}},
             "intervals": {"hgb": {"gain": 0.04, "gain_ci": [0.02, 0.06]}}}
    ledger.append(store, LedgerEntry(**{**entry, "reason": "older"}))
    ledger.append(store, LedgerEntry(**entry))
    ledger.append(store, LedgerEntry(**base, kind="rollback", decision="rollback", reason=""))  # not a train decision

    text = summary(ctx)

    assert latest_decision(ctx).seq == 2
    assert text.index("hgb ") < text.index("linear ") < text.index("champion v1")
    assert "+0.0400 [+0.0200, +0.0600]" in text
    assert "failed variants: ['broken']" in text
    assert "gate: PROMOTED: clears the margin" in text
    assert "champion: none" in text and "challenger: none" in text
