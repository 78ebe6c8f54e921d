"""Data-quality suites derived from the spec, run with Great Expectations.

``build_rules`` is pure (the spec -> a list of rules); ``validate`` runs them on one
partition through an ephemeral GX context, updates the day's Data Docs page (see
:mod:`mlpipe.validation.data_docs`), writes the full report as JSON, and raises
:class:`ValidationFailed` naming each failed column and rule, the report's path and the page's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from mlpipe.errors import ValidationFailed
from mlpipe.spec import PipelineSpec
from mlpipe.validation.data_docs import DataDocs, publish

# numpy dtypes, then pandas' nullable ones by the class names GX resolves on ``pd``
_INT = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype"]
_FLOAT = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]
TYPE_LISTS = {"int": _INT, "float": _FLOAT, "number": _INT + _FLOAT, "string": ["str"]}
# up to 20 unexpected values per failed rule, with their counts: the report and Data Docs show them
# BASIC has every figure the report keeps and costs half of SUMMARY, which adds the unexpected
# values' counts that Data Docs show for a failed rule: a day that fails is validated again with it
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}
FAILED_FORMAT = {**RESULT_FORMAT, "result_format": "SUMMARY"}


@dataclass(frozen=True)
class Rule:
    """One expectation: its GX class name, its column (None for table rules) and kwargs."""

    expectation: str
    column: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"


def build_rules(spec: PipelineSpec) -> list[Rule]:
    """The spec's suite: required columns, then each column rule, then row-count bounds."""
    rules: list[Rule] = []
    feats = spec.features
    needed = [*spec.row_id, spec.partition.column, *spec.target.inputs, *feats.numeric, *feats.categorical,
              *(k for h in feats.history for k in h.group_by), *spec.validation.columns]
    for column in dict.fromkeys(needed):
        rules.append(Rule("ExpectColumnToExist", column))
    for column, rule in spec.validation.columns.items():
        sev = rule.severity
        rules.append(Rule("ExpectColumnValuesToBeInTypeList", column, {"type_list": TYPE_LISTS[rule.type]}, sev))
        if rule.max_null_fraction < 1.0:
            mostly = round(1.0 - rule.max_null_fraction, 6)
            rules.append(Rule("ExpectColumnValuesToNotBeNull", column, {"mostly": mostly}, sev))
        if rule.min is not None or rule.max is not None:
            rules.append(Rule("ExpectColumnValuesToBeBetween", column, {"min_value": rule.min, "max_value": rule.max},
                              sev))
        if rule.categories is not None:
            rules.append(Rule("ExpectColumnValuesToBeInSet", column, {"value_set": rule.categories}, sev))
    for column in spec.target.inputs:
        if column not in spec.validation.columns:  # a target that is all null can never train
            rules.append(Rule("ExpectColumnValuesToNotBeNull", column, {"mostly": 0.01}))
    rules += _class_rule(spec)
    if len(spec.row_id) == 1:  # a row appearing twice would be trained (or held out) twice
        rules.append(Rule("ExpectColumnValuesToBeUnique", spec.row_id[0]))
    else:
        rules.append(Rule("ExpectCompoundColumnsToBeUnique", None, {"column_list": list(spec.row_id)}))
    bounds = spec.validation
    rules.append(Rule("ExpectTableRowCountToBeBetween", None, {"min_value": bounds.min_rows, "max_value": bounds.max_rows}))
    return rules


def _run_gx(frame: pd.DataFrame, rules: list[Rule], suite_name: str, result_format: dict = RESULT_FORMAT) -> Any:
    """The GX suite validation result of ``rules`` on ``frame``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX 1.x does not know pandas 3's "str" dtype; as object it checks each value's type.
    strings = frame.select_dtypes(include=["string", "str"]).columns
    frame = frame.astype({c: object for c in strings})
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("partition")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    # built whole: add_expectation compares each new expectation with every earlier one (O(n^2),
    # 0.4 s of a day's validation), and every rule is distinct by its meta anyway
    suite = gx.ExpectationSuite(name=suite_name, expectations=[
        getattr(gx.expectations, rule.expectation)(**rule.kwargs, **({"column": rule.column} if rule.column else {}),
                                                   meta={"rule": i}) for i, rule in enumerate(rules)])
    return batch.validate(suite, result_format=result_format)


def _summarise(result: Any, rules: list[Rule]) -> list[dict]:
    """Each rule's outcome as plain JSON: expectation, column, kwargs, success, severity, result."""
    out = []
    for r in result.results:  # GX may reorder results; meta carries each rule's index
        rule = rules[int(r.expectation_config.meta["rule"])]
        detail = {k: v for k, v in r.result.items() if k in ("observed_value", "element_count", "unexpected_count",
                                                            "unexpected_percent", "partial_unexpected_list")}
        info = r.exception_info or {}
        if isinstance(info, dict) and info.get("raised_exception"):
            detail["error"] = str(info.get("exception_message") or "the check raised an error").splitlines()[0][:300]
        out.append({"expectation": r.expectation_config.type, "column": r.expectation_config.kwargs.get("column"),
                    "kwargs": {k: v for k, v in r.expectation_config.kwargs.items()
                               if k not in ("column", "batch_id", "meta")},
                    "success": bool(r.success), "severity": rule.severity, "result": detail})
    return out


def _class_rule(spec: PipelineSpec) -> list[Rule]:
    """Listed classes of a target that is one column: its values must be among them (as
    text, or whole numbers), unless the column has a categories rule of its own."""
    target = spec.target
    column = target.expression.strip()
    rule = spec.validation.columns.get(column)
    if not target.classes or target.inputs != [column] or (rule is not None and rule.categories is not None):
        return []
    numbers = [int(c) for c in target.classes if c.lstrip("-").isdigit()]
    return [Rule("ExpectColumnValuesToBeInSet", column, {"value_set": [*target.classes, *numbers]})]


def validate(frame: pd.DataFrame, spec: PipelineSpec, source: str,
             write_report: Callable[[dict], Path], docs: DataDocs | None = None) -> dict:
    """Validate one partition; ``write_report(payload) -> path`` stores the report, and
    with ``docs`` the result also gets its Data Docs page.

    Returns a small summary; raises ValidationFailed if any rule fails.
    """
    rules = build_rules(spec)
    result = _run_gx(frame, rules, f"{spec.name}.raw")
    if not result.success:
        result = _run_gx(frame, rules, f"{spec.name}.raw", FAILED_FORMAT)
    results = _summarise(result, rules)
    page = publish(result, docs) if docs else None
    missing = {r["column"] for r in results if r["expectation"] == "expect_column_to_exist" and not r["success"]}
    failed = [r for r in results if not r["success"]
              and (r["expectation"] == "expect_column_to_exist" or r["column"] not in missing)]
    failures = [r for r in failed if r["severity"] == "error"]
    warnings = [r for r in failed if r["severity"] != "error"]
    payload = {"pipeline": spec.name, "source": source, "rows": len(frame), "success": not failures,
               "rules": len(results), "failures": failures, "warnings": warnings, "results": results,
               "data_docs": page}
    path = write_report(payload)
    if failures:
        lines = [f"  column {_columns(f)}: {f['expectation']} {f['kwargs'] or ''} -> {_describe(f['result'])}"
                 for f in failures]
        raise ValidationFailed(
            f"{source}: {len(failures)} of {len(results)} data-quality rules failed:\n" + "\n".join(lines)
            + f"\nreport: {path}" + (f"\ndata docs: {page}" if page else ""), failures, str(path), page)
    return {"rows": len(frame), "rules": len(results), "warnings": len(warnings), "report": str(path),
            "data_docs": page}


def _columns(failure: dict) -> str:
    return failure["column"] or ", ".join(failure["kwargs"].get("column_list") or []) or "<table>"


def _describe(result: dict) -> str:
    if "error" in result:
        return f"check errored: {result['error']}"
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected"
    if "observed_value" in result:
        return f"observed {result['observed_value']!r}"
    return "failed"
