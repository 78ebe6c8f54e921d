"""Optuna search: bounded, seeded, never touching the holdout; each trial a nested MLflow run."""

from __future__ import annotations

import dataclasses

import pytest

from mlpipe import training
from mlpipe.context import Context
from mlpipe.errors import SpecError
from mlpipe.records import Job, Window
from mlpipe.search import search
from mlpipe.settings import get_settings
from mlpipe.spec import PipelineSpec, SearchSpec, load_spec

SPACE = {"max_iter": {"type": "int", "low": 5, "high": 30},
         "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True}}


def _with_search(spec: PipelineSpec, trials: int = 3) -> PipelineSpec:
    plan = SearchSpec.model_validate({"trials": trials, "validation_days": 1, "space": SPACE})
    variants = [spec.variants[0].model_copy(update={"search": plan}), *spec.variants[1:]]
    return spec.model_copy(update={"variants": variants})


def test_search_stays_in_bounds_and_is_seeded(spec, model_frame):
    searched = _with_search(spec)
    variant = searched.variants[0]
    seen = []
    best, value = search(searched, variant, model_frame, on_trial=lambda n, p, v: seen.append((n, p, v)))
    again, value_again = search(searched, variant, model_frame)
    assert [n for n, _, _ in seen] == [0, 1, 2]
    assert 5 <= best["max_iter"] <= 30 and 0.01 <= best["learning_rate"] <= 0.3
    assert (best, value) == (again, value_again)
    assert value == max(v for _, _, v in seen)  # roc_auc: greater is better


def test_bad_search_space_is_a_spec_error(spec_dict, write_spec, tmp_path):
    spec_dict["variants"][0]["search"] = {"trials": 2, "space": {"max_iter": {"type": "int", "low": 9, "high": 3}}}
    with pytest.raises(SpecError, match="variants.0.search.space.max_iter"):
        load_spec(write_spec(tmp_path, spec_dict))


@pytest.mark.integration
def test_train_variant_logs_each_trial_as_a_nested_run(tmp_path, spec, store, model_frame):
    searched = _with_search(spec, trials=2)
    for day, part in model_frame.groupby("partition_date"):
        store.write("features", day, part)
    days = sorted(model_frame["partition_date"].unique())
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=store.root)
    ctx = Context(settings, searched.model_copy(update={"training": searched.training.model_copy(
        update={"min_rows": 10})}), store)
    win = Window(days[0], days[-1], days[-1] + (days[1] - days[0]))
    job = Job(searched.variants[0].name, "sklearn", win, "dry_run", promote=False)
    result = training.train_variant(ctx, job, {"airflow.run_id": "t"}).to_dict()
    client = ctx.tracking.client
    parent = client.get_run(result["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result['run_id']}'")
    assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1"]
    assert "best.max_iter" in parent.data.params and parent.data.metrics["search.trials"] == 2
    assert result["version"] is None  # dry run: nothing registered

