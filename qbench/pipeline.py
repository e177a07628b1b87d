"""The experiment pipeline: `run(cell, run_dir)` loads, (fine-tunes, calibrates,) quantizes, fine-tunes,
evaluates and writes the record."""

from __future__ import annotations

import traceback
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from qbench import kinds
from qbench.calibrate import calibrate
from qbench.cell import Cell, parse, resolve_device
from qbench.config import TrainSchema
from qbench.distill import DistillTrainer
from qbench.fp_cache import finetuned_fp, is_cached
from qbench.models import weight_sharing
from qbench.quant.checkpoint import PACKED_NAME
from qbench.quant.wiring import quantize_model
from qbench.record import SCHEMA_VERSION, Timer, git_sha, versions, write_json_atomic, write_jsonl
from qbench.size import size_section
from qbench.sweep import cell_id
from qbench.train import finetune


def run(cell: Cell | DictConfig, run_dir: Path) -> dict:
    """Run one experiment cell (a composed config is parsed first) and write run_dir/record.json
    (+ predictions.jsonl); returns the record."""
    started, timer = datetime.now(timezone.utc), Timer()
    cell = cell if isinstance(cell, Cell) else parse(cell)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; an in-process caller need not
    kind, order, task, scheme = kinds.get(cell.task.kind), cell.order, cell.task, cell.scheme
    with timer("load"):
        model, tok = kind.load_model(cell.model, task, cell.seed)
        data = kind.load_data(cell, tok, need_train=cell.needs_train)
    train_ds = data[task.train_split].inputs if cell.needs_train else None

    def fit(m, stage: TrainSchema = cell.train, **options) -> dict:  # fine-tune m in place on the training split
        examples = head(train_ds, stage.max_train_examples)  # QAT: the first N of the FP stage's examples
        return finetune(m, examples, kind.collator(tok), stage, cell.seed, cell.device, **options)

    def load_fp(path: str):  # the cached full-precision fine-tune
        return kind.load_model(replace(cell.model, name_or_path=path, config=None), task, cell.seed)[0]

    training, quant = {}, None
    if order in ("ptq", "ft_then_qat") or (order == "qat" and not cell.quantize):
        with timer("train_fp"):  # once per (model, task, seed, training config), then from the cache
            model, training["full_precision"] = finetuned_fp(cell.fp_cache, model, tok, fit, load_fp)
    stats = None
    if cell.calibration:  # what a data-aware scheme measures first, on the model about to be quantized
        with timer("calibrate"):
            stats = calibrate(model, cell.calibration, train_ds, kind.collator(tok), cell.train.batch_size,
                              cell.model.include, cell.model.exclude)  # fmt: skip
    if cell.quantize:
        with timer("quantize"):
            quant = quantize_model(model, scheme, cell.model.include, cell.model.exclude, stats).summary()
        quant["weight_sharing"] = weight_sharing(model)
    if cell.quantize and order in ("qat", "ft_then_qat"):
        options = {"callbacks": scheme.train_callbacks()}  # e.g. LAQ reads the optimizer's second moments
        if cell.distill.active:  # the cached full-precision fine-tuned model teaches (qbench.distill)
            with timer("teacher"):  # a fresh copy of the pre-trained model, fine-tuned unless cached
                fresh = None if is_cached(cell.fp_cache) else kind.load_model(cell.model, task, cell.seed)[0]
                teacher, info = finetuned_fp(cell.fp_cache, fresh, tok, fit, load_fp)
            options |= {"trainer_cls": DistillTrainer, "teacher": teacher, "spec": cell.distill}
            training["teacher"] = {**{k: v for k, v in info.items() if k != "loss_curve"}, "distill": cell.distill.name}
        with timer("train_qat"):  # train.* with the train.qat.* overrides, on the first N of the same examples
            training["qat"] = fit(model, cell.qat, **options)
    if cell.quantize:  # packed size (and with export=true the packed checkpoint RUN_DIR/model.packed.safetensors)
        with timer("export" if cell.export else "size"):
            size = size_section(model, scheme.bits, run_dir / PACKED_NAME if cell.export else None, packed_meta(cell),
                                scheme.embed_bits)  # fmt: skip
    with timer("eval"):
        metrics, rows = kind.evaluate(cell, model, tok, data)
    protocol = getattr(kind, "protocol", None)  # optional: how the kind computed its metrics (context, beams...)
    if cell.save_predictions:
        write_jsonl(run_dir / "predictions.jsonl", rows)
    main = {"name": task.main_metric, "split": task.eval_splits[0]}
    record = {
        "schema": SCHEMA_VERSION,
        "status": "completed",
        "cell_id": cell.id,
        "model": cell.model.name,
        "task": task.name,
        "scheme": quant or scheme.describe(),
        "order": order,
        **({"distill": asdict(cell.distill)} if cell.distill.active else {}),
        "seed": cell.seed,
        "data": cell.data.identity or "hub",  # {split: file, bytes, sha256} of local files, or the hub (task.hub)
        "metrics": metrics,
        "main_metric": {**main, "value": metrics[main["split"]][main["name"]]},
        "training": training,
        **({"size": size} if cell.quantize else {}),
        **({"evaluation": protocol(cell, model, tok, data, rows)} if protocol else {}),
        "timings": {**timer.seconds, "total": (datetime.now(timezone.utc) - started).total_seconds()},
        **provenance(cell.config, cell.device, started),
    }
    write_json_atomic(run_dir / "record.json", record)
    return record


def packed_meta(cell: Cell) -> dict:
    """What a packed checkpoint says about the run that wrote it."""
    return {"model": cell.model.name, "task": cell.task.name, "scheme": cell.scheme.describe(), "order": cell.order,
            "seed": cell.seed}  # fmt: skip


def head(ds, n: int | None):
    """The first n examples of a training set (all when n is None). The FP stage's examples are a seeded random
    subset already (qbench.data), so its first n are a random subset too, nested in it."""
    return ds if n is None or n >= len(ds) else ds.select(range(n))


def provenance(config: dict, device: str, started: datetime) -> dict:
    """Resolved config, versions, git sha, device and times: what is needed to trust and rerun a record."""
    return {
        "config": config,
        "versions": versions(),
        "git_sha": git_sha(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failed_record(cfg: DictConfig, run_dir: Path, error: BaseException, started: datetime, scheme: str) -> dict:
    """Record of a cell that crashed (exception, NaN loss): status 'failed' and the reason, so sweeps go on. It reads
    the composed config itself: the cell may have failed to parse."""
    try:
        device = resolve_device(cfg.device)
    except Exception:  # noqa: BLE001  (device=cuda without CUDA: the error being recorded may be that one)
        device = "cpu"
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
        **provenance(OmegaConf.to_container(cfg, resolve=True), device, started),
    }
    write_json_atomic(run_dir / "record.json", record)
    return record
