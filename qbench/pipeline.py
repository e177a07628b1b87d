"""The experiment pipeline: `run(cfg, run_dir)` loads, quantizes, fine-tunes, evaluates and writes the record."""

from __future__ import annotations

import logging
import traceback
from dataclasses import asdict
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
from qbench.sweep import cell_id, data_identity
from qbench.tasks import TaskSpec

log = logging.getLogger(__name__)


def build_scheme(cfg: DictConfig) -> Scheme | NoQuant:
    """Instantiate cfg.scheme, turning validation errors and contradictions into QbenchError."""
    try:
        scheme = instantiate(cfg.scheme)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, QbenchError):
            cause = cause.__cause__
        raise (cause or QbenchError(f"scheme: {e.__cause__ or e}".splitlines()[0])) from None
    return scheme


def validate(cfg: DictConfig) -> tuple[TaskSpec, Scheme | NoQuant]:
    """Check a composed config before any work: the scheme, every other key's type and range (qbench.config),
    model-task fit, the task spec, combinations, then that weights and data splits can be found."""
    from qbench.config import check_config, for_task
    from qbench.distill import DistillSpec

    scheme = build_scheme(cfg)  # the scheme's dataclass checks bits and its own keys
    check_config(cfg)
    cfg = for_task(cfg)  # and as the cell will run: with its task's train.tasks entry merged into train
    check_config(cfg)
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    order, optim = cfg.train.order, cfg.train.optim
    if DistillSpec.from_config(cfg.get("distill")).active and (
        isinstance(scheme, NoQuant) or order not in ("qat", "ft_then_qat")
    ):
        raise QbenchError(f"distill={cfg.distill.name} teaches quantization-aware training: it needs a quantizing "
                          "scheme and train.order=qat or ft_then_qat")  # fmt: skip
    fp_cap, qat_cap = cfg.train.max_train_examples, (cfg.train.get("qat") or {}).get("max_train_examples")
    if fp_cap is not None and qat_cap is not None and qat_cap > fp_cap:
        raise QbenchError(f"train.qat.max_train_examples={qat_cap}: at most train.max_train_examples={fp_cap} (the QAT "
                          "stage trains on the first N of the same examples)")  # fmt: skip
    if scheme.name == "laq" and optim != "adamw_torch":
        raise QbenchError(f"scheme=laq reads Adam's second moments: train.optim={optim!r} needs adamw_torch")
    check_available(cfg.model)
    for split in ((task.train_split,) if order != "zeroshot" else ()) + task.eval_splits:
        split_file(task, split, cfg.data_dir)  # a missing local split fails here, naming its path
    return task, scheme


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run one experiment cell and write run_dir/record.json (+ predictions.jsonl); returns the record."""
    from qbench import kinds
    from qbench.config import for_task
    from qbench.distill import DistillSpec, teacher_options
    from qbench.models import weight_sharing
    from qbench.quant.wiring import quantize_model
    from qbench.train import finetune

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
    fit = lambda **kw: finetune(model, train_ds, kind.collator(tok), cfg.train, cfg.seed, cfg.device, **kw)
    training, quant = {}, None
    if order in ("ptq", "ft_then_qat") or (order == "qat" and not quantize):
        with timer("train_fp"):  # once per (model, task, seed, training config), then from the cache
            model, training["full_precision"] = finetuned_fp(cfg, task, kind, model, tok, fit)
    if quantize:
        with timer("quantize"):
            quant = quantize_model(model, scheme, cfg.model.include, cfg.model.exclude).summary()
        quant["weight_sharing"] = weight_sharing(model)
    if quantize and order in ("qat", "ft_then_qat"):
        options = {"callbacks": scheme.train_callbacks()}  # e.g. LAQ reads the optimizer's second moments
        if distill.active:  # the cached full-precision fine-tuned model teaches (qbench.distill)
            with timer("teacher"):
                options, training["teacher"] = teacher_options(cfg, task, kind, tok, data, options)
        with timer("train_qat"):  # train.* with the train.qat.* overrides, on the first N of the same examples
            training["qat"] = finetune(model, head(train_ds, qat_train["max_train_examples"]), kind.collator(tok),
                                       qat_train, cfg.seed, cfg.device, **options)  # fmt: skip
    if quantize:  # packed size (and with export=true the packed checkpoint RUN_DIR/model.packed.safetensors)
        from qbench.export import run_size

        with timer("export" if cfg.get("export") else "size"):
            size = run_size(model, scheme, cfg, task, run_dir)
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


def finetuned_fp(cfg: DictConfig, task: TaskSpec, kind, model, tok, fit) -> tuple[object, dict]:
    """The full-precision fine-tuned model: loaded from the cache if this training was done before, else
    trained by `fit()` and saved there (atomically: a folder renamed into place)."""
    import json
    import os
    import shutil

    from qbench.sweep import fp_cache_dir

    cache = fp_cache_dir(cfg)
    if (cache / "training.json").is_file():
        log.info("full-precision fine-tuned model from the cache: %s", cache)
        model, _ = kind.load_model({**cfg.model, "name_or_path": str(cache), "config": None}, task, cfg.seed)
        return model, {**json.loads((cache / "training.json").read_text()), "cached": str(cache)}
    info = fit()
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(info))
    try:
        os.replace(tmp, cache)
    except OSError:  # another job cached the same model meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return model, {**info, "cached": None}


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
