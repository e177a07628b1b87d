"""Mixed precision from sensitivity: `qbench allocate RECORDS_DIR --budget 3.0 --out FILE.yaml`.

`solve(groups, budget, unit)` picks one bit width per module group, minimizing the summed metric drop subject to
an average bits per quantized weight <= budget: a multiple-choice knapsack, solved exactly. The budget's unit is
`effective` (default: codes plus codebooks and scales, the stored bits that records' size.effective_bits count,
so a mixed cell at 3.0 is the size of a uniform cell of 3.0 effective bits) or `code` (code bits only).
`read_sensitivity` turns the records of `qbench sensitivity` (qbench.sensitivity) into those groups;
`allocate_command` prints the table and writes the allocation as scheme.bits_by, which `qbench run` takes as
`'+scheme.bits_by={...}'`.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from qbench.errors import QbenchError
from qbench.record import DamagedRecord, read_record

UNITS = ("effective", "code")  # --budget-unit: codes + codebooks/scales (size.effective_bits), or codes only


@dataclass(frozen=True)
class Group:
    """A module group: its quantized weights and the metric drop measured with only it quantized, per bits."""

    name: str
    params: int
    drops: Mapping[int, float]  # bits -> drop (> 0: worse than full precision)
    patterns: tuple[str, ...] = ()  # its parameter-name patterns: the allocation's scheme.bits_by keys
    sizes: Mapping[int, int] = field(default_factory=dict)  # bits -> stored bits of its weights (codes + codebooks
    # and scales: 8 x (size.code_bytes + size.side_bytes) of its sensitivity record, as qbench.size counts them)

    def cost(self, bits: int, unit: str) -> int:
        """Bits the group's weights take at `bits`: stored bits (unit effective) or params x bits (unit code)."""
        if unit == "code":
            return self.params * bits
        if bits not in self.sizes:
            raise QbenchError(f"group {self.name}: no measured size at {bits} bits (its records have no size "
                              "section); use --budget-unit code")  # fmt: skip
        return self.sizes[bits]


@dataclass(frozen=True)
class Allocation:
    bits: dict[str, int]  # group -> chosen bits
    drop: float  # predicted drop of the mixed model: the sum of the chosen groups' drops
    code_bits: int  # sum over groups of params x bits
    params: int
    unit: str = "code"  # the budget's unit
    stored_bits: int | None = None  # sum over groups of their stored bits (None: sizes unknown)

    @property
    def average_bits(self) -> float:
        """Parameter-weighted average bits in the budget's unit."""
        return (self.stored_bits if self.unit == "effective" else self.code_bits) / self.params

    @property
    def average_code_bits(self) -> float:
        """Parameter-weighted average code bits (codebooks and scales not counted)."""
        return self.code_bits / self.params

    @property
    def effective_bits(self) -> float | None:
        """Stored bits per weight (codes + codebooks/scales), what the mixed cell's size.effective_bits will say."""
        return None if self.stored_bits is None else self.stored_bits / self.params


def solve(groups: Sequence[Group], budget: float | str, unit: str = "effective") -> Allocation:
    """The bits per group minimizing the predicted drop sum_g drop_g(b_g) subject to
    sum_g cost_g(b_g) <= budget * sum_g params_g, cost in `unit` (Group.cost); exact.

    Additivity assumption (Q-BERT, HAWQ): the drop of the model with every group quantized is predicted by the sum
    of the drops measured with one group quantized at a time. Interactions between groups (errors compounding
    through the layers) are ignored; this is a first-order view that holds best when each group's perturbation is
    small, and the mixed cell's own measurement is the check. Sizes add up exactly: every tensor is packed alone.

    Dynamic programming over groups on the reachable totals of bits (integers, so the budget is met exactly: no
    float rounding). After each group only Pareto-optimal partial allocations are kept: one is dropped when another
    has fewer bits and a strictly lower drop, since any completion of it is then worse. Among equal predicted drops
    the one with more bits wins (measurements that cannot tell options apart never cost bits).
    """
    if unit not in UNITS:
        raise QbenchError(f"budget unit {unit!r}; valid: {', '.join(UNITS)}")
    if not groups:
        raise QbenchError("no groups to allocate")
    total = sum(g.params for g in groups)
    cap = math.floor(Fraction(str(budget)) * total)  # bits allowed; str: 2.7 means 27/10 exactly
    states: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}  # bits -> (drop, bits chosen so far)
    for g in groups:
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for t, (d, picks) in states.items():
            for b, drop in g.drops.items():
                t2, d2 = t + g.cost(b, unit), d + drop
                if t2 <= cap and (t2 not in nxt or d2 < nxt[t2][0]):
                    nxt[t2] = (d2, (*picks, b))
        if not nxt:
            fewest = sum(min(g.cost(b, unit) for b in g.drops) for g in groups) / total
            raise QbenchError(f"budget {budget} is below the fewest average {unit} bits the measured options allow, "
                              f"{fewest:.3f}")  # fmt: skip
        states = pareto(nxt)
    t, (d, picks) = min(states.items(), key=lambda s: (s[1][0], -s[0]))
    chosen = list(zip(groups, picks, strict=True))
    stored = sum(g.sizes[b] for g, b in chosen) if all(b in g.sizes for g, b in chosen) else None
    return Allocation({g.name: b for g, b in chosen}, d, sum(g.params * b for g, b in chosen), total, unit, stored)


def pareto(states: dict[int, tuple[float, tuple[int, ...]]]) -> dict[int, tuple[float, tuple[int, ...]]]:
    """The states no other state beats with fewer code bits and a strictly lower drop."""
    out, best = {}, math.inf
    for t in sorted(states):
        if states[t][0] <= best:
            out[t], best = states[t], states[t][0]
    return out


# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """The sensitivity records of one study: groups, the FP metric per seed, what to run the mixed cell with."""

    groups: list[Group]
    metric: str  # split/name of the main metric
    fp: dict[int, float]  # seed -> FP metric
    order: str = "ptq"  # the cells' train.order (ptq or zeroshot): the mixed cell's too, to compare
    run_args: list[str] = field(default_factory=list)  # the study's overrides, for the mixed cell's command


def read_sensitivity(records_dir: str | Path) -> Study:
    """Groups with their parameter counts and drops (mean over seeds of the drop against the FP record of the same
    seed; qbench.tasks.worse_by: perplexity lower-better, accuracy higher-better) from a study's records."""
    from qbench.sensitivity import model_groups
    from qbench.tasks import worse_by

    records = [r for f in sorted(Path(records_dir).rglob("record.json")) if (r := load(f))]
    quantized = [r for r in records if (r["config"].get("scheme") or {}).get("only")]
    if not quantized:
        raise QbenchError(f"{records_dir}: no completed sensitivity records (qbench sensitivity writes them)")
    one_study(quantized, records_dir)
    first = quantized[0]
    fp = {r["seed"]: r["main_metric"]["value"] for r in records if r["scheme"]["name"] == "none"
          and (r["model"], r["task"]) == (first["model"], first["task"])}  # fmt: skip
    if missing := sorted({r["seed"] for r in quantized} - set(fp)):
        raise QbenchError(f"{records_dir}: no full-precision record of seed {missing[0]} to measure drops against")
    metric = first["main_metric"]["name"]
    by_patterns = {tuple(p): name for name, p in model_groups(first["config"]["model"]).items()}
    drops: dict[str, dict[int, list[float]]] = {}
    params: dict[str, int] = {}
    sizes: dict[str, dict[int, int]] = {}
    for r in quantized:
        name = by_patterns.get(tuple(r["config"]["scheme"]["only"]))
        if name is None:
            raise QbenchError(f"{r['cell_id']}: scheme.only={r['config']['scheme']['only']} is none of the model's "
                              "groups")  # fmt: skip
        drop = worse_by(metric, fp[r["seed"]], r["main_metric"]["value"])
        drops.setdefault(name, {}).setdefault(r["scheme"]["bits"], []).append(drop)
        params[name] = r["scheme"]["quantized_params"]
        if "code_bytes" in (size := r.get("size") or {}):  # the group's stored bits at these bits (qbench.size)
            sizes.setdefault(name, {})[r["scheme"]["bits"]] = 8 * (size["code_bytes"] + size["side_bytes"])
    groups = [Group(name, params[name], {b: sum(v) / len(v) for b, v in sorted(drops[name].items())}, patterns,
                    sizes.get(name, {}))
              for patterns, name in by_patterns.items() if name in drops]  # fmt: skip
    if absent := [n for n in by_patterns.values() if n not in drops]:
        raise QbenchError(f"{records_dir}: no completed record of group(s) {', '.join(absent)} (rerun qbench "
                          "sensitivity: it runs only what is missing)")  # fmt: skip
    main = first["main_metric"]
    return Study(groups, f"{main['split']} {metric}", fp, first["order"], run_args(Path(first["_path"])))


def load(path: Path) -> dict | None:
    """A completed record with its config, and where it lies; None otherwise (a damaged one: with a warning)."""
    try:
        r = read_record(path)
    except DamagedRecord as e:
        print(f"qbench: warning: {e}; skipped", file=sys.stderr)
        return None
    return {**r, "_path": str(path.parent)} if r.get("status") == "completed" and "config" in r else None


def one_study(records: list[dict], where) -> None:
    """All quantized records differ in bits, group and seed alone, else drops of different settings would mix."""
    from qbench.sweep import BOOKKEEPING, EXCLUDED, drop, flatten, resolved, unused

    keys = {}
    for r in records:
        d = resolved(r["config"])
        for path in [*EXCLUDED, *BOOKKEEPING, *unused(d, False), "seed", "bits", "scheme.bits", "scheme.only"]:
            drop(d, path)
        keys.setdefault(json.dumps(d, sort_keys=True, default=str), flatten(d))
    if len(keys) > 1:
        a, b = list(keys.values())[:2]
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise QbenchError(f"{where}: records of {len(keys)} sensitivity studies (they differ in {', '.join(differ)});"
                          " give one study's folder")  # fmt: skip


def run_args(cell_dir: Path) -> list[str]:
    """The overrides a sensitivity cell ran with (Hydra's .hydra/overrides.yaml), less what the mixed cell sets."""
    from omegaconf import OmegaConf

    path = cell_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    drop = ("bits", "scheme.only", "study", "train.order")
    return [o for o in OmegaConf.load(path) if o.split("=", 1)[0].lstrip("+~") not in drop]


# ----------------------------------------------------------------------------------------------------------------
def bits_by(groups: Sequence[Group], allocation: Allocation) -> dict[str, int]:
    """scheme.bits_by of an allocation: every pattern of each group at the group's bits."""
    return {p: allocation.bits[g.name] for g in groups for p in g.patterns}


def override(mapping: Mapping[str, int]) -> str:
    """The command-line form `+scheme.bits_by={pattern:bits,...}` (Hydra's grammar takes these patterns unquoted)."""
    return "+scheme.bits_by={" + ",".join(f"{p}:{b}" for p, b in mapping.items()) + "}"


def report(study: Study, allocation: Allocation, budget: float) -> str:
    """The table (group, params, chosen bits, predicted drop, the drops measured at each bits) and totals."""
    measured = sorted({b for g in study.groups for b in g.drops})
    head = f"{'group':10s} {'params':>12s} {'bits':>4s} {'drop':>9s}   "
    lines = [head + " ".join(f"{f'{b}b':>8s}" for b in measured)]
    for g in study.groups:
        b = allocation.bits[g.name]
        cells = " ".join(f"{g.drops[x]:8.4f}" if x in g.drops else f"{'':8s}" for x in measured)
        lines.append(f"{g.name:10s} {g.params:12,d} {b:4d} {g.drops[b]:9.4f}   {cells}")
    eff = allocation.effective_bits
    lines.append(f"budget {budget} {allocation.unit} bits per weight ({UNIT_MEANS[allocation.unit]}); average "
                 f"effective bits {'unknown' if eff is None else f'{eff:.4f}'}, average code bits "
                 f"{allocation.average_code_bits:.4f}")  # fmt: skip
    lines.append(f"predicted drop in {study.metric} {allocation.drop:.4f} (sum over groups; FP {fmt_fp(study.fp)})")
    return "\n".join(lines)


UNIT_MEANS = {"effective": "codes + codebooks/scales, as records' size.effective_bits", "code": "code bits only"}


def fmt_fp(fp: Mapping[int, float]) -> str:
    return ", ".join(f"seed {s}: {v:.4f}" for s, v in sorted(fp.items()))


def write_allocation(path: Path, study: Study, allocation: Allocation, budget: float, command: str) -> None:
    """FILE.yaml: scheme.bits_by as a global-package config (an experiment file), the budget and its unit, the
    table and command as comments."""
    import yaml

    head = ["# @package _global_", f"# qbench allocate --budget {budget} --budget-unit {allocation.unit}: bits per "
            "sensitivity group", "#"]  # fmt: skip
    head += [f"# {line}" for line in report(study, allocation, budget).splitlines()]
    head += ["#", "# run the mixed-precision cell:", f"#   {command}"]
    body = yaml.safe_dump({"scheme": {"bits_by": bits_by(study.groups, allocation)},
                           "allocation": {"budget": budget, "unit": allocation.unit}}, sort_keys=False)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + "\n" + body)


def allocate_command(argv: list[str]) -> None:
    """`qbench allocate RECORDS_DIR --budget B [--budget-unit effective|code] [--out FILE.yaml]`."""
    about = "Bits per module group from the records of qbench sensitivity: least summed drop at a bits budget."
    ap = argparse.ArgumentParser(prog="qbench allocate", description=about)
    ap.add_argument("records", help="the sensitivity study's folder (results/sweeps/<study>)")
    ap.add_argument("--budget", type=float, required=True, help="parameter-weighted average bits, e.g. 3.0")
    ap.add_argument("--budget-unit", choices=UNITS, default="effective",
                    help="effective (default): codes + codebooks/scales per weight, as records' size.effective_bits; "
                    "code: code bits only")  # fmt: skip
    ap.add_argument("--out", help="write the allocation here (a yaml with scheme.bits_by)")
    a = ap.parse_args(argv)
    study = read_sensitivity(a.records)
    allocation = solve(study.groups, a.budget, a.budget_unit)
    nominal = min(8, max(1, math.floor(a.budget)))  # the cell id's -b<bits>; every weight takes bits_by's bits
    mixed = override(bits_by(study.groups, allocation))
    note = f"allocation={{budget:{a.budget},unit:{allocation.unit}}}"  # the record says which budget this met
    args = [*study.run_args, f"train.order={study.order}", f"bits={nominal}", mixed, note]
    command = " ".join(["qbench run", *map(shlex.quote, args)])
    print(report(study, allocation, a.budget))
    if a.out:
        write_allocation(Path(a.out), study, allocation, a.budget, command)
        print(f"allocation written to {a.out}")
    print(f"run the mixed-precision cell:\n  {command}")
