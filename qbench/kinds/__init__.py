"""Task kinds: how a family of tasks loads its model head, prepares data, batches and evaluates.

A kind is a module with
- `load_model(model: ModelSchema, task: TaskSpec, seed) -> (model, tokenizer)`,
- `load_data(cell, tok, need_train) -> {split: Split}` (the training split only when need_train),
- `collator(tok)`: the batches of training (and of calibration, qbench.calibrate),
- `evaluate(cell, model, tok, data) -> (metrics per split, prediction rows)`,
- optionally `protocol(cell, model, tok, data, rows) -> dict`: how the metrics were computed (the record's
  `evaluation`).
`generative.py` is no kind: it holds what the generative kinds share.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from qbench.errors import QbenchError

KINDS = ("classification", "causal_lm", "dialog", "summarization")


@dataclass(frozen=True)
class Split:
    """One split as a kind prepared it."""

    inputs: Any  # what the model reads: a tokenized datasets.Dataset, or one token-id list (causal LM evaluation)
    examples: Any = None  # what evaluation scores against: the raw rows, or parsed examples (dialog)
    source: str = ""  # the local file read, or the hub dataset


def get(kind: str) -> ModuleType:
    """The module of a task kind (imported by name: a kind is chosen by the task's yaml)."""
    if kind not in KINDS:
        raise QbenchError(f"unknown task kind {kind!r}; valid: {', '.join(KINDS)}")
    return importlib.import_module(f"qbench.kinds.{kind}")
