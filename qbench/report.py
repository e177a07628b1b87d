"""Tables and plots from records: `qbench table [DIR ...]`, `qbench plot [DIR ...]`.

Records are the only input: every number printed here can be traced to a record.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from qbench.errors import QbenchError

PERCENT = {"accuracy", "f1", "matthews", "pearson", "spearman", "rouge1", "rouge2", "rougeL", "token_accuracy"}
FP = "FP"


def load_records(paths: list[str | Path]) -> pd.DataFrame:
    """One row per completed record found under `paths` (recursively): identity, main metric, effective bits."""
    rows = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("record.json"))
        for f in files:
            r = json.loads(f.read_text())
            if r.get("status") != "completed":
                continue
            s, m = r["scheme"], r["main_metric"]
            rows.append({
                "model": r["model"], "task": r["task"], "scheme": scheme_label(r), "bits": s.get("bits"),
                "order": r.get("order"), "seed": r.get("seed"), "metric": m["name"], "split": m["split"],
                "value": m["value"], "effective_bits": s.get("effective_bits") or 32.0, "path": str(f.parent),
                "cell_id": r.get("cell_id") or str(f.parent), "finished": r.get("finished", ""),
            })  # fmt: skip
    if not rows:
        raise QbenchError(f"no completed record.json under {', '.join(map(str, paths))}")
    # the same cell found twice (copied or rerun folders) counts once: its latest record
    df = pd.DataFrame(rows).sort_values("finished").drop_duplicates("cell_id", keep="last")
    df["bits"] = df["bits"].astype("Int64")
    return df


def scheme_label(r: dict) -> str:
    """'mds', or with distillation and non-default W-E-A bits 'mds+kd_tcd 2-2-8' (paper B's weight-embedding-act)."""
    s, label = r["scheme"], r["scheme"]["name"]
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
    """(mean, std, n) tables of the main metric: rows × cols, seeds averaged; the FP baseline is one column."""
    df = as_percent(df)
    if cols == ["scheme", "bits"]:
        df["column"] = [column_label(s, b) for s, b in zip(df["scheme"], df["bits"], strict=True)]
    else:
        df["column"] = df[cols].astype(str).agg(" ".join, axis=1)
    order = df.assign(fp=df["scheme"] != "none").sort_values(["fp", "scheme", "bits", "column"])["column"].unique()
    g = df.groupby([*rows, "column"])["value"]
    mean, std, n = (x.unstack("column").reindex(columns=list(order)) for x in (g.mean(), g.std(ddof=1), g.count()))
    mean.attrs["metrics"] = df.groupby("task")["metric"].first().to_dict()
    return mean, std, n.fillna(0).astype(int)


def cell(mean: float, std: float, n: int, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" if n < 2 or pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


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


def table(paths: list[str], rows: list[str], cols: list[str], fmt: str, digits: int, reference: str | None) -> str:
    """The formatted table (markdown, latex or csv) of the records under paths."""
    df = load_records(paths)
    mean, std, n = pivot(df, rows, cols)
    out = pd.DataFrame(
        [[cell(mean.iat[i, j], std.iat[i, j], n.iat[i, j], digits) for j in range(mean.shape[1])]
         for i in range(mean.shape[0])], index=mean.index, columns=mean.columns)  # fmt: skip
    if reference:
        out = add_reference(out, mean, Path(reference), rows, digits)
    if rows == ["task"]:
        out.insert(0, "metric", [metrics_by_task(mean).get(t, "") for t in out.index])
    out = out.reset_index()
    if fmt == "csv":
        return out.to_csv(index=False)
    if fmt == "latex":
        return out.to_latex(index=False, escape=True).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    return out.to_markdown(index=False)


def plot(paths: list[str], out: str) -> list[Path]:
    """Metric vs bits (one panel per task, a line per scheme, FP dashed) and metric vs effective bits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = as_percent(load_records(paths))
    tasks = sorted(df["task"].unique())
    schemes = sorted(set(df["scheme"]) - {"none"})
    color = {sc: f"C{i}" for i, sc in enumerate(schemes)}  # one colour per scheme in every panel
    files = []
    for name, x in (("bits", "bits"), ("pareto", "effective_bits")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            t = df[df["task"] == task]
            for scheme, s in t[t["scheme"] != "none"].groupby("scheme"):
                agg = s.groupby(x)["value"].agg(["mean", "std"]).reset_index().sort_values(x)
                ax.errorbar(agg[x].astype(float), agg["mean"], yerr=agg["std"].fillna(0), marker="o", label=scheme,
                            color=color[scheme])  # fmt: skip
            fp = t[t["scheme"] == "none"]["value"]
            if len(fp):
                ax.axhline(fp.mean(), color="gray", linestyle="--", label="FP")
            ax.set_title(f"{task} ({t['metric'].iloc[0]})")
            ax.set_xlabel("bits" if x == "bits" else "effective bits / weight")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = Path(f"{out}_{name}.{ext}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
            files.append(path)
        plt.close(fig)
    return files


def table_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="qbench table", description="Paper-shaped tables from run records.")
    p.add_argument("paths", nargs="*", default=["results"], help="folders searched for record.json (default results)")
    p.add_argument("--rows", default="task", help="comma-separated record fields for rows (default task)")
    p.add_argument("--cols", default="scheme,bits", help="comma-separated fields for columns (default scheme,bits)")
    p.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    p.add_argument("--digits", type=int, default=1)
    p.add_argument("--reference", help="YAML of published numbers (with sources): adds reference and delta columns")
    p.add_argument("--out", help="write here instead of printing")
    a = p.parse_args(argv)
    text = table(a.paths, a.rows.split(","), a.cols.split(","), a.format, a.digits, a.reference)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    else:
        print(text)


def plot_command(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="qbench plot", description="Metric vs bits and vs effective bits (PNG, SVG).")
    p.add_argument("paths", nargs="*", default=["results"])
    p.add_argument("--out", default="results/plots/qbench", help="file prefix (default results/plots/qbench)")
    a = p.parse_args(argv)
    for f in plot(a.paths, a.out):
        print(f)
