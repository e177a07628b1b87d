"""The experiment pipeline: `run(cell, run_dir)` loads, (fine-tunes, calibrates,) quantizes, fine-tunes,
evaluates and writes the record."""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import torch
from omegaconf import DictConfig, OmegaConf

from qbench import kinds
from qbench.calibrate import calibrate
from qbench.cell import Cell, parse, resolve_device
from qbench.config import TrainSchema
from qbench.diagnose import homogeneity, module_ranges, section, with_init
from qbench.distill import DistillTrainer
from qbench.distributed import barrier, is_main
from qbench.fp_cache import finetuned_fp, is_cached
from qbench.gptq_pass import calibration_cost, gptq_summary
from qbench.models import weight_sharing
from qbench.quant.checkpoint import PACKED_NAME
from qbench.quant.wiring import quantize_model
from qbench.record import SCHEMA_VERSION, Timer, git_sha, versions, write_json_atomic, write_jsonl
from qbench.size import size_section
from qbench.sweep import cell_id
from qbench.train import finetune


def run(cell: Cell | DictConfig, run_dir: Path) -> dict:
    """Run one experiment cell (a composed config is parsed first) and write run_dir/record.json
    (+ predictions.jsonl); returns the record. Under torchrun every process runs it and process 0 writes."""
    started, timer = datetime.now(timezone.utc), Timer()
    cell = cell if isinstance(cell, Cell) else parse(cell)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; an in-process caller need not
    kind = kinds.get(cell.task.kind)
    with timer("load"):
        model, tok = kind.load_model(cell.model, cell.task, cell.seed)
        data = kind.load_data(cell, tok, need_train=cell.needs_train)
    stages = Stages(cell, kind, tok, data[cell.task.train_split].inputs if cell.needs_train else None, run_dir, timer)
    training, quant, size = {}, None, None
    if cell.order in ("ptq", "ft_then_qat") or (cell.order == "qat" and not cell.quantize):
        model, training["full_precision"] = stages.full_precision(model)
    sample = data[cell.task.eval_splits[0]].inputs  # the diagnosis' tokens (qbench.diagnose)
    diagnosis = {"fp": stages.homogeneity(model, sample)}  # the FP model: before quantizing
    if cell.quantize:
        quant = stages.quantize(model)
        with timer("diagnose"):
            ranges_init = module_ranges(model)
        if cell.order in ("qat", "ft_then_qat"):
            training |= stages.quantization_aware(model)
        size = stages.size(model)
    with timer("eval"):
        metrics, rows = kind.evaluate(cell, model, tok, data)
        for task in cell.also_eval:  # other tasks, same model: metrics and predictions under '<task>:<split>'
            m, r = evaluate_other(cell, task, kind, model, tok)
            metrics, rows = metrics | m, rows + r
    if cell.quantize:  # after evaluation: it cannot change the metrics
        diagnosis["quantized"] = stages.homogeneity(model, sample)
        with timer("diagnose"):
            diagnosis["ranges"] = with_init(module_ranges(model), ranges_init)
    if cell.save_predictions and is_main():
        write_jsonl(run_dir / "predictions.jsonl", rows)
    protocol = getattr(kind, "protocol", None)  # optional: how the kind computed its metrics (context, beams...)
    evaluation = protocol(cell, model, tok, data, rows) if protocol else None
    diagnosis = section(cell.task.eval_splits[0], **diagnosis)
    record = completed_record(cell, quant, metrics, training, size, evaluation, diagnosis, timer, started)
    if is_main():
        write_json_atomic(run_dir / "record.json", record)
    barrier()  # the processes leave the cell together: none checks the next one while this one is being written
    return record


@dataclass
class Stages:
    """The stages of one cell and what they share: the kind's functions, the tokenizer, the training split
    (None when the cell trains on nothing), the run folder (TensorBoard logs, packed file) and the timer."""

    cell: Cell
    kind: ModuleType
    tok: object
    train_ds: object
    run_dir: Path
    timer: Timer

    def fit(self, model, stage: TrainSchema, **options) -> dict:
        """Fine-tune model in place on the first stage.max_train_examples training examples (QAT: the first N of
        the FP stage's examples)."""
        c = self.cell
        log_dir = self.run_dir / "tensorboard" / ("qat" if stage is c.qat else "full_precision")
        return finetune(model, head(self.train_ds, stage.max_train_examples), self.kind.collator(self.tok), stage,
                        c.seed, c.device, log_dir=log_dir, **options)  # fmt: skip

    def full_precision(self, model=None):
        """(model, training info) of the FP fine-tune, trained from `model` once per (model, task, seed, training
        config, data), then loaded from the cache. No model: the distillation teacher (a fresh pre-trained copy is
        fine-tuned when it is not cached)."""
        c, teacher = self.cell, model is None
        load = lambda path: self.kind.load_model(replace(c.model, name_or_path=path, config=None), c.task, c.seed)[0]
        with self.timer("teacher" if teacher else "train_fp"):
            if teacher and not is_cached(c.fp_cache):
                model = self.kind.load_model(c.model, c.task, c.seed)[0]
            return finetuned_fp(c.fp_cache, model, self.tok, lambda m: self.fit(m, c.train), load)

    def quantize(self, model) -> dict:
        """Calibrate (data-aware schemes only), then quantize model in place; returns the record's scheme section."""
        c, stats, cost = self.cell, None, None
        if c.calibration:  # what a data-aware scheme measures first, on the model about to be quantized
            with self.timer("calibrate"), calibration_cost() as cost:
                stats = calibrate(model, c.calibration, self.train_ds, self.kind.collator(self.tok), c.train.batch_size,
                                  c.model.include, c.model.exclude, c.scheme)  # fmt: skip
        with self.timer("quantize"):
            quant = quantize_model(model, c.scheme, c.model.include, c.model.exclude, stats).summary()
        if "hessian" in getattr(c.calibration, "stats", ()):  # GPTQ: its cost and per-layer output errors
            quant["gptq"] = {**cost, **gptq_summary(stats)}
        return {**quant, "weight_sharing": weight_sharing(model)}

    def quantization_aware(self, model) -> dict:
        """Fine-tune the quantized model (train.* with the train.qat.* overrides), taught by the cached FP
        fine-tune when distillation is on; returns the record's training entries ({qat} or {teacher, qat})."""
        c, out = self.cell, {}
        options = {
            "callbacks": c.scheme.train_callbacks(),  # e.g. LAQ reads the optimizer's second moments
            "quantizer_lr": c.train.qat.quantizer_lr,  # the learned ranges' own rate (None: the stage's lr)
        }
        if c.distill.active:  # qbench.distill
            teacher, info = self.full_precision()
            options |= {"trainer_cls": DistillTrainer, "teacher": teacher, "spec": c.distill,
                        "teacher_cache": c.fp_cache if c.distill.cache_teacher else None}  # fmt: skip
            out["teacher"] = {**{k: v for k, v in info.items() if k != "loss_curve"}, "distill": c.distill.name}
        with self.timer("train_qat"):
            out["qat"] = self.fit(model, c.qat, **options)
        return out

    def homogeneity(self, model, sample) -> dict:
        """Paper B's homogeneity measures of model on the evaluation sample (qbench.diagnose), on the cell's device;
        the model goes back where it was."""
        with self.timer("diagnose"):
            home = next(model.parameters()).device
            out = homogeneity(model.to(self.cell.device), self.tok, sample)
            model.to(home)
        return out

    def size(self, model) -> dict:
        """Packed size; with export=true also the packed checkpoint RUN_DIR/model.packed.safetensors."""
        c = self.cell
        with self.timer("export" if c.export else "size"):
            path = self.run_dir / PACKED_NAME if c.export and is_main() else None
            return size_section(model, c.scheme.bits, path, packed_meta(c), c.scheme.embed_bits)


def completed_record(cell: Cell, quant: dict | None, metrics: dict, training: dict, size: dict | None,
                     evaluation: dict | None, diagnosis: dict, timer: Timer, started: datetime) -> dict:  # fmt: skip
    """The record of a completed cell."""
    main = {"name": cell.task.main_metric, "split": cell.task.eval_splits[0]}
    return {
        "schema": SCHEMA_VERSION,
        "status": "completed",
        "cell_id": cell.id,
        "model": cell.model.name,
        "task": cell.task.name,
        "scheme": quant or cell.scheme.describe(),
        "order": cell.order,
        **({"distill": asdict(cell.distill)} if cell.distill.active else {}),
        "seed": cell.seed,
        "data": cell.data.identity or "hub",  # {split: file, bytes, sha256} of local files, or the hub (task.hub)
        "metrics": metrics,
        "main_metric": {**main, "value": metrics[main["split"]][main["name"]]},
        "training": training,
        **({"size": size} if size is not None else {}),
        **({"evaluation": evaluation} if evaluation is not None else {}),
        "diagnosis": diagnosis,  # paper B's homogeneity and module ranges (qbench.diagnose)
        "timings": {**timer.seconds, "total": (datetime.now(timezone.utc) - started).total_seconds()},
        **provenance(cell.config, cell.device, started),
    }


def evaluate_other(cell: Cell, task, kind: ModuleType, model, tok) -> tuple[dict, list[dict]]:
    """(metrics, prediction rows) of the final model on another task's evaluation splits, named '<task>:<split>'
    (each split's metrics with the file it read under `source`)."""
    other = replace(cell, task=task)
    data = kind.load_data(other, tok, need_train=False)
    metrics, rows = kind.evaluate(other, model, tok, data)
    name = lambda split: f"{task.name}:{split}"  # noqa: E731
    metrics = {name(s): {**m, **({"source": data[s].source} if data[s].source else {})} for s, m in metrics.items()}
    return metrics, [{**r, "split": name(r["split"])} for r in rows]


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
        **({"processes": world} if (world := int(os.environ.get("WORLD_SIZE", "1"))) > 1 else {}),  # torchrun
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
    if is_main():
        write_json_atomic(run_dir / "record.json", record)
    return record
