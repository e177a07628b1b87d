"""Fine-tuning and prediction with HF Trainer (seeds, devices, progress bars and logging come with it)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from qbench.config import TrainSchema
from qbench.errors import QbenchError
from qbench.quant.scaled import range_parameters


def training_args(train: TrainSchema, seed: int, device: str) -> TrainingArguments:
    """HF TrainingArguments of one stage's settings; `device` is resolved ("cpu" or "cuda", qbench.cell)."""
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="qbench-trainer-"),  # nothing is saved there (save_strategy=no)
        learning_rate=train.lr,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        warmup_steps=train.warmup,  # int: steps; float in [0, 1): share of all steps
        weight_decay=train.weight_decay,
        optim=train.optim,  # sgd: the quantizers' gradient scales are not normalised away
        seed=seed,
        data_seed=seed,
        logging_steps=train.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=not train.progress_bar,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        train_sampling_strategy=train.sampler,  # group_by_length: batches of similar lengths
        # several processes (torchrun): each one's loss is a mean over its share of the batch and DDP averages the
        # gradients. Left on, Trainer multiplies every loss by the process count, expecting a loss summed over
        # tokens and divided by the global count; BERT's and BART's heads ignore that count and return a mean, so
        # their gradients (and logged losses) came out N times too large.
        average_tokens_across_devices=False,
    )


def with_quantizer_group(trainer: Trainer, quantizer_lr: float) -> tuple[type, dict]:
    """The Trainer's optimizer class and arguments (`optimizer_cls_and_kwargs`) with the quantizers' learned ranges
    (qbench.quant.scaled.range_parameters) in a third parameter group at `quantizer_lr`, weight decay 0. The other
    two are Trainer's own (decayed, not decayed) without them. The learning-rate schedule multiplies every group's
    initial rate by the same factor, so the quantizer group follows the weights' warmup and decay."""
    model, args = trainer.model, trainer.args
    ranges = {id(p) for _, p in range_parameters(model)}
    if not ranges:
        raise QbenchError(f"train.qat.quantizer_lr={quantizer_lr}: the model has no learned quantizer ranges")
    decay = set(trainer.get_decay_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rest = [(n, p) for n, p in named if id(p) not in ranges]
    groups = [
        {"params": [p for n, p in rest if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in rest if n not in decay], "weight_decay": 0.0},
        {"params": [p for _, p in named if id(p) in ranges], "weight_decay": 0.0, "lr": quantizer_lr},
    ]
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args, model)
    return cls, {**kwargs, "params": groups}  # "params": Trainer.create_optimizer takes these groups as they are


def param_groups(optimizer, model) -> list[dict]:
    """The record's view of the optimizer: per parameter group its initial learning rate (before the schedule),
    weight decay, tensors and how many of them are learned quantizer ranges."""
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    ranges = {id(p) for _, p in range_parameters(model)}
    return [{"lr": g.get("initial_lr", g["lr"]), "weight_decay": g.get("weight_decay", 0.0),
             "tensors": len(g["params"]), "ranges": sum(id(p) in ranges for p in g["params"])}
            for g in opt.param_groups]  # fmt: skip


def tensorboard(log_dir: Path):
    """Trainer's TensorBoard integration, writing to log_dir: every logged value (loss, learning rate, gradient
    norm, distillation's loss_task/loss_kd/loss_tcd) at its step."""
    try:  # an optional extra: pip install "qbench[tensorboard]"
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise QbenchError('train.report_to=tensorboard needs tensorboard: pip install "qbench[tensorboard]"') from e
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(log_dir)))


def finetune(model, train_ds, collator, train: TrainSchema, seed: int, device: str, callbacks=None, trainer_cls=Trainer,
             log_dir: Path | None = None, quantizer_lr: float | None = None, **trainer_kwargs) -> dict:  # fmt: skip
    """Train `model` in place on train_ds; returns {loss, steps, seconds, device, loss_curve, param_groups}
    (+ loss_components and task_loss_curve, the task loss alone at each logged step, when the trainer has them:
    qbench.distill). `callbacks`: TrainerCallbacks (LAQ's optimizer-state feed);
    `trainer_cls`/`trainer_kwargs`: a Trainer subclass and its extra arguments (qbench.distill.DistillTrainer);
    `log_dir`: where train.report_to=tensorboard writes this stage's event file (by the main process only);
    `quantizer_lr`: the learned quantizer ranges' own learning rate (train.qat.quantizer_lr; None: the stage's)."""
    args = training_args(train, seed, device)
    if train.report_to == "tensorboard" and log_dir is not None and args.process_index == 0:
        callbacks = [*(callbacks or []), tensorboard(log_dir)]
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                          callbacks=callbacks or None, **trainer_kwargs)  # fmt: skip
    if quantizer_lr is not None:  # after __init__: DistillTrainer attaches TCD's projection there (trained too)
        trainer.optimizer_cls_and_kwargs = with_quantizer_group(trainer, quantizer_lr)
    out = trainer.train()
    curve = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    task = [(h["step"], h["loss_task"]) for h in trainer.state.log_history if "loss_task" in h]  # distillation's
    loss = out.training_loss
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if not math.isfinite(loss) or bad:  # Trainer logs a NaN loss as 0: check the weights too
        raise FloatingPointError(f"training diverged: loss {loss}, non-finite weights in {len(bad)} tensors "
                                 f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")  # fmt: skip
    return {
        "loss": loss,
        "steps": out.global_step,
        "seconds": out.metrics.get("train_runtime"),
        "device": str(args.device),
        "loss_curve": curve,
        "param_groups": param_groups(trainer.optimizer, trainer.model),
        **({"task_loss_curve": task} if task else {}),  # the task loss alone: comparable with plain training
        **({"loss_components": trainer.loss_components} if hasattr(trainer, "loss_components") else {}),
    }


def predict(model, ds, collator, train: TrainSchema, seed: int, device: str) -> np.ndarray:
    """Model outputs (n, num_labels) on ds, in ds order."""
    # in order: transformers 5 also groups *evaluation* batches by length under group_by_length, which would
    # reorder the outputs against ds (and labels)
    args = training_args(replace(train, sampler="random"), seed, device)
    trainer = Trainer(model=model, args=args, data_collator=collator)
    logits = trainer.predict(ds).predictions
    return logits[0] if isinstance(logits, tuple) else logits
