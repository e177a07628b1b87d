"""Command-line overrides before Hydra runs them: the config groups and their options, the first cell of a sweep,
the values a key takes, composition. Shared by `qbench run`, `size` and `sensitivity` (qbench.cli); errors are
QbenchError (one line, exit 2 from the command line)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from qbench.errors import QbenchError

GROUPS = ("model", "task", "scheme", "train", "distill", "experiment")


def conf_dir() -> Path:
    """The packaged Hydra config folder (conf/ in the source tree, qbench/conf when installed)."""
    return Path(str(resources.files("qbench.conf")))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def first_cell(args: list[str]) -> tuple[list[str], set[str], list[str]]:
    """Parse key=value overrides, check group choices (one line listing the valid names); returns the overrides
    of the first cell of the sweep, the keys given and the schemes swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise QbenchError(f"cannot parse overrides: {str(e).splitlines()[0]}") from None
    first, keys, schemes = [], set(), ["kmeans"]
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if key in GROUPS:
            for v in values:
                if v not in options(key):
                    raise QbenchError(f"unknown {key} {v!r}; valid: {', '.join(options(key))}")
        keys.add(key)
        schemes = values if key == "scheme" else schemes
        if not key.startswith("hydra"):
            first.append(f"{o.get_key_element()}={values[0]}")
    return first, keys, schemes


def compose_cell(overrides: list[str], hydra: bool = False):
    """The composed config of `overrides` (with Hydra's node when `hydra`); a composition error is a QbenchError."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module("qbench.conf", version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise QbenchError(str(e).strip().splitlines()[0]) from None


def swept_values(args: list[str], key: str) -> list[str]:
    """Every value that `key` takes in these overrides (a sweep's list, or one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")]):
        if o.get_key_element().lstrip("+~") == key:
            out += list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    return out
