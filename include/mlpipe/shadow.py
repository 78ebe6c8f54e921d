"""Champion versus shadow-scored challenger on scored days whose labels have arrived.

``python -m mlpipe.shadow --from 2013-10-01 --to 2013-12-31`` (``--to`` inclusive)
joins the predictions partitions with the labels in the features partitions by row id
and reports both models' metrics on the same rows, per (champion, challenger) pair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from mlpipe.context import Context
from mlpipe.predictions import CHALLENGER_SCORE, CHALLENGER_VERSION, MODEL_VERSION, classes_in, scores_of, with_labels


def compare(ctx: Context, start: dt.date, end: dt.date) -> dict:
    """Metrics of ``score`` and ``challenger_score`` on the labelled, shadow-scored rows of [start, end)."""
    spec, target, kind = ctx.spec, ctx.spec.target.name, ctx.spec.target_type
    joined, days = with_labels(ctx.store, spec, start, end)
    if not days:
        return {"days": [], "pairs": []}
    joined = joined[joined[CHALLENGER_VERSION].notna()]
    pairs = []
    for (champion, challenger), rows in joined.groupby([MODEL_VERSION, CHALLENGER_VERSION], sort=True):
        classes = classes_in(rows)  # the champion's: a class the challenger does not know scores 0 for it
        pairs.append({"champion": str(champion), "challenger": str(challenger), "rows": len(rows),
                      "champion_metrics": kind.metrics(rows[target], scores_of(rows, classes), classes),
                      "challenger_metrics": kind.metrics(rows[target], scores_of(rows, classes, CHALLENGER_SCORE),
                                                         classes)})
    return {"days": [str(d) for d in days], "pairs": pairs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlpipe.shadow", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="end", required=True, type=dt.date.fromisoformat, help="last day (inclusive)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pipeline", help="the pipeline's name (default: the only one, when there is one)")
    args = parser.parse_args(argv)
    ctx = Context.for_cli(args.pipeline)
    result = compare(ctx, args.start, args.end + dt.timedelta(days=1))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    metric = ctx.spec.gate.metric
    print(f"{len(result['days'])} scored days; {metric} on labelled rows scored by both")
    for p in result["pairs"]:
        print(f"  champion v{p['champion']}: {p['champion_metrics'].get(metric, float('nan')):.4f}   "
              f"challenger v{p['challenger']}: {p['challenger_metrics'].get(metric, float('nan')):.4f}   "
              f"({p['rows']} rows)")


if __name__ == "__main__":
    main()
