"""A classifier pipeline's holdout figures against two baselines on the same holdout rows:
the majority class (every row scored with the training split's class shares) and a plain
scikit-learn model (one-hot categories, imputed numbers, HistGradientBoostingClassifier
with its defaults, on the spec's features). Reads the feature partitions a demo or train run left behind and the latest
train run's candidates from the ledger; trains nothing through the pipeline.

    .venv/bin/python bench/baselines.py --pipeline pizza   (after make demo PIPELINE=pizza)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from mlpipe import ledger  # noqa: E402
from mlpipe.context import Context, load_split  # noqa: E402


def _plain_sklearn(spec, train, y_train, holdout) -> np.ndarray:
    """scikit-learn alone on the spec's features: one-hot categories and imputed numbers
    into a HistGradientBoostingClassifier with its defaults."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    feats = spec.features
    numeric, categorical = [*feats.numeric, *feats.derived_numeric], list(feats.categorical)
    model = make_pipeline(
        make_column_transformer((SimpleImputer(), numeric),
                                (OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)),
        HistGradientBoostingClassifier(random_state=0))
    features = [*numeric, *categorical]
    astext = {c: str for c in categorical}
    model.fit(train[features].astype(astext), y_train)
    return model.predict_proba(holdout[features].astype(astext))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default="pizza")
    args = parser.parse_args()
    ctx = Context.for_cli(args.pipeline)
    spec, kind = ctx.spec, ctx.spec.target_type
    entry = next((e for e in ledger.newest_first(ctx.store) if e.kind == "train"), None)
    if entry is None or not kind.classifier:
        raise SystemExit(f"{args.pipeline}: needs a classifier pipeline with a train run in its ledger (make demo)")
    train, holdout, _ = load_split(ctx, entry.window)
    target = spec.target.name
    classes = kind.classes(train[target], spec.target.classes)
    y_train, y = kind.encode(train[target], classes), kind.encode(holdout[target], classes)
    if kind.has_classes:
        shares = np.bincount(y_train, minlength=len(classes)) / len(y_train)
        majority = np.tile(shares, (len(y), 1))
    else:
        majority = np.full(len(y), y_train.mean())
    proba = _plain_sklearn(spec, train, y_train, holdout)
    rows = {"majority class": kind.metrics(holdout[target], majority, classes),
            "plain sklearn HGB": kind.metrics(holdout[target], proba if kind.has_classes else proba[:, 1], classes),
            **{f"pipeline: {n}": c["metrics"] for n, c in entry.candidates.items()}}
    cols = list(kind.headline)
    print(f"{args.pipeline}: holdout {entry.window.holdout_start} .. {entry.window.end} (exclusive), {len(y)} rows, "
          f"train run {entry.run_id} (champion v{entry.champion_after})")
    print(f"  {'model':<26}" + "".join(f"{c:>10}" for c in cols))
    for name, m in rows.items():
        print(f"  {name:<26}" + "".join(f"{m.get(c, float('nan')):>10.4f}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
