"""Claims as data, each checked by a bootstrap over seeds and evaluation examples (`qbench claims`).

A claims file (YAML) lists claims; each names two arms by record fields, in the `--where FIELD=VALUE` vocabulary of
`qbench table` (model, task, scheme, bits, order, seed... or dotted config keys), and a direction:

    alpha: 0.05                       # optional (default 0.05)
    claims:
      - label: "{task} QAT 2b: k-means > linear"
        each: {task: [sst2, cola]}    # optional: one claim per value (per combination); {task} is replaced by
        where: {task: "{task}", order: ft_then_qat, bits: 2}   # it in label, where, a, b; where: both arms' fields
        a: {scheme: kmeans}
        b: {scheme: linear}           # a key set to null drops a shared condition (FP: {scheme: none, bits: null});
        direction: ">"                # 'majority' is the constant most-common-label predictor on a's examples
                                      # (regression: the mean label, correlation 0)
        threshold: 0                  # optional: the claim is (a - b) > threshold ('<': a - b < threshold)

Each arm must match one configuration (its seeds are the records). The metric is the task's main metric in the
units of `qbench table` (x 100 for scores, perplexity as is), recomputed from each record's predictions.jsonl
(classification: label and prediction per example; language models: nll, scored tokens and correct tokens per
window) and checked against the record's own value.

The test, per claim (`compare`): a crossed bootstrap. Each of `resamples` replicates draws the evaluation examples
with replacement (the same draw for both arms and every seed: all are scored on the same validation examples) and
the seeds with replacement (paired: the same seed draw for both arms, over the seeds both arms have; two arms with
no seed in common are drawn independently, unpaired), and recomputes the effect, mean over drawn seeds of a's metric
minus b's. With one seed the seed draw is trivial and only the examples' sampling noise is measured. The effect is
the point estimate on the data as they are; the interval is the percentile interval of the replicates at 1 - alpha
(unadjusted); p is two-sided, for effect = threshold: 2 x the smaller share of replicates on either side of the
threshold, each share counted as (k + 1) / (R + 1) so that p is never 0, capped at 1. The p-values of one file are
adjusted together by Holm-Bonferroni (`holm`). Verdict: 'holds' when the adjusted p < alpha and the effect is on the
claimed side of the threshold, 'does not hold' when the adjusted p < alpha and it is on the other side, 'not enough
evidence' otherwise. A claim of `kind: correlation` (keys label, x, optional y (default: metric), where,
direction) is Spearman's rho between two record values over the configurations matching `where` (seeds averaged),
with scipy's p and a percentile interval from resampling the configurations (`correlate`). Every claim draws from
its own generator, seeded by (seed, CRC-32 of its label), so adding a claim leaves the others' numbers unchanged.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qbench.errors import QbenchError
from qbench.report import PERCENT, distinguishing, load_records, where

ALPHA, RESAMPLES, SEED = 0.05, 10_000, 0
CHUNK = 1000  # replicates drawn at a time: (CHUNK, examples) weight matrices
REGRESSION = ("pearson", "spearman")  # metrics of a score, not a class
KEYS = ("idx", "window", "dialog", "turn")  # what identifies an example in predictions.jsonl (kind by kind)
LM = ("perplexity", "loss", "token_accuracy")  # from per-window sums: nll, scored, correct
CLAIM_KEYS = {"label", "each", "where", "a", "b", "direction", "threshold", "kind", "x", "y"}


@dataclass(frozen=True)
class Claim:
    """One claim: arms a and b as FIELD=VALUE conditions (b may be 'majority'), (a - b) `direction` `threshold`;
    or (kind 'correlation') Spearman's rho between two record values x and y over the configurations matching a,
    rho `direction` 0."""

    label: str
    a: tuple[str, ...]
    b: tuple[str, ...] | str
    direction: str = ">"
    threshold: float = 0.0
    kind: str = "difference"
    x: str = ""
    y: str = "metric"

    def __post_init__(self) -> None:
        if self.direction not in (">", "<"):
            raise QbenchError(f"claim {self.label!r}: direction {self.direction!r}; valid: '>', '<'")
        if self.kind not in ("difference", "correlation") or (self.kind == "correlation") != bool(self.x):
            raise QbenchError(f"claim {self.label!r}: kind {self.kind!r}; valid: difference (a, b), correlation "
                              "(x, optional y and where)")  # fmt: skip


@dataclass
class Arm:
    """One configuration's evaluation, seed by seed: per seed, per-example columns aligned on `keys`."""

    name: str
    metric: str
    keys: list
    data: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # seed -> {label, prediction} or LM sums

    @property
    def seeds(self) -> list[int]:
        return sorted(self.data)

    def collapsed(self, seeds: list[int]) -> str:
        """'one class' where every seed's predictions take one value (a collapsed classifier), 'constant' for a
        regression (pearson, spearman: a single score), else ''."""
        cols = [self.data[s] for s in seeds]
        if not all("prediction" in c and len(np.unique(c["prediction"])) == 1 for c in cols):
            return ""
        return "constant" if self.metric in REGRESSION else "one class"


# ---- claims files ----


def conditions(spec: dict) -> tuple[str, ...]:
    """{'scheme': 'kmeans', 'bits': 2, 'order': None} -> ('bits=2', 'scheme=kmeans'): null drops a condition."""
    return tuple(f"{k}={v}" for k, v in sorted(spec.items()) if v is not None)


def fill(spec: dict, values: dict) -> dict:
    """spec with every '{name}' in its string values replaced by values[name] (an `each` combination)."""
    return {k: v.format(**values) if isinstance(v, str) else v for k, v in spec.items()}


def parse_claims(text: str) -> tuple[list[Claim], float]:
    """The claims of a YAML claims file (module docstring), `each` expanded; and its alpha."""
    import yaml

    doc = yaml.safe_load(text) or {}
    claims = []
    for c in doc.get("claims") or []:
        unknown, needs = set(c) - CLAIM_KEYS, {"label", "x"} if c.get("kind") == "correlation" else {"label", "a", "b"}
        if unknown or not needs <= set(c):
            raise QbenchError(f"claim {c.get('label')!r}: needs {', '.join(sorted(needs))}; unknown keys "
                              f"{sorted(unknown)}; valid: {', '.join(sorted(CLAIM_KEYS))}")  # fmt: skip
        each = c.get("each") or {}
        for values in itertools.product(*each.values()):
            fixed = dict(zip(each, values, strict=True))
            shared = fill(c.get("where") or {}, fixed)
            a, b = (x if x == "majority" else conditions({**shared, **fill(x, fixed)})
                    for x in (c.get("a") or {}, c.get("b") or {}))  # fmt: skip
            claims.append(Claim(str(c["label"]).format(**fixed), a, b, str(c.get("direction", ">")),
                                float(c.get("threshold", 0.0)), c.get("kind", "difference"), c.get("x", ""),
                                c.get("y", "metric")))  # fmt: skip
    labels = [c.label for c in claims]
    if len(set(labels)) < len(labels):
        raise QbenchError(f"claims with the same label: {sorted({x for x in labels if labels.count(x) > 1})}")
    return claims, float(doc.get("alpha", ALPHA))


# ---- arms from records ----


def scale(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


def read_predictions(path: Path, split: str) -> pd.DataFrame:
    """A run's predictions.jsonl rows of one split, sorted by their example keys."""
    f = path / "predictions.jsonl"
    if not f.is_file():
        raise QbenchError(f"{path}: no predictions.jsonl; claims need the run's predictions (save_predictions=true)")
    rows = pd.read_json(f, lines=True)
    rows = rows[rows["split"] == split] if "split" in rows else rows
    keys = [k for k in KEYS if k in rows.columns]
    return rows.sort_values(keys).reset_index(drop=True)


def load_arm(df: pd.DataFrame, conds: tuple[str, ...]) -> Arm:
    """The records matching every condition, which must be one configuration, as an Arm (values checked)."""
    rows = where(df, list(conds))
    if rows["config_key"].nunique() > 1:
        fields = distinguishing(list({k: c for k, c in zip(rows["config_key"], rows["config"], strict=True)}.values()))
        raise QbenchError(f"{' '.join(conds)} matches {rows['config_key'].nunique()} configurations; "
                          f"tell them apart with {', '.join(fields)}")  # fmt: skip
    if rows["seed"].duplicated().any():  # records without a config: their fields alone tell them apart
        raise QbenchError(f"{' '.join(conds)} matches several records of one seed ({len(rows)} records); add "
                          "conditions (scheme=..., bits=..., order=...)")  # fmt: skip
    arm = Arm(" ".join(conds), rows["metric"].iloc[0], [])
    for _, r in rows.sort_values("seed").iterrows():
        preds = read_predictions(Path(r["path"]), r["split"])
        keys = preds[[k for k in KEYS if k in preds.columns]].values.tolist()
        if arm.keys and keys != arm.keys:
            raise QbenchError(f"{r['path']}: its examples differ from the other seeds' of {arm.name}")
        cols = ("nll", "scored", "correct") if arm.metric in LM else ("label", "prediction")
        missing = [c for c in cols if c not in preds.columns]
        if missing:
            raise QbenchError(f"{r['path']}: metric {arm.metric}: predictions.jsonl lacks {missing}")
        arm.keys, arm.data[int(r["seed"])] = keys, {c: preds[c].to_numpy() for c in cols}
        got = float(values(arm.metric, np.ones((1, len(keys))), arm.data[int(r["seed"])])[0])
        if not math.isclose(got, r["value"] * scale(arm.metric), rel_tol=1e-6, abs_tol=1e-9):
            raise QbenchError(f"{r['path']}: {arm.metric} from predictions.jsonl is {got}, the record says "
                              f"{r['value'] * scale(arm.metric)}")  # fmt: skip
    return arm


def majority(arm: Arm) -> Arm:
    """The constant predictor of the most common label (ties: the smaller) on arm's examples, at arm's seeds.
    Regression (pearson, spearman): the mean label, a constant whose correlation scores 0 (`correlation`)."""
    if arm.metric not in ("accuracy", "f1", "matthews", "pearson", "spearman"):
        raise QbenchError(f"majority: a constant predictor has no {arm.metric}; compare against another arm")
    out = Arm("majority", arm.metric, arm.keys)
    for s, cols in arm.data.items():
        labels, kinds = cols["label"], np.unique(cols["label"])
        if arm.metric in REGRESSION:
            top = labels.astype(np.float64).mean()
        else:
            top = kinds[np.argmax([(labels == k).sum() for k in kinds])]
        out.data[s] = {"label": labels, "prediction": np.full(len(labels), top)}
    return out


# ---- statistics ----


def weighted_ranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(R, N) ranks of x within each row's resample, w (R, N) = how often each example was drawn: ties (equal x,
    and copies of one example) share their average rank, as scipy.stats.rankdata does. Integer w: exact."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    start = np.r_[True, xs[1:] != xs[:-1]]
    ends = np.r_[np.flatnonzero(start)[1:], len(x)] - 1
    group = np.empty(len(x), dtype=np.int64)
    group[order] = np.cumsum(start) - 1  # (N,) tie group of each example
    upto = np.cumsum(w[:, order], axis=1)[:, ends]  # (R, G) weight up to each group's end
    size = np.diff(upto, axis=1, prepend=0.0)
    return (upto - (size - 1) / 2)[:, group]


def correlation(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation per row of w (R, N); x, y (N,) or (R, N); 0 where a side is constant."""
    n = w.sum(1)
    mx, my = (w * x).sum(1) / n, (w * y).sum(1) / n
    dx, dy = x - mx[:, None], y - my[:, None]
    cov, vx, vy = (w * dx * dy).sum(1), (w * dx * dx).sum(1), (w * dy * dy).sum(1)
    den = np.sqrt(vx * vy)
    return np.divide(cov, den, out=np.zeros_like(cov), where=den > 0)


def values(metric: str, w: np.ndarray, cols: dict[str, np.ndarray], cache: dict | None = None) -> np.ndarray:
    """The metric (table units) of each resample: w (R, N) counts how often each example is drawn (ones: the
    data as they are). Same definitions as qbench.tasks.metric (scikit-learn, scipy) and the generative kinds.
    `cache` (one per w) keeps the labels' ranks, shared by every arm and seed."""
    if metric in LM:
        nll, scored, correct = (w @ cols[c].astype(np.float64) for c in ("nll", "scored", "correct"))
        out = {"perplexity": np.exp(nll / scored), "loss": nll / scored, "token_accuracy": correct / scored}[metric]
        return out * scale(metric)
    y, p = cols["label"], cols["prediction"]
    n = w.sum(1)
    if metric == "accuracy":
        out = w @ (p == y).astype(np.float64) / n
    elif metric == "f1":  # binary, positive class 1; 0 when nothing is positive (scikit-learn's zero_division)
        tp, fp, fn = (w @ m.astype(np.float64) for m in ((p == 1) & (y == 1), (p == 1) & (y != 1), (p != 1) & (y == 1)))
        den = 2 * tp + fp + fn
        out = np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)
    elif metric == "matthews":  # scikit-learn's multiclass form; 0 when either side is constant
        k = np.union1d(y, p)
        t, q = w @ (y[:, None] == k).astype(np.float64), w @ (p[:, None] == k).astype(np.float64)
        c = w @ (p == y).astype(np.float64)
        den = np.sqrt((n * n - (q * q).sum(1)) * (n * n - (t * t).sum(1)))
        out = np.divide(c * n - (t * q).sum(1), den, out=np.zeros_like(den), where=den > 0)
    elif metric == "pearson":
        out = correlation(w, y.astype(np.float64), p.astype(np.float64))
    elif metric == "spearman":
        cache = {} if cache is None else cache
        key = y.tobytes()
        if key not in cache:
            cache[key] = weighted_ranks(w, y.astype(np.float64))
        out = correlation(w, cache[key], weighted_ranks(w, p.astype(np.float64)))
    else:
        raise QbenchError(f"claims: metric {metric!r} has no bootstrap here; valid: accuracy, f1, matthews, "
                          f"pearson, spearman, {', '.join(LM)}")  # fmt: skip
    return out * scale(metric)


def draws(rng: np.random.Generator, r: int, n: int) -> np.ndarray:
    """(r, n) float counts: how often each of n items is drawn in each of r resamples of size n."""
    idx = rng.integers(0, n, size=(r, n)) + n * np.arange(r)[:, None]
    return np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)


def compare(a: Arm, b: Arm, threshold: float = 0.0, resamples: int = RESAMPLES, alpha: float = ALPHA,
            rng: np.random.Generator | None = None) -> dict:  # fmt: skip
    """Effect (mean over seeds of a's metric minus b's), its bootstrap interval at 1 - alpha and two-sided p for
    effect = threshold (module docstring), paired over the seeds both arms have, else unpaired."""
    if a.keys != b.keys:
        raise QbenchError(f"{a.name} and {b.name} are not scored on the same examples")
    rng = rng or np.random.default_rng(SEED)
    common = sorted(set(a.seeds) & set(b.seeds))
    sa, sb = (common, common) if common else (a.seeds, b.seeds)
    n = len(a.keys)
    ones = np.ones((1, n))
    mean = lambda arm, seeds, w, c=None: np.stack([values(arm.metric, w, arm.data[s], c) for s in seeds], 1)  # noqa: E731
    mean_a, mean_b = float(mean(a, sa, ones).mean()), float(mean(b, sb, ones).mean())
    out = []
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        w = draws(rng, r, n)  # one draw of the examples for both arms and every seed
        ca = draws(rng, r, len(sa))
        cb, cache = ca if common else draws(rng, r, len(sb)), {}
        out.append((ca * mean(a, sa, w, cache)).sum(1) / len(sa) - (cb * mean(b, sb, w, cache)).sum(1) / len(sb))
    d = np.concatenate(out)
    below, above = int((d <= threshold).sum()), int((d >= threshold).sum())
    p = min(1.0, 2 * min(below + 1, above + 1) / (resamples + 1))
    low, high = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    seeds = f"{len(common)} paired" if len(common) > 1 else "1" if common else f"{len(sa)} | {len(sb)} unpaired"
    return {"mean_a": mean_a, "mean_b": mean_b, "effect": mean_a - mean_b, "low": float(low), "high": float(high),
            "p": p, "seeds": seeds, "collapsed": (a.collapsed(sa), b.collapsed(sb))}  # fmt: skip


def correlate(df: pd.DataFrame, claim: Claim, resamples: int, alpha: float, rng: np.random.Generator) -> dict:
    """Spearman's rho between record values claim.x and claim.y (qbench.report.values_of: metric, effective_bits,
    metrics.SPLIT.NAME, homogeneity.PART.MEASURE) over the configurations matching claim.a, each the mean over its
    seeds; p from scipy.stats.spearmanr, the interval from resampling the configurations (percentile)."""
    from scipy.stats import spearmanr

    from qbench.report import values_of

    rows = where(df, list(claim.a)) if claim.a else df
    cell = ["config_key", "model", "task", "scheme", "bits", "order"]  # records without a config: their fields
    x, y = (values_of(rows, v).groupby(cell, dropna=False)["value"].mean() for v in (claim.x, claim.y))
    cells = pd.concat([x, y], axis=1, keys=["x", "y"], join="inner").sort_index()
    if len(cells) < 3:
        raise QbenchError(f"correlation over {len(cells)} configurations: needs at least 3")
    xs, ys = cells["x"].to_numpy(float), cells["y"].to_numpy(float)
    rho, p = spearmanr(xs, ys)
    w = np.concatenate([draws(rng, min(CHUNK, resamples - i), len(xs)) for i in range(0, resamples, CHUNK)])
    r = correlation(w, weighted_ranks(w, xs), weighted_ranks(w, ys))
    low, high = np.percentile(r, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"effect": float(rho), "p": float(p), "low": float(low), "high": float(high), "n": len(cells)}


def holm(p: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as p): the i-th smallest times (m - i), made monotone."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def verdict(claim: Claim, effect: float, p_holm: float, alpha: float) -> str:
    side = effect - claim.threshold
    if p_holm >= alpha or side == 0:
        return "not enough evidence"
    return "holds" if (side > 0) == (claim.direction == ">") else "does not hold"


# ---- the report ----


def check(paths: list[str], claims_file: str, resamples: int = RESAMPLES, seed: int = SEED) -> str:
    """The Markdown report of every claim of `claims_file` against the records under `paths`."""
    if not Path(claims_file).is_file():
        raise QbenchError(f"--claims {claims_file}: no such file")
    claims, alpha = parse_claims(Path(claims_file).read_text())
    if not claims:
        raise QbenchError(f"{claims_file}: no claims")
    df = load_records(paths)
    results = []
    for c in claims:
        rng = np.random.default_rng([seed, zlib.crc32(c.label.encode())])
        try:
            if c.kind == "correlation":
                results.append((c, correlate(df, c, resamples, alpha, rng)))
                continue
            a = load_arm(df, c.a)
            b = majority(a) if c.b == "majority" else load_arm(df, c.b)
        except QbenchError as e:
            raise QbenchError(f"claim {c.label!r}: {e}") from e
        results.append((c, compare(a, b, c.threshold, resamples, alpha, rng)))
    adjusted = holm([r["p"] for _, r in results])
    level = f"{100 * (1 - alpha):g}%"
    rho = any(c.kind == "correlation" for c in claims)  # then: a = x, b = y, seeds = configurations, effect = rho
    effect = "a − b or Spearman ρ (p: scipy)" if rho else "a − b"
    lines = [f"Claims of `{Path(claims_file).name}`: crossed bootstrap over seeds (paired) and evaluation examples, "
             f"{resamples:,} resamples, seed {seed}; {level} percentile intervals; two-sided p, Holm-adjusted over the "
             f"{len(claims)} claims; verdict at alpha = {alpha:g} (qbench.claims).", "",
             f"| claim | a | b | seeds | {effect} | {level} CI | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (c, r), ph in zip(results, adjusted, strict=True):
        if c.kind == "correlation":
            lines.append(f"| {c.label} | x: {c.x} | y: {c.y} | {r['n']} configurations | ρ {r['effect']:+.2f} | "
                         f"[{r['low']:+.2f}, {r['high']:+.2f}] | {pval(r['p'])} | {pval(ph)} | "
                         f"{verdict(c, r['effect'], ph, alpha)} |")  # fmt: skip
            continue
        arm = lambda m, flat: num(m) + (f" ({flat})" if flat else "")  # noqa: E731
        claim = c.label + (f" (threshold {c.threshold:+g})" if c.threshold else "")
        lines.append(f"| {claim} | {arm(r['mean_a'], r['collapsed'][0])} | {arm(r['mean_b'], r['collapsed'][1])} | "
                     f"{r['seeds']} | {num(r['effect'], '+')} | [{num(r['low'])}, {num(r['high'])}] | "
                     f"{pval(r['p'])} | {pval(ph)} | {verdict(c, r['effect'], ph, alpha)} |")  # fmt: skip
    return "\n".join(lines)


def num(v: float, sign: str = "") -> str:
    """One decimal; from 1e4 on (diverged perplexities) three significant digits, 9.50e+05."""
    return f"{v:{sign}.2e}" if abs(v) >= 1e4 else f"{v:{sign}.1f}"


def pval(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
