"""Start the Airflow UI (standalone: api-server, scheduler, dag-processor, triggerer; auth
on) and the MLflow UI on the same stores the demo uses, print their URLs and logins, and
stop everything it started on Ctrl-C, SIGTERM, SIGHUP or when its parent (make) dies.

Ports: MLPIPE_AIRFLOW_PORT (8080), MLPIPE_MLFLOW_PORT (5000)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
STOP_GRACE_S = 20


class Stop(Exception):
    """A signal asked us to stop."""


def _on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent (make) dies, so a SIGTERM to `make up` stops us too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status < 500
    except Exception:  # noqa: BLE001 - not up yet
        return False


def start(port: str, mlflow_port: str) -> list[subprocess.Popen]:
    """Airflow standalone and the MLflow UI, each leading its own process group."""
    artifacts = os.environ.get("MLPIPE_ARTIFACTS", "mlflow/artifacts")
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    pool = os.environ.get("MLPIPE_GPU_POOL", "gpu")
    subprocess.run([str(BIN / "airflow"), "pools", "set", pool, os.environ.get("MLPIPE_GPU_POOL_SLOTS", "2"),
                    "GPU training slots"], check=True, capture_output=True)
    return [
        subprocess.Popen([str(BIN / "airflow"), "standalone"], start_new_session=True),
        subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", os.environ["MLFLOW_TRACKING_URI"],
                          "--default-artifact-root", Path(artifacts).resolve().as_uri(), "--host", "127.0.0.1",
                          "--port", mlflow_port, "--workers", "1"],
                         env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # GenAI job runners
                         start_new_session=True),
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group, SIGKILL what is left after STOP_GRACE_S."""
    groups = [p.pid for p in procs]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + STOP_GRACE_S
        while sig == signal.SIGTERM and time.time() < deadline and any(_alive(g) for g in groups):
            time.sleep(0.5)
    for p in procs:
        p.wait(timeout=STOP_GRACE_S)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _announce(home: Path, port: str, mlflow_port: str) -> None:
    passwords = home / "simple_auth_manager_passwords.json.generated"
    deadline = time.time() + 180
    while time.time() < deadline and not (passwords.exists() and _answers(f"http://localhost:{port}/api/v2/version")):
        time.sleep(1)
    login = json.loads(passwords.read_text()) if passwords.exists() else {}
    logins = ", ".join(f"{user} / {password}" for user, password in login.items())
    print(f"\nAirflow UI: http://localhost:{port}" + (f"  logins: {logins}" if logins else ""), flush=True)
    print(f"  (viewer sees runs, logs and reports; operator also triggers and backfills; passwords in {passwords})")
    print(f"MLflow UI:  http://localhost:{mlflow_port}\nCtrl-C stops both.", flush=True)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)
    _die_with_parent()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # standalone starts `airflow ...`
    home = Path(os.environ["AIRFLOW_HOME"])
    port = os.environ.get("MLPIPE_AIRFLOW_PORT", "8080")
    mlflow_port = os.environ.get("MLPIPE_MLFLOW_PORT", "5000")
    os.environ.setdefault("AIRFLOW__API__PORT", port)
    os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{port}/execution/")
    # an admin, a viewer (sees runs and reports, triggers nothing) and an operator (runs DAGs)
    os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,operator:op")
    procs: list[subprocess.Popen] = []
    try:
        procs = start(port, mlflow_port)
        _announce(home, port, mlflow_port)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a service exited; stopping the others", file=sys.stderr)
    except Stop as why:
        print(f"\n{why}: stopping", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
