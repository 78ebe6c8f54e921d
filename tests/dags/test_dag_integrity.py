"""DAG integrity: the DAG files import cleanly, stay light at parse time, and give every
pipeline of the pipelines folder its seven DAGs ``<pipeline>__<dag>`` with the settings
the project relies on (retries, tags, failure alerts, timeouts, mapped training, typed
Params, queues, access control). The bundled pipelines are read from the spec files of
include/pipelines, so a spec added there is covered without editing this file.

A bad spec breaks only itself: a real DagBag over a temporary pipelines folder (a good
spec, bad YAML, bad fields, an unknown backend, a reused name) loads the good pipeline's
DAGs and a stand-in per DAG id of each bad file. What runs in-process: ``dag.test()`` of
one stand-in on a migrated metadata DB (its one task fails with the spec error), and the
good pipeline's ``select_*`` task callables (the real train DAG's code, no MLflow).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
DAGS = ("ingest", "ingest_range", "train", "score", "score_range", "monitor", "rollback", "canary")
HEAVY = ["torch", "tensorflow", "mlflow", "great_expectations", "evidently", "sklearn", "pandas", "pyarrow"]
PIPELINES_DIR = ROOT / "include" / "pipelines"
# the bundled pipelines, by the `name` of each spec file (as mlpipe.pipelines.spec_files picks them)
BUNDLED = sorted(yaml.safe_load(p.read_text())["name"] for p in PIPELINES_DIR.iterdir()
                 if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
MLPIPE_ENV = ("MLPIPE_PIPELINES_DIR", "MLPIPE_SPEC", "MLPIPE_GPU_QUEUE", "MLPIPE_GPU_POOL", "MLPIPE_TRAINING_SLOTS")


def _bag(dags_dir: Path = ROOT / "dags"):
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(dags_dir))


@pytest.fixture(scope="module")
def dagbag():
    """The DagBag of dags/ over the default pipelines folder."""
    with pytest.MonkeyPatch.context() as mp:
        for name in MLPIPE_ENV:
            mp.delenv(name, raising=False)
        yield _bag()


@pytest.fixture(scope="module")
def specs(dagbag):  # dagbag: plugins on sys.path
    """``{pipeline name: spec}`` of the default pipelines folder."""
    import mlpipe_dagkit

    with pytest.MonkeyPatch.context() as mp:
        for name in MLPIPE_ENV:
            mp.delenv(name, raising=False)
        found = mlpipe_dagkit.pipelines()
    assert [p.error for p in found if p.error] == []
    return {p.spec.name: p.spec for p in found}


def dags_of(dagbag, pipeline: str) -> dict:
    return {d: dagbag.dags[f"{pipeline}__{d}"] for d in DAGS}


def test_no_import_errors_and_seven_dags_per_bundled_pipeline(dagbag):
    assert BUNDLED, "no spec in include/pipelines"
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {f"{p}__{d}" for p in BUNDLED for d in DAGS}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(path):
    """Each DAG file alone, in a fresh interpreter, over the default pipelines folder."""
    probe = (
        "import importlib.util, json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'plugins')!r}]\n"
        f"spec = importlib.util.spec_from_file_location('probe', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "ids = sorted(k for k, v in vars(module).items() if type(v).__name__ == 'DAG')\n"
        f"print(json.dumps([ids, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in MLPIPE_ENV}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    ids, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert ids == sorted(f"{p}__{path.stem}" for p in BUNDLED)  # the file built every pipeline's DAG
    assert heavy == []


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_every_task_retries_and_every_dag_is_tagged(dagbag, pipeline):
    for name, dag in dags_of(dagbag, pipeline).items():
        assert set(dag.tags) == {"mlpipe", pipeline, name}, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id}"


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_every_task_alerts_on_failure_and_has_the_specs_timeout(dagbag, specs, pipeline):
    from mlpipe_alerts import FailureNotifier

    minutes = specs[pipeline].execution.timeouts
    kind = {"ingest": "ingest", "ingest_range": "ingest", "train": "evaluate", "score": "score", "score_range": "score",
            "monitor": "monitor", "rollback": "rollback", "canary": "canary"}
    for name, dag in dags_of(dagbag, pipeline).items():
        for task in dag.tasks:
            label = f"{dag.dag_id}.{task.task_id}"
            notifiers = [c for c in task.on_failure_callback or [] if isinstance(c, FailureNotifier)]
            assert notifiers, label
            assert all(n.pipeline == pipeline for n in notifiers), label  # the alert names the pipeline
            expected = minutes.train if task.task_id.startswith("train_") else getattr(minutes, kind[name])
            assert task.execution_timeout == dt.timedelta(minutes=expected), label


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_schedules_come_from_the_spec(dagbag, specs, pipeline):
    schedule, dags = specs[pipeline].schedule, dags_of(dagbag, pipeline)
    ingest = dags["ingest"]
    assert ingest.start_date.date() == schedule.start
    assert (ingest.end_date and ingest.end_date.date()) == schedule.end
    assert ingest.catchup is False
    # no end_date on train: Airflow creates no task of a run after it, manual runs included
    assert dags["train"].end_date is None
    assert dags["train"].start_date.date() == schedule.start


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_train_maps_variants_per_backend_and_has_typed_params(dagbag, specs, pipeline):
    from airflow import plugins_manager
    from airflow.serialization.serialized_objects import DagSerialization

    import mlpipe_dagkit

    spec, train = specs[pipeline], dags_of(dagbag, pipeline)["train"]
    families = list(mlpipe_dagkit.training_families(spec))
    assert families, pipeline
    selects = {f"select_{family}" for family in families}
    trained = {f"train_{family}" for family in families}
    assert {t.task_id for t in train.tasks} == {"plan", "collect", "ensemble", "evaluate", *selects, *trained}
    for family in families:
        task = train.get_task(f"train_{family}")
        assert type(task).__name__.endswith("MappedOperator")
        # all selects: every variant is ready at once, so the plan's order (not a race) decides
        assert task.upstream_task_ids == selects
    # scheduled slowest first across backends; a strategy in partial() must survive the
    # scheduler's round trip (Airflow 3.3 stores a strategy object there as its repr)
    restored = DagSerialization.from_dict(DagSerialization.to_dict(train))
    registered = set(plugins_manager.get_priority_weight_strategy_plugins().values())
    for family in families:
        rule = type(restored.get_task(f"train_{family}").weight_rule)
        # the scheduler's copy weighs with the strategy the plugin registered (not a default rule)
        assert rule in registered and rule.__name__ == "PlannedOrder", rule
    assert train.max_active_tasks == mlpipe_dagkit.training_slots(spec)  # one training task per core
    # a failed variant does not stop the evaluation (collect runs when all are done); a failed plan does
    assert train.get_task("collect").upstream_task_ids == trained
    assert train.get_task("collect").trigger_rule == "all_done"
    assert train.get_task("ensemble").upstream_task_ids == {"collect", "plan"}
    assert train.get_task("evaluate").upstream_task_ids == {"collect", "ensemble", "plan"}
    assert train.get_task("ensemble").trigger_rule == train.get_task("evaluate").trigger_rule == "all_success"
    params = train.params
    assert set(params.keys()) == {"window_start", "window_end", "holdout_days", "variants", "dry_run",
                                  "promote_in_backfill"}
    assert params.get_param("dry_run").schema["type"] == "boolean"
    assert params["promote_in_backfill"] is False  # backfills never move the champion by default
    assert params.get_param("window_start").schema["format"] == "date"
    names = [v.name for v in spec.variants]
    variants = params.get_param("variants").schema
    assert variants["examples"] == names and variants["items"]["enum"] == names  # a pick list, validated
    for name in params:
        assert params.get_param(name).description, name


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_train_params_refuse_a_bad_date_and_an_unknown_variant(dagbag, specs, pipeline):
    from airflow.sdk.definitions.param import ParamValidationError

    params, first = dags_of(dagbag, pipeline)["train"].params, specs[pipeline].variants[0].name
    for bad in ({"window_start": "2013-02-30"}, {"window_end": "yesterday"}, {"variants": ["nope"]},
                {"variants": [first, first]}, {"holdout_days": 0}):
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params).update(bad)  # what the trigger form and the REST API check
    good = copy.deepcopy(params)
    good.update({"window_start": "2013-02-01", "variants": [first]})
    assert good.validate()["variants"] == [first]


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_every_dag_and_task_has_docs_for_the_ui(dagbag, pipeline):
    for dag in dags_of(dagbag, pipeline).values():
        assert dag.doc_md and len(dag.doc_md) > 80, dag.dag_id
        for task in dag.tasks:
            assert task.doc_md, f"{dag.dag_id}.{task.task_id}"


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_rollback_is_manual_with_a_validated_version_param(dagbag, pipeline):
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    rollback = dags_of(dagbag, pipeline)["rollback"]
    assert rollback.timetable.can_be_scheduled is False  # manual runs only
    assert rollback.params["version"] == "previous"
    schema = rollback.params.get_param("version").schema
    for good in ("previous", "3", "v12"):
        ParamsDict({"version": Param(good, **schema)}).validate()
    for bad in ("latest", "", "3.1"):
        with pytest.raises(ParamValidationError):
            ParamsDict({"version": Param(bad, **schema)}).validate()


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_features_task_publishes_the_pipelines_asset(dagbag, pipeline):
    task = dags_of(dagbag, pipeline)["ingest"].get_task("build_features")
    assert [o.uri.rstrip("/") for o in task.outlets] == [f"mlpipe://{pipeline}/features"]


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_a_range_ingest_yields_to_the_daily_runs_and_publishes_the_features(dagbag, pipeline, monkeypatch):
    """Its chunk tasks weigh less than every daily ingest task and never take every slot."""
    import mlpipe_dagkit

    dags = dags_of(dagbag, pipeline)
    # a daily task weighs at least its own priority_weight (rule downstream or absolute)
    daily = min(t.priority_weight for t in dags["ingest"].tasks)
    chunks = [dags["ingest_range"].get_task(name) for name in ("validate", "build_features")]
    monkeypatch.delenv("MLPIPE_RANGE_SLOTS", raising=False)
    for task in chunks:
        assert str(getattr(task.weight_rule, "value", task.weight_rule)).endswith("absolute"), task.task_id
        assert task.priority_weight < daily, task.task_id
        assert task.max_active_tis_per_dag == mlpipe_dagkit.range_slots()
    assert [o.uri.rstrip("/") for o in chunks[1].outlets] == [f"mlpipe://{pipeline}/features"]
    assert dags["ingest_range"].get_task("check").upstream_task_ids == {"validate", "build_features"}


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_a_score_range_yields_to_the_daily_runs_and_monitors_after_every_day_is_scored(dagbag, pipeline, monkeypatch):
    import mlpipe_dagkit

    dags = dags_of(dagbag, pipeline)
    daily = min(t.priority_weight for name in ("score", "monitor") for t in dags[name].tasks)
    ranged = dags["score_range"]
    monkeypatch.delenv("MLPIPE_RANGE_SLOTS", raising=False)
    for task in (ranged.get_task("score"), ranged.get_task("monitor")):
        assert str(getattr(task.weight_rule, "value", task.weight_rule)).endswith("absolute"), task.task_id
        assert task.priority_weight < daily, task.task_id
        assert task.max_active_tis_per_dag == mlpipe_dagkit.range_slots()
    assert ranged.get_task("monitor").upstream_task_ids == {"score"}
    assert ranged.get_task("check").upstream_task_ids == {"score", "monitor"}
    assert ranged.timetable.can_be_scheduled is False  # manual runs only
    assert set(ranged.params) == {"start", "end", "chunk_days", "allow_current_champion", "monitor"}


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_the_monitor_is_one_sensor_whose_alias_names_the_retrain_request(dagbag, pipeline):
    """One task start-up a day: the check waits for the scores itself and emits through an alias."""
    monitor = dags_of(dagbag, pipeline)["monitor"]
    (check,) = monitor.tasks
    assert check.task_id == "check" and check.mode == "reschedule"
    (alias,) = check.outlets
    assert alias.name == f"{pipeline}__retrain-request"


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_train_runs_on_its_cron_or_its_own_retrain_request(dagbag, pipeline):
    timetable = dags_of(dagbag, pipeline)["train"].timetable
    assert f"mlpipe://{pipeline}/retrain-request" in str(timetable.asset_condition)
    assert timetable.can_be_scheduled  # the cron part still runs weekly


def test_every_backend_names_an_operator_the_plugins_define(dagbag):  # dagbag: plugins on sys.path
    import mlpipe_operators
    from mlpipe.backends import BACKENDS

    for name, entry in BACKENDS.items():
        assert mlpipe_operators.operator_named(entry.operator, entry.family), name
    with pytest.raises(ValueError, match="names operator 'Nope', which mlpipe_operators does not define"):
        mlpipe_operators.operator_named("Nope", "toy")


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_gpu_backends_run_on_the_specs_gpu_queue_and_pool(dagbag, specs, pipeline):
    import mlpipe_dagkit
    import mlpipe_operators

    spec, train = specs[pipeline], dags_of(dagbag, pipeline)["train"]
    for family, operator in mlpipe_dagkit.training_families(spec).items():
        task = train.get_task(f"train_{family}")
        if issubclass(mlpipe_operators.operator_named(operator, family), mlpipe_operators.GpuTrainOperator):
            assert (task.queue, task.pool) == (spec.execution.gpu_queue, spec.execution.gpu_pool), family
        else:
            assert task.pool == "default_pool", family


def test_gpu_queue_and_pool_are_configurable():
    probe = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'plugins')!r}]\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "import mlpipe_dagkit, mlpipe_operators as ops\n"
        f"bag = DagBag({str(ROOT / 'dags')!r})\n"
        "placed = []\n"
        "for p in mlpipe_dagkit.pipelines():\n"
        "    for family, op in mlpipe_dagkit.training_families(p.spec).items():\n"
        "        if issubclass(ops.operator_named(op, family), ops.GpuTrainOperator):\n"
        "            t = bag.dags[p.spec.name + '__train'].get_task('train_' + family)\n"
        "            placed.append([p.spec.name, family, t.queue, t.pool])\n"
        "print(json.dumps(placed))\n"
    )
    env = {**{k: v for k, v in os.environ.items() if k not in MLPIPE_ENV},
           "MLPIPE_GPU_QUEUE": "cuda_a100", "MLPIPE_GPU_POOL": "a100_slots"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    placed = json.loads(out.stdout.strip().splitlines()[-1])
    assert placed  # the bundled flights pipeline has torch and TensorFlow variants
    assert all(place[2:] == ["cuda_a100", "a100_slots"] for place in placed), placed


# --- access control -----------------------------------------------------------------


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_access_control_is_the_specs_or_airflows_default(dagbag, specs, pipeline):
    """None without the spec's ``access_control``; with it, its roles (the mapping itself: below)."""
    roles = set(specs[pipeline].access_control)
    for dag in dags_of(dagbag, pipeline).values():
        assert (set(dag.access_control) if dag.access_control is not None else None) == (roles or None), dag.dag_id


# --- a bad spec breaks only itself ----------------------------------------------------

GOOD_ACCESS = {"team_a": ["read", "trigger"]}
BAD = {  # file stem -> what its error must name besides the file
    "broken_yaml": ["not valid YAML"],
    "bad_fields": ["training.holdout_days", "training.bogus_key"],
    "bad_backend": ["variants.0.backend", "unknown backend 'no_such_backend'"],
    "good_again": ["name: pipeline 'good' is also the name of", "good.yaml"],
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A pipelines folder with one good spec and four bad ones, and the DagBag of dags/ over it."""
    folder = tmp_path_factory.mktemp("pipelines")
    flights = yaml.safe_load((PIPELINES_DIR / "flights.yaml").read_text())

    def write(stem: str, spec: dict) -> None:
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    write("good", {**flights, "name": "good", "access_control": GOOD_ACCESS})
    (folder / "broken_yaml.yaml").write_text("name: broken\nsources: {flights: [unclosed\n")
    fields = copy.deepcopy(flights)
    fields["name"] = "fields"
    fields["training"].update(holdout_days=-3, bogus_key=1)  # two bad fields in one file
    write("bad_fields", fields)
    backend = copy.deepcopy(flights)
    backend["name"] = "backend"
    backend["variants"][0]["backend"] = "no_such_backend"  # refused after the fields validate
    write("bad_backend", backend)
    write("good_again", {**flights, "name": "good"})  # sorts after good.yaml: the second of the name
    (folder / "README.md").write_text("not a spec")  # ignored
    with pytest.MonkeyPatch.context() as mp:
        for name in MLPIPE_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("MLPIPE_PIPELINES_DIR", str(folder))  # read while the DAG files are parsed
        yield {"folder": folder, "bag": _bag()}


def test_a_bad_spec_breaks_only_itself(mixed):
    bag = mixed["bag"]
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {f"{p}__{d}" for p in ("good", *BAD) for d in DAGS}
    for name in DAGS:
        assert "spec-error" not in bag.dags[f"good__{name}"].tags
        assert set(bag.dags[f"good__{name}"].tags) == {"mlpipe", "good", name}


@pytest.mark.parametrize("stem", BAD)
def test_each_bad_spec_gets_stand_ins_that_name_the_file_and_every_bad_field(mixed, stem):
    path = str(mixed["folder"] / f"{stem}.yaml")
    for name in DAGS:
        dag = mixed["bag"].dags[f"{stem}__{name}"]
        assert set(dag.tags) == {"mlpipe", stem, name, "spec-error"}
        assert [t.task_id for t in dag.tasks] == ["spec_error"]
        assert dag.description.startswith("spec error: ") and "\n" not in dag.description
        for text in (dag.description, dag.doc_md):
            for part in (path, *BAD[stem]):
                assert part in text, (dag.dag_id, part)


def test_the_good_pipeline_of_a_mixed_folder_is_built_whole(mixed, dagbag):
    """Its DAGs are the ones the bundled flights spec gets (good is a copy of it), and
    its train DAG's select tasks run in-process."""
    import mlpipe_dagkit
    from mlpipe.records import Job, Window

    bag = mixed["bag"]
    for name in DAGS:
        good, flights = bag.dags[f"good__{name}"], dagbag.dags[f"flights__{name}"]
        assert {t.task_id for t in good.tasks} == {t.task_id for t in flights.tasks}, name
        assert _params(good) == _params(flights), name
    spec = mlpipe_dagkit.load(mixed["folder"] / "good.yaml")
    window = Window(dt.date(2013, 1, 1), dt.date(2013, 3, 1), dt.date(2013, 4, 1))
    jobs = [Job(v.name, _family(v.backend), window, "live", True).to_dict() for v in spec.variants]
    train = bag.dags["good__train"]
    for family in mlpipe_dagkit.training_families(spec):
        picked = train.get_task(f"select_{family}").python_callable(jobs, family)
        assert picked and all(j["family"] == family for j in picked), family
    assert sum(len(train.get_task(f"select_{f}").python_callable(jobs, f))
               for f in mlpipe_dagkit.training_families(spec)) == len(spec.variants)


def _params(dag) -> dict:
    return {k: (dag.params[k], dag.params.get_param(k).schema) for k in dag.params}


def _family(backend: str) -> str:
    from mlpipe.backends import BACKENDS

    return BACKENDS[backend].family


def test_access_control_reaches_every_dag_of_its_pipeline(mixed):
    bag = mixed["bag"]
    for name in DAGS:
        assert bag.dags[f"good__{name}"].access_control == {"team_a": {"DAGs": {"can_read"},
                                                                       "DAG Runs": {"can_create"}}}, name
        for stem in BAD:
            assert bag.dags[f"{stem}__{name}"].access_control is None


def test_a_stand_in_fails_with_the_spec_error_when_run(mixed, monkeypatch, capfd):
    """``dag.test()`` of one stand-in on a migrated metadata DB (the session's Airflow home)."""
    for name in MLPIPE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLPIPE_PIPELINES_DIR", str(mixed["folder"]))  # dag.test() parses the bundle again
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    run = mixed["bag"].dags["bad_fields__train"].test()
    assert str(run.state) == "failed"
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"spec_error": "failed"}
    out = "".join(capfd.readouterr())
    assert "AirflowFailException" in out
    for part in (str(mixed["folder"] / "bad_fields.yaml"), *BAD["bad_fields"]):
        assert part in out, part
