"""The experiment pipeline: `run(cfg, run_dir)` loads, quantizes, fine-tunes, evaluates and writes the record."""

from __future__ import annotations

import logging
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from qbench import kinds
from qbench.cell import validate
from qbench.config import for_task
from qbench.distill import DistillSpec, DistillTrainer
from qbench.fp_cache import finetuned_fp, fp_cache_dir, is_cached
from qbench.models import weight_sharing
from qbench.quant.checkpoint import PACKED_NAME
from qbench.quant.schemes import NoQuant
from qbench.quant.wiring import quantize_model
from qbench.record import SCHEMA_VERSION, Timer, git_sha, versions, write_json_atomic, write_jsonl
from qbench.size import size_section
from qbench.sweep import cell_id, data_identity
from qbench.train import finetune

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run one experiment cell and write run_dir/record.json (+ predictions.jsonl); returns the record."""
    started, timer = datetime.now(timezone.utc), Timer()
    cfg = for_task(cfg)  # train.tasks[<task>] merged into train: the record's config holds what ran
    task, scheme = validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; an in-process caller need not
    distill = DistillSpec.from_config(cfg.get("distill"))
    kind, order, quantize = kinds.get(task.kind), cfg.train.order, not isinstance(scheme, NoQuant)
    with timer("load"):
        model, tok = kind.load_model(cfg.model, task, cfg.seed)
        data = kind.load_data(task, tok, cfg, need_train=order != "zeroshot")
    train_ds, qat_train = data[task.train_split][1] if order != "zeroshot" else None, qat_settings(cfg.train)
    fit = lambda m, **kw: finetune(m, train_ds, kind.collator(tok), cfg.train, cfg.seed, cfg.device, **kw)
    cache = fp_cache_dir(cfg)
    load = lambda path: kind.load_model({**cfg.model, "name_or_path": path, "config": None}, task, cfg.seed)[0]
    training, quant = {}, None
    if order in ("ptq", "ft_then_qat") or (order == "qat" and not quantize):
        with timer("train_fp"):  # once per (model, task, seed, training config), then from the cache
            model, training["full_precision"] = finetuned_fp(cache, model, tok, fit, load)
    if quantize:
        with timer("quantize"):
            quant = quantize_model(model, scheme, cfg.model.include, cfg.model.exclude).summary()
        quant["weight_sharing"] = weight_sharing(model)
    if quantize and order in ("qat", "ft_then_qat"):
        options = {"callbacks": scheme.train_callbacks()}  # e.g. LAQ reads the optimizer's second moments
        if distill.active:  # the cached full-precision fine-tuned model teaches (qbench.distill)
            with timer("teacher"):  # a fresh copy of the pre-trained model, fine-tuned unless cached
                fresh = None if is_cached(cache) else kind.load_model(cfg.model, task, cfg.seed)[0]
                teacher, info = finetuned_fp(cache, fresh, tok, fit, load)
                options = {**options, "trainer_cls": DistillTrainer, "teacher": teacher, "spec": distill}
                training["teacher"] = {**{k: v for k, v in info.items() if k != "loss_curve"}, "distill": distill.name}
        with timer("train_qat"):  # train.* with the train.qat.* overrides, on the first N of the same examples
            training["qat"] = finetune(model, head(train_ds, qat_train["max_train_examples"]), kind.collator(tok),
                                       qat_train, cfg.seed, cfg.device, **options)  # fmt: skip
    if quantize:  # packed size (and with export=true the packed checkpoint RUN_DIR/model.packed.safetensors)
        meta = {"model": cfg.model.name, "task": task.name, "scheme": scheme.describe(), "order": order,
                "seed": cfg.seed}  # fmt: skip
        with timer("export" if cfg.get("export") else "size"):
            size = size_section(model, scheme.bits, run_dir / PACKED_NAME if cfg.get("export") else None, meta,
                                scheme.embed_bits)  # fmt: skip
    with timer("eval"):
        metrics, rows = kind.evaluate(model, tok, task, data, cfg)
    protocol = getattr(kind, "protocol", None)  # optional: how the kind computed its metrics (context, beams...)
    if cfg.save_predictions:
        write_jsonl(run_dir / "predictions.jsonl", rows)
    main = {"name": task.main_metric, "split": task.eval_splits[0]}
    record = {
        "schema": SCHEMA_VERSION,
        "status": "completed",
        "cell_id": cell_id(cfg),
        "model": cfg.model.name,
        "task": task.name,
        "scheme": quant or scheme.describe(),
        "order": order,
        **({"distill": asdict(distill)} if distill.active else {}),
        "seed": cfg.seed,
        "data": data_identity(cfg) or "hub",  # {split: file, bytes, sha256} of local files, or the hub (task.hub)
        "metrics": metrics,
        "main_metric": {**main, "value": metrics[main["split"]][main["name"]]},
        "training": training,
        **({"size": size} if quantize else {}),
        **({"evaluation": protocol(model, tok, task, data, cfg, rows)} if protocol else {}),
        "timings": {**timer.seconds, "total": (datetime.now(timezone.utc) - started).total_seconds()},
        **provenance(cfg, started),
    }
    write_json_atomic(run_dir / "record.json", record)
    return record


def qat_settings(train: DictConfig) -> dict:
    """The quantization-aware stage's training settings: train.* with the non-null train.qat.* on top."""
    t = OmegaConf.to_container(train, resolve=True)
    return {**t, **{k: v for k, v in (t.pop("qat", None) or {}).items() if v is not None}}


def head(ds, n: int | None):
    """The first n examples of a training set (all when n is None). The FP stage's examples are a seeded random
    subset already (qbench.data), so its first n are a random subset too, nested in it."""
    return ds if n is None or n >= len(ds) else ds.select(range(n))


def provenance(cfg: DictConfig, started: datetime) -> dict:
    """Resolved config, versions, git sha, device and times: what is needed to trust and rerun a record."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": versions(),
        "git_sha": git_sha(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and cfg.device != "cpu" else "cpu",
        "threads": torch.get_num_threads(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failed_record(cfg: DictConfig, run_dir: Path, error: BaseException, started: datetime, scheme: str) -> dict:
    """Record of a cell that crashed (exception, NaN loss): status 'failed' and the reason, so sweeps go on."""
    record = {
        "schema": SCHEMA_VERSION,
        "status": "failed",
        "cell_id": cell_id(cfg),
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-5:],
        "model": cfg.model.name,
        "task": cfg.task.name,
        "scheme": {"name": scheme, "bits": None if scheme == "none" else cfg.get("bits")},
        "order": cfg.train.order,
        "seed": cfg.seed,
        **provenance(cfg, started),
    }
    write_json_atomic(run_dir / "record.json", record)
    return record
