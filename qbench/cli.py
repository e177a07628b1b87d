"""Command line: `qbench run [hydra overrides]`, `qbench --help`.

User errors (unknown names, bad values, missing data or weights) print one line and exit 2, with no record.
A crash inside a run writes a 'failed' record; in a multirun the sweep goes on to the next cell.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from qbench.errors import QbenchError

log = logging.getLogger("qbench")
GROUPS = ("model", "task", "scheme", "train")
COMMANDS = {"run": "quantize, fine-tune and evaluate one configuration (or a sweep with -m)"}

OmegaConf.register_new_resolver("bits_tag", lambda scheme, bits: "" if scheme == "none" else f"-b{bits}", replace=True)


def conf_dir() -> Path:
    """The packaged Hydra config folder (conf/ in the source tree, qbench/conf when installed)."""
    return Path(str(resources.files("qbench.conf")))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def fail(msg: str) -> None:
    print(f"qbench: error: {msg}", file=sys.stderr)
    sys.exit(2)


def top_help() -> str:
    lines = ["usage: qbench <command> [key=value ...] [-m]", "", "commands:"]
    lines += [f"  {c:8s} {d}" for c, d in COMMANDS.items()]
    lines += ["", "config groups (group=option):"]
    lines += [f"  {g:8s} {', '.join(options(g))}" for g in GROUPS]
    lines += ["", "'qbench run --help' shows every key and its default. Examples:",
              "  qbench run model=bert scheme=kmeans bits=2",
              "  qbench run -m scheme=linear,kmeans bits=1,2,3,4,8 task=rte"]  # fmt: skip
    return "\n".join(lines)


def check_overrides(args: list[str]) -> tuple[list[str], bool]:
    """Validate group choices (one line listing the valid names) and compose the first cell of the sweep;
    returns the overrides of that first cell and whether bits was set on the command line."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    kv = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(kv)
    except HydraException as e:
        fail(f"cannot parse overrides: {str(e).splitlines()[0]}")
    first, bits_given = [], False
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if key in GROUPS:
            for v in values:
                if v not in options(key):
                    fail(f"unknown {key} {v!r}; valid: {', '.join(options(key))}")
        bits_given |= key == "bits"
        if not key.startswith("hydra"):
            first.append(f"{o.get_key_element()}={values[0]}")
    try:
        with initialize_config_module("qbench.conf", version_base="1.3"):
            cfg = compose("config", overrides=first)
    except (HydraException, OmegaConfBaseException) as e:
        fail(str(e).strip().splitlines()[0])
    from qbench.pipeline import validate

    try:
        validate(cfg, bits_given)
    except QbenchError as e:
        fail(str(e))
    return first, bits_given


def run_command(args: list[str]) -> None:
    """`qbench run`: hand the overrides to Hydra (single run or -m multirun) after a fast validation."""
    import hydra

    bits_given = False
    if not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") for a in args):
        _, bits_given = check_overrides(args)

    @hydra.main(config_path="pkg://qbench.conf", config_name="config", version_base="1.3")
    def _job(cfg) -> float | None:
        return job(cfg, bits_given)

    sys.argv = ["qbench run", *args]
    _job()


def job(cfg, bits_given: bool) -> float | None:
    """One Hydra job: run the pipeline; a user error exits 2, a crash leaves a 'failed' record."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from qbench.pipeline import failed_record, run

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    started = datetime.now(timezone.utc)
    try:
        record = run(cfg, run_dir, bits_given)
    except QbenchError as e:
        fail(str(e))
    except Exception as e:  # a crash: record it; a multirun goes on with the next cell
        failed_record(cfg, run_dir, e, started, hc.runtime.choices["scheme"])
        log.exception("run failed; record written to %s", run_dir / "record.json")
        if hc.mode == RunMode.MULTIRUN:
            return None
        raise
    m = record["main_metric"]
    print(f"{record['model']} {record['task']} {record['scheme']['name']} bits={record['scheme'].get('bits')}: "
          f"{m['split']} {m['name']}={m['value']:.4f}  record: {run_dir / 'record.json'}")  # fmt: skip
    return m["value"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_help())
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        run_command(rest)
    else:
        fail(f"unknown command {cmd!r}; valid: {', '.join(COMMANDS)}")


if __name__ == "__main__":
    main()
