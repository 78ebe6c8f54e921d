from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mlpipe.errors import SpecError
from mlpipe.settings import PROJECT_ROOT
from mlpipe.spec import PipelineSpec, load_spec, spec_hash


def _dump(folder: Path, data, name: str) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FLIGHTS = PROJECT_ROOT / "include" / "pipelines" / "flights.yaml"


def _error(tmp_path: Path, data) -> str:
    path = _dump(tmp_path, data, "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_bundled_flights_spec_loads():
    spec = load_spec(FLIGHTS)
    assert isinstance(spec, PipelineSpec)
    assert spec.name == "flights"
    assert spec.primary == "flights"
    assert list(spec.sources) == ["flights", "weather", "planes"]
    assert spec.sources["planes"].rename == {"year": "plane_year"}
    assert spec.target.task == "binary"
    assert spec.target.inputs == ["arr_delay"]
    assert spec.metric().direction == "maximize"
    assert len(spec.variants) >= 6
    assert {v.backend.split("_")[0] for v in spec.variants} == {"sklearn", "torch", "tensorflow"}
    assert spec.training.holdout_days < spec.training.lookback_days
    # no model feature is a leakage column
    assert not set(spec.features.all_names) & spec.leakage


def test_toy_spec_loads(spec):
    assert spec.primary == "events"
    assert spec.sources["events"].file_format == "csv"
    assert spec.sources["stores"].join.keys == ["store"]
    assert spec.features.derived_numeric == ["day_of_week", "is_weekend", "late_rate_store_2d", "count_channel_1d"]
    assert spec.registered_model == "toy"


def test_leakage_includes_exclusions_target_inputs_and_target_name(spec):
    assert spec.leakage == {"settle_time", "ts", "delay", "late"}
    flights = load_spec(FLIGHTS)
    assert "arr_delay" in flights.leakage  # never listed in exclude: it is the target's input
    assert "arr_delay" not in flights.exclude
    assert {"late", "dep_delay", "tailnum"} <= flights.leakage


def test_target_inputs_are_the_expression_names(spec_dict, tmp_path):
    spec_dict["target"]["expression"] = "(arr > 15) | (dep > 30)"
    spec = load_spec(_dump(tmp_path, spec_dict, "spec.yaml"))
    assert spec.target.inputs == ["arr", "dep"]
    assert {"arr", "dep"} <= spec.leakage


def test_field_level_errors_are_reported_together(spec_dict, tmp_path):
    spec_dict["target"]["task"] = "ordinal"
    spec_dict["training"] = {"lookback_days": 5, "holdout_days": 5}
    spec_dict["partition"]["timezone"] = "Mars/Olympus_Mons"
    spec_dict["variants"][0]["name"] = "Bad Name"
    message = _error(tmp_path, spec_dict)
    assert "target.task" in message
    assert "training" in message and "holdout_days must be smaller than lookback_days" in message
    assert "partition.timezone" in message and "Mars/Olympus_Mons" in message
    assert "variants.0.name" in message
    assert message.count("\n  ") >= 4  # one line per bad field


def test_training_slots_must_be_positive(spec_dict, tmp_path):
    spec_dict["execution"] = {"training_slots": 0}
    message = _error(tmp_path, spec_dict)
    assert "execution.training_slots" in message and "greater than or equal to 1" in message


def test_cross_field_errors_are_reported_together(spec_dict, tmp_path):
    spec_dict["features"]["numeric"].append("settle_time")  # also in exclude
    spec_dict["gate"]["metric"] = "f1_macro"
    spec_dict["gate"]["floors"] = {"rmse": 3.0}  # a regression metric on a binary target
    spec_dict["sources"]["events"]["join"] = {"keys": ["store"]}
    message = _error(tmp_path, spec_dict)
    assert "settle_time" in message and "excluded" in message
    assert "gate.metric" in message and "f1_macro" in message
    assert "gate.floors.rmse" in message
    assert "sources.events.join" in message and "first (primary) source" in message


def test_field_errors_are_reported_together_before_cross_field_rules(spec_dict, tmp_path):
    spec_dict["target"]["task"] = "ordinal"  # unknown task type
    spec_dict["training"] = {"lookback_days": 3, "holdout_days": 3}
    spec_dict["features"]["numeric"].append("settle_time")  # cross-field: reported once fields are valid
    message = _error(tmp_path, spec_dict)
    assert "target.task" in message
    assert "holdout_days" in message


def test_later_source_without_join_and_duplicate_variants(spec_dict, tmp_path):
    del spec_dict["sources"]["stores"]["join"]
    spec_dict["variants"][1]["name"] = spec_dict["variants"][0]["name"]
    message = _error(tmp_path, spec_dict)
    assert "sources.stores.join" in message
    assert "variants: names must be unique" in message


@pytest.mark.parametrize("feature_list", ["numeric", "categorical"])
def test_target_input_or_target_name_cannot_be_a_feature(spec_dict, tmp_path, feature_list):
    spec_dict["features"][feature_list] = [*spec_dict["features"][feature_list], "delay", "late"]
    message = _error(tmp_path, spec_dict)
    assert "delay" in message and "late" in message


def test_duplicate_feature_names_rejected(spec_dict, tmp_path):
    spec_dict["features"]["categorical"].append("amount")
    message = _error(tmp_path, spec_dict)
    assert "listed more than once" in message and "amount" in message


def test_regression_target_requires_drop_and_regression_gate(spec_dict, tmp_path):
    spec_dict["target"] = {"name": "y", "expression": "delay", "task": "regression", "when_null": "positive"}
    message = _error(tmp_path, spec_dict)
    assert "when_null must be one of ['drop'] for regression targets" in message
    spec_dict["target"]["when_null"] = "drop"
    message = _error(tmp_path, spec_dict)  # roc_auc is not a regression metric
    assert "gate.metric" in message and "roc_auc" in message
    spec_dict["gate"] = {"metric": "rmse", "floors": {"r2": 0.1}}
    spec_dict["variants"][1]["params"] = {"alpha": 1.0}  # ridge, not the logistic C
    spec = load_spec(_dump(tmp_path, spec_dict, "ok.yaml"))
    assert spec.metric().direction == "minimize"
    assert spec.metric("r2").direction == "maximize"


def test_the_gate_metric_defaults_to_the_target_types(spec_dict, tmp_path):
    del spec_dict["gate"]
    assert load_spec(_dump(tmp_path, spec_dict, "binary.yaml")).gate.metric == "roc_auc"
    spec_dict["target"] = {"name": "y", "expression": "delay", "task": "regression"}
    spec_dict["variants"] = [{"name": "hgb", "backend": "sklearn_hgb"}]
    assert load_spec(_dump(tmp_path, spec_dict, "regression.yaml")).gate.metric == "rmse"
    spec_dict["target"] = {"name": "y", "expression": "region", "task": "multiclass"}
    spec_dict["features"]["categorical"].remove("region")
    spec_dict["features"]["history"].pop(0)  # a target mean: not for classes
    spec = load_spec(_dump(tmp_path, spec_dict, "multiclass.yaml"))
    assert spec.gate.metric == "log_loss" and spec.target_type.has_classes and spec.target.classes is None


def test_a_multiclass_target_is_checked_against_its_type(spec_dict, tmp_path):
    spec_dict["features"]["categorical"].remove("region")
    spec_dict["target"] = {"name": "y", "expression": "region", "task": "multiclass", "when_null": "positive",
                           "classes": ["a", "b", "a"]}
    message = _error(tmp_path, spec_dict)
    assert "when_null must be one of ['drop'] for multiclass targets" in message
    spec_dict["target"]["when_null"] = "drop"
    assert "classes: listed more than once" in _error(tmp_path, spec_dict)
    spec_dict["target"]["classes"] = ["a", "b"]
    spec_dict["gate"] = {"metric": "pr_auc", "floors": {"f1": 0.2, "f1_macro": 0.3}}
    message = _error(tmp_path, spec_dict)
    assert "gate.metric: 'pr_auc' is not a multiclass metric" in message
    assert "gate.floors.f1: not a multiclass metric" in message and "f1_macro: not" not in message
    assert "features.history.late_rate_store_2d: stat 'target_mean' is not defined for a multiclass target" in message
    spec_dict["target"]["classes"] = [1, 2.0, "x"]  # YAML numbers: classes are text, as labels are
    spec_dict["features"]["history"] = [h for h in spec_dict["features"]["history"] if h.get("stat") == "count"]
    spec_dict["gate"] = {"metric": "log_loss"}
    assert load_spec(_dump(tmp_path, spec_dict, "ok.yaml")).target.classes == ["1", "2", "x"]
    spec_dict["target"] = {"name": "y", "expression": "delay > 0", "task": "binary", "classes": ["a", "b"]}
    assert "only a multiclass target has classes" in _error(tmp_path, spec_dict)


def test_unknown_keys_bad_expression_and_calendar_are_rejected(spec_dict, tmp_path):
    spec_dict["unexpected"] = 1
    spec_dict["target"]["expression"] = "delay >"
    spec_dict["features"]["calendar"] = ["day_of_week", "week_of_moon"]
    spec_dict["features"]["history"][0]["window_days"] = 0
    message = _error(tmp_path, spec_dict)
    assert "unexpected" in message
    assert "target.expression" in message
    assert "features.calendar.1" in message
    assert "features.history.0.window_days" in message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")])
def test_yaml_that_is_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=f"a spec is a YAML mapping, got {kind}"):
        load_spec(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "absent.yaml")


def test_schedule_end_before_start(spec_dict, tmp_path):
    spec_dict["schedule"] = {"start": "2024-01-06", "end": "2024-01-01"}
    assert "end must not be before start" in _error(tmp_path, spec_dict)


def test_spec_hash_is_stable_and_content_sensitive(spec_dict, tmp_path):
    first = spec_hash(load_spec(_dump(tmp_path, spec_dict, "a.yaml")))
    again = spec_hash(load_spec(_dump(tmp_path, copy.deepcopy(spec_dict), "b.yaml")))
    assert first == again
    assert len(first) == 16 and int(first, 16) >= 0
    assert spec_hash(load_spec(FLIGHTS)) == spec_hash(load_spec(FLIGHTS))
    spec_dict["training"]["seed"] = 8
    assert spec_hash(load_spec(_dump(tmp_path, spec_dict, "c.yaml"))) != first


def test_gate_metric_needs_a_bootstrap_and_ensemble_is_a_reserved_name(spec_dict, tmp_path):
    spec_dict["gate"]["metric"] = "f1"  # a binary metric, usable as a floor, but not bootstrapped
    spec_dict["gate"]["floors"] = {"f1": 0.2, "calibration_error": 0.1}
    spec_dict["variants"][0]["name"] = "ensemble"
    message = _error(tmp_path, spec_dict)
    assert "'f1' has no bootstrap" in message and "roc_auc" in message
    assert "'ensemble' is a reserved name" in message
    assert "gate.floors" not in message


def test_gate_and_ensemble_defaults(spec):
    assert spec.gate.bootstrap.resamples == 1000 and spec.gate.bootstrap.confidence == 0.95
    assert spec.gate.unscorable_champion == "replace"
    assert spec.ensemble is None  # opt-in


@pytest.mark.parametrize("variant, field, words", [
    ({"name": "x", "backend": "xgboost"}, "variants.2.backend", "unknown backend 'xgboost'"),
    ({"name": "x", "backend": "sklern_hgb"}, "variants.2.backend", "unknown backend 'sklern_hgb'"),  # misspelt family
    ({"name": "x", "backend": "sklearn_hgb", "params": {"max_iters": 10}}, "variants.2.params",
     "['max_iters'] are not hyperparameters of backend 'sklearn_hgb'"),
    ({"name": "x", "backend": "sklearn_linear", "search": {"trials": 2, "space": {
        "alpha": {"type": "float", "low": 0.1, "high": 1.0}}}}, "variants.2.search.space",
     "['alpha'] are not hyperparameters of backend 'sklearn_linear' for a binary target"),
])
def test_variant_mistakes_fail_the_spec_check_naming_the_field(spec_dict, tmp_path, variant, field, words):
    spec_dict["variants"].append(variant)
    message = _error(tmp_path, spec_dict)
    assert f"{field}: " in message and words in message


def test_a_classification_hyperparameter_on_a_regression_target_is_refused(spec_dict, tmp_path):
    spec_dict["target"] = {"name": "y", "expression": "delay * 1.0", "task": "regression"}
    spec_dict["gate"] = {"metric": "rmse"}
    message = _error(tmp_path, spec_dict)  # the toy's linear variant sets the logistic C
    assert "variants.1.params: ['C'] are not hyperparameters of backend 'sklearn_linear' for a regression" in message
