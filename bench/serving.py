"""Online serving latency and throughput: our serving process (``python -m
mlpipe.serving``: source-shaped rows, features from the online snapshot) against
``mlflow models serve`` of the same registered version (``--env-manager local``: nothing
fetched; it takes the model's feature rows), on this machine, in one invocation.

    .venv/bin/python bench/serving.py [--pipeline flights] [--requests 300] [--rounds 3]   (after make demo)

Prints p50 and p99 latency of one-row requests at concurrency 1, 8 and 32 (keep-alive
connections, one per client thread) and rows per second for 1,000-row batches, each the
median of ``--rounds`` rounds in which the two servers take turns (targets
for the HGB champion: p50 <= 5 ms and p99 <= 20 ms at concurrency 1; throughput at least
MLflow's). Uses the Makefile's data root and MLflow store (run it as ``make`` sets them:
``.venv/bin/python`` with MLPIPE_DATA_ROOT, MLFLOW_TRACKING_URI and MLPIPE_ARTIFACTS, or
their defaults below).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # mlflow runs uvicorn from PATH
    env.setdefault("MLPIPE_DATA_ROOT", str(ROOT / "data"))
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}")
    env.setdefault("MLPIPE_ARTIFACTS", str(ROOT / "mlflow" / "artifacts"))
    return env


class Target:
    """A server process and how to post a body to it."""

    def __init__(self, name: str, args: list[str], path: str, headers: dict, ready: str, env: dict):
        self.name, self.path, self.headers, self.port = name, path, headers, _port()
        self.log = open(Path(tempfile.gettempdir()) / f"bench-serving-{name}.log", "wb")
        self.proc = subprocess.Popen([*args, *self._port_args()], env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", ready)
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"{name} did not become ready: see {self.log.name}")

    def _port_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def post(self, conn: http.client.HTTPConnection, body: bytes) -> None:
        conn.request("POST", self.path, body=body, headers=self.headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{self.name}: {answer.status} {data[:300]!r}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def latencies(target: Target, body: bytes, clients: int, requests: int) -> list[float]:
    """Seconds per request, ``requests`` in all from ``clients`` threads at once."""
    out: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
        mine = []
        for _ in range(n):
            started = time.perf_counter()
            target.post(conn, body)
            mine.append(time.perf_counter() - started)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=client, args=(max(1, requests // clients),)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bodies(pipeline: str) -> tuple[dict, dict]:
    """One-row and 1,000-row request bodies for each server, from the demo's last scored
    day: its raw rows for ours, their feature rows (the pyfunc's input) for MLflow."""
    sys.path.insert(0, str(ROOT / "include"))
    from mlpipe.context import Context

    ctx = Context.of(pipeline)
    day = max(ctx.store.days("predictions", ctx.spec.schedule.start, ctx.spec.demo.end + dt.timedelta(days=1)))
    raw = json.loads(ctx.store.read("raw", day).to_json(orient="records", date_format="iso"))
    feats = ctx.store.read("features", day)
    columns = [*ctx.spec.features.numeric, *ctx.spec.features.derived_numeric, *ctx.spec.features.categorical]
    frame = feats[columns].astype({c: "float64" for c in feats[columns].select_dtypes("number").columns})
    split = json.loads(frame.to_json(orient="split", index=False))

    def mlflow(rows: int) -> bytes:
        data = [split["data"][i % len(split["data"])] for i in range(rows)]
        return json.dumps({"dataframe_split": {"columns": split["columns"], "data": data}}).encode()

    def ours(rows: int) -> bytes:
        return json.dumps({"rows": [raw[i % len(raw)] for i in range(rows)]}).encode()

    return {"ours": ours(1), "mlflow": mlflow(1)}, {"ours": ours(1000), "mlflow": mlflow(1000)}


def measure(target: Target, one: bytes, batch: bytes, requests: int, batches: int) -> dict[str, float]:
    """One round's figures for a server: p50 and p99 (ms) per concurrency, rows/s of batches."""
    out = {}
    for clients in (1, 8, 32):
        lat = latencies(target, one, clients, requests)
        out[f"c{clients}_p50"], out[f"c{clients}_p99"] = quantile(lat, 0.5) * 1000, quantile(lat, 0.99) * 1000
    out["rows_s"] = 1000 / statistics.median(latencies(target, batch, 1, batches))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default="flights")
    parser.add_argument("--requests", type=int, default=300, help="one-row requests per concurrency level")
    parser.add_argument("--batches", type=int, default=10, help="1,000-row requests")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the servers taking turns; medians printed")
    args = parser.parse_args()
    env = {**_env(), "MLPIPE_SERVING_INSECURE": "1", "MLPIPE_SERVING_POLL_SECONDS": "3600"}
    one, batch = bodies(args.pipeline)
    from mlpipe.pipelines import spec_file

    env.setdefault("MLPIPE_SPEC", str(spec_file(args.pipeline)))  # serve only it: readiness needs no other's champion
    json_headers = {"Content-Type": "application/json"}
    targets = {
        "ours": Target("ours", [str(BIN / "python"), "-m", "mlpipe.serving"], f"/v1/{args.pipeline}/predict",
                       json_headers, "/readyz", env),
        "mlflow": Target("mlflow", [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{args.pipeline}@champion",
                                    "--env-manager", "local", "--host", "127.0.0.1"], "/invocations", json_headers,
                         "/ping", env),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        for target in targets.values():  # warm up
            latencies(target, one[target.name], 1, 20)
        for _ in range(args.rounds):
            for name, target in targets.items():
                rounds[name].append(measure(target, one[name], batch[name], args.requests, args.batches))
    finally:
        for target in targets.values():
            target.stop()
    figures = {name: {k: statistics.median(r[k] for r in done) for k in done[0]} for name, done in rounds.items()}
    print(f"{args.pipeline}: one-row requests, p50 / p99 latency, {args.requests} per level; medians of "
          f"{args.rounds} rounds")
    print(f"  {'server':<8}" + "".join(f"{f'c={c}':>22}" for c in (1, 8, 32)) + f"{'1,000-row batches':>22}")
    for name, got in figures.items():
        cells = [f"{got[f'c{c}_p50']:8.2f} / {got[f'c{c}_p99']:7.2f} ms" for c in (1, 8, 32)]
        print(f"  {name:<8}" + "".join(f"{c:>22}" for c in cells) + f"{got['rows_s']:13.0f} rows/s".rjust(22))
    ours, theirs = figures["ours"], figures["mlflow"]
    print(f"  ours / mlflow: p50 at c=1 {ours['c1_p50'] / theirs['c1_p50']:.2f}, "
          f"throughput {ours['rows_s'] / theirs['rows_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
