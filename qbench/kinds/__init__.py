"""Task kinds: how a family of tasks loads its model head, prepares data, batches and evaluates.

A kind is a module with `load_model(model_cfg, task, seed)`, `load_data(task, tok, cfg, need_train)`,
`collator(tok)` and `evaluate(model, tok, task, data, cfg) -> (metrics per split, prediction rows)`; optionally
`protocol(model, tok, task, data, cfg, rows) -> dict`, how the metrics were computed (the record's `evaluation`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from qbench.errors import QbenchError

KINDS = ("classification", "causal_lm", "dialog", "summarization")


def get(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise QbenchError(f"unknown task kind {kind!r}; valid: {', '.join(KINDS)}")
    return importlib.import_module(f"qbench.kinds.{kind}")
