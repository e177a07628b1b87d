"""GPTQ's calibration cost and per-layer output errors, read off the records of a study (issue 25).

    python scripts/gptq_layers.py results/gptq > results/gptq/layers.md

For every completed GPTQ record (scheme.gptq): calibration seconds, peak resident memory and its growth during the
pass, calibration tokens, how many layers GPTQ's output error beats round-to-nearest's (both from the same Hessian:
tr((W - Q) H (W - Q)^T) / tr(W H W^T), qbench/quant/gptq.py), then the mean relative error per kind of layer
(q, k, v, o, gate, up, down, ...: the name's last module) for GPTQ and for round-to-nearest, and their ratio.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from qbench.record import DamagedRecord, read_record
from qbench.report import scheme_label


def kind(name: str) -> str:
    """'model.layers.3.self_attn.q_proj.weight' -> 'q_proj'."""
    parts = name.split(".")
    return parts[-2] if parts[-1] in ("weight", "bias") and len(parts) > 1 else parts[-1]


def summary(records: list[dict]) -> str:
    lines = ["| cell | label | bits | calibration s | peak RSS MiB (+ growth) | tokens | layers GPTQ < RTN | "
             "median GPTQ/RTN | max GPTQ/RTN |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    kinds: dict[str, dict[str, list[float]]] = {}
    for r in records:
        g = r["scheme"]["gptq"]
        calibrated = [x for x in g["layers"] if x["tokens"] > 0 and x["rtn_rel_err"] > 0]
        ratios = [x["gptq_rel_err"] / x["rtn_rel_err"] for x in calibrated]
        lines.append(f"| {r['cell_id']} | {scheme_label(r)} | {r['scheme']['bits']} | {g['seconds']:.0f} | "
                     f"{g['peak_rss_mib']:.0f} (+{g['peak_rss_growth_mib']:.0f}) | {g['calibration_tokens']} | "
                     f"{g['layers_better_than_rtn']} of {g['layers_with_hessian']} | {statistics.median(ratios):.3f} | "
                     f"{max(ratios):.3f} |")  # fmt: skip
        per = defaultdict(lambda: ([], []))
        for x in calibrated:
            per[kind(x["name"])][0].append(x["gptq_rel_err"])
            per[kind(x["name"])][1].append(x["rtn_rel_err"])
        kinds[r["cell_id"]] = per
    lines += ["", "Mean relative output error per kind of layer (GPTQ / round-to-nearest, the same Hessian):", ""]
    names = sorted({k for per in kinds.values() for k in per})
    lines += ["| cell | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cell, per in kinds.items():
        row = [f"{statistics.mean(per[k][0]):.4f} / {statistics.mean(per[k][1]):.4f}" if k in per else "–"
               for k in names]  # fmt: skip
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def gptq_records(paths: list[str]) -> list[dict]:
    """Completed records with a GPTQ pass under `paths` (damaged ones skipped with a warning, as qbench table does)."""
    out = []
    for f in sorted(f for p in paths for f in Path(p).rglob("record.json")):
        try:
            r = read_record(f)
        except DamagedRecord as e:
            print(f"qbench: warning: {e}; skipped", file=sys.stderr)
            continue
        if r.get("status") == "completed" and "gptq" in r["scheme"]:
            out.append(r)
    return out


def main(argv: list[str]) -> None:
    records = gptq_records(argv)
    if not records:
        raise SystemExit(f"no completed GPTQ record under {' '.join(argv)}")
    print(summary(sorted(records, key=lambda r: r["cell_id"])))


if __name__ == "__main__":
    main(sys.argv[1:])
