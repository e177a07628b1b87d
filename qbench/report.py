"""Tables and plots from records: `qbench table [DIR ...]`, `qbench plot [DIR ...]`.

Records are the only input: every number printed here can be traced to a record.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from qbench.errors import QbenchError
from qbench.record import DamagedRecord, read_record
from qbench.sweep import BOOKKEEPING, EXCLUDED, drop, flatten, resolved, unused

PERCENT = {"accuracy", "f1", "matthews", "pearson", "spearman", "rouge1", "rouge2", "rougeL", "rougeLsum",
           "token_accuracy"}  # fmt: skip
FP = "FP"
# when records of different configurations share a table cell, these fields name the difference first
FIRST = ("model.name", "task.name", "train.order", "distill.name", "data", "scheme._target_")
ALIAS = {"model.name": "model", "task.name": "task", "train.order": "order", "distill.name": "distill"}
# config keys left out of the configuration (qbench.sweep.EXCLUDED) that --where and --rows may still read: notes
# about a run that do not change its result (a mixed cell's budget: two budgets can give one allocation, one cell)
NOTES = ("allocation",)


def load_records(paths: list[str | Path]) -> pd.DataFrame:
    """One row per completed record found under `paths` (recursively): identity, main metric, effective bits,
    and `config`: the flattened configuration that defines the result (seed aside; see `configuration`). A damaged
    record (qbench.record.read_record) is skipped with one warning line naming it."""
    rows = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("record.json"))
        for f in files:
            try:
                r = read_record(f)
            except DamagedRecord as e:
                print(f"qbench: warning: {e}; skipped", file=sys.stderr)
                continue
            if r.get("status") != "completed":
                continue
            s, m, config = r["scheme"], r["main_metric"], configuration(r)
            key = json.dumps(config, sort_keys=True, default=str)
            rows.append({
                "model": r["model"], "task": r["task"], "scheme": scheme_label(r), "bits": s.get("bits"),
                "order": None if fine_tune_only(r) else r.get("order"),
                "distill": (r.get("distill") or {}).get("name", "none"),
                "seed": r.get("seed"), "metric": m["name"], "split": m["split"], "value": m["value"],
                "effective_bits": s.get("effective_bits") or 32.0, "path": str(f.parent), "config": config,
                "notes": notes(r),
                "config_key": key, "finished": r.get("finished", ""),
                # one record per (configuration, seed); records without a config: per cell id, else folder
                "run": f"{key} seed={r.get('seed')}" if "config" in r else r.get("cell_id") or str(f.parent),
                "diagnosis": r.get("diagnosis"),  # paper B's homogeneity and module ranges (qbench.diagnose)
                "metrics": r.get("metrics") or {},  # every split's metrics (--value metrics.SPLIT.NAME)
                # per training stage, the task loss at each logged step (without distillation's terms)
                "curves": {k: t.get("task_loss_curve") or t["loss_curve"] for k, t in (r.get("training") or {}).items()
                           if t.get("loss_curve")},  # fmt: skip
            })  # fmt: skip
    if not rows:
        raise QbenchError(f"no completed record.json under {', '.join(map(str, paths))}")
    # the same run found twice (copied or rerun folders, another study) counts once: its latest record
    df = pd.DataFrame(rows).sort_values("finished").drop_duplicates("run", keep="last")
    df["bits"] = df["bits"].astype("Int64")
    return df


def fine_tune_only(r: dict) -> bool:
    """An FP record of a fine-tuning order: the same model whatever order quantizes it later, so it has no order of
    its own (tables show it next to every order; `--where order=...` keeps it)."""
    return r["scheme"].get("name") == "none" and r.get("order") in ("qat", "ptq", "ft_then_qat")


def orderless_fp(df: pd.DataFrame) -> pd.Series:
    """Which rows are FP fine-tunes without an order of their own (fine_tune_only)."""
    return df["order"].isna() & (df["scheme"] == "none")


def every_order(df: pd.DataFrame) -> pd.DataFrame:
    """The FP rows without an order, once for each order that its task's quantized records have."""
    fp = orderless_fp(df)
    orders = df[~fp].dropna(subset=["order"]).groupby("task")["order"].unique()
    copies = [df[fp & (df["task"] == task)].assign(order=o) for task, os in orders.items() for o in os]
    lone = df[fp & ~df["task"].isin(orders.index)]  # a task with FP records only keeps them as they are
    return pd.concat([df[~fp], lone, *copies], ignore_index=True)


def configuration(r: dict) -> dict:
    """A record's configuration, flattened ({'train.lr': 5e-05, ...}): its resolved config less the seed, the keys
    that never change results (qbench.sweep) and null values (keys added later with a null default), with the data
    source as `data` (hub, mirror, or the task's folder). The full-precision fine-tune is the same model whatever
    train.order quantizes it later, so FP records drop the order and the QAT stage's settings (train.qat). Records
    without a config: their own fields."""
    c, fp = r.get("config"), r["scheme"].get("name") == "none"
    if not isinstance(c, dict):
        return {"model.name": r.get("model"), "task.name": r.get("task"), "train.order": r.get("order"),
                "distill.name": (r.get("distill") or {}).get("name", "none")}  # fmt: skip
    d = resolved(c)
    drops = [*EXCLUDED, *BOOKKEEPING, *unused(d, fp), "seed"]
    if fp and (d.get("train") or {}).get("order") != "zeroshot":
        drops += ["train.order", "train.qat"]  # qat, ptq, ft_then_qat: the same FP fine-tune, whatever QAT follows
    for path in drops:
        drop(d, path)
    scheme = d.get("scheme") or {}
    if scheme.get("bits_by"):  # one field in its own order (the first match wins), not one field per pattern
        scheme["bits_by"] = ",".join(f"{p}:{b}" for p, b in scheme["bits_by"].items())
    return {**{k: v for k, v in flatten(d).items() if v is not None}, "data": data_source(c)}


def notes(r: dict) -> dict:
    """A record's NOTES, flattened ({'allocation.unit': 'code', ...}); {} where it has none."""
    c = r.get("config") if isinstance(r.get("config"), dict) else {}
    return {k: v for k, v in flatten({n: c[n] for n in NOTES if c.get(n) is not None}).items() if v is not None}


def data_source(c: dict) -> str:
    """'hub', 'mirror' (QBENCH_DATA_DIR, at whatever path) or 'folder <task.data_dir>'."""
    task = c.get("task") or {}
    if task.get("data_dir"):
        return f"folder {task['data_dir']}"
    return "mirror" if c.get("data_dir") and task.get("mirror") else "hub"


def show(v) -> str:
    """A config value as labels show it and --where matches it."""
    return "null" if v is None else json.dumps(v) if isinstance(v, list | dict) else str(v)


def field(df: pd.DataFrame, name: str) -> pd.Series:
    """A record field (model, task, order, ...), a dotted config key (train.lr) or a note (allocation.unit) of every
    row."""
    if name in df.columns:
        return df[name]
    path = {v: k for k, v in ALIAS.items()}.get(name, name)
    if path.split(".")[0] in NOTES:
        return df["notes"].map(lambda n: show(n.get(path)))
    return df["config"].map(lambda c: show(c.get(path)))


def where(df: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """Rows matching every FIELD=VALUE (string or numeric equality); scheme=NAME also matches a label with W-E-A
    bits ('mds 4-4-8'), so that scheme=mds keeps every W-E-A setting of MDS without distillation."""
    for cond in conditions:
        name, sep, value = cond.partition("=")
        if not sep:
            raise QbenchError(f"--where {cond!r}: expected FIELD=VALUE, e.g. order=ptq or train.lr=5e-05")
        keep = field(df, name).map(lambda v, value=value: same(v, value))
        if name == "scheme":  # the label less its W-E-A bits ('mds 4-4-8'): scheme=mds as `qbench run` takes it
            keep |= df["scheme"].map(lambda v, value=value: str(v).split(" ")[0] == value)
        if name in ("order", "train.order") or name.startswith("train.qat."):
            keep |= orderless_fp(df)  # the FP fine-tune belongs to every order and every QAT setting
        df = df[keep]
    if df.empty:
        raise QbenchError(f"no record matches --where {' '.join(conditions)}")
    return df


def same(v, value: str) -> bool:
    if show(v) == value:
        return True
    try:
        return float(v) == float(value)
    except (TypeError, ValueError):
        return False


def distinguishing(configs: list[dict]) -> list[str]:
    """Fields whose values tell these configurations apart: those of FIRST that differ, then (alphabetically) any
    other field that separates configurations still sharing a label."""
    differ = {k for k in set().union(*configs) if len({show(c.get(k)) for c in configs}) > 1}
    chosen = [k for k in FIRST if k in differ]
    for k in sorted(differ - set(chosen)):
        seen = {tuple(show(c.get(f)) for f in chosen) for c in configs}
        if len(seen) == len(configs):
            break
        if len({tuple(show(c.get(f)) for f in (*chosen, k)) for c in configs}) > len(seen):
            chosen.append(k)
    return chosen


def split_labels(df: pd.DataFrame, keys: list[str]) -> tuple[pd.Series, list[str]]:
    """Per record, ' (order=ptq, ...)': what sets its configuration apart from the other records of its group
    (rows with equal `keys`), '' where a group holds one configuration; and the fields used."""
    labels, used = pd.Series("", index=df.index), []
    for _, g in df.groupby(keys, dropna=False, sort=False):
        if g["config_key"].nunique() < 2:
            continue
        fields = distinguishing(list({k: c for k, c in zip(g["config_key"], g["config"], strict=True)}.values()))
        used += [f for f in fields if f not in used]
        labels[g.index] = [" (" + ", ".join(f"{ALIAS.get(f, f)}={show(c.get(f))}" for f in fields) + ")"
                           for c in g["config"]]  # fmt: skip
    return labels, used


def scheme_label(r: dict) -> str:
    """'mds', 'linear/row' (granularity other than per tensor), 'gptq/group', 'gptq/kmeans', '.../act' (GPTQ's
    grid, act-order), 'kmeans/row/fisher' (Fisher-weighted), '.../mixed'
    (per-tensor bits, scheme.bits_by; which ones: the config, shown when two differ in one cell), or with
    distillation and non-default W-E-A bits 'mds+kd_tcd 2-2-8' (paper B's weight-embedding-act)."""
    s, label = r["scheme"], r["scheme"]["name"]
    if s.get("granularity") not in (None, "tensor"):  # 'linear/row': per output unit, 'linear/group'
        label += f"/{s['granularity']}"
    elif s.get("grid") == "kmeans":  # GPTQ onto per-row codebooks: 'gptq/kmeans'
        label += "/kmeans"
    elif s.get("grid") == "linear" and s.get("group_size"):  # GPTQ's linear grid per group: 'gptq/group'
        label += "/group"
    if s.get("act_order"):  # GPTQ's columns by decreasing Hessian diagonal: 'gptq/group/act'
        label += "/act"
    if s.get("weighting") not in (None, "none"):  # k-means' sample weights: 'kmeans/row/fisher'
        label += f"/{s['weighting']}"
    if s.get("bits_by"):  # per-tensor bits (qbench allocate): 'kmeans/row/mixed 3b', 3 = the nominal average
        label += "/mixed"
    if (r.get("distill") or {}).get("name", "none") != "none":
        label += f"+{r['distill']['name']}"
    if s.get("wea") and s.get("wea") != f"{s.get('bits')}-{s.get('bits')}-32":
        label += f" {s['wea']}"
    return label


def as_percent(df: pd.DataFrame) -> pd.DataFrame:
    """Scores in [0, 1] (accuracy, F1, correlations, ROUGE) as percentages; perplexities as they are."""
    scale = df["metric"].map(lambda m: 100.0 if m in PERCENT else 1.0)
    return df.assign(value=df["value"] * scale)


def column_label(scheme: str, bits) -> str:
    return FP if scheme == "none" else f"{scheme} {bits}b"


def pivot(df: pd.DataFrame, rows: list[str], cols: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, n) tables of the main metric: rows × cols, the seeds of one configuration averaged; records of
    different configurations in one cell get columns of their own, labelled by what differs
    (mean.attrs['split'] lists those fields). The FP baseline is one column."""
    df = as_percent(every_order(df) if "order" in (*rows, *cols) else df)
    df = df.assign(**{f: field(df, f) for f in {*rows, *cols} if f not in df.columns})
    if cols == ["scheme", "bits"]:
        df["column"] = [column_label(s, b) for s, b in zip(df["scheme"], df["bits"], strict=True)]
    else:
        df["column"] = [" ".join("–" if pd.isna(v) else str(v) for v in r) for r in df[cols].itertuples(index=False)]
        if "scheme" in cols:  # the FP baseline is one column whatever else the columns show
            df.loc[df["scheme"] == "none", "column"] = FP
    labels, used = split_labels(df, [*rows, "column"])
    df["column"] += labels
    order = df.assign(fp=df["scheme"] != "none").sort_values(["fp", "scheme", "bits", "column"])["column"].unique()
    g = df.groupby([*rows, "column"], dropna=False)["value"]  # an FP-only folder's rows have no order: keep them
    mean, std, n = (x.unstack("column").reindex(columns=list(order)) for x in (g.mean(), g.std(ddof=1), g.count()))
    mean.attrs["metrics"] = df.groupby("task")["metric"].first().to_dict()
    mean.attrs["split"] = used
    return mean, std, n.fillna(0).astype(int)


def cell(mean: float, std: float, n: int, digits: int) -> str:
    """'mean' or 'mean ± std'; a diverged perplexity (>= 1e6) in scientific notation, '1.5e+19', not 20 digits."""
    if pd.isna(mean):
        return "–"
    num = lambda v: f"{v:.1e}" if abs(v) >= 1e6 else f"{v:.{digits}f}"
    return num(mean) if n < 2 or pd.isna(std) else f"{num(mean)} ± {num(std)}"


def metrics_by_task(mean: pd.DataFrame) -> dict[str, str]:
    return mean.attrs.get("metrics", {})


def add_reference(table: pd.DataFrame, mean: pd.DataFrame, ref_path: Path, rows: list[str], digits: int):
    """Reference columns (published numbers with their source) and deltas for the cells they match."""
    import yaml

    refs = yaml.safe_load(ref_path.read_text())["references"]
    main = metrics_by_task(mean)
    for ref in refs:
        if main and ref.get("metric") not in (None, main.get(ref["task"])):
            continue  # the table shows each task's main metric only
        key = tuple(ref[r] for r in rows) if len(rows) > 1 else ref[rows[0]]
        col = column_label(ref["scheme"], ref.get("bits"))
        name = f"{col} ref"
        if name not in table.columns:
            table[name], table[f"{col} Δ"] = "–", "–"
        if key in table.index:
            table.loc[key, name] = f"{ref['value']:.{digits}f}"
            ours = mean.loc[key, col] if col in mean.columns else float("nan")
            table.loc[key, f"{col} Δ"] = "–" if pd.isna(ours) else f"{ours - ref['value']:+.{digits}f}"
    return table


VALUES = ("metric", "effective_bits", "metrics.SPLIT.NAME", "homogeneity.PART.MEASURE")  # what a table's cells show
HOMOGENEITY_PARTS = ("embedding", "middle", "last")


def values_of(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """df with `value` (and `metric`, its name) set to what the table shows: the main metric, effective_bits, another
    split's metric (metrics.wikitext2:test.perplexity) or a homogeneity measure of the cell's final model
    (homogeneity.last.effective_rank: the quantized model's, an FP record's own). Rows without it are dropped."""
    if value == "metric":
        return df
    if value == "effective_bits":  # (FP: 32) the same pivot over another column; `metric` names it for the rows
        return df.assign(value=df["effective_bits"], metric="effective_bits")
    kind, _, rest = value.partition(".")
    if kind == "metrics" and rest.count(".") >= 1:
        split, name = rest.rsplit(".", 1)
        got = df["metrics"].map(lambda m: (m.get(split) or {}).get(name))
    elif kind == "homogeneity" and rest.count(".") == 1 and rest.split(".")[0] in HOMOGENEITY_PARTS:
        part, name = rest.split(".")
        final = lambda d: (d.get("quantized") or d["fp"]) if d else None  # noqa: E731
        got = df["diagnosis"].map(lambda d: ((final(d) or {}).get(part) or {}).get(name))
    else:
        raise QbenchError(f"--value {value!r}; valid: {', '.join(VALUES)} (PART: {', '.join(HOMOGENEITY_PARTS)})")
    df = df.assign(value=got, metric=name)[got.notna()]
    if df.empty:
        raise QbenchError(f"--value {value}: no record has it")
    return df.assign(value=df["value"].astype(float))


def table(paths: list[str], rows: list[str], cols: list[str], fmt: str, digits: int, reference: str | None,
          conditions: list[str] = (), value: str = "metric") -> str:  # fmt: skip
    """The formatted table (markdown, latex or csv) of the records under paths that match every FIELD=VALUE of
    `conditions`: each task's main metric, or (value=effective_bits) the bits per quantized weight, codebooks and
    scales included, in the same layout. Says on stderr when it split a cell because its records are of different
    configurations."""
    df = values_of(where(load_records(paths), list(conditions)), value)
    mean, std, n = pivot(df, rows, cols)
    if value == "effective_bits":  # set by the configuration, not by the seed: no spread to show
        std = std.where(std > 0)
    if mean.attrs["split"]:
        names = ", ".join(ALIAS.get(f, f) for f in mean.attrs["split"])
        print(f"note: records of different configurations are in separate columns, labelled by {names}; pick with "
              "--where FIELD=VALUE or place with --rows/--cols FIELD", file=sys.stderr)  # fmt: skip
    out = pd.DataFrame(
        [[cell(mean.iat[i, j], std.iat[i, j], n.iat[i, j], digits) for j in range(mean.shape[1])]
         for i in range(mean.shape[0])], index=mean.index, columns=mean.columns)  # fmt: skip
    if reference:
        out = add_reference(out, mean, Path(reference), rows, digits)
    if rows == ["task"]:
        out.insert(0, "metric", [metrics_by_task(mean).get(t, "") for t in out.index])
    out = out.reset_index()
    out[out.columns[: len(rows)]] = out[out.columns[: len(rows)]].astype(object).fillna("–")  # FP: no order
    if fmt == "csv":
        return out.to_csv(index=False)
    if fmt == "latex":
        return out.to_latex(index=False, escape=True).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    return out.to_markdown(index=False, disable_numparse=True)  # 82.0 stays 82.0


LOG_SCALE = ("perplexity",)  # metrics plotted on a log axis


def plot(paths: list[str], out: str) -> list[Path]:
    """Metric vs bits (one panel per task, a line per scheme and configuration, FP dashed) and metric vs effective
    bits; seeds of one configuration are averaged (error bars: their std). Records with a `diagnosis` also give
    the homogeneity and module-range figures (diagnosis_plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = as_percent(load_records(paths))
    df["series"] = series_labels(df)  # one configuration a line, named alike in every panel
    tasks = sorted(df["task"].unique())
    color = line_colors(df[df["scheme"] != "none"])
    ncol = min(3, len(tasks))  # legend columns below the panels
    rows = -(-df["series"].nunique() // ncol)
    files = []
    for name, x in (("bits", "bits"), ("pareto", "effective_bits")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2 + 0.2 * rows), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            t = df[df["task"] == task]
            for scheme, s in t[t["scheme"] != "none"].groupby("series"):
                agg = s.groupby(x)["value"].agg(["mean", "std"]).reset_index().sort_values(x)
                style = ":" if (s["order"] == "ptq").all() else "-"  # no training after quantization: dotted
                ax.errorbar(agg[x].astype(float), agg["mean"], yerr=agg["std"].fillna(0), marker="o", label=scheme,
                            color=color[scheme], linestyle=style, capsize=2)  # fmt: skip
            for label, fp in t[t["scheme"] == "none"].groupby("series"):
                ax.axhline(fp["value"].mean(), color="gray", linestyle="--", label=FP + label[len("none") :])
            ax.set_title(f"{task} ({t['metric'].iloc[0]})")
            if t["metric"].iloc[0] in LOG_SCALE:  # a diverged cell (1e20) would flatten every other line to 0
                ax.set_yscale("log")
            ax.set_xlabel("bits" if x == "bits" else "effective bits / weight")
            ax.grid(alpha=0.3)
        legend = {}  # every line once, below the panels where it covers no point
        for ax in axes[0]:
            legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=ncol, fontsize=8)
        fig.tight_layout(rect=(0, (0.2 * rows + 0.1) / (3.2 + 0.2 * rows), 1, 1))
        files += save(fig, f"{out}_{name}", plt)
    return files + loss_plots(df, out, plt) + diagnosis_plots(df, out, plt)


def loss_plots(df: pd.DataFrame, out: str, plt) -> list[Path]:
    """The training loss curves (the records' training.<stage>.loss_curve, as logged every train.logging_steps; with
    distillation its task loss alone, task_loss_curve, so that every line is the same cross-entropy):
    a column per task, a row per kind of cell (the FP fine-tunes; the quantized cells, each by its last stage, QAT),
    so that a short QAT stage is not drawn at the scale of a long fine-tune; a line per configuration and seed.
    None when no record logged a curve."""
    df = df[df["curves"].map(bool)]
    if df.empty:
        return []
    tasks, is_fp = sorted(df["task"].unique()), df["scheme"].eq("none")
    kinds = [(k, title) for k, title in ((True, "FP fine-tune"), (False, "quantized, last stage"))
             if (is_fp == k).any()]  # fmt: skip
    fig, axes = plt.subplots(len(kinds), len(tasks), figsize=(5.0 * len(tasks), 3.8 * len(kinds)), squeeze=False)
    color = line_colors(df[~is_fp])
    for row, (fp, title) in zip(axes, kinds, strict=True):
        for ax, task in zip(row, tasks, strict=True):
            cells = df[(df["task"] == task) & (is_fp == fp)]
            for _, r in cells.sort_values(["series", "seed"]).iterrows():
                curve = list(r["curves"].values())[-1]  # qat after full_precision: the cell's own training
                series = r["series"]
                name = FP if fp else series if re.search(r" \d+-\d+-\d+", series) else f"{series} {r['bits']}b"
                steps, losses = zip(*curve, strict=True)
                ax.plot(steps, losses, color="gray" if fp else color[series], linestyle="--" if fp else "-",
                        label=name, linewidth=1.2)  # fmt: skip
            ax.set_title(f"{task}: training loss, {title}")
            ax.set_xlabel("step")
            ax.set_yscale("log")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):  # 3, 4, 6, 10: not 6x10^0
                axis(plt.matplotlib.ticker.FormatStrFormatter("%g"))
            ax.grid(alpha=0.3)
            handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
            if handles:
                ax.legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    return save(fig, f"{out}_loss", plt)


HOMOGENEITY = [("embedding", "word embedding rows"), ("middle", "middle-layer states"), ("last", "last-layer states")]
MEASURES = [("mean_cosine", "mean pairwise cosine"), ("effective_rank", "effective rank (centred)")]


def diagnosis_plots(df: pd.DataFrame, out: str, plt) -> list[Path]:
    """Paper B's two figures from the records' `diagnosis` (none when no record has one): homogeneity per method
    and module ranges per layer and module type."""
    df = df[df["diagnosis"].notna()]
    if df.empty:
        return []
    files = save(homogeneity_figure(df, plt), f"{out}_homogeneity", plt)
    quantized = df[df["diagnosis"].map(lambda d: bool(d.get("ranges")))]
    if not quantized.empty:
        files += save(ranges_figure(quantized, plt), f"{out}_ranges", plt)
    return files


def homogeneity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, method, part, measure, record): the FP model's values from the FP records (from the
    quantized records' FP part where a task has no FP record), each quantized configuration's from its own."""
    rows = []
    for _, r in df.iterrows():
        fp = r["scheme"] == "none"
        if not fp and (df[df["task"] == r["task"]]["scheme"] == "none").any():
            parts = [("quantized", r["series"])]
        else:
            parts = [("fp", FP)] + ([] if fp else [("quantized", r["series"])])
        for part, method in parts:
            for layer, _ in HOMOGENEITY:
                for measure, _ in MEASURES:
                    value = r["diagnosis"][part][layer][measure]
                    rows.append({"task": r["task"], "method": method, "layer": layer, "measure": measure,
                                 "value": value, "run": r["run"]})  # fmt: skip
    return pd.DataFrame(rows).drop_duplicates(["task", "method", "layer", "measure", "run"])


def homogeneity_figure(df: pd.DataFrame, plt):
    """Panels: mean cosine and effective rank (rows) of the embedding rows, middle and last layer (columns); a bar
    per method (FP first), one colour per task; seeds averaged (error bars: their std)."""
    h = homogeneity_rows(df)
    methods = [FP, *sorted(m for m in h["method"].unique() if m != FP)]
    tasks = sorted(h["task"].unique())
    fig, axes = plt.subplots(len(MEASURES), len(HOMOGENEITY), figsize=(4.2 * len(HOMOGENEITY), 6.4), squeeze=False)
    width = 0.8 / len(tasks)
    for i, (measure, mlabel) in enumerate(MEASURES):
        for j, (layer, llabel) in enumerate(HOMOGENEITY):
            ax = axes[i][j]
            g = h[(h["measure"] == measure) & (h["layer"] == layer)].groupby(["task", "method"])["value"]
            agg = g.agg(["mean", "std"]).reset_index()
            for t, task in enumerate(tasks):
                a = agg[agg["task"] == task].set_index("method").reindex(methods)
                x = [k + (t - (len(tasks) - 1) / 2) * width for k in range(len(methods))]
                ax.bar(x, a["mean"], width, yerr=a["std"].fillna(0), label=task, color=f"C{t}", capsize=2)
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{llabel}: {mlabel}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
    if len(tasks) > 1:
        axes[0][-1].legend(fontsize=8)
    fig.suptitle("Homogeneity per method (cosine up, effective rank down: more homogeneous)", fontsize=10)
    fig.tight_layout()
    return fig


MODULE_TYPES = ("embedding", "attention.q", "attention.k", "attention.v", "attention.qkv", "attention.o", "ffn.in",
                "ffn.out", "other")  # fmt: skip


def range_positions(ranges: list[dict]) -> list[float]:
    """x of each tensor: its layer (embeddings at -1, an encoder-decoder's decoder after the encoder), nudged by
    module type so that the types of one layer sit side by side."""
    encoder = 1 + max((r["layer"] for r in ranges if r.get("layer") is not None and "stack" not in r), default=-1)
    return [(-1 if r.get("layer") is None else r["layer"] + (encoder if "stack" in r else 0))
            + 0.08 * (MODULE_TYPES.index(r["module"]) - 4) for r in ranges]  # fmt: skip


def ranges_figure(df: pd.DataFrame, plt):
    """One panel per task and quantized configuration (its first seed): per tensor, max|w|/mean|w| of the latent
    weight (open circles) and the learned clip/mean|w| at quantization (x) and at the end of training (filled),
    by layer, coloured by module type (log scale)."""
    first = df.sort_values("seed").drop_duplicates(["task", "series"]).sort_values(["task", "series"])
    n = len(first)
    ncol = min(3, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol + 2.0, 3.6 * nrow), squeeze=False)
    colors = dict(zip(MODULE_TYPES, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"), strict=True))  # no gray
    for ax, (_, r) in zip(axes.flat, first.iterrows(), strict=False):
        ranges = r["diagnosis"]["ranges"]
        x = range_positions(ranges)
        # one scatter call per kind of point, not per tensor (a call per tensor: minutes to draw 12 panels)
        styles = {"max_over_mean": {"facecolors": "none", "s": 22}, "clip_over_mean": {"s": 18},
                  "clip_over_mean_init": {"marker": "x", "s": 14, "linewidths": 0.8}}  # fmt: skip
        for key, style in styles.items():
            kept = [(xi, t[key], colors[t["module"]]) for xi, t in zip(x, ranges, strict=True) if t.get(key)]
            if kept:
                xs, ys, cs = zip(*kept, strict=True)
                color = {"edgecolors": cs} if key == "max_over_mean" else {"color": cs}
                ax.scatter(xs, ys, **color, **style)
        ax.set_yscale("log")
        ax.set_title(f"{r['task']}: {r['series']} (seed {r['seed']})", fontsize=9)
        ax.set_xlabel("layer (-1: embeddings)")
        ax.set_ylabel("ratio to mean|w| (log)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    used = [m for m in MODULE_TYPES if any(t["module"] == m for d in first["diagnosis"] for t in d["ranges"])]
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[m], label=m) for m in used]
    marks = [("o", "none", "max|w| / mean|w|"), ("o", "black", "learned clip / mean|w|\n(end of training)"),
             ("x", "black", "clip / mean|w|\nat quantization")]  # fmt: skip
    handles += [plt.Line2D([], [], marker=m, linestyle="", color="black", markerfacecolor=f, label=label)
                for m, f, label in marks]  # fmt: skip
    width = 5.2 * ncol + 2.0
    fig.legend(handles=handles, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / width, 1))
    return fig


def save(fig, stem: str, plt) -> list[Path]:
    """fig as stem.png and stem.svg; closes it."""
    files = []
    for ext in ("png", "svg"):
        path = Path(f"{stem}.{ext}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # no date and fixed ids in the SVG: the same records give the same file (scripts/check_results.py)
        with plt.rc_context({"svg.hashsalt": "qbench"}):
            fig.savefig(path, dpi=120, metadata={"Date": None} if ext == "svg" else None)
        files.append(path)
    plt.close(fig)
    return files


def series_labels(df: pd.DataFrame) -> pd.Series:
    """'kmeans (order=ptq, train.lr=...)': the scheme, its order wherever the records hold more than one, and what
    else sets a configuration apart from the others of its task and scheme (bit-widths left out)."""
    many_orders = df.loc[df["scheme"] != "none", "order"].nunique() > 1
    labels = split_labels(across_bits(df), ["task", "scheme"])[0].str.strip(" ()").str.split(", ")
    extra = [", ".join(f for f in fields if f and not f.startswith("order=")) for fields in labels]
    parts = [[f"order={o}"] if many_orders and isinstance(o, str) else [] for o in df["order"]]
    return pd.Series([sc + (f" ({', '.join([*p, x] if x else p)})" if p or x else "")
                      for sc, p, x in zip(df["scheme"], parts, extra, strict=True)], index=df.index)  # fmt: skip


def line_colors(df: pd.DataFrame) -> dict[str, str]:
    """A colour per line, the same in every panel: a scheme's PTQ and QAT lines share it (their styles differ),
    lines that differ otherwise get their own."""
    df = df.assign(ptq=df["order"] == "ptq")
    shared = df.groupby(["scheme", "ptq"])["series"].nunique().le(1).groupby("scheme").all()
    keys = {s: sc if shared[sc] else s for s, sc in zip(df["series"], df["scheme"], strict=True)}
    palette = {k: f"C{i % 10}" for i, k in enumerate(sorted(set(keys.values())))}
    return {s: palette[k] for s, k in keys.items()}


def across_bits(df: pd.DataFrame) -> pd.DataFrame:
    """The records with their bit-widths left out of the configuration: one line of a plot joins the bit-widths of
    one configuration (a PTQ line reaching 8 bits where QAT stops at 4 is still the PTQ line)."""
    configs = [{k: v for k, v in c.items() if k not in ("bits", "scheme.bits")} for c in df["config"]]
    return df.assign(config=configs, config_key=[json.dumps(c, sort_keys=True, default=str) for c in configs])


def table_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="qbench table", description="Paper-shaped tables from run records.")
    p.add_argument("paths", nargs="*", default=["results"], help="folders searched for record.json (default results)")
    p.add_argument("--rows", default="task", help="comma-separated fields for rows (default task): record fields "
                   "(model, task, scheme, bits, order, distill, seed) or dotted config keys (train.lr)")  # fmt: skip
    p.add_argument("--cols", default="scheme,bits", help="comma-separated fields for columns (default scheme,bits)")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="keep only records with this value (repeatable), e.g. order=ptq or train.lr=1e-4")  # fmt: skip
    p.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    p.add_argument("--digits", type=int, default=1)
    p.add_argument(
        "--value",
        default="metric",
        help="cells: the main metric (default), effective_bits (codes + codebooks/scales per weight), another "
        "split's metric (metrics.SPLIT.NAME, e.g. metrics.wikitext2:test.perplexity) or a homogeneity measure of the "
        "final model (homogeneity.PART.MEASURE, PART embedding|middle|last, MEASURE mean_cosine|effective_rank)",
    )
    p.add_argument("--reference", help="YAML of published numbers (with sources): adds reference and delta columns")
    p.add_argument("--out", help="write here instead of printing")
    a = p.parse_args(argv)
    text = table(a.paths, a.rows.split(","), a.cols.split(","), a.format, a.digits, a.reference, a.where, a.value)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    else:
        print(text)


def plot_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="qbench plot",
        description="Metric vs bits and vs effective bits; "
        "homogeneity per method and module ranges from the records' diagnosis (PNG, SVG).",
    )
    p.add_argument("paths", nargs="*", default=["results"])
    p.add_argument("--out", default="results/plots/qbench", help="file prefix (default results/plots/qbench)")
    a = p.parse_args(argv)
    for f in plot(a.paths, a.out):
        print(f)
