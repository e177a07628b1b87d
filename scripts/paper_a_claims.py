"""Paper A's claims, task by task, read off a study's records (issue 12): does k-means beat each linear variant at
every bit-width by more than the seeds' spread, how far is 2-bit k-means from FP, where does linear collapse.

    python scripts/paper_a_claims.py results/paper_a_glue_cpu

"Beyond the spread" means the gap of the means exceeds the sum of the two seeds' standard deviations, and is only
claimed where both cells have at least 3 seeds; a single seed is reported as such. A cell "collapsed" when its
predictions take one value (classification) or its Spearman correlation is below 0.1 (regression). The majority
reference is computed from the validation labels in predictions.jsonl: the largest class share for accuracy, the
all-positive F1 for F1, 0 for MCC and correlations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from qbench.report import load_records

ORDERS = ("ft_then_qat", "ptq")
LINEAR = ("linear", "linear/row")


def predictions(path: str) -> pd.DataFrame:
    return pd.read_json(Path(path) / "predictions.jsonl", lines=True)


def majority(fp_path: str, metric: str) -> float:
    """The main metric of always predicting the most common class (F1: always positive), x 100."""
    labels = predictions(fp_path)["label"]
    if metric == "accuracy":
        return 100 * labels.value_counts(normalize=True).max()
    if metric == "f1":
        p = (labels == 1).mean()
        return 100 * 2 * p / (1 + p)
    return 0.0


def collapsed(path: str, metric: str, value: float) -> bool:
    if metric in ("spearman", "pearson"):
        return value < 0.1
    return predictions(path)["prediction"].nunique() == 1


def stats(df: pd.DataFrame) -> tuple[float, float, int]:
    v = 100 * df["value"]
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else float("nan")), len(v)


def show(m: float, s: float, n: int) -> str:
    return f"{m:.1f} ± {s:.1f} (n={n})" if n > 1 else f"{m:.1f} (n=1)"


def verdict(a: tuple, b: tuple) -> str:
    gap = a[0] - b[0]
    if min(a[2], b[2]) < 3:
        return f"{gap:+.1f} (one seed)"
    return f"{gap:+.1f} ({'beyond' if abs(gap) > a[1] + b[1] else 'within'} the spread {a[1] + b[1]:.1f})"


def task_report(df: pd.DataFrame, task: str) -> list[str]:
    t = df[df.task == task]
    fp_rows = t[t.scheme == "none"]
    metric, fp = fp_rows["metric"].iloc[0], stats(fp_rows)
    lines = [f"## {task}: FP {metric} {show(*fp)}, majority {majority(fp_rows['path'].iloc[0], metric):.1f}", "",
             "| order | bits | k-means | k-means − linear | k-means − linear/row | k-means − FP | collapsed |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for order in ORDERS:
        for bits in (1, 2, 3, 4):
            cells = {s: t[(t.scheme == s) & (t.bits == bits) & (t.order == order)] for s in ("kmeans", *LINEAR)}
            if any(c.empty for c in cells.values()):
                continue
            k = stats(cells["kmeans"])
            gone = [s for s, c in cells.items()
                    if all(collapsed(p, metric, v) for p, v in zip(c.path, c.value, strict=True))]  # fmt: skip
            lines.append(f"| {order} | {bits} | {show(*k)} | {verdict(k, stats(cells['linear']))} | "
                         f"{verdict(k, stats(cells['linear/row']))} | {verdict(k, fp)} | "
                         f"{', '.join(gone) or '–'} |")  # fmt: skip
    return [*lines, ""]


def main(argv: list[str]) -> None:
    df = load_records(argv or ["results/paper_a_glue_cpu"])
    df = df[df.order.isin([*ORDERS, None]) | df.order.isna()]
    for task in sorted(df.task.unique()):
        print("\n".join(task_report(df, task)))


if __name__ == "__main__":
    main(sys.argv[1:])
