"""Sentence(-pair) classification and regression: the GLUE tasks."""

from __future__ import annotations

import numpy as np

from qbench.config import ModelSchema
from qbench.data import load_task_data, split_file
from qbench.kinds import Split
from qbench.models import load_model as _load
from qbench.models import load_tokenizer
from qbench.tasks import TaskSpec
from qbench.train import predict


def load_model(model_cfg: ModelSchema, task: TaskSpec, seed: int):
    """(model with a fresh classification head of task.num_labels outputs, tokenizer)."""
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(model_cfg)
    model = _load(model_cfg, AutoModelForSequenceClassification, seed, num_labels=task.num_labels)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def load_data(cell, tok, need_train: bool) -> dict[str, Split]:
    """{split: Split(tokenized dataset, raw rows)} for the splits the run needs."""
    task, tr, data_dir = cell.task, cell.train, cell.data.data_dir
    raw = load_task_data(task, data_dir, need_train, tr.max_train_examples, tr.max_eval_examples, cell.seed)
    return {split: Split(encode(ds, tok, task, tr.max_length), ds, str(split_file(task, split, data_dir) or task.hub))
            for split, ds in raw.items()}  # fmt: skip


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


def evaluate(cell, model, tok, data: dict[str, Split]) -> tuple[dict, list[dict]]:
    """Metrics per evaluation split and one row per example (split, idx, label, prediction)."""
    task, metrics, rows = cell.task, {}, []
    for split in task.eval_splits:
        raw, enc = data[split].examples, data[split].inputs
        out = predict(model, enc, collator(tok), cell.train, cell.seed, cell.device)
        pred = out[:, 0] if task.is_regression else out.argmax(-1)
        labels = np.asarray(raw[task.label_field])
        metrics[split] = task.compute_metrics(labels, pred)
        for i, y, p in zip(raw[task.id_field], labels.tolist(), pred.tolist(), strict=True):
            rows.append({"split": split, "idx": i, "label": y, "prediction": p})
    return metrics, rows
