"""The typed pipeline spec: one YAML file says everything a pipeline needs.

``load_spec(path)`` returns a validated :class:`PipelineSpec` or raises
:class:`~mlpipe.errors.SpecError` listing every bad field with its location. Rules that
relate fields to each other (leakage, metric per task, joins) are checked once every
field is individually valid, and then all reported together.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlpipe.errors import SpecError
from mlpipe.metrics import METRICS, Metric, gate_metrics, metric
from mlpipe.targets import NAMES, TargetType, target_type

TaskType = Literal[NAMES]  # type: ignore[valid-type]
CALENDAR = ("day_of_week", "day_of_year", "month", "is_weekend")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JoinSpec(_Model):
    """How a source after the first joins the rows read so far (many-to-one, checked: a key
    that is not unique in this source fails the day)."""

    keys: list[str] = Field(
        min_length=1, description="Columns this source is joined on; many-to-one: they must be unique in this source")
    how: Literal["left", "inner"] = Field(
        "left", description="left: keep every primary row; inner: keep only rows with a match")


class SourceSpec(_Model):
    """One named source: a file (CSV or Parquet; one file, or one per day with ``{date}`` in
    the path) or a SQL table or query read through a connection (``conn_id``; see
    [sources](sources.md)). The first source is the primary: it decides the rows; the
    others join it."""

    path: str | None = Field(
        None, description="File source: a file path, an fsspec URL (``s3://bucket/key``; credentials from the "
                          "store's environment, never here), or ``pkg://<package>/<path inside it>``; ``{date}`` in "
                          "it: one file per day")
    format: Literal["csv", "parquet"] | None = Field(
        None, description="File format (default: from the extension, ``.parquet`` or ``.pq``, else csv)")
    conn_id: str | None = Field(
        None, min_length=1, description="SQL source: the connection id (an Airflow connection; outside Airflow the "
                                        "``AIRFLOW_CONN_<CONN_ID>`` environment variable, a URI)")
    table: str | None = Field(
        None, description="SQL source: the table, ``name`` or ``schema.name`` (letters, digits, ``_``; quoted by the "
                          "reader). The primary reads the rows whose partition column is in the day")
    query: str | None = Field(
        None, min_length=1, description="SQL source, instead of ``table``: a SELECT. The primary's must keep only "
                                        "the day's rows with ``:start <= <partition column> AND <partition column> < "
                                        ":end`` (bound as timestamps with time zone; every row read is checked); "
                                        "a joined source's may use them too")
    chunk_rows: int = Field(10_000, ge=1, description="SQL source: rows fetched per round trip")
    columns: list[str] | None = Field(None, description="Columns to keep, each required in the source (default: all)")
    rename: dict[str, str] = Field({}, description="Old -> new column names, applied after reading")
    row_number: str | None = Field(
        None, description="Primary source only: a column added to each day's rows numbering those that share the "
                          "other row_id columns (0, 1, ... in the order read), for rows without a unique key (e.g. "
                          "two identical items of one order: ``row_id: [order_id, item, line]``)")
    join: JoinSpec | None = Field(
        None, description="How this source joins the rows read so far: required after the first source, refused on it")

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _TABLE.fullmatch(value):
            raise ValueError(f"table {value!r} is not a table name: ``name`` or ``schema.name`` of letters, digits "
                             "and _ (not starting with a digit)")
        return value

    @model_validator(mode="after")
    def _file_or_sql(self) -> SourceSpec:
        sql = [f for f in ("conn_id", "table", "query", "chunk_rows") if f in self.model_fields_set]
        if self.path is not None and sql:
            raise ValueError(f"a source is a file (path) or SQL (conn_id with table or query), not both: "
                             f"drop path or {sql}")
        if self.path is not None:
            return self
        if self.conn_id is None:
            raise ValueError("table and query need conn_id, the connection they are read through" if sql else
                             "a source needs path (a file) or conn_id with table or query (SQL)")
        if (self.table is None) == (self.query is None):
            raise ValueError("a SQL source needs exactly one of table or query")
        if self.format is not None:
            raise ValueError("format is for file sources; a SQL source has none")
        return self

    @property
    def is_sql(self) -> bool:
        return self.conn_id is not None

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        return "parquet" if self.path.endswith((".parquet", ".pq")) else "csv"


_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class PartitionSpec(_Model):
    """The timestamp column and time zone whose local date defines a row's partition day."""

    column: str = Field(description="Timestamp column whose local date is a row's partition day")
    timezone: str = Field("UTC", description="IANA time zone the partition day is taken in")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class TargetSpec(_Model):
    """The label: an expression over source columns, its type, and what a null input means."""

    name: str = Field(description="Name of the label column (never a feature)")
    expression: str = Field(
        description="Python expression over source columns giving the label, e.g. ``arr_delay > 15``")
    task: TaskType = Field(
        description="Target type: decides the metrics, the model outputs and the hyperparameters a backend takes")
    when_null: Literal["drop", "positive", "negative"] = Field(
        "drop", description="Label of a row with a null target input: drop the row, positive or negative (binary only)")
    classes: list[str] | None = Field(
        None, min_length=2, description="Multi-class only: the classes, as text (a row labelled otherwise fails "
                                        "validation); none: those of the training window, recorded with each version")

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            ast.parse(value, mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"not a valid expression: {exc.msg}") from exc
        return value

    @property
    def inputs(self) -> list[str]:
        """Column names the expression reads."""
        tree = ast.parse(self.expression, mode="eval")
        return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})

    @field_validator("classes", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """Classes are text, as labels are: YAML's 1 is "1", true is "1" (a label of a comparison)."""
        if not isinstance(value, list):
            return value
        return [str(int(v)) if isinstance(v, bool) or (isinstance(v, float) and v.is_integer()) else str(v)
                for v in value]

    @property
    def type(self) -> TargetType:
        return target_type(self.task)

    @model_validator(mode="after")
    def _fits_task(self) -> TargetSpec:
        if self.when_null not in self.type.null_policies:
            raise ValueError(f"when_null must be one of {list(self.type.null_policies)} for {self.task} targets")
        if self.classes is not None and not self.type.has_classes:
            raise ValueError(f"classes: only a multiclass target has classes, not a {self.task} target")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: listed more than once")
        return self


class HistorySpec(_Model):
    """A point-in-time aggregate of the target over earlier partitions only, per group
    (``group_by`` columns) or over all rows (``group_by: []``, e.g. one row a day data)."""

    name: str = Field(description="Feature name of the aggregate")
    group_by: list[str] = Field(
        [], description="Columns the aggregate is computed per; empty: one value over all rows of the window")
    window_days: int = Field(
        ge=1, le=366, description="Days before the partition day the aggregate reads (never the day itself)")
    stat: Literal["target_mean", "count"] = Field(
        "target_mean", description="target_mean: the group's mean label in the window; count: its rows (0 when none)")


class FeaturesSpec(_Model):
    """The model's inputs: source columns, calendar fields of the partition day, and
    point-in-time historical aggregates."""

    numeric: list[str] = Field([], description="Numeric source columns used as features (as float)")
    categorical: list[str] = Field(
        [], description="Categorical source columns used as features (as text; each backend encodes them)")
    calendar: list[Literal[CALENDAR]] = Field(  # type: ignore[valid-type]
        [], description="Calendar fields of the partition day used as features")
    history: list[HistorySpec] = Field([], description="Point-in-time aggregates of the target over earlier partitions")

    @property
    def derived_numeric(self) -> list[str]:
        return [*self.calendar, *(h.name for h in self.history)]

    @property
    def all_names(self) -> list[str]:
        return [*self.numeric, *self.derived_numeric, *self.categorical]


class ColumnRule(_Model):
    """One column's validation rules (Great Expectations), checked on every day's rows."""

    type: Literal["int", "float", "number", "string"] = Field(
        description="Expected type; CSV text is converted to it per day (int: Int64, float and number: float64)")
    max_null_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Largest share of the day's rows that may be null")
    min: float | None = Field(None, description="Smallest allowed value (none: no bound)")
    max: float | None = Field(None, description="Largest allowed value (none: no bound)")
    categories: list[str] | None = Field(None, description="The only allowed values (none: any)")
    severity: Literal["error", "warn"] = Field(
        "error", description="error: a failure fails the day's validation; warn: report a failure, do not block")


class ValidationSpec(_Model):
    """What every day's rows must satisfy before they are written to ``validated/``."""

    min_rows: int = Field(1, ge=0, description="Fewest rows a day may have")
    max_rows: int | None = Field(None, description="Most rows a day may have (none: no bound)")
    columns: dict[str, ColumnRule] = Field(
        {}, description="Rules per column; ``row_id`` must also be unique in every day")


class TrainingSpec(_Model):
    """The training window ending at the run's logical date, its holdout, and the rows each
    split needs."""

    lookback_days: int = Field(ge=2, description="Training window: days before the logical date")
    holdout_days: int = Field(ge=1, description="Most recent days of the window held out")
    min_rows: int = Field(100, ge=1, description="Labelled rows each split (training, holdout) needs")
    min_class_rows: int = Field(
        5, ge=1, description="Binary targets: rows of each class each split needs; multi-class: rows of each of two "
                             "classes or more the training split needs (docs/targets.md)")
    seed: int = Field(
        0, description="Seed of every backend (``random_state``), the Optuna sampler and the reference sample")

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> TrainingSpec:
        if self.holdout_days >= self.lookback_days:
            raise ValueError("holdout_days must be smaller than lookback_days")
        return self


class ParamSpace(_Model):
    """One hyperparameter's search range: ``int`` / ``float`` between ``low`` and ``high``
    (``log`` for a log scale), or ``categorical`` over ``choices``."""

    type: Literal["int", "float", "categorical"] = Field(
        description="Kind of range: int or float between low and high, or categorical")
    low: float | None = Field(None, description="Lower bound (int and float; below high)")
    high: float | None = Field(None, description="Upper bound (int and float)")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0)")
    choices: list[Any] | None = Field(None, description="Values to pick from (categorical; required there)")

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs choices")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.type} needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        return self


class SearchSpec(_Model):
    """Optuna search for one variant: ``trials`` TPE trials over ``space``, each fitted on
    the training split minus its last ``validation_days`` and scored on those days."""

    trials: int = Field(ge=1, le=500, description="Number of Optuna trials (seeded TPE sampler)")
    validation_days: int = Field(
        7, ge=1, description="Last days of the training split each trial is scored on; the holdout is never seen")
    space: dict[str, ParamSpace] = Field(
        min_length=1, description="Range per hyperparameter; names must be the backend's hyperparameters")


class VariantSpec(_Model):
    """One model variant: a backend, its hyperparameters and an optional search. Every
    variant is trained as its own mapped task and gated as a candidate."""

    name: str = Field(
        pattern=r"^[a-z0-9_]+$", description="Unique variant name; ``ensemble`` and ``champion`` are reserved")
    backend: str = Field(description="Key of ``mlpipe.backends.BACKENDS``, e.g. ``sklearn_hgb`` (docs/backends.md)")
    params: dict[str, Any] = Field(
        {}, description="Hyperparameters the backend takes for the target's task (docs/backends.md); the rest keep "
                        "their defaults")
    search: SearchSpec | None = Field(
        None, description="Optional Optuna search; the best trial's values override the same names in params")


class BootstrapSpec(_Model):
    """Paired bootstrap of each candidate's gain over the champion on the holdout."""
    resamples: int = Field(1000, ge=100, description="Number of paired bootstrap resamples of the holdout rows")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals")
    seed: int = Field(0, description="Seed of the resampling")


class GateSpec(_Model):
    """Promotion: every floor passed, and the lower bound of the gain's bootstrap interval
    above ``min_improvement``. ``unscorable_champion`` says what happens when the champion
    cannot score the holdout (e.g. the features changed): ``replace`` treats it as absent,
    ``keep`` refuses to promote until someone rolls back or retires it."""
    metric: str | None = Field(
        None, description="Primary metric: one of the target type's metrics with a bootstrap (table below); none: "
                          "the target type's default (binary roc_auc, multiclass log_loss, regression rmse)")
    floors: dict[str, float] = Field(
        {}, description="Metric -> the worst value a candidate may have (any metric of the target type)")
    min_improvement: float = Field(0.0, ge=0.0, description="Margin the lower bound of the gain's interval must exceed")
    bootstrap: BootstrapSpec = Field(BootstrapSpec(), description="The paired bootstrap behind the intervals")
    unscorable_champion: Literal["replace", "keep"] = Field(
        "replace", description="Champion cannot score the holdout: replace: treat it as absent; keep: promote nothing")


class EnsembleSpec(_Model):
    """A soft-voting ensemble of the ``top_k`` trained variants, gated like any other
    candidate. ``metric`` weighting: weights proportional to each member's gate metric
    (to its inverse when lower is better)."""
    top_k: int = Field(
        3, ge=2, description="Number of trained variants, best by the gate metric, voted into the ensemble")
    weighting: Literal["equal", "metric"] = Field(
        "metric", description="Members' voting weights: by gate metric, or equal")


class ScheduleSpec(_Model):
    """Dates the source holds data for: the DAGs' start_date and, for a finished
    historical dataset, end_date (no scheduled runs after it; backfills still work)."""

    start: dt.date = Field(description="First day of data: the DAGs' start_date")
    end: dt.date | None = Field(
        None, description="Last day of a finished dataset: no scheduled runs after it (none: a live source)")

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleSpec:
        if self.end is not None and self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class TimeoutSpec(_Model):
    """Minutes a task may run (Airflow's ``execution_timeout``) per kind of task; a task
    that runs out fails and is retried like any other failure."""

    ingest: int = Field(30, ge=1, description="Each task of the ingest DAG")
    train: int = Field(120, ge=1, description="Each training task (one variant)")
    evaluate: int = Field(60, ge=1, description="Every other task of the train DAG (plan, ensemble, evaluate)")
    score: int = Field(30, ge=1, description="Each task of the score DAG")
    monitor: int = Field(30, ge=1, description="Each task of the monitor DAG")
    rollback: int = Field(10, ge=1, description="The rollback task")
    canary: int = Field(10, ge=1, description="The canary's daily look")


class ExecutionSpec(_Model):
    """Where GPU-capable training runs (Airflow queue and pool names), how many training
    tasks of one train run may run at once (default: the host's cores divided by the
    threads each task uses, so tasks never time-slice a core), how many train runs may
    be in flight at once (promotion stays safe with more: commits are serialised and
    re-decided against a champion that moved meanwhile), and task timeouts."""

    queue: str | None = Field(
        None, description="Queue of every other task of the pipeline, so that only the workers that listen on it "
                          "run them (none: Airflow's default queue)")
    gpu_queue: str = Field(
        "gpu", description="Queue of the torch and TensorFlow training tasks (``MLPIPE_GPU_QUEUE`` overrides)")
    gpu_pool: str = Field(
        "gpu", description="Pool of the torch and TensorFlow training tasks (``MLPIPE_GPU_POOL`` overrides)")
    training_slots: int | None = Field(
        None, ge=1, description="Training tasks of one train run at once (``MLPIPE_TRAINING_SLOTS`` overrides; "
                             "none: cores / ``MLPIPE_TASK_CPUS``)")
    max_active_train_runs: int = Field(
        1, ge=1, description="Train runs in flight at once; more is safe, commits are serialised")
    timeouts: TimeoutSpec = Field(TimeoutSpec(), description="Minutes per kind of task")


class RetrainSpec(_Model):
    """When monitoring asks for a retrain: dataset drift on ``drift_days`` consecutive
    monitored days, or degradation. Guardrails: none within ``cooldown_days`` (data
    days) after the last train's window, none with fewer than ``min_new_labelled_rows``
    labelled rows since then, none while a train run is in flight or from a backfill."""
    drift_days: int = Field(3, ge=1, description="Consecutive monitored days with dataset drift that ask for a retrain")
    cooldown_days: int = Field(
        7, ge=0, description="Data days after the last train's window in which no retrain is asked for")
    min_new_labelled_rows: int = Field(
        1000, ge=0, description="Labelled rows since the last train's window a retrain needs")
    use_estimate: bool = Field(
        False, description="Also ask for a retrain when the estimated gate metric of the scored days (binary targets, "
                           "before labels arrive) is degraded against the quality band")


class MonitoringSpec(_Model):
    """Drift (Evidently) of each scored day against the champion's reference sample, and
    live quality once labels arrive. ``columns``: the monitored features (default: the
    model's features minus calendar columns and ``exclude``). Methods and thresholds are
    Evidently stattest names and thresholds per column type (None: Evidently's defaults);
    ``drift_share``: the share of drifted columns that is dataset drift. Live quality is
    measured over the ``quality_days`` labelled days ending ``label_delay_days`` before the
    monitored day; ``tolerance``: how far it may fall below the version's holdout figure."""
    columns: list[str] | None = Field(None, description="Monitored features (none: every feature except calendar ones)")
    exclude: list[str] = Field([], description="Features never monitored")
    num_method: str | None = Field(
        None, description="Evidently stattest for numeric columns (none: Evidently's choice)")
    cat_method: str | None = Field(
        None, description="Evidently stattest for categorical columns (none: Evidently's choice)")
    num_threshold: float | None = Field(
        None, gt=0, description="Threshold of the numeric stattest (none: Evidently's default)")
    cat_threshold: float | None = Field(
        None, gt=0, description="Threshold of the categorical stattest (none: Evidently's default)")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted monitored columns that is dataset drift, for a version without "
                                     "calibrated bands")
    band_quantile: float = Field(
        0.99, gt=0.5, le=1, description="Quantile of the calibration days' drift statistics that sets each column's "
                                        "normal band (with band_width), and the day's drift score's band")
    band_width: float = Field(
        2.0, ge=1, description="A column's band reaches from the calibration statistics' median this many times as "
                               "far as their band_quantile quantile: larger is fewer, surer alarms")
    window_days: int = Field(
        1, ge=1, le=90, description="Scored days, ending with the monitored day, compared with the reference")
    label_delay_days: int = Field(1, ge=0, description="Days after a day before its labels are known")
    quality_days: int = Field(7, ge=1, le=90, description="Labelled days live quality is measured over")
    tolerance: float = Field(
        0.02, ge=0, description="How far live quality may fall below the version's holdout figure before it is "
                                "degradation")
    reference_rows: int = Field(
        5000, ge=100, description="Training rows (seeded sample) each candidate logs as its monitoring reference")
    retrain: RetrainSpec = Field(RetrainSpec(), description="When monitoring asks for a retrain")


class CanarySpec(_Model):
    """A canary release: the challenger answers ``steps`` shares of the traffic in turn. At
    each step the ``<pipeline>__canary`` DAG compares the arms on served rows whose labels
    have arrived with an always-valid sequential test; fewer than ``min_rows`` labelled rows
    in an arm holds the step (never passes it)."""
    steps: list[float] = Field([0.05, 0.25, 0.5, 1.0], min_length=2,
                               description="The challenger's traffic share at each step, increasing, the last 1.0: "
                                           "passing the step before it moves champion")
    min_rows: int = Field(200, ge=10, description="Labelled served rows each arm needs before a step may pass")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="False-alarm level of the always-valid test, over all looks")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 1.0:
            raise ValueError(f"{steps}: shares in (0, 1], strictly increasing, the last 1.0")
        return steps


class ServingSpec(_Model):
    """Which model answers an online request (``policy``): ``champion`` only; ``shadow`` (the
    challenger scores every request too, only the champion answers); ``ab`` (the challenger
    answers ``share`` of the requests); ``canary`` (evaluate moves only ``challenger``, and the
    canary DAG moves its share through ``canary.steps``). An A/B or canary arm is assigned by
    a hash of the request column ``key``, so one key always gets the same arm."""
    policy: Literal["champion", "shadow", "ab", "canary"] = Field("champion", description="The traffic policy")
    key: str | None = Field(None, description="Request column whose hash assigns a request's arm (default: the "
                                              "first row_id column)")
    share: float = Field(0.1, gt=0, lt=1, description="The challenger's share of the requests under ab")
    canary: CanarySpec = Field(CanarySpec(), description="The canary's steps and test")
    log_rows: int = Field(5000, ge=1, description="Served rows buffered before the request log writes a part")
    log_seconds: float = Field(10.0, gt=0, description="Seconds at most between the request log's writes")


class DemoSpec(_Model):
    """The window ``make demo`` runs the pipeline over: ingest ``start`` .. ``end``, train on
    all but the last ``holdout_days``, then score and monitor those."""

    start: dt.date = Field(description="First day ingested")
    end: dt.date = Field(description="Last day ingested (inclusive)")
    holdout_days: int = Field(ge=1, description="Last days held out, then scored and monitored")


# Airflow permissions a spec's access_control may grant a role on the pipeline's DAGs
ACCESS = {"read": ("DAGs", "can_read"), "edit": ("DAGs", "can_edit"), "delete": ("DAGs", "can_delete"),
          "trigger": ("DAG Runs", "can_create")}


class PipelineSpec(_Model):
    """One pipeline: everything from its sources to its monitoring."""

    name: str = Field(pattern=r"^[a-z0-9]+(_[a-z0-9]+)*$",
                      description="Pipeline name: its DAG ids' prefix (``<name>__train``), data folder and MLflow "
                                  "experiment; lower case, digits and single underscores")
    description: str = Field("", description="What the pipeline predicts, for readers of the spec")
    model_name: str | None = Field(None, description="Registered model name in MLflow (default: ``name``)")
    sources: dict[str, SourceSpec] = Field(
        min_length=1, description="Named sources; the first is the primary, the others join it")
    row_id: list[str] = Field(
        min_length=1, description="Columns that identify a row: kept in every partition, never features")
    partition: PartitionSpec = Field(description="How a row's partition day is found")
    schedule: ScheduleSpec = Field(description="Dates the source holds data for")
    target: TargetSpec = Field(description="What is predicted")
    features: FeaturesSpec = Field(description="Model inputs")
    exclude: list[str] = Field(
        [], description="Leakage: columns that must never be features (the target's inputs are excluded automatically)")
    validation: ValidationSpec = Field(
        ValidationSpec(), description="Rules every day's rows must pass before they are used")
    training: TrainingSpec = Field(description="Training window and its holdout")
    variants: list[VariantSpec] = Field(
        min_length=1, description="Model variants trained in parallel, each a candidate")
    gate: GateSpec = Field(GateSpec(), description="Promotion rules")
    ensemble: EnsembleSpec | None = Field(None, description="Optional soft-voting ensemble of the best variants")
    execution: ExecutionSpec = Field(ExecutionSpec(), description="Queues, pools, parallelism and timeouts")
    monitoring: MonitoringSpec = Field(MonitoringSpec(), description="Drift, live quality and retraining")
    serving: ServingSpec = Field(ServingSpec(), description="Online serving: traffic policy, canary, request log")
    access_control: dict[str, list[Literal["read", "edit", "delete", "trigger"]]] = Field(
        {}, description="Airflow roles and what they may do with this pipeline's DAGs (read, edit, delete, trigger); "
                        "none: Airflow's defaults")
    demo: DemoSpec | None = Field(None, description="The window ``make demo`` runs (none: the schedule's dates)")

    @property
    def registered_model(self) -> str:
        return self.model_name or self.name

    @property
    def primary(self) -> str:
        return next(iter(self.sources))

    @property
    def leakage(self) -> set[str]:
        """Columns that must never reach a model: declared exclusions and target inputs."""
        return {*self.exclude, *self.target.inputs, self.target.name}

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        problems: list[str] = []
        first, *others = self.sources.items()
        if first[1].join is not None:
            problems.append(f"sources.{first[0]}.join: the first (primary) source cannot have a join")
        problems += [f"sources.{n}.join: required for every source after the first" for n, s in others if s.join is None]
        problems += [f"sources.{n}.row_number: only the first (primary) source numbers its rows" for n, s in others
                     if s.row_number is not None]
        feats = self.features
        names = feats.all_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"features: listed more than once: {dupes}")
        leaked = sorted(set(names) & self.leakage)
        if leaked:
            problems.append(f"features: {leaked} are excluded (leakage or target inputs) and cannot be features")
        variant_names = [v.name for v in self.variants]
        if len(set(variant_names)) != len(variant_names):
            problems.append("variants: names must be unique")
        for reserved in sorted({"ensemble", "champion"} & set(variant_names)):
            problems.append(f"variants: {reserved!r} is a reserved name (the {reserved} candidate or model)")
        problems += _backend_problems(self.variants, self.target.task)
        problems += _metric_problems(self.gate, self.target.task)
        problems += [f"monitoring.columns: {c!r} is not a feature" for c in self.monitoring.columns or []
                     if c not in names]
        problems += [f"features.history.{h.name}: stat {h.stat!r} is not defined for a {self.target.task} target; "
                     f"choose one of {list(self.target.type.history_stats)}"
                     for h in feats.history if h.stat not in self.target.type.history_stats]
        if self.serving.key is not None and self.serving.key not in self.request_columns:
            problems.append(f"serving.key: {self.serving.key!r} is not a column of a request "
                            f"({sorted(self.request_columns)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def request_columns(self) -> list[str]:
        """What an online request row may hold: the row ids, the partition column and the
        source columns the features read (history keys included)."""
        feats = self.features
        keys = [k for h in feats.history for k in h.group_by]
        return list(dict.fromkeys([*self.row_id, self.partition.column, *feats.numeric, *feats.categorical, *keys]))

    @property
    def serving_key(self) -> str:
        return self.serving.key or self.row_id[0]

    @property
    def monitored_columns(self) -> list[str]:
        mon = self.monitoring
        default = [c for c in self.features.all_names if c not in self.features.calendar]
        return [c for c in (mon.columns or default) if c not in mon.exclude]

    @property
    def target_type(self) -> TargetType:
        return self.target.type

    def metric(self, name: str | None = None) -> Metric:
        """A metric of the table (default: the gate metric)."""
        return metric(name or self.gate.metric)

    @model_validator(mode="before")
    @classmethod
    def _default_gate_metric(cls, data: Any) -> Any:
        """The gate metric defaults to the target type's."""
        task = isinstance(data, dict) and isinstance(data.get("target"), dict) and data["target"].get("task")
        gate = data.get("gate") if isinstance(data, dict) else None
        if task in NAMES and (gate is None or (isinstance(gate, dict) and gate.get("metric") is None)):
            data = {**data, "gate": {**(gate or {}), "metric": target_type(task).default_gate}}
        return data


def _metric_problems(gate: GateSpec, task: str) -> list[str]:
    """The gate metric and the floors are metrics of the target type; the gate's has a
    direction and a bootstrap."""
    problems = []
    found = METRICS.get(gate.metric)
    if found is None or task not in found.targets:
        problems.append(f"gate.metric: {gate.metric!r} is not a {task} metric; choose one of {gate_metrics(task)}")
    elif gate.metric not in gate_metrics(task):
        problems.append(f"gate.metric: {gate.metric!r} has no bootstrap; choose one of {gate_metrics(task)}")
    for name in gate.floors:
        found = METRICS.get(name)
        if found is None or task not in found.targets or not found.ranked:
            problems.append(f"gate.floors.{name}: not a {task} metric")
    return problems


def _backend_problems(variants: list[VariantSpec], task: str) -> list[str]:
    """Each variant's backend is in the backend table, has an operator to train it, and
    knows every hyperparameter the variant sets or searches for this target task."""
    from mlpipe.backends import BACKENDS

    problems = []
    for i, variant in enumerate(variants):
        entry, where = BACKENDS.get(variant.backend), f"variants.{i}"
        if entry is None:
            problems.append(f"{where}.backend: unknown backend {variant.backend!r} (variant {variant.name!r}); "
                            f"registered: {sorted(BACKENDS)}")
            continue
        if not entry.operator:
            problems.append(f"{where}.backend: backend {variant.backend!r} (variant {variant.name!r}) has no "
                            "training operator in mlpipe.backends.BACKENDS, so no DAG task could train it")
        for field, names in (("params", set(variant.params)),
                             ("search.space", set(variant.search.space) if variant.search else set())):
            unknown = entry.unknown_params(task, names)
            if unknown:
                problems.append(f"{where}.{field}: {unknown} are not hyperparameters of backend {variant.backend!r} "
                                f"for a {task} target (variant {variant.name!r}); known: "
                                f"{sorted(entry.params[task])}")
    return problems


# libyaml's loader where PyYAML has it (its wheels do): 14x faster, and every task loads the spec
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a spec file; every bad field is named in one error."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(raw).__name__}")
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise SpecError(f"{path}: invalid pipeline spec:\n" + "\n".join(lines)) from exc


def spec_hash(spec: PipelineSpec) -> str:
    """Stable content hash of a spec, recorded with every model and decision."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
