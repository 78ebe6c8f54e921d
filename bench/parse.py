"""DAG processor parse time of the DAGs folder for 1, 5 and 20 specs, and its growth per spec.

    .venv/bin/python bench/parse.py [--specs 1,5,20] [--runs 5]

The pipelines folder (``MLPIPE_PIPELINES_DIR``, a temp folder per size) holds N copies
of the bundled include/pipelines/*.yaml, round-robin, each with its own name (the
``name`` field and the file stem). Each run is a fresh interpreter that does what Airflow
3's DAG processor does: the parent (the manager) has imported Airflow and pre-imports
each file's Airflow modules (``_pre_import_airflow_modules``), then forks one child per
DAG file, which runs the processor's ``_parse_file``: the stability check, a
``BundleDagBag`` of that file (importing the project's modules, loading and validating
every spec, building the DAGs) and the serialization of its DAGs. Timed per file: fork
to the child's exit. Not timed: interpreter start-up, the manager's import of Airflow,
sending the result to the manager and writing it to the DB. Runs alternate the sizes.

Prints per size the median (of ``--runs``) of the folder's total (the sum over the DAG
files: the processor runs ``parsing_processes`` of them side by side, so the total is
the work, not the wall time of a cycle), each file's median, the increment per extra
spec (least-squares slope over the sizes), the 1->5 and 5->20 slopes (linear: the
second at most 1.25x the first + 0.02 s, the noise of a shared machine), the target verdict (linear, <= 0.3 s per extra spec,
no heavy module) and the heavy modules found in any child's ``sys.modules`` after parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

HEAVY = ["torch", "tensorflow", "mlflow", "great_expectations", "evidently", "sklearn", "pandas", "pyarrow"]
TARGET_PER_SPEC = 0.3  # seconds per extra spec
NAME = re.compile(r"^name:\s*(\S+)", re.M)
LINEAR, SLACK = 1.25, 0.02  # linear: the larger sizes' slope at most 1.25x the smaller sizes' + 0.02 s/spec (noise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", default="1,5,20", help="pipelines folder sizes (default 1,5,20)")
    parser.add_argument("--runs", type=int, default=5, help="runs per size (default 5)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a DAGs folder: parse it as the processor does
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(Path(args.worker))))
        return 0
    sizes = sorted({int(s) for s in args.specs.split(",")})
    home = harness.setup("mlpipe-bench-parse-")
    folders = {n: _pipelines(home / f"pipelines-{n}", n) for n in sizes}
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for i in range(args.runs):
        for n in sizes if i % 2 == 0 else sizes[::-1]:
            runs[n].append(_run(home / "dags", folders[n]))
            print(f"  run {i + 1}/{args.runs}, {n:2d} specs: {runs[n][-1]['total']:.2f}s", flush=True)
    return _report(runs)


def _pipelines(folder: Path, n: int) -> Path:
    """``n`` copies of the bundled specs, round-robin, each named ``<name>_<i>`` (file stem too)."""
    bundled = sorted(p for p in (harness.ROOT / "include" / "pipelines").iterdir()
                     if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    folder.mkdir(parents=True)
    for i in range(n):
        source = bundled[i % len(bundled)]
        text = source.read_text()
        name = NAME.search(text).group(1) + f"_{i:02d}"
        (folder / f"{name}.yaml").write_text(NAME.sub(f"name: {name}", text, count=1))
    return folder


def _run(dags: Path, pipelines: Path) -> dict:
    """One fresh interpreter parsing the DAGs folder over ``pipelines``."""
    env = {**os.environ, "MLPIPE_PIPELINES_DIR": str(pipelines)}
    env.pop("MLPIPE_SPEC", None)
    out = subprocess.run([sys.executable, __file__, "--worker", str(dags)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, one in result["files"].items():
        if one.get("failed") or one["import_errors"]:
            raise SystemExit(f"{name} did not parse: {one.get('failed') or one['import_errors']}")
    return result


def _worker(dags: Path) -> dict:
    """In a fresh interpreter: the manager's imports, then per DAG file a forked child
    running the processor's ``_parse_file``."""
    started = time.perf_counter()
    import structlog
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file, _pre_import_airflow_modules

    log = structlog.get_logger("bench.parse")
    manager_import = time.perf_counter() - started
    files = {}
    for path in sorted(dags.glob("*.py")):
        _pre_import_airflow_modules(os.fspath(path), log)
        read, write = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the processor's child: parse, serialize, report, exit
            os.close(read)
            os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "client"
            try:
                request = DagFileParseRequest(file=os.fspath(path), bundle_path=dags, bundle_name="dags-folder")
                result = _parse_file(request, log)
                found = {"dags": len(result.serialized_dags), "import_errors": result.import_errors,
                         "heavy": sorted(m for m in HEAVY if m in sys.modules)}
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                found = {"failed": repr(exc)}
            with os.fdopen(write, "w") as pipe:
                pipe.write(json.dumps(found))
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            found = json.loads(pipe.read() or '{"failed": "no result"}')
        os.waitpid(pid, 0)
        files[path.name] = {**found, "seconds": time.perf_counter() - start}
    return {"manager_import": manager_import, "files": files, "total": sum(f["seconds"] for f in files.values()),
            "dags": sum(f.get("dags", 0) for f in files.values())}


def _slope(points: list[tuple[int, float]]) -> float:
    mean_x, mean_y = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    return (sum((x - mean_x) * (y - mean_y) for x, y in points) /
            sum((x - mean_x) ** 2 for x, _ in points))


def _report(runs: dict[int, list[dict]]) -> int:
    sizes = sorted(runs)
    med = {n: statistics.median(r["total"] for r in runs[n]) for n in sizes}
    names = sorted(runs[sizes[0]][0]["files"])
    print(f"\nDAG processor parse time of dags/ (sum over its {len(names)} files, fork to exit; medians of "
          f"{len(runs[sizes[0]])} runs; the manager's Airflow import, median "
          f"{statistics.median(r['manager_import'] for rs in runs.values() for r in rs):.2f}s, not included):")
    print(f"  {'specs':>5} {'DAGs':>5} {'total':>8}  " + "  ".join(f"{n[:-3]:>8}" for n in names))
    for n in sizes:
        per_file = [statistics.median(r["files"][name]["seconds"] for r in runs[n]) for name in names]
        print(f"  {n:5d} {runs[n][0]['dags']:5d} {med[n]:7.2f}s  " + "  ".join(f"{s:7.2f}s" for s in per_file))
    heavy = sorted({m for rs in runs.values() for r in rs for f in r["files"].values() for m in f["heavy"]})
    if len(sizes) < 2:
        print(f"  heavy modules after parsing: {', '.join(heavy) or 'none'}")
        return 0 if not heavy else 1
    slope = _slope([(n, med[n]) for n in sizes])
    steps = [(a, b, (med[b] - med[a]) / (b - a)) for a, b in zip(sizes, sizes[1:], strict=False)]
    linear = all(later <= LINEAR * max(first, 0.0) + SLACK
                 for (_, _, first), (_, _, later) in zip(steps, steps[1:], strict=False))
    print(f"  per extra spec (least-squares slope): {slope:.3f}s (target <= {TARGET_PER_SPEC}s)")
    print("  slopes: " + ", ".join(f"{a}->{b} {s:.3f}s/spec" for a, b, s in steps) +
          f" ({'linear' if linear else 'NOT linear'}: each at most {LINEAR}x the one before + {SLACK}s)")
    print(f"  heavy modules after parsing: {', '.join(heavy) or 'none'}")
    met = slope <= TARGET_PER_SPEC and linear and not heavy
    print(f"  target (linear, <= {TARGET_PER_SPEC}s per extra spec, no heavy import): {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
