"""GPU check of the torch and TensorFlow backends, for a GPU worker.

    .venv/bin/python bench/gpu_check.py [--days 60] [--no-install]

On a machine with an NVIDIA GPU (``nvidia-smi`` lists one) it first installs the GPU
requirements (requirements-gpu.txt: CUDA builds of torch and TensorFlow in place of the
CPU ones; ``--no-install`` skips that). It ingests ``--days`` days of the bundled spec
into a scratch data root, then trains the spec's torch and TensorFlow variants (dry
run, local MLflow store) on the GPU and on the CPU (each in its own process, the CPU one
with ``CUDA_VISIBLE_DEVICES=""``), and prints each variant's fit time on both, the
speed-up and the device the run recorded in MLflow (tag ``mlpipe.device``). Without a
GPU it says so and trains on the CPU only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST = dt.date(2013, 1, 1)


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def install_gpu_requirements() -> None:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "tensorflow-cpu"], check=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements-gpu.txt")], check=True)


def ingest(days: int) -> None:
    from mlpipe.context import Context
    from mlpipe.steps import STEPS

    ctx = Context.of("flights")
    for i in range(days):
        day = FIRST + dt.timedelta(days=i)
        for step in ("extract_day", "validate_day", "build_day_features"):
            STEPS[step](ctx, day)


def train(days: int) -> list[dict]:
    """Train the neural variants in this process; what MLflow recorded for each."""
    from mlpipe.context import Context
    from mlpipe.steps import STEPS

    ctx = Context.of("flights")
    neural = [v.name for v in ctx.spec.variants if v.backend in ("torch_mlp", "tensorflow_mlp")]
    jobs = STEPS["plan_training"](ctx, FIRST + dt.timedelta(days=days), window_start=FIRST, holdout_days=7,
                                  variants=neural, dry_run=True)
    out = []
    for job in jobs:
        candidate = STEPS["train_variant"](ctx, job, {"mlpipe.step": "gpu_check"})
        run = ctx.tracking.client.get_run(candidate.run_id)
        out.append({"variant": job.variant, "fit_seconds": candidate.fit_seconds,
                    "device": run.data.tags.get("mlpipe.device"), "roc_auc": candidate.metrics.get("roc_auc")})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=60, help="days of 2013 to ingest and train on")
    parser.add_argument("--no-install", action="store_true", help="do not install requirements-gpu.txt")
    parser.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)  # the per-device child
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "include"))
    if args.train_only:
        print(json.dumps(train(args.days)))
        return 0
    gpu = gpu_name()
    print(f"GPU: {gpu}" if gpu else "no NVIDIA GPU found (nvidia-smi lists none): training on the CPU only")
    if gpu and not args.no_install:
        install_gpu_requirements()
    work = Path(tempfile.mkdtemp(prefix="mlpipe-gpu-check-"))
    os.environ.update({"MLPIPE_DATA_ROOT": str(work / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                       "MLPIPE_ARTIFACTS": str(work / "artifacts"), "GX_ANALYTICS_ENABLED": "false"})
    ingest(args.days)
    results = {}
    for device in (["gpu"] if gpu else []) + ["cpu"]:
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
        done = subprocess.run([sys.executable, __file__, "--train-only", "--days", str(args.days)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"training on {device} failed:\n{done.stderr[-4000:]}")
        results[device] = {r["variant"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])}
    print(f"{'variant':<18}{'device (MLflow)':<18}{'fit s':>8}{'cpu fit s':>11}{'speed-up':>10}{'roc_auc':>9}")
    for name, cpu in results["cpu"].items():
        fast = results.get("gpu", {}).get(name)
        shown = fast or cpu
        speed = f"{cpu['fit_seconds'] / fast['fit_seconds']:.2f}x" if fast else "-"
        print(f"{name:<18}{shown['device']:<18}{shown['fit_seconds']:>8.1f}{cpu['fit_seconds']:>11.1f}{speed:>10}"
              f"{shown['roc_auc']:>9.4f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
