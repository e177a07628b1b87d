"""Cells of a study: a stable id per configuration, resume by skipping completed cells, and cached FP models.

A cell's directory is named by its id (model-task-scheme-bits-seed plus a hash of the resolved config), so the
same configuration always lands in the same folder: rerunning a killed sweep finds the records already written
and runs only the missing cells. Records are written atomically, so a folder holds a whole record or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
# keys that do not change a cell's result: where things are written or read from, and bookkeeping
VOLATILE = ("hydra", "force", "save_predictions", "export", "data_dir", "device", "cache_dir")


def scheme_name(cfg: DictConfig) -> str:
    """'none', 'linear', 'kmeans', ... from the scheme's _target_ class."""
    import importlib

    module, _, cls = cfg.scheme["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), cls).name


def identity(cfg: DictConfig) -> dict:
    """The resolved config that defines a cell's result (volatile keys dropped; bits dropped for scheme=none)."""
    d = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
         for k, v in ((k, cfg[k]) for k in cfg if k not in VOLATILE)}  # fmt: skip
    if scheme_name(cfg) == "none":
        for k in ("bits", "embed_bits", "act_bits"):
            d.pop(k, None)
    # defaults added later are dropped, so cells of older configs keep their ids
    for k in ("embed_bits", "act_bits"):
        for where in (d, d.get("scheme") or {}):
            if where.get(k, 0) is None:
                where.pop(k)
    if (d.get("distill") or {}).get("name") == "none":
        d.pop("distill")
    return d


def cell_id(cfg: DictConfig) -> str:
    """'<model>-<task>-<scheme>[-b<bits>]-s<seed>-<8 hex of the config hash>'."""
    ident = identity(cfg)
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
    scheme = scheme_name(cfg)
    bits = "" if scheme == "none" else f"-b{cfg.bits}"
    return f"{cfg.model.name}-{cfg.task.name}-{scheme}{bits}-s{cfg.seed}-{digest}"


def completed(run_dir: Path) -> dict | None:
    """The completed record in run_dir, if any (a failed or missing record means: run it)."""
    path = run_dir / "record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "completed" else None


def fp_cache_dir(cfg: DictConfig) -> Path:
    """Where the full-precision fine-tuned model of (model, task, seed, training config) is kept."""
    ident = {k: identity(cfg)[k] for k in ("model", "task", "seed", "train")}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in ("order", "progress_bar", "logging_steps")}
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = cfg.get("cache_dir") or os.environ.get("QBENCH_CACHE") or Path.home() / ".cache" / "qbench"
    return Path(root) / "finetuned" / f"{cfg.model.name}-{cfg.task.name}-s{cfg.seed}-{digest}"
