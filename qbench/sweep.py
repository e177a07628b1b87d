"""Cells of a study: a stable id per configuration, and resume by skipping completed cells.

A cell's directory is named by its id (model-task-scheme-bits-seed plus a hash of the resolved config), so the
same configuration always lands in the same folder: rerunning a killed sweep finds the records already written
and runs only the missing cells. Records are written atomically, so a folder holds a whole record or none.

What identifies a result, in one place: every config key is part of a cell's identity (and of the FP cache key)
unless it is listed below. Local data are identified by their content (`data_identity`), not by their path.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

from omegaconf import DictConfig, OmegaConf

from qbench import integrity
from qbench.config import task_overrides
from qbench.data import split_file
from qbench.errors import QbenchError
from qbench.record import DamagedRecord, read_record

log = logging.getLogger(__name__)
# dotted config keys (a key covers everything under it) that never change a cell's result: left out of the cell
# id, of the FP cache key and of the table's configuration key
EXCLUDED = {
    "hydra": "Hydra's own settings: output folders, launcher, logging",
    "force": "reruns a completed cell",
    "save_predictions": "whether predictions.jsonl is written",
    "export": "whether the packed checkpoint file is written (its size is computed either way)",
    "cache_dir": "where fine-tuned FP models are kept",
    "allocation": "the budget and its unit that `qbench allocate` met with a mixed cell's scheme.bits_by (which it "
    "already holds): a note in the record",
    "device": "the hardware, not the method (auto resolves at run time; CPU and GPU results can differ in float "
    "rounding): the record's `device` says which ran",
    "data_dir": "a path on this machine: local data are identified by content instead (data_identity)",
    "task.data_dir": "likewise (it stays in the id as null, as in older ids)",
    "also_eval": "other tasks scored by the cell's final model: they add metrics, never change the cell's own (a "
    "completed cell is not rerun to add them; force=true reruns it)",
    "train.report_to": "where the training curves are logged as well (TensorBoard)",
    "model.groups": "the sensitivity groups, read by `qbench sensitivity` only (its cells set scheme.only)",
    "distill.cache_teacher": "whether the teacher's outputs are read from qbench.teacher_cache: the same targets up to "
    "float16 rounding of its states (losses within 1e-4, gradients within 1e-3 relative: tests/test_teacher_cache.py)",
}
# in the cell id (ids of older configs stay the same) but without any effect on results: the FP cache key and
# tables ignore them
BOOKKEEPING = ("study", "train.logging_steps", "train.progress_bar")
# keys of the quantization stage only: not part of the FP cache key (train.qat: QAT-stage training overrides)
QUANT_STAGE = ("scheme", "bits", "embed_bits", "act_bits", "distill", "train.order", "train.qat")


def scheme_name(cfg: DictConfig | dict) -> str:
    """'none', 'linear', 'kmeans', ... from the scheme's _target_ class (imported by its dotted name)."""
    module, _, cls = cfg["scheme"]["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), cls).name


def under(path: str, keys) -> bool:
    """Whether dotted `path` is one of `keys` or lies under one of them."""
    return any(path == k or path.startswith(k + ".") for k in keys)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a.b': leaf} of a nested dict; lists and empty dicts are leaves."""
    out = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def drop(d: dict, path: str) -> None:
    """Remove dotted `path` from nested dict d (if there)."""
    *parents, last = path.split(".")
    for p in parents:
        d = d.get(p) if isinstance(d, dict) else None
        if not isinstance(d, dict):
            return
    d.pop(last, None)


def unused(d: dict, full_precision: bool) -> list[str]:
    """Keys of resolved config d that cannot change this cell's result: the bits of a full-precision cell, the
    distillation settings when distillation is off (kd_weight = tcd_weight = 0), a scheme seed equal to the run's,
    W-E-A bits and QAT-stage overrides (train.qat.*) left null (= the default), k-means' granularity at `tensor`,
    its group_size unless granularity=group, its weighting at `none` and calib_batches unless weighting=fisher, its
    search at `lloyd`, and
    per-tensor bits (scheme.bits_by) or a sensitivity group (scheme.only) not set."""
    out = ["bits", "embed_bits", "act_bits"] if full_precision else []
    distill = d.get("distill") or {}
    if not (distill.get("kd_weight") or distill.get("tcd_weight")):
        out.append("distill")
    for where, prefix in ((d, ""), (d.get("scheme") or {}, "scheme.")):  # defaults added later: dropped while
        out += [prefix + k for k in ("embed_bits", "act_bits") if k in where and where[k] is None]  # null
    if "seed" in (d.get("scheme") or {}) and d["scheme"]["seed"] == d.get("seed"):
        out.append("scheme.seed")  # the run's seed (k-means' init), already in the id as `seed`
    scheme = d.get("scheme") or {}
    if scheme.get("_target_") == "qbench.quant.kmeans.KMeans":  # added later: paper A's k-means ids stay as they were
        out += ["scheme.granularity"] if scheme.get("granularity", "tensor") == "tensor" else []
        out += ["scheme.group_size"] if scheme.get("granularity", "tensor") != "group" else []  # read by group only
        out += ["scheme.weighting", "scheme.calib_batches"] if scheme.get("weighting", "none") == "none" else []
        out += ["scheme.search"] if scheme.get("search", "lloyd") == "lloyd" else []
    out += [f"scheme.{k}" for k in ("bits_by", "only") if k in scheme and not scheme[k]]  # added later: as absent
    qat = (d.get("train") or {}).get("qat") or {}  # QAT-stage overrides: null = the train.* value, as without it
    nulls = [f"train.qat.{k}" for k, v in qat.items() if v is None]
    return out + (["train.qat"] if qat and len(nulls) == len(qat) else nulls)


def resolved(cfg: DictConfig | dict) -> dict:
    """A composed config (or its resolved dict) as a new plain dict, resolved, without the top-level EXCLUDED keys
    (Hydra's own node is never resolved: its run folder is named by the cell id)."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else copy.deepcopy(v)
            for k, v in ((k, cfg[k]) for k in cfg if k not in EXCLUDED)}  # fmt: skip


def identity(cfg: DictConfig | dict) -> dict:
    """What defines a cell's result: the resolved config without EXCLUDED and unused keys, plus the local data's
    fingerprint (`data`, absent when every split comes from the hub)."""
    d = task_overrides(resolved(cfg))  # a recipe's per-task settings: only this task's count
    for path in [*EXCLUDED, *unused(d, scheme_name(cfg) == "none")]:
        drop(d, path)
    scheme = d.get("scheme") or {}
    if scheme.get("bits_by"):  # the first matching pattern wins: its order is part of the result, which the hash of
        scheme["bits_by"] = [[p, b] for p, b in scheme["bits_by"].items()]  # a dict (sorted keys) would lose
    if "data_dir" in cfg["task"]:  # null as in older ids: `data` below says what is read, from any folder
        d["task"]["data_dir"] = None
    data = data_identity(cfg)
    if data:
        d["data"] = data
    return d


def digest(obj, n: int) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def cell_id(cfg: DictConfig | dict) -> str:
    """'<model>-<task>-<scheme>[-b<bits>]-s<seed>-<8 hex of the config hash>'."""
    scheme = scheme_name(cfg)
    bits = "" if scheme == "none" else f"-b{cfg['bits']}"
    return f"{cfg['model']['name']}-{cfg['task']['name']}-{scheme}{bits}-s{cfg['seed']}-{digest(identity(cfg), 8)}"


def file_fingerprint(path: Path) -> dict:
    """{file, bytes, sha256}: the same for a copy of the file at any path, different for any other content."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": integrity.sha256(path)[:16]}


def data_identity(cfg: DictConfig | dict) -> dict | None:
    """{split: fingerprint | 'missing'} of the local files a cell reads (task.data_dir, else the mirror under
    data_dir); None when the data come from the hub (task.hub, already in the id)."""
    t = cfg["task"]
    if not (t.get("data_dir") or (cfg.get("data_dir") and t.get("mirror"))):
        return None
    spec = SimpleNamespace(name=t.get("name"), files=dict(t.get("files") or {}), data_dir=t.get("data_dir"),
                           mirror=t.get("mirror"))  # fmt: skip
    out = {}
    for split in dict.fromkeys([t.get("train_split", "train"), *(t.get("eval_splits") or [])]):
        try:
            out[split] = file_fingerprint(split_file(spec, split, cfg.get("data_dir")))
        except (QbenchError, OSError, TypeError):  # a bad config fails later, in validate, with its message
            out[split] = "missing"
    return out


def completed(run_dir: Path) -> dict | None:
    """The completed record in run_dir, if any (a failed, missing or damaged record means: run it; a damaged one
    is named in one log line)."""
    path = run_dir / "record.json"
    try:
        record = read_record(path)
    except FileNotFoundError:
        return None
    except DamagedRecord as e:
        log.warning("%s: running the cell again", e)
        return None
    return record if record.get("status") == "completed" else None
