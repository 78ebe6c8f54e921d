"""docker-compose.yaml: the distributed topology's shape, secrets and queues."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(TEXT)
SERVICES = COMPOSE["services"]
AIRFLOW = {name: s for name, s in SERVICES.items() if name.startswith("airflow-")}
REQUIRED = set(re.findall(r"\$\{(\w+):\?", TEXT))
OVERRIDE_TEXT = (ROOT / "docker-compose.object-storage.yaml").read_text()
DATA_MOUNT = "mlpipe-data:/opt/airflow/data"
STORE_SETTINGS = ("MLPIPE_DATA_ROOT", "MLPIPE_LOCK_URL", "MLPIPE_CACHE_DIR", "MLPIPE_STORAGE_OPTIONS",
                  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


class Tagged(list):
    """A sequence under one of Compose's merge tags (``!override``, ``!reset``)."""

    def __init__(self, tag: str, items: list):
        super().__init__(items)
        self.tag = tag


class ComposeLoader(yaml.SafeLoader):
    """yaml.SafeLoader plus Compose's merge tags, which plain YAML refuses."""


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(
        _tag, lambda loader, node: Tagged(node.tag, loader.construct_sequence(node)
                                          if isinstance(node, yaml.SequenceNode) else []))

OVERRIDE = yaml.load(OVERRIDE_TEXT, Loader=ComposeLoader)


def merged(base: dict, layer: dict) -> dict:
    """``layer`` over ``base`` as Compose merges the keys these files use: mappings key by
    key, a tagged sequence replaces, ``volumes`` merge by their target path, other
    sequences append."""
    out = dict(base)
    for key, value in layer.items():
        old = out.get(key)
        if isinstance(value, Tagged):
            out[key] = [] if value.tag == "!reset" else list(value)
        elif isinstance(value, dict) and isinstance(old, dict):
            out[key] = merged(old, value)
        elif key == "volumes" and isinstance(old, list):
            targets = {v.split(":")[1] for v in value}
            out[key] = [v for v in old if v.split(":")[1] not in targets] + value
        elif isinstance(value, list) and isinstance(old, list):
            out[key] = old + value
        else:
            out[key] = value
    return out


def unset(text: str) -> str:
    """``text`` as Compose resolves it with every optional variable unset: ``${VAR:-x}``
    becomes ``x``, any other reference (required, or ``$${...}`` for the shell) ``<ref>``."""
    reference = re.compile(r"(\$?)\$\{\w+(?:(:?-)([^{}]*)|[^{}]*)\}")
    while (step := reference.sub(lambda m: m[3] if m[2] and not m[1] else "<ref>", text)) != text:
        text = step  # innermost first: a default may hold references
    return text


def queues(service: dict) -> set[str]:
    words = service["command"].split()
    return set(words[words.index("--queues") + 1].split(","))


def test_every_airflow_service_is_there_and_shares_the_common_block():
    assert set(AIRFLOW) == {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                            "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"}
    assert {"postgres", "redis", "mlflow"} <= set(SERVICES)
    common = COMPOSE["x-airflow-common"]
    for name, service in AIRFLOW.items():
        assert service["volumes"] == common["volumes"], name
        assert {k: service["environment"].get(k) for k in common["environment"]} == common["environment"], name
        if name != "airflow-worker-gpu":
            assert service["image"] == common["image"], name
    assert common["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "mlpipe-data:/opt/airflow/data" in common["volumes"]  # one data root for every worker


def test_the_gpu_worker_runs_the_cpu_image_plus_gpu_builds():
    gpu = AIRFLOW["airflow-worker-gpu"]
    assert gpu["build"]["target"] == "gpu" and COMPOSE["x-airflow-common"]["build"]["target"] == "cpu"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM cpu AS gpu$", dockerfile, re.M)
    assert "requirements-gpu.txt" in dockerfile and "pip uninstall -y tensorflow-cpu" in dockerfile
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    gpu_pins = dict(line.split("==") for line in (ROOT / "requirements-gpu.txt").read_text().splitlines()
                    if "==" in line and not line.startswith("#"))
    assert gpu_pins == {"torch": pins["torch"], "tensorflow[and-cuda]": pins["tensorflow_cpu"]}


def test_only_the_gpu_worker_consumes_the_gpu_queue_and_it_reserves_a_gpu():
    assert queues(AIRFLOW["airflow-worker-gpu"]) == {"gpu"}
    assert "gpu" not in queues(AIRFLOW["airflow-worker"])
    devices = AIRFLOW["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "${MLPIPE_GPU_COUNT:-all}", "capabilities": ["gpu"]}]
    assert "deploy" not in AIRFLOW["airflow-worker"]
    assert COMPOSE["x-airflow-common"]["environment"]["MLPIPE_GPU_QUEUE"] == "gpu"


def test_every_secret_comes_from_the_environment():
    secretish = re.compile(r"PASSWORD|SECRET|FERNET|JWT|STORAGE_OPTIONS|ACCESS_KEY")
    for name, service in [*SERVICES.items(), *OVERRIDE["services"].items()]:
        env = service.get("environment") or {}
        for key, value in env.items():
            if secretish.search(key):  # required (${VAR:?message}) or optional with no value (${VAR:-})
                assert re.fullmatch(rf"\$\{{\w+:\?[^}}]+\}}|\$\{{{key}:-\}}", str(value)), \
                    f"{name}: {key} is neither ${{VAR:?message}} nor ${{{key}:-}}"
            for credentials in re.findall(r"//([^@/]*)@", unset(str(value))):  # user:password@ in a URL
                assert credentials.partition(":")[2] in ("", "<ref>"), f"{name}: {key} has a literal password"
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_ADMIN_PASSWORD"} <= REQUIRED
    for text in (TEXT, OVERRIDE_TEXT):
        assert "admin:admin" not in text and "airflow:airflow" not in text


def test_env_example_names_every_required_variable_with_placeholders_only():
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert REQUIRED <= set(example)
    for key in REQUIRED - {"AIRFLOW_UID", "POSTGRES_USER"}:
        assert re.fullmatch(r"<[\w-]+>", example[key]), key
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_mlflow_clients_point_at_the_mlflow_service_and_log_in():
    common = COMPOSE["x-airflow-common"]["environment"]
    assert common["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    server = " ".join(SERVICES["mlflow"]["command"])
    assert "--port 5000" in server and "--serve-artifacts" in server and "postgresql+psycopg2://" in server
    assert "--app-name basic-auth" in server and "MLFLOW_AUTH_CONFIG_PATH" in server
    assert "auth_cache_ttl_seconds" in server  # without it every request re-checks the password hash (~0.3 s)
    assert common["MLFLOW_TRACKING_PASSWORD"] == SERVICES["mlflow"]["environment"]["MLFLOW_ADMIN_PASSWORD"]
    assert "mlflow:5000" in server  # allowed Host header for the workers' requests


def test_long_running_services_have_healthchecks_and_wait_for_healthy_dependencies():
    for name, service in SERVICES.items():
        if name != "airflow-init":
            assert "healthcheck" in service, name
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency == "airflow-init" else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
    init = AIRFLOW["airflow-init"]["environment"]
    assert init["_AIRFLOW_DB_MIGRATE"] == "true" and init["_AIRFLOW_WWW_USER_CREATE"] == "true"


def _compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose() is None, reason="neither `docker compose` nor `docker-compose` is installed")
def test_docker_compose_accepts_the_file_and_refuses_missing_secrets(tmp_path):
    command = _compose()
    ok = subprocess.run([*command, "--env-file", str(ROOT / ".env.example"), "config", "--quiet"], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run([*command, "--env-file", str(empty), "config", "--quiet"], cwd=ROOT,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "in .env" in refused.stderr


def test_make_cluster_runs_the_same_settings_as_the_compose_file(tmp_path, monkeypatch, cluster_script):
    cluster = cluster_script
    monkeypatch.delenv("MLPIPE_ADMIN_PASSWORD", raising=False)
    env = cluster.environment(tmp_path)
    common = COMPOSE["x-airflow-common"]["environment"]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "MLPIPE_GPU_QUEUE"):
        assert env[key] == common[key], key
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / "admin-password").read_text().strip()) >= 12  # generated, never a default
    workers = cluster.services(tmp_path, env)
    assert workers["worker-gpu"][0][workers["worker-gpu"][0].index("--queues") + 1] == "gpu"
    assert workers["worker-default"][0][workers["worker-default"][0].index("--queues") + 1] == "default"
    assert workers["worker-gpu"][1]["MLPIPE_HOSTNAME"] != workers["worker-default"][1]["MLPIPE_HOSTNAME"]


def test_airflow_init_creates_a_viewer_and_an_operator_login_once(tmp_path):
    """The init script, run by bash with the image's commands stubbed: the two logins
    get FAB's Viewer and Op roles; a second run (users exist) still succeeds."""
    init = SERVICES["airflow-init"]
    script = init["command"][1].replace("$$", "$")
    stubs = f'''
        calls={tmp_path / "calls"}
        chown() {{ :; }}
        /entrypoint() {{ echo "entrypoint $*" >> "$calls"; }}
        airflow() {{ echo "airflow $*" >> "$calls"; if grep -q -- "--username $5 " {tmp_path / "made"} 2>/dev/null; then
            echo "user $5 already exist in the db"; return 1; fi; echo "--username $5 " >> {tmp_path / "made"}; }}
    '''
    env = {"PATH": "/usr/bin:/bin", "MLPIPE_GPU_POOL": "gpu", "MLPIPE_GPU_POOL_SLOTS": "1",
           "AIRFLOW_VIEWER_USER": "viewer", "AIRFLOW_VIEWER_PASSWORD": "v-secret",
           "AIRFLOW_OPERATOR_USER": "operator", "AIRFLOW_OPERATOR_PASSWORD": "o-secret"}
    for _ in range(2):
        done = subprocess.run(["bash", "-c", stubs + script], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "entrypoint airflow pools set gpu 1 GPU training slots"
    assert "airflow users create --role Viewer --username viewer --password v-secret" in calls[1]
    assert "airflow users create --role Op --username operator --password o-secret" in calls[2]
    assert len(calls) == 6
    assert {"AIRFLOW_VIEWER_PASSWORD", "AIRFLOW_OPERATOR_PASSWORD"} <= REQUIRED
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")


def test_every_service_runs_every_pipeline_of_the_mounted_folder():
    """No single pipeline: the specs folder (mounted with include/) is the one setting."""
    common = COMPOSE["x-airflow-common"]
    assert common["environment"]["MLPIPE_PIPELINES_DIR"] == "${MLPIPE_PIPELINES_DIR:-/opt/airflow/include/pipelines}"
    assert "./include:/opt/airflow/include" in common["volumes"]
    text = (ROOT / "docker-compose.yaml").read_text() + (ROOT / ".env.example").read_text()
    assert "MLPIPE_SPEC" not in text and "MLPIPE_PIPELINE=" not in text and "MLPIPE_PIPELINE:" not in text


def test_every_airflow_service_gets_the_data_root_locks_cache_and_store_settings():
    """All optional but the data root, and none with a literal value: unset, each means
    what mlpipe.settings says (empty counts as unset), so compose passes them all."""
    common = COMPOSE["x-airflow-common"]["environment"]
    for name, service in AIRFLOW.items():
        assert set(STORE_SETTINGS) <= set(service["environment"]), name
    assert common["MLPIPE_DATA_ROOT"] == "${MLPIPE_DATA_ROOT:-/opt/airflow/data}"  # the volume's mount point
    for key in ("MLPIPE_CACHE_DIR", "MLPIPE_STORAGE_OPTIONS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_ENDPOINT_URL"):
        assert common[key] == f"${{{key}:-}}", key
    # an empty AWS_DEFAULT_REGION makes botocore build the endpoint https://s3..amazonaws.com
    assert re.fullmatch(r"\$\{AWS_DEFAULT_REGION:-[a-z]+-[a-z]+-\d\}", common["AWS_DEFAULT_REGION"])


def test_locks_default_to_the_compose_postgres_airflow_database():
    """Advisory locks on the database every Airflow service already reaches: they hold
    across workers with the shared volume or without it."""
    common = COMPOSE["x-airflow-common"]["environment"]
    lock = common["MLPIPE_LOCK_URL"]
    assert lock.startswith("${MLPIPE_LOCK_URL:-postgresql://") and lock.endswith("@postgres/airflow}")
    default = lock[len("${MLPIPE_LOCK_URL:-"):-1]
    airflow_db = common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert default == airflow_db.replace("postgresql+psycopg2://", "postgresql://")  # SQLAlchemy's psycopg2 default
    assert "${POSTGRES_PASSWORD:?" in default


def test_the_object_storage_override_drops_the_data_volume_from_every_service():
    services = OVERRIDE["services"]
    assert set(services) == {*AIRFLOW, "mlpipe-serving"}  # a misspelt name would add a service, not change one
    common = COMPOSE["x-airflow-common"]
    for name, layer in services.items():
        assert isinstance(layer["volumes"], Tagged) and layer["volumes"].tag == "!override", name
        result = merged(SERVICES[name], layer)
        assert result["volumes"] == [v for v in common["volumes"] if v != DATA_MOUNT], name
        env = result["environment"]
        assert env["MLPIPE_DATA_ROOT"].startswith("${MLPIPE_DATA_ROOT:?"), name  # a bucket URL, no local default
        assert env["MLPIPE_LOCK_URL"] == common["environment"]["MLPIPE_LOCK_URL"], name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name  # the base settings stay
    every = {name: merged(service, services.get(name, {})) for name, service in SERVICES.items()}
    assert not [name for name, s in every.items() if any("mlpipe-data" in str(v) for v in s.get("volumes", []))]
    # the merge model tells a plain list (appended: the volume would stay) from the tag
    plain = yaml.safe_load(OVERRIDE_TEXT.replace("!override", ""))["services"]["airflow-worker"]
    assert DATA_MOUNT in merged(SERVICES["airflow-worker"], plain)["volumes"]


def test_airflow_init_owns_the_data_volume_only_where_it_is_mounted(tmp_path):
    script = SERVICES["airflow-init"]["command"][1].replace("$$", "$").replace("/opt/airflow", str(tmp_path))
    script = script[:script.index("/entrypoint")]  # the ownership lines only
    stub = f'chown() {{ echo "$*" >> {tmp_path / "chowned"}; }}\n'
    (tmp_path / "logs").mkdir()
    for mounted in (False, True):
        if mounted:
            (tmp_path / "data").mkdir()
        (tmp_path / "chowned").unlink(missing_ok=True)
        done = subprocess.run(["bash", "-c", stub + script], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        owned = {line.split()[-1] for line in (tmp_path / "chowned").read_text().splitlines()}
        assert owned == {str(tmp_path / "logs"), *([str(tmp_path / "data")] if mounted else [])}


def test_env_example_shows_both_data_root_setups_as_optional_lines():
    lines = (ROOT / ".env.example").read_text().splitlines()
    optional = dict(line[2:].split("=", 1) for line in lines if re.match(r"# [A-Z_]+=", line))
    for key in ("MLPIPE_DATA_ROOT", "MLPIPE_LOCK_URL", "MLPIPE_CACHE_DIR", "MLPIPE_STORAGE_OPTIONS",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "COMPOSE_FILE"):
        assert key in optional, key
    assert optional["MLPIPE_DATA_ROOT"].startswith("s3://")
    assert optional["COMPOSE_FILE"].split()[0] == "docker-compose.yaml:docker-compose.object-storage.yaml"
    assert not [line for line in lines if re.match(r"(MLPIPE_(DATA|LOCK|CACHE|STORAGE)|AWS)_", line)]  # the volume stays the default
    for key in ("AWS_SECRET_ACCESS_KEY", "MLPIPE_LOCK_URL"):
        assert "<" in optional[key], key  # placeholders, never a credential


@pytest.mark.skipif(_compose() is None, reason="neither `docker compose` nor `docker-compose` is installed")
def test_docker_compose_accepts_the_object_storage_override(tmp_path):
    env = tmp_path / "store.env"
    env.write_text((ROOT / ".env.example").read_text() + "MLPIPE_DATA_ROOT=s3://bucket/mlpipe\n")
    files = ["-f", "docker-compose.yaml", "-f", "docker-compose.object-storage.yaml"]
    done = subprocess.run([*_compose(), "--env-file", str(env), *files, "config", "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mlpipe-data" not in str([s.get("volumes") for s in json.loads(done.stdout)["services"].values()])


def test_the_serving_app_runs_the_common_settings_its_token_and_a_health_check():
    serving = SERVICES["mlpipe-serving"]
    assert serving["command"] == "python -m mlpipe.serving --host 0.0.0.0 --port 8000"
    env = serving["environment"]
    common = COMPOSE["x-airflow-common"]["environment"]
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD", "MLPIPE_PIPELINES_DIR", *STORE_SETTINGS):
        assert env[key] == common[key], key  # the registry, the specs and the data root the DAGs use
    assert env["MLPIPE_SERVING_TOKEN"].startswith("${MLPIPE_SERVING_TOKEN:?")  # no token, no start
    assert DATA_MOUNT in serving["volumes"] and "8000:8000" in serving["ports"]
    assert "http://localhost:8000/healthz" in serving["healthcheck"]["test"]
    assert serving["depends_on"]["mlflow"] == {"condition": "service_healthy"}
