"""The full-precision fine-tuned model of a cell, trained once per (model, task, seed, training config, data).

`ptq` and `ft_then_qat` cells and distillation teachers load it from the cache instead of training again. Its key
is the cell's identity (qbench.sweep) without the keys of the quantization stage (QUANT_STAGE) and bookkeeping;
it is written atomically (a folder renamed into place), so a concurrent job finds a whole model or none.
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
from qbench.models import cache_root
from qbench.sweep import BOOKKEEPING, QUANT_STAGE, digest, drop, identity

log = logging.getLogger(__name__)
INFO = "training.json"  # the FP stage's training summary, written last: its presence marks a complete entry


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
    return (cache / INFO).is_file()


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
    """Write the entry into a temporary folder, then rename it into place."""
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / INFO).write_text(json.dumps(info))
    try:
        os.replace(tmp, cache)
    except OSError:  # another job cached the same model meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
