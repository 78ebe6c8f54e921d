"""Start the Airflow UI (standalone: api-server, scheduler, dag-processor, triggerer; auth
on) and the MLflow UI on the same stores the demo uses. Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    port = os.environ.get("MLPIPE_AIRFLOW_PORT", "8080")
    mlflow_port = os.environ.get("MLPIPE_MLFLOW_PORT", "5000")
    os.environ.setdefault("AIRFLOW__API__PORT", port)
    os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{port}/execution/")
    # an admin, a viewer (sees runs and reports, triggers nothing) and an operator (runs DAGs)
    os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,operator:op")
    artifacts = os.environ.get("MLPIPE_ARTIFACTS", "mlflow/artifacts")
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    pool = os.environ.get("MLPIPE_GPU_POOL", "gpu")
    subprocess.run([str(BIN / "airflow"), "pools", "set", pool, os.environ.get("MLPIPE_GPU_POOL_SLOTS", "2"),
                    "GPU training slots"], check=True, capture_output=True)
    procs = [
        subprocess.Popen([str(BIN / "airflow"), "standalone"], start_new_session=True),
        subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", os.environ["MLFLOW_TRACKING_URI"],
                          "--default-artifact-root", Path(artifacts).resolve().as_uri(), "--port", mlflow_port],
                         start_new_session=True),
    ]
    passwords = home / "simple_auth_manager_passwords.json.generated"
    for _ in range(120):
        if passwords.exists():
            break
        time.sleep(1)
    login = json.loads(passwords.read_text()) if passwords.exists() else {}
    print(f"\nAirflow UI: http://localhost:{port}  login: " +
          ", ".join(f"{u} / {p}" for u, p in login.items()) if login else f"\nAirflow UI: http://localhost:{port}")
    print(f"MLflow UI:  http://localhost:{mlflow_port}\nCtrl-C stops both.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop both on kill/timeout too
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
