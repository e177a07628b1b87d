"""The full-precision fine-tuned model of a cell, trained once per (model, task, seed, training config, data).

`ptq` and `ft_then_qat` cells and distillation teachers load it from the cache instead of training again. Its key
is the cell's identity (qbench.sweep) without the keys of the quantization stage (QUANT_STAGE) and bookkeeping;
it is written atomically (a folder renamed into place), so a concurrent job finds a whole model or none. Its
manifest (qbench.integrity) is written last: an entry damaged since (a file cut short, emptied, overwritten) is
reported in one log line naming its folder, removed, and trained again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from qbench.distributed import barrier, is_main
from qbench.integrity import discard, folder_problem, seal_folder
from qbench.models import cache_root
from qbench.sweep import BOOKKEEPING, QUANT_STAGE, digest, drop, identity

log = logging.getLogger(__name__)
INFO = "training.json"  # the FP stage's training summary: its presence marks an entry (the manifest, a whole one)


def fp_identity(cfg: DictConfig | dict) -> dict:
    """What defines the full-precision fine-tuned model: the cell's identity without the quantization stage."""
    d = identity(cfg)
    for path in (*QUANT_STAGE, *BOOKKEEPING):
        drop(d, path)
    return d


def fp_cache_dir(cfg: DictConfig | dict) -> Path:
    """Where the full-precision fine-tuned model of (model, task, seed, training config, data) is kept."""
    name = f"{cfg['model']['name']}-{cfg['task']['name']}-s{cfg['seed']}-{digest(fp_identity(cfg), 12)}"
    return cache_root(cfg.get("cache_dir")) / "finetuned" / name


def is_cached(cache: Path) -> bool:
    """Whether `cache` holds a whole entry. A damaged one is logged (one line, its path and what is wrong) and
    removed, so the caller trains it again. An entry written before manifests existed is read through (every
    tensor, every JSON file) and, when whole, adopted: its manifest is written."""
    if not (cache / INFO).is_file():
        return False
    problem = folder_problem(cache)
    if problem == "no manifest":
        problem = unsealed_problem(cache)
        if problem is None:
            try:
                seal_folder(cache)
                log.info("FP cache entry without a manifest read through and adopted: %s", cache)
            except OSError as e:  # a read-only cache: use it as it is, read through again next time
                log.info("FP cache entry without a manifest read through (not sealed: %s): %s", e, cache)
    if problem is None:
        return True
    log.warning("damaged FP cache entry %s (%s): removed, fine-tuning it again", cache, problem)
    discard(cache)
    return False


def unsealed_problem(cache: Path) -> str | None:
    """What keeps an entry without a manifest from loading (None: it loads): a JSON file that does not parse, a
    config transformers cannot read, no weights, or a weights file whose header or any tensor cannot be read."""
    from safetensors import safe_open
    from transformers import AutoConfig

    weights = sorted(cache.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for p in sorted(cache.glob("*.json")):
        try:
            json.loads(p.read_text())
        except (OSError, ValueError) as e:
            return f"{p.name}: {type(e).__name__}"
    try:
        AutoConfig.from_pretrained(str(cache), local_files_only=True)
    except Exception as e:  # noqa: BLE001  (ValueError, KeyError, OSError: whatever a bad config raises)
        return f"config.json: {type(e).__name__}"
    for p in weights:
        try:
            with safe_open(str(p), "pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error types, and OSError)
            return f"{p.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def finetuned_fp(cache: Path, model, tok, train: Callable[[object], dict], load: Callable[[str], object]):
    """(model, training info) of the full-precision fine-tune: `load(cache folder)` when it is cached, else
    `train(model)` (in place) and saved to `cache` with the tokenizer (by process 0 of several, the others waiting
    for it, so that all of them find it cached from then on)."""
    if is_cached(cache):
        log.info("full-precision fine-tuned model from the cache: %s", cache)
        return load(str(cache)), {**json.loads((cache / INFO).read_text()), "cached": str(cache)}
    info = train(model)
    if is_main():
        save(cache, model, tok, info)
    barrier()
    return model, {**info, "cached": None}


def save(cache: Path, model, tok, info: dict) -> None:
    """Write the entry into a temporary folder, its manifest last, then rename it into place."""
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / INFO).write_text(json.dumps(info))
    seal_folder(tmp)
    try:
        os.replace(tmp, cache)
    except OSError:  # another job cached the same model meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
