"""The experiment pipeline: `run(cfg, run_dir)` loads, quantizes, fine-tunes, evaluates and writes the record."""

from __future__ import annotations

import logging
import traceback
from datetime import datetime, timezone
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qbench.data import split_file
from qbench.errors import QbenchError
from qbench.models import check_available
from qbench.quant.schemes import NoQuant, Scheme
from qbench.record import SCHEMA_VERSION, Timer, git_sha, versions, write_json_atomic, write_jsonl
from qbench.tasks import TaskSpec

log = logging.getLogger(__name__)
ORDERS = ("qat", "ptq", "ft_then_qat", "zeroshot")


def build_scheme(cfg: DictConfig, bits_given: bool = False) -> Scheme | NoQuant:
    """Instantiate cfg.scheme, turning validation errors and contradictions into QbenchError."""
    try:
        scheme = instantiate(cfg.scheme)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, QbenchError):
            cause = cause.__cause__
        raise (cause or QbenchError(f"scheme: {str(e).splitlines()[-1]}")) from None
    if isinstance(scheme, NoQuant) and bits_given:
        raise QbenchError("scheme=none is the full-precision baseline: drop bits=... (a bits sweep would repeat it)")
    return scheme


def validate(cfg: DictConfig, bits_given: bool = False) -> tuple[TaskSpec, Scheme | NoQuant]:
    """Check a composed config before any work: task spec, scheme, pipeline order, caps."""
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    scheme = build_scheme(cfg, bits_given)
    if cfg.train.order not in ORDERS:
        raise QbenchError(f"train.order={cfg.train.order!r}; valid: {', '.join(ORDERS)}")
    for k in ("max_train_examples", "max_eval_examples"):
        v = cfg.train.get(k)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise QbenchError(f"train.{k} must be a positive integer or null, got {v!r}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise QbenchError(f"device={cfg.device!r}; valid: auto, cpu, cuda")
    check_available(cfg.model)
    for split in ((task.train_split,) if cfg.train.order != "zeroshot" else ()) + task.eval_splits:
        split_file(task, split, cfg.data_dir)  # a missing local split fails here, naming its path
    return task, scheme


def run(cfg: DictConfig, run_dir: Path, bits_given: bool = False) -> dict:
    """Run one experiment cell and write run_dir/record.json (+ predictions.jsonl); returns the record."""
    from qbench import kinds
    from qbench.models import weight_sharing
    from qbench.quant.wiring import quantize_model
    from qbench.train import finetune

    started, timer = datetime.now(timezone.utc), Timer()
    task, scheme = validate(cfg, bits_given)
    kind, order, quantize = kinds.get(task.kind), cfg.train.order, not isinstance(scheme, NoQuant)
    with timer("load"):
        model, tok = kind.load_model(cfg.model, task, cfg.seed)
        data = kind.load_data(task, tok, cfg, need_train=order != "zeroshot")
    fit = lambda: finetune(model, data[task.train_split][1], kind.collator(tok), cfg.train, cfg.seed, cfg.device)
    training, quant = {}, None
    if order in ("ptq", "ft_then_qat") or (order == "qat" and not quantize):
        with timer("train_fp"):
            training["full_precision"] = fit()
    if quantize:
        with timer("quantize"):
            quant = quantize_model(model, scheme, cfg.model.include, cfg.model.exclude).summary()
        quant["weight_sharing"] = weight_sharing(model)
    if quantize and order in ("qat", "ft_then_qat"):
        with timer("train_qat"):
            training["qat"] = fit()
    with timer("eval"):
        metrics, rows = kind.evaluate(model, tok, task, data, cfg)
    if cfg.save_predictions:
        write_jsonl(run_dir / "predictions.jsonl", rows)
    main = {"name": task.main_metric, "split": task.eval_splits[0]}
    record = {
        "schema": SCHEMA_VERSION,
        "status": "completed",
        "model": cfg.model.name,
        "task": task.name,
        "scheme": quant or scheme.describe(),
        "order": order,
        "seed": cfg.seed,
        "metrics": metrics,
        "main_metric": {**main, "value": metrics[main["split"]][main["name"]]},
        "training": training,
        "timings": {**timer.seconds, "total": (datetime.now(timezone.utc) - started).total_seconds()},
        **provenance(cfg, started),
    }
    write_json_atomic(run_dir / "record.json", record)
    return record


def provenance(cfg: DictConfig, started: datetime) -> dict:
    """Resolved config, versions, git sha, device and times: what is needed to trust and rerun a record."""
    import torch

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
