"""Paired bootstrap speed: the vectorised weighted metrics against scikit-learn's
``sample_weight`` implementations (the baseline), measured in the same run.

    .venv/bin/python bench/bootstrap.py [--rows 85000] [--models 8] [--resamples 1000] [--repeats 3]

Prints the median wall time of each and their ratio. The default shape is the flights
demo's evaluation: about 85k holdout rows (October to December 2013), 6 variants plus
the ensemble plus the champion. The baseline runs on a tenth of the resamples and is
scaled up (it is linear in them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from mlpipe.bootstrap import paired_bootstrap, resample_weights  # noqa: E402
from mlpipe.metrics import metric  # noqa: E402


def baseline(y, scores, resamples, seed):
    from sklearn.metrics import roc_auc_score

    for weights in resample_weights(len(y), resamples, seed):
        for s in scores.values():
            for w in weights:
                roc_auc_score(y, s, sample_weight=w)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=85_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=args.rows).astype("float64")
    scores = {f"m{i}": np.clip(0.2 * y + rng.uniform(0, 0.8, args.rows), 0, 1) for i in range(args.models)}
    fast, slow = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        paired_bootstrap(metric("roc_auc"), y, scores, "m0", args.resamples, seed=r)
        fast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        baseline(y, scores, args.resamples // 10, seed=r)
        slow.append((time.perf_counter() - t0) * 10)
    f, s = statistics.median(fast), statistics.median(slow)
    print(f"{args.rows} rows x {args.models} models x {args.resamples} resamples, roc_auc, median of {args.repeats}")
    print(f"  vectorised weighted metric: {f:.1f} s")
    print(f"  sklearn sample_weight loop: {s:.1f} s (from {args.resamples // 10} resamples x 10)")
    print(f"  speed-up: {s / f:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
