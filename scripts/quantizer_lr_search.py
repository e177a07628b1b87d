"""Pick each quantizer's own learning rate (train.qat.quantizer_lr) on training losses, never an evaluation split.

For each scheme with a learned range (--schemes, e.g. pact,lsq,mds) it runs one qbench cell per rate of --grid with
the given overrides (a multirun into results/sweeps/<study>; completed cells are skipped, so a rerun resumes), then
scores every cell by its final training loss: the mean task loss of its last --last logged QAT steps (with
distillation the task part, task_loss_curve). When the QAT stage reads each training example once, those steps are
on examples the model has not been trained on yet, a held-out estimate. A cell that failed (e.g. diverged) scores
inf. The pick per scheme is the rate with the lowest score (ties: the smaller rate). Prints "scheme rate" per line
and writes --out (JSON): the picks and every candidate with its score and how far its ranges moved.

    python scripts/quantizer_lr_search.py --out results/sweeps/paper_b_glue_cpu_qlr/sst2.json \\
        --grid 1e-4,1e-3,1e-2,1e-1 --schemes pact,lsq,mds -- \\
        +experiment=paper_b_glue_cpu task=sst2 seed=42 distill=none study=paper_b_glue_cpu_qlr
--extend N: a pick on the edge of the rates tried (the lowest or the highest) says the best rate may lie beyond it; up
to N times per scheme, the next rate past that edge is run (the grid's first or last step continued: 1e-3,3e-3,1e-2,
3e-2 goes on to 3e-4 below and 1e-1 above) and the scheme picked again.
--select-only scores the cells already there without running anything (--records DIR: the cells of a committed
study folder, e.g. results/paper_b_glue_cpu, so that its JSON rebuilds from the records; with --extend, the same
extensions are looked for, and a missing one scores inf).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from qbench.record import final_task_loss

REPO = Path(__file__).resolve().parents[1]


def cell_dir(overrides: list[str], scheme: str, lr: float, records: Path | None = None) -> Path:
    """The run folder of (scheme, rate) (results/sweeps/<study>/<cell id>; records/<cell id> when `records` is given,
    e.g. a committed study folder), from the composed config. Call inside initialize_config_module("qbench.conf")."""
    from hydra import compose

    import qbench.cli  # noqa: F401  (the cell_id resolver)
    from qbench.sweep import cell_id

    cfg = compose("config", overrides=[*overrides, f"scheme={scheme}", f"train.qat.quantizer_lr={lr}"])
    return (records or REPO / "results" / "sweeps" / cfg.study) / cell_id(cfg)


def rate_override(rates: list[float]) -> str:
    """The multirun override of `rates`, each written as cell_dir composes it: a float stays a float (1.0, not 1,
    whose int would be another config and so another cell id)."""
    return "train.qat.quantizer_lr=" + ",".join(str(float(lr)) for lr in rates)


def pick(scored: list[tuple[float, float]]) -> float | None:
    """The rate of the lowest (score, rate) pair (ties: the smaller rate); None when every score is inf."""
    best = min(scored, default=(math.inf, math.nan))
    return best[1] if math.isfinite(best[0]) else None


def step_past(rates: list[float], up: bool) -> float | None:
    """The rate one step past the highest (up) or lowest of `rates`, continuing the grid's step two back from that edge
    (a 1-3 grid alternates x3 and x3.33): [1e-3, 3e-3, 1e-2, 3e-2] -> 0.1 up, 3e-4 down; None for one rate."""
    r = sorted(rates)
    if len(r) < 2:
        return None
    if up:
        step = r[-2] / r[-3] if len(r) >= 3 else r[-1] / r[-2]
        return float(f"{r[-1] * step:.6g}")
    step = r[2] / r[1] if len(r) >= 3 else r[1] / r[0]
    return float(f"{r[0] / step:.6g}")


def read(path: Path) -> dict | None:
    try:
        return json.loads((path / "record.json").read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", required=True, help="comma-separated rates, e.g. 1e-4,1e-3,1e-2,1e-1")
    ap.add_argument("--schemes", default="pact,lsq,mds")
    ap.add_argument("--last", type=int, default=10, help="logged QAT steps averaged for the score")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--extend", type=int, default=0, help="at most this many rates past an edge pick, per scheme")
    ap.add_argument("--select-only", action="store_true", help="score the cells already run; run nothing")
    ap.add_argument("--records", type=Path, help="with --select-only: read the cells from this folder (a committed "
                    "study) instead of results/sweeps/<study>")  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="qbench overrides of every cell (after --)")
    a = ap.parse_args()
    grid, schemes = [float(x) for x in a.grid.split(",")], a.schemes.split(",")
    if a.records and not a.select_only:
        ap.error("--records reads committed cells: use it with --select-only")
    qbench = os.environ.get("QBENCH", f"{sys.executable} -m qbench.cli").split()

    def run(scheme: str, rates: list[float]) -> None:
        if not a.select_only:
            cmd = [*qbench, "run", "-m", *a.overrides, f"scheme={scheme}", rate_override(rates)]
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, cwd=REPO, check=True)

    def candidate(scheme: str, lr: float) -> dict:
        path = cell_dir(a.overrides, scheme, lr, a.records)
        r = read(path)
        moves = ((r or {}).get("diagnosis") or {}).get("range_moves") or {}
        return {"scheme": scheme, "quantizer_lr": lr, "final_loss": final_task_loss(r, a.last), "cell_id": path.name,
                "status": (r or {}).get("status", "missing"), "range_moves": moves}  # fmt: skip

    from hydra import initialize_config_module

    candidates = []
    with initialize_config_module("qbench.conf", version_base="1.3"):
        for scheme in schemes:
            run(scheme, grid)
            mine = [candidate(scheme, lr) for lr in grid]
            for _ in range(a.extend):
                rates = [c["quantizer_lr"] for c in mine]
                best = pick([(c["final_loss"], c["quantizer_lr"]) for c in mine])
                if best is None or min(rates) < best < max(rates):
                    break
                nxt = step_past(rates, up=best == max(rates))
                if nxt is None:
                    break
                run(scheme, [nxt])
                mine.append(candidate(scheme, nxt))
            candidates += sorted(mine, key=lambda c: c["quantizer_lr"])
    picks = {}
    for scheme in schemes:
        best = pick([(c["final_loss"], c["quantizer_lr"]) for c in candidates if c["scheme"] == scheme])
        if best is not None:
            picks[scheme] = best
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"picks": picks, "last": a.last, "overrides": a.overrides,
                                 "candidates": candidates}, indent=1) + "\n")  # fmt: skip
    for c in candidates:
        move = " ".join(f"{k} median {v['median']:.3f} max {v['max']:.3f}" for k, v in c["range_moves"].items())
        print(f"# {c['scheme']:5s} quantizer_lr {c['quantizer_lr']:<8g} final loss {c['final_loss']:.4f}  {move}",
              file=sys.stderr)  # fmt: skip
    for scheme, lr in picks.items():
        print(scheme, lr)


if __name__ == "__main__":
    main()
