"""Causal language modelling (WikiText-2/103, PTB): fine-tune on train, perplexity on the evaluation splits.

A split's text is its rows (lines of the .txt file, or the hub dataset's rows) with trailing newlines removed,
joined by '\\n': for a local file, the file as is. It is tokenized once, without special tokens, and the
tokenizer's BOS token (EOS if it has none: GPT-2's <|endoftext|>) is put in front as the document start, which is
never scored; every other token is scored exactly once (qbench.kinds.generative.lm_windows).

Settings (task.lm.*):
  context_length  tokens per evaluation window; null = the model's maximum context (max_position_embeddings)
  stride          new tokens scored per window; null = context_length (disjoint windows); smaller = sliding
                  window, every scored token then has at least context_length - stride tokens of context
  max_eval_tokens cap: score only the first N tokens of each evaluation split (null = all)
  batch_tokens    evaluation batch size in tokens (windows per forward = max(1, batch_tokens // context))
Training uses blocks of train.max_length tokens (the concatenated train text cut into consecutive blocks, the
last partial one dropped); train.max_train_examples caps the number of blocks (a seeded random subset).
train.max_eval_examples caps the number of rows (lines) read from each evaluation split.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from qbench.config import ModelSchema
from qbench.data import load_task_data, split_file
from qbench.errors import QbenchError
from qbench.kinds import Split
from qbench.kinds.generative import pad_collator, perplexity
from qbench.models import load_model as _load
from qbench.models import load_tokenizer
from qbench.tasks import TaskSpec


def load_model(model_cfg: ModelSchema, task: TaskSpec, seed: int):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(model_cfg)
    model = _load(model_cfg, AutoModelForCausalLM, seed)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def split_text(ds, task: TaskSpec) -> str:
    """The split's rows, trailing newlines removed, joined by '\\n'."""
    return "\n".join(line.rstrip("\n") for line in ds[task.text_fields[0]])


def doc_start(tok) -> int:
    tid = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if tid is None:
        raise QbenchError("the tokenizer has neither a BOS nor an EOS token to start the document with")
    return tid


def encode_text(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False, verbose=False)["input_ids"]


def train_blocks(ids: list[int], block: int, max_blocks: int | None, seed: int):
    """Consecutive blocks of `block` tokens (labels = inputs; the model shifts them), optionally a seeded subset."""
    import datasets

    n = len(ids) // block
    if n == 0:
        raise QbenchError(f"the training text has {len(ids)} tokens, fewer than one block of {block}")
    blocks = [ids[i * block : (i + 1) * block] for i in range(n)]
    ds = datasets.Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    if max_blocks and max_blocks < n:
        ds = ds.shuffle(seed=seed).select(range(max_blocks))
    return ds


def load_data(cell, tok, need_train: bool) -> dict[str, Split]:
    """{split: Split(token ids, source)} for eval splits (one sequence); train: Split(dataset of blocks, source)."""
    task, tr, data_dir = cell.task, cell.train, cell.data.data_dir
    raw = load_task_data(task, data_dir, need_train, None, tr.max_eval_examples, cell.seed)
    out = {}
    for split, ds in raw.items():
        source = str(split_file(task, split, data_dir) or f"hub:{task.hub.get('path')}/{task.hub.get('name')}")
        ids = encode_text(tok, split_text(ds, task))
        if split == task.train_split and need_train:
            out[split] = Split(train_blocks(ids, tr.max_length, tr.max_train_examples, cell.seed), source=source)
        else:
            cap = task.lm.max_eval_tokens
            out[split] = Split([doc_start(tok)] + (ids[:cap] if cap else ids), source=source)
    return out


def collator(tok):
    return pad_collator(tok)


def model_context(model) -> int:
    c = model.config
    for k in ("max_position_embeddings", "n_positions"):
        if getattr(c, k, None):
            return int(getattr(c, k))
    raise QbenchError("the model config has no maximum context; set task.lm.context_length")


def settings(model, task: TaskSpec) -> tuple[int, int]:
    context = task.lm.context_length or model_context(model)
    if context > model_context(model):
        raise QbenchError(f"task.lm.context_length={context} exceeds the model's maximum {model_context(model)}")
    stride = task.lm.stride or context
    if not 1 <= stride <= context:
        raise QbenchError(f"task.lm.stride={stride} must be in 1..context_length ({context})")
    return context, stride


def evaluate(cell, model, tok, data: dict[str, Split]) -> tuple[dict, list[dict]]:
    """Perplexity, mean NLL and next-token accuracy over every token of each evaluation split."""
    task = cell.task
    model.to(torch.device(cell.device)).eval()
    context, stride = settings(model, task)
    batch = max(1, task.lm.batch_tokens // context)
    metrics, rows = {}, []
    for split in task.eval_splits:
        ids = data[split].inputs
        with parametrize.cached():  # quantized weights computed once, not in every forward pass
            m, r = perplexity(model, ids, context, stride, batch)
        metrics[split] = {**m, "context_length": context, "stride": stride}
        rows += [{"split": split, **x} for x in r]
    return metrics, rows


def protocol(cell, model, tok, data: dict[str, Split], rows: list[dict]) -> dict:
    """How the numbers were computed, for the record."""
    task = cell.task
    context, stride = settings(model, task)
    return {
        "metric": "token-level perplexity = exp(mean NLL in nats over scored tokens); token_accuracy = share of "
        "scored tokens equal to the argmax prediction",
        "text": "split rows joined by '\\n', tokenized without special tokens, document-start token prepended "
        "(not scored); every other token scored exactly once",
        "document_start_token": tok.convert_ids_to_tokens(doc_start(tok)),
        "context_length": context,
        "stride": stride,
        "windows": "disjoint" if stride == context else f"sliding: each window scores its last {stride} tokens",
        "max_eval_tokens": task.lm.max_eval_tokens,
        "max_eval_rows": cell.train.max_eval_examples,
        "train_block_tokens": cell.train.max_length,
        "sources": {split: d.source for split, d in data.items()},
        "model_note": cell.model.note,
    }
