"""Planned priority: mapped training instances weigh by their variant's place in plan's list."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import mlpipe_priority  # noqa: E402
from mlpipe_priority import PlannedOrder, planned_weight  # noqa: E402

from mlpipe.records import Job, Window  # noqa: E402

WINDOW = Window(dt.date(2013, 1, 1), dt.date(2013, 10, 1), dt.date(2014, 1, 1))
JOBS = [Job(variant, family, WINDOW, "live", True) for variant, family in (
    ("logreg", "sklearn"), ("mlp_torch", "torch"), ("hgb", "sklearn"), ("mlp_tf", "tensorflow"),
    ("hgb_small", "sklearn"))]


def ti(task_id: str, map_index: int):
    return SimpleNamespace(dag_id="train", run_id="r1", task_id=task_id, map_index=map_index)


def test_weights_follow_plan_order_across_backends():
    weights = {(family, i): planned_weight(JOBS, family, i)
               for family, i in [("sklearn", 0), ("torch", 0), ("sklearn", 1), ("tensorflow", 0), ("sklearn", 2)]}
    assert list(weights.values()) == [6, 5, 4, 3, 2]  # plan's order, all above the default weight 1


def test_mapped_instance_reads_its_runs_plan(monkeypatch):
    asked = []
    monkeypatch.setattr(PlannedOrder, "_jobs", lambda self, dag_id, run_id: asked.append(run_id) or JOBS)
    assert PlannedOrder().get_weight(ti("train_sklearn", 1)) == 4
    assert PlannedOrder().get_weight(ti("train_tensorflow", 0)) == 3
    assert asked == ["r1", "r1"]


def test_placeholder_takes_instance_0s_weight_from_the_latest_earlier_plan(monkeypatch):
    """Airflow turns the placeholder into instance 0 and keeps its weight."""
    asked = []
    monkeypatch.setattr(PlannedOrder, "_jobs", lambda self, dag_id, run_id: asked.append(run_id) or JOBS)
    assert PlannedOrder().get_weight(ti("train_torch", -1)) == 5
    assert asked == [None]  # None: the DAG's latest plan, since this run has none yet


@pytest.mark.parametrize("earlier", [None, JOBS[:1]])
def test_placeholder_without_an_earlier_plan_for_its_family_goes_first(monkeypatch, earlier):
    monkeypatch.setattr(PlannedOrder, "_jobs", lambda self, dag_id, run_id: earlier)
    assert PlannedOrder().get_weight(ti("train_torch", -1)) == mlpipe_priority.UNPLANNED_FIRST > len(JOBS) + 1


def test_unplaceable_instance_falls_back_to_one(monkeypatch, caplog):
    monkeypatch.setattr(PlannedOrder, "_jobs", lambda self, dag_id, run_id: JOBS)
    assert PlannedOrder().get_weight(ti("train_torch", 5)) == 1  # more instances than planned jobs
    assert "no planned priority for train_torch[5]" in caplog.text


def test_registered_as_a_plugin_under_its_path():
    assert PlannedOrder.path == "mlpipe_priority.PlannedOrder"
    assert PlannedOrder in mlpipe_priority.MlpipePriorityPlugin.priority_weight_strategies
