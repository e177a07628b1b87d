"""Print a perplexity table (task x scheme x bits) from the records under a results folder.

usage: python scripts/ptq_table.py [results/sweeps/smollm2_ptq] [--model smollm2]
Reads every */record.json below the folder (completed runs only; the newest record wins for a repeated cell).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}" if v < 1e5 else f"{v:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="results/sweeps/smollm2_ptq")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    cells, notes = {}, set()
    for path in sorted(Path(args.root).rglob("record.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        if r.get("status") != "completed" or (args.model and r["model"] != args.model):
            continue
        m = r["main_metric"]
        ev = r.get("evaluation", {})
        notes.add((r["task"], m["split"], ev.get("context_length"), ev.get("stride"), ev.get("max_eval_tokens"),
                   r["metrics"][m["split"]].get("tokens")))  # fmt: skip
        cells[(r["task"], r["scheme"]["name"], r["scheme"].get("bits"))] = m["value"]
    tasks = sorted({t for t, _, _ in cells})
    bits = sorted({b for _, s, b in cells if b is not None}, reverse=True)
    print(f"| task | none (FP) | {' | '.join(f'{s} {b}-bit' for b in bits for s in ('linear', 'kmeans'))} |")
    print("|---" * (2 + 2 * len(bits)) + "|")
    for t in tasks:
        vals = [cells.get((t, "none", None))] + [cells.get((t, s, b)) for b in bits for s in ("linear", "kmeans")]
        print(f"| {t} | " + " | ".join(fmt(v) for v in vals) + " |")
    for t, split, c, s, cap, n in sorted(notes, key=str):
        print(f"\n{t}: {split} split, context {c}, stride {s}, max_eval_tokens {cap}, tokens scored {n}", end="")
    print()


if __name__ == "__main__":
    main()
