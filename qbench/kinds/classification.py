"""Sentence(-pair) classification and regression: the GLUE tasks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from omegaconf import DictConfig

from qbench.data import load_task_data
from qbench.models import load_model as _load
from qbench.models import load_tokenizer
from qbench.tasks import TaskSpec
from qbench.train import predict


def load_model(model_cfg: Mapping, task: TaskSpec, seed: int):
    """(model with a fresh classification head of task.num_labels outputs, tokenizer)."""
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(model_cfg)
    model = _load(model_cfg, AutoModelForSequenceClassification, seed, num_labels=task.num_labels)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def load_data(task: TaskSpec, tok, cfg: DictConfig, need_train: bool) -> dict:
    """{split: raw dataset} and {split: tokenized dataset} for the splits the run needs."""
    tr = cfg.train
    raw = load_task_data(task, cfg.data_dir, need_train, tr.max_train_examples, tr.max_eval_examples, cfg.seed)
    return {split: (ds, encode(ds, tok, task, tr.max_length)) for split, ds in raw.items()}


def encode(ds, tok, task: TaskSpec, max_length: int):
    """Tokenize the task's text field(s) (pairs as two segments), truncated to max_length; no padding here."""
    import datasets

    enc = ds.map(lambda b: tok(*[b[f] for f in task.text_fields], truncation=True, max_length=max_length),
                 batched=True, desc=f"tokenize {task.name}")  # fmt: skip
    if task.is_regression:
        enc = enc.cast_column(task.label_field, datasets.Value("float32"))
    return enc


def collator(tok):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tok)  # pads each batch to its longest example


def evaluate(model, tok, task: TaskSpec, data: dict, cfg: DictConfig) -> tuple[dict, list[dict]]:
    """Metrics per evaluation split and one row per example (split, idx, label, prediction)."""
    metrics, rows = {}, []
    for split in task.eval_splits:
        raw, enc = data[split]
        out = predict(model, enc, collator(tok), cfg.train, cfg.seed, cfg.device)
        pred = out[:, 0] if task.is_regression else out.argmax(-1)
        labels = np.asarray(raw[task.label_field])
        metrics[split] = task.compute_metrics(labels, pred)
        for i, y, p in zip(raw[task.id_field], labels.tolist(), pred.tolist(), strict=True):
            rows.append({"split": split, "idx": i, "label": y, "prediction": p})
    return metrics, rows
