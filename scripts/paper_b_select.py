"""The choices of scripts/paper_b_smollm2_study.sh and scripts/paper_b_study.sh, made on training losses only (never
on test perplexity):
--pick lr      the MDS 4-4-8 learning rate (train.qat.lr) whose QAT ends with the lowest mean loss of its last 5 steps;
--pick best2   the two 4-4-8 configurations (scheme, distill) at --lr with the lowest such loss, one per line;
--pick best2q  the two configurations (scheme, distill) at --bits and seed 42 with the lowest mean loss of their last
               --last steps (default 10: the score of scripts/quantizer_lr_search.py), each scheme at its searched
               train.qat.quantizer_lr (--picks, that script's JSON; a scheme without a pick, LAQ, at null).
With KD + TCD the logged loss is the distillation objective; the comparison uses its task loss (task_loss_curve)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qbench.record import final_task_loss


def best_two(sweep: Path, picks: dict[str, float], bits: int, last: int) -> list[tuple[str, str]]:
    """(scheme, distill) of the two completed seed-42 cells at `bits` with the lowest final task loss, each scheme at
    its picked quantizer_lr (null without a pick)."""
    cells = []
    for f in sweep.rglob("record.json"):
        r = json.loads(f.read_text())
        if r.get("status") != "completed" or r["scheme"]["name"] == "none" or r["scheme"].get("bits") != bits:
            continue
        if r["seed"] != 42 or r["config"]["train"]["qat"].get("quantizer_lr") != picks.get(r["scheme"]["name"]):
            continue
        cells.append((final_task_loss(r, last), r["scheme"]["name"], (r.get("distill") or {}).get("name", "none")))
    return [(scheme, distill) for _, scheme, distill in sorted(cells)[:2]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--pick", choices=("lr", "best2", "best2q"), required=True)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--picks", type=Path, help="best2q: scripts/quantizer_lr_search.py's --out")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--last", type=int, default=10, help="best2q: logged steps of the score (the search's --last)")
    a = ap.parse_args()
    if a.pick == "best2q":
        for scheme, distill in best_two(Path(a.sweep), json.loads(a.picks.read_text())["picks"], a.bits, a.last):
            print(scheme, distill)
        return
    cells = []
    for f in Path(a.sweep).rglob("record.json"):
        r = json.loads(f.read_text())
        if r.get("status") != "completed" or r["scheme"]["name"] == "none" or r["scheme"].get("bits") != 4:
            continue
        lr, distill = r["config"]["train"]["qat"]["lr"], (r.get("distill") or {}).get("name", "none")
        cells.append((final_task_loss(r, 5), r["scheme"]["name"], distill, lr))
    if a.pick == "lr":
        print(min(c for c in cells if c[1] == "mds" and c[2] == "none")[3])
    else:
        for _, scheme, distill, _ in sorted(c for c in cells if abs(c[3] - a.lr) < 1e-12)[:2]:
            print(scheme, distill)


if __name__ == "__main__":
    main()
