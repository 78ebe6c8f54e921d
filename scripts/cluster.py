"""The docker-compose topology as plain processes on this machine.

    python scripts/cluster.py up      # make cluster
    python scripts/cluster.py down    # make cluster-down: stops exactly what `up` started
    eval "$(python scripts/cluster.py env)"   # point the airflow CLI at the cluster
    python scripts/cluster.py stop mlflow     # stop / start one service (a restart, an outage drill)

Starts an MLflow tracking server (Postgres backend store, served artifacts, basic-auth:
every client logs in with the generated ``mlpipe`` login), the
api-server, scheduler, dag-processor and triggerer, and two Celery workers with distinct
hostnames: ``<host>-default`` consumes the ``default`` queue, ``<host>-gpu`` only
``gpu``. They run CeleryExecutor against the local Postgres (the cluster's two databases
are created if missing) and Redis. The DAG files and spec are the ones ``make demo``
uses. State (secrets, logs, pids, data) lives under ``MLPIPE_CLUSTER_DIR`` (default
``.cluster``).

Settings (environment): MLPIPE_CLUSTER_NAME (database-name prefix, default ``mlpipe``),
MLPIPE_PG_URL (server, default ``postgresql://postgres@127.0.0.1:5432``), MLPIPE_REDIS_URL
(broker, default ``redis://127.0.0.1:6379/0``), MLPIPE_AIRFLOW_PORT (8080),
MLPIPE_MLFLOW_PORT (5000), MLPIPE_WORKER_CONCURRENCY (2), MLPIPE_GPU_WORKER_CONCURRENCY
(1), MLPIPE_GPU_POOL_SLOTS (1), MLPIPE_CLUSTER_DATA_ROOT (``<dir>/data``; or an object
store URL such as ``s3://bucket/mlpipe``, its credentials in the store's usual environment
variables), MLPIPE_LOCK_URL (default: the cluster's Airflow database, so locks hold across
workers with no shared disk), MLPIPE_ADMIN_USER (``admin``), MLPIPE_ADMIN_PASSWORD
(default: generated, written to ``<dir>/admin-password``). Each worker keeps its caches
in its own folder (``<dir>/cache-<worker>``): workers share no directory.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = socket.gethostname()
ROLES = (("viewer", "Viewer"), ("operator", "Op"))  # logins besides the admin: FAB's built-in roles
MLFLOW_USER = "mlpipe"


def cluster_dir() -> Path:
    return Path(os.environ.get("MLPIPE_CLUSTER_DIR") or ROOT / ".cluster").resolve()


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _secrets(state: Path) -> dict:
    """Keys and logins generated once per cluster directory, never committed (mode 0600)."""
    from cryptography.fernet import Fernet

    path = state / "secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    wanted = {"fernet": lambda: Fernet.generate_key().decode(), "jwt": lambda: secrets.token_urlsafe(32),
              "api": lambda: secrets.token_urlsafe(32), "mlflow_secret": lambda: secrets.token_urlsafe(32),
              "mlflow_password": lambda: secrets.token_urlsafe(16), "serving_token": lambda: secrets.token_urlsafe(24),
              "admin_password": lambda: os.environ.get("MLPIPE_ADMIN_PASSWORD") or secrets.token_urlsafe(12),
              "logins": lambda: {user: secrets.token_urlsafe(12) for user, _ in ROLES}}
    missing = {k: make() for k, make in wanted.items() if k not in values}
    if missing or not path.exists():
        values.update(missing)
        _private(path, json.dumps(values))
        _private(state / "admin-password", values["admin_password"] + "\n")
        _private(state / "logins.json", json.dumps(values["logins"], indent=2))
    return values


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _mlflow_auth(state: Path) -> Path:
    """The MLflow server's basic-auth config: its admin is the login every client uses."""
    path = state / "mlflow-auth.ini"
    _private(path, "[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{state / 'mlflow-auth.db'}\n"
                   f"admin_username = {MLFLOW_USER}\nadmin_password = {_secrets(state)['mlflow_password']}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   # verified logins are cached for 5 minutes: checking the password hash costs ~0.3 s
                   # of CPU per request, which tripled a train run's MLflow-heavy tasks
                   "auth_cache_ttl_seconds = 300\n")
    return path


def environment(state: Path) -> dict[str, str]:
    """Every process's environment: the same settings as docker-compose.yaml's common block."""
    name, pg = _setting("MLPIPE_CLUSTER_NAME", "mlpipe"), _setting("MLPIPE_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    api_port, mlflow_port = _setting("MLPIPE_AIRFLOW_PORT", "8080"), _setting("MLPIPE_MLFLOW_PORT", "5000")
    keys = _secrets(state)
    airflow_db = f"{pg.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}_airflow"
    return {
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__API__SECRET_KEY": keys["api"],
        "AIRFLOW__API__PORT": api_port,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CELERY__BROKER_URL": _setting("MLPIPE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg}/{name}_airflow",
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "mlpipe_celery.CELERY_CONFIG",  # preloads before the pool forks
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",  # as the Makefile: shorter hops between tasks
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{api_port}/execution/",
        # two workers on one host: each names itself (the task instances' hostname)
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlpipe_hostname.hostname",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")])),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": keys["mlflow_password"],
        "MLPIPE_DATA_ROOT": _setting("MLPIPE_CLUSTER_DATA_ROOT", str(state / "data")),
        "MLPIPE_LOCK_URL": _setting("MLPIPE_LOCK_URL", f"{pg}/{name}_airflow"),  # advisory locks
        "MLPIPE_CACHE_DIR": str(state / "cache-scheduler"),  # this host's; each worker has its own below
        "MLPIPE_GPU_QUEUE": "gpu",
        "MLPIPE_GPU_POOL": _setting("MLPIPE_GPU_POOL", "gpu"),
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLPIPE_SERVING_PORT": _setting("MLPIPE_SERVING_PORT", "8000"),
        # which pipelines: the folder's specs (default include/pipelines), or just MLPIPE_SPEC
        **{k: os.environ[k] for k in ("MLPIPE_PIPELINES_DIR", "MLPIPE_SPEC") if os.environ.get(k)},
    }


def _ensure_databases(names: list[str]) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{_setting('MLPIPE_PG_URL', 'postgresql://postgres@127.0.0.1:5432')}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in names:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


def services(state: Path, env: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (command, extra environment), in start order."""
    name, pg = _setting("MLPIPE_CLUSTER_NAME", "mlpipe"), _setting("MLPIPE_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    mlflow_port = env["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1]
    worker = [str(BIN / "airflow"), "celery", "worker", "--skip-serve-logs", "--without-mingle", "--without-gossip"]
    return {
        "mlflow": ([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                    "--port", mlflow_port, "--workers", "1",
                    "--backend-store-uri", f"{pg.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}_mlflow",
                    "--serve-artifacts", "--artifacts-destination", str(state / "mlflow-artifacts")],
                   {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # GenAI job runners: unused here
                    "MLFLOW_AUTH_CONFIG_PATH": str(_mlflow_auth(state)),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": _secrets(state)["mlflow_secret"]}),
        "api-server": ([str(BIN / "airflow"), "api-server", "--port", env["AIRFLOW__API__PORT"]], {}),
        "scheduler": ([str(BIN / "airflow"), "scheduler"], {}),
        "dag-processor": ([str(BIN / "airflow"), "dag-processor"], {}),
        "triggerer": ([str(BIN / "airflow"), "triggerer"], {}),
        "worker-default": ([*worker, "--queues", "default", "--celery-hostname", f"default@{HOST}",
                            "--concurrency", _setting("MLPIPE_WORKER_CONCURRENCY", "2")],
                           {"MLPIPE_HOSTNAME": f"{HOST}-default", "MLPIPE_CACHE_DIR": str(state / "cache-default")}),
        "worker-gpu": ([*worker, "--queues", "gpu", "--celery-hostname", f"gpu@{HOST}",
                        "--concurrency", _setting("MLPIPE_GPU_WORKER_CONCURRENCY", "1")],
                       {"MLPIPE_HOSTNAME": f"{HOST}-gpu", "MLPIPE_CACHE_DIR": str(state / "cache-gpu")}),
        "serving": ([str(BIN / "python"), "-m", "mlpipe.serving", "--host", "127.0.0.1",
                     "--port", env["MLPIPE_SERVING_PORT"]],
                    {"MLPIPE_SERVING_TOKEN": _secrets(state)["serving_token"],
                     "MLPIPE_CACHE_DIR": str(state / "cache-serving")}),
    }


def _airflow(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([str(BIN / "airflow"), *args], env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _wait(what: str, ready, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise SystemExit(f"{what} not ready after {timeout:.0f}s (logs: {cluster_dir() / 'logs'})")
        time.sleep(1)


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _wait_workers(env: dict[str, str], timeout: float = 180) -> None:
    """One process pings until both workers answer (a process per ping would import
    Airflow each second, on the cores the starting workers need)."""
    code = ("import sys, time\n"
            "from airflow.providers.celery.executors.celery_executor import app\n"
            f"want, deadline = {{'default@{HOST}', 'gpu@{HOST}'}}, time.time() + {timeout}\n"
            "while want - {h for r in app.control.ping(timeout=1) for h in r}:\n"
            "    if time.time() > deadline: sys.exit(1)\n"
            "    time.sleep(1)\n")
    if subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}).returncode != 0:
        raise SystemExit(f"celery workers not ready after {timeout:.0f}s (logs: {cluster_dir() / 'logs'})")


# argv: the logins as JSON [[user, role, password], ...], the GPU pool's name and slots.
# FAB's security manager is what `airflow users create` calls; an existing login is kept.
ACCOUNTS = """
import json, sys
from airflow.models.pool import Pool
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:
    for user, role, password in json.loads(sys.argv[1]):
        if appbuilder.sm.find_user(username=user) is None:
            added = appbuilder.sm.add_user(user, user, "mlpipe", f"{user}@localhost", appbuilder.sm.find_role(role),
                                           password=password)
            if not added:
                sys.exit(f"could not create the login {user}")
Pool.create_or_update_pool(sys.argv[2], int(sys.argv[3]), "GPU training slots", include_deferred=False)
"""


def up() -> int:
    state = cluster_dir()
    if (state / "pids.json").exists() and any(map(group_alive, json.loads((state / "pids.json").read_text()).values())):
        raise SystemExit(f"a cluster from {state} is running: python scripts/cluster.py down first")
    (state / "pids.json").unlink(missing_ok=True)  # stale: nothing of it runs
    (state / "logs").mkdir(parents=True, exist_ok=True)
    env = environment(state)
    name = _setting("MLPIPE_CLUSTER_NAME", "mlpipe")
    _ensure_databases([f"{name}_airflow", f"{name}_mlflow"])
    _airflow(env, "db", "migrate")
    admin = _setting("MLPIPE_ADMIN_USER", "admin")
    logins = [(admin, "Admin", _secrets(state)["admin_password"])]
    logins += [(user, role, _secrets(state)["logins"][user]) for user, role in ROLES]
    # One process for the logins and the pool, beside the services' start: an airflow CLI
    # call per login costs seconds of imports each on a loaded two-core machine.
    accounts = subprocess.Popen([sys.executable, "-c", ACCOUNTS, json.dumps(logins), env["MLPIPE_GPU_POOL"],
                                 _setting("MLPIPE_GPU_POOL_SLOTS", "1")], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for service in services(state, env):
            start(service)
        _wait("api-server", lambda: _answers(f"http://localhost:{env['AIRFLOW__API__PORT']}/api/v2/version"))
        _wait_workers(env)
        _wait("serving", lambda: _answers(f"http://127.0.0.1:{env['MLPIPE_SERVING_PORT']}/healthz"))
        output = accounts.communicate()[0]
        if accounts.returncode != 0:
            raise SystemExit(f"creating the logins and the GPU pool failed:\n{output}")
    except BaseException:
        accounts.kill()
        down()
        raise
    print(f"cluster up: Airflow http://localhost:{env['AIRFLOW__API__PORT']} (login {admin}, password in "
          f"{state / 'admin-password'}; a viewer and an operator login in {state / 'logins.json'}), MLflow {env['MLFLOW_TRACKING_URI']}, serving "
          f"http://127.0.0.1:{env['MLPIPE_SERVING_PORT']} (token in {state / 'secrets.json'}), logs {state / 'logs'}")
    return 0


def _pids() -> dict[str, int]:
    path = cluster_dir() / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def start(service: str) -> int:
    """Start one service (each leads its own process group) and record its pid."""
    state = cluster_dir()
    env = environment(state)
    command, extra = services(state, env)[service]
    pids = _pids()
    if service in pids and group_alive(pids[service]):
        raise SystemExit(f"{service} is running (pid {pids[service]})")
    with open(state / "logs" / f"{service}.log", "ab") as log:
        proc = subprocess.Popen(command, env={**os.environ, **env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ROOT)
    (state / "pids.json").write_text(json.dumps({**pids, service: proc.pid}))
    if service == "mlflow":
        _wait("mlflow", lambda: _answers(f"{env['MLFLOW_TRACKING_URI']}/health"))
    return 0


def stop(service: str) -> int:
    """Stop one service's process group (SIGTERM, then SIGKILL after 30 s)."""
    pids = _pids()
    if service not in pids:
        raise SystemExit(f"{service} was not started from {cluster_dir()}")
    _stop_groups([pids[service]])
    return 0


def _stop_groups(pgids: list[int]) -> None:
    for pid in pgids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while any(map(group_alive, pgids)) and time.time() < deadline:
        time.sleep(0.5)
    for pid in pgids:
        _signal_group(pid, signal.SIGKILL)


def down() -> int:
    """Stop the process groups `up` started (SIGTERM, then SIGKILL after 30 s)."""
    path = cluster_dir() / "pids.json"
    if not path.exists():
        print("no cluster running")
        return 0
    pids = json.loads(path.read_text())
    _stop_groups(list(pids.values()))
    path.unlink()
    print(f"cluster down: stopped {', '.join(pids)}")
    return 0


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group (each service leads its own); whether it exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "env", "start", "stop"])
    parser.add_argument("service", nargs="?", help="start / stop: one service (mlflow, scheduler, worker-gpu, ...)")
    args = parser.parse_args()
    command = args.command
    if command in ("start", "stop"):
        if not args.service:
            parser.error(f"{command} needs a service name")
        return (start if command == "start" else stop)(args.service)
    if command == "env":
        state = cluster_dir()
        state.mkdir(parents=True, exist_ok=True)
        print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in environment(state).items()))
        return 0
    return up() if command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
