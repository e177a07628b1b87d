"""Command line: `qbench run|export|size|table|plot|sensitivity|allocate|claims`, `qbench --help`.

User errors (unknown names, bad values, missing data or weights) print one line and exit 2, with no record.
A crash inside a run writes a 'failed' record; in a multirun the sweep goes on to the next cell.

Lazy imports, deliberately: each command imports what it runs when it runs (Hydra; qbench's pipeline, cell,
size and sweep modules pull in torch and transformers; the report pandas and matplotlib), so `qbench --help`
answers at once and a bad group name fails before torch is loaded.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf

from qbench.errors import QbenchError
from qbench.overrides import GROUPS, compose_cell, first_cell, options, swept_values

log = logging.getLogger("qbench")
COMMANDS = {
    "run": "quantize, fine-tune and evaluate one configuration (or a sweep with -m)",
    "export": "write the packed low-bit checkpoint of a run (qbench export RUN_DIR)",
    "size": "bytes on disk and compression ratios of a model/scheme/bits, offline (qbench size model=gpt2)",
    "table": "paper-shaped tables (Markdown, LaTeX, CSV) from records (qbench table results/sweeps/STUDY)",
    "plot": "metric vs bits and vs effective bits, PNG and SVG, from records",
    "sensitivity": "PTQ cells with one module group quantized at a time (qbench sensitivity --help)",
    "allocate": "bits per module group from sensitivity records at an average-bits budget (scheme.bits_by)",
    "claims": "check a study's claims (YAML) by a paired bootstrap over seeds and examples (qbench claims --help)",
}


def _cell_id(*, _root_) -> str:
    from qbench.sweep import cell_id

    return cell_id(_root_)


OmegaConf.register_new_resolver("cell_id", _cell_id, replace=True)  # run folders named by configuration


def fail(msg: str) -> None:
    print(f"qbench: error: {msg}", file=sys.stderr)
    sys.exit(2)


def top_help() -> str:
    lines = ["usage: qbench <command> [key=value ...] [-m]", "", "commands:"]
    lines += [f"  {c:11s} {d}" for c, d in COMMANDS.items()]
    lines += ["", "config groups (group=option):"]
    lines += [f"  {g:10s} {', '.join(options(g))}" for g in GROUPS]
    lines += ["", "'qbench run --help' shows every key and its default. Examples:",
              "  qbench run model=bert scheme=kmeans bits=2",
              "  qbench run -m scheme=linear,kmeans bits=1,2,3,4,8 task=rte"]  # fmt: skip
    return "\n".join(lines)


def check_overrides(args: list[str], full: bool = True) -> list[str]:
    """Validate group choices, reject bits with only scheme=none, compose the first cell of the sweep (an
    experiment's own sweep, hydra.sweeper.params, included) and validate it; returns that first cell's overrides."""
    from hydra.types import RunMode

    first, given, schemes = first_cell([a for a in args if not a.startswith("-")])
    cfg = compose_cell(first, hydra=True)
    multirun, params = "-m" in args or "--multirun" in args or cfg.hydra.mode == RunMode.MULTIRUN, {}
    if multirun:
        params = {k: v for k, v in (cfg.hydra.sweeper.get("params") or {}).items() if k not in given}
        if params:  # e.g. +experiment=paper_b_bart sweeps task=xsum,cnn_dm: its first cell is validated
            first += first_cell([f"{k}={v}" for k, v in params.items()])[0]
    cfg = compose_cell(first)
    if not full:  # `qbench size`: composing is enough (no data, no weights needed)
        return first
    from qbench.cell import parse

    try:
        if "bits" in given and set(schemes) == {"none"}:
            raise QbenchError("scheme=none is the full-precision baseline: drop bits=... (a bits sweep repeats it)")
        tasks = swept_values([*args, *(f"{k}={v}" for k, v in params.items())], "task") if multirun else []
        check_shadowed(given, cfg, tasks or [cfg.task.name])
        parse(cfg)
    except QbenchError as e:
        fail(str(e))
    return first


def check_shadowed(given: set[str], cfg, tasks: list[str]) -> None:
    """A train.KEY given on the command line that a task's train.tasks entry sets would be silently replaced for
    that task (the entry is merged last): refuse it, naming the key to override instead."""
    entries = cfg.train.get("tasks") or {}
    for key in sorted(k for k in given if k.startswith("train.") and k.count(".") == 1):
        for task in tasks:
            if key[6:] in (entries.get(task) or {}):
                raise QbenchError(f"{key} would not apply to task {task}: this recipe sets train.tasks.{task}."
                                  f"{key[6:]}={entries[task][key[6:]]}; override that key instead")  # fmt: skip


def run_command(args: list[str]) -> None:
    """`qbench run`: hand the overrides to Hydra (single run or -m multirun) after a fast validation."""
    import hydra

    if not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") for a in args):
        check_overrides(args)

    @hydra.main(config_path="pkg://qbench.conf", config_name="config", version_base="1.3")
    def _job(cfg) -> float | None:
        return job(cfg)

    sys.argv = ["qbench run", *args]
    _job()


def job(cfg) -> float | None:
    """One Hydra job: skip a completed cell, else run the pipeline. A single run's user error exits 2 with no
    record; a crash, or any error of one cell of a multirun, leaves a 'failed' record and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from qbench.pipeline import failed_record, run
    from qbench.sweep import completed

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if not cfg.force and (done := completed(run_dir)):
        log.info("skip %s: this configuration already has a completed record (force=true reruns it)", run_dir.name)
        print(f"skip (completed): {run_dir / 'record.json'}")
        return done["main_metric"]["value"]
    started, multirun = datetime.now(timezone.utc), hc.mode == RunMode.MULTIRUN
    try:
        record = run(cfg, run_dir)
    except Exception as e:
        if isinstance(e, QbenchError) and not multirun:
            fail(str(e))
        failed_record(cfg, run_dir, e, started, hc.runtime.choices["scheme"])
        log.error("cell failed (%s); record written to %s", e, run_dir / "record.json", exc_info=True)
        if multirun:
            return None
        raise
    m = record["main_metric"]
    print(f"{record['model']} {record['task']} {record['scheme']['name']} bits={record['scheme'].get('bits')}: "
          f"{m['split']} {m['name']}={m['value']:.4f}  record: {run_dir / 'record.json'}")  # fmt: skip
    return m["value"]


EXPORT_HELP = """usage: qbench export RUN_DIR

Write the packed low-bit checkpoint RUN_DIR/model.packed.safetensors of a completed quantized run.

A run keeps no model weights unless it was started with export=true (qbench run ... export=true writes the
packed file right after training). For a run without it, `qbench export` re-runs the run's resolved config
(RUN_DIR/record.json, else RUN_DIR/.hydra/config.yaml) with export=true in RUN_DIR: the model is rebuilt, quantized
and fine-tuned again with the same seed, and the new record.json (with the file's size) replaces the old one,
which is kept as record.before-export.json; the command prints both main metrics so a difference is visible.
If the packed file already exists, it is loaded back (to check it rebuilds the model) and its size is printed.
Load it in Python with qbench.quant.checkpoint.load_packed(path)."""


def export_run(run_dir: str | Path) -> str:
    """`qbench export RUN_DIR` (see EXPORT_HELP); returns the lines to print."""
    from qbench.pipeline import run
    from qbench.quant.checkpoint import PACKED_NAME, load_packed
    from qbench.record import read_record

    run_dir = Path(run_dir)
    packed, rec_path, hydra_cfg = run_dir / PACKED_NAME, run_dir / "record.json", run_dir / ".hydra" / "config.yaml"
    record = read_record(rec_path) if rec_path.is_file() else None
    if packed.is_file():
        load_packed(packed)
        s = (record or {}).get("size") or {}
        ratio = f", ratio to fp32 {s['ratio_fp32']:.2f}x" if "ratio_fp32" in s else ""
        return f"already exported: {packed} ({packed.stat().st_size:,d} bytes{ratio}); it loads back"
    if record is not None:
        if record.get("status") != "completed":
            raise QbenchError(f"{rec_path}: status {record.get('status')!r}; only a completed run can be exported")
        cfg = OmegaConf.create(record["config"])
    elif hydra_cfg.is_file():
        cfg = OmegaConf.load(hydra_cfg)
    else:
        raise QbenchError(f"{run_dir}: no record.json or .hydra/config.yaml; not a qbench run directory")
    if str(cfg.scheme.get("_target_", "")).endswith("NoQuant"):
        raise QbenchError(f"{run_dir}: scheme=none, nothing is quantized; there is no packed checkpoint to write")
    cfg.export = True
    before = run_dir / "record.before-export.json"
    if record is not None:
        before.write_text(rec_path.read_text())
    try:
        new = run(cfg, run_dir)
    except BaseException:
        if record is not None:  # leave the run directory as it was
            rec_path.write_text(before.read_text())
            before.unlink()
        raise
    m, s = new["main_metric"], new["size"]
    lines = [f"re-ran {run_dir} with export=true: {packed} ({s['packed_bytes']:,d} bytes, "
             f"ratio to fp32 {s['ratio_fp32']:.2f}x, paper B {s['ratio_paper']:.2f}x)"]  # fmt: skip
    if record is not None:
        old = record["main_metric"]["value"]
        same = "same as" if old == m["value"] else "DIFFERS from"
        lines.append(f"{m['split']} {m['name']}={m['value']:.4f}, {same} the original record's {old:.4f} "
                     f"(kept as {before.name})")  # fmt: skip
    return "\n".join(lines)


def export_command(args: list[str]) -> None:
    """`qbench export RUN_DIR`: see EXPORT_HELP."""
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(EXPORT_HELP)
        return None if args and args[0] in ("-h", "--help") else fail("qbench export takes one RUN_DIR")
    try:
        print(export_run(args[0]))
    except QbenchError as e:
        fail(str(e))


def size_command(args: list[str]) -> None:
    """`qbench size [overrides]`: the full-shape model of model.arch, quantized, packed to a temporary file."""
    from qbench.cell import build_scheme
    from qbench.config import model_schema
    from qbench.models import arch_model
    from qbench.quant.schemes import NoQuant
    from qbench.size import size_of_model

    if any(a in ("-h", "--help") for a in args):
        print(
            "usage: qbench size [model=... scheme=... bits=... key=value ...]\n\nBuilds the model at full size "
            "from its yaml's arch: (random weights, offline), quantizes it, packs it to a temporary file and prints "
            "bytes and ratios; the last line is ratio_fp32=<x> ratio_paper=<y> (paper B: Tao et al. 2022)."
        )
        return
    cfg = compose_cell(check_overrides(args, full=False))
    try:
        scheme = build_scheme(cfg)
        if isinstance(scheme, NoQuant):
            raise QbenchError("scheme=none: nothing is quantized; pick scheme=kmeans or scheme=linear")
        model = arch_model(model_schema(cfg.model), cfg.seed)
        print(size_of_model(model, scheme, cfg.model.include, cfg.model.exclude, cfg.model.name)[1])
    except QbenchError as e:
        fail(str(e))


def claims_command(argv: list[str]) -> None:
    """`qbench claims DIR [DIR ...] --claims FILE [--out FILE]`: qbench.claims' report, printed and/or written."""
    import argparse

    from qbench import claims

    p = argparse.ArgumentParser(prog="qbench claims", description=claims.__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="folders searched for record.json (with predictions.jsonl)")
    p.add_argument("--claims", required=True, help="YAML claims file (see qbench/claims.py)")
    p.add_argument("--out", help="also write the Markdown report here")
    p.add_argument("--resamples", type=int, default=claims.RESAMPLES)
    p.add_argument("--seed", type=int, default=claims.SEED, help="bootstrap generator seed")
    a = p.parse_args(argv)
    text = claims.check(a.paths, a.claims, a.resamples, a.seed)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


def sensitivity_command(args: list[str]) -> None:
    """`qbench sensitivity`: the FP multirun, then the (group, bits) multirun (qbench.sensitivity.HELP)."""
    from hydra.core.global_hydra import GlobalHydra

    from qbench.sensitivity import HELP, check_partition, key_of, model_groups, sweeps
    from qbench.sweep import scheme_name

    if any(a in ("-h", "--help") for a in args):
        print(HELP)
        return
    args = [a for a in args if not a.startswith("-")]  # always a multirun
    cfg = compose_cell(first_cell([a for a in args if key_of(a) not in ("bits", "scheme.only")])[0])
    if scheme_name(cfg) == "none":
        raise QbenchError("scheme=none quantizes nothing: pick the scheme whose sensitivity to measure")
    groups = model_groups(cfg.model)
    check_partition(cfg.model)
    study = (swept_values(args, "study") or [f"sensitivity_{cfg.model.name}_{cfg.task.name}_{scheme_name(cfg)}"])[-1]
    fp, grid = sweeps(args, groups, study)
    print(f"sensitivity: {len(groups)} groups of model={cfg.model.name} -> results/sweeps/{study}", file=sys.stderr)
    for overrides in (fp, grid):
        GlobalHydra.instance().clear()  # one Hydra application per multirun
        run_command(["-m", *overrides])
    GlobalHydra.instance().clear()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_help())
        return
    cmd, rest = argv[0], argv[1:]
    handlers = {
        "run": run_command,
        "export": export_command,
        "size": size_command,
        "sensitivity": sensitivity_command,
        "claims": claims_command,
    }
    if cmd in ("table", "plot"):  # imported on use: pandas/matplotlib stay out of `qbench run`'s start-up
        from qbench import report

        handlers[cmd] = getattr(report, f"{cmd}_command")
    if cmd == "allocate":  # mixed precision from sensitivity records (qbench.allocate)
        from qbench.allocate import allocate_command

        handlers[cmd] = allocate_command
    if cmd not in handlers:
        fail(f"unknown command {cmd!r}; valid: {', '.join(COMMANDS)}")
    try:
        handlers[cmd](rest)
    except QbenchError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
