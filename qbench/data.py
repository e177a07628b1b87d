"""Task data: a user folder (task.data_dir), the local mirror (QBENCH_DATA_DIR / data_dir), or the HF hub."""

from __future__ import annotations

import logging
from pathlib import Path

from qbench.errors import QbenchError
from qbench.models import hub_reachable
from qbench.tasks import TaskSpec

log = logging.getLogger(__name__)
READERS = {  # suffix -> pandas reader (name, kwargs)
    ".parquet": ("read_parquet", {}),
    ".jsonl": ("read_json", {"lines": True}),
    ".csv": ("read_csv", {}),
    ".txt": (None, {}),  # plain text: one row per line, in column text_fields[0] (LM corpora, ParlAI dialogues)
}


def split_file(task: TaskSpec, split: str, data_dir: str | None) -> Path | None:
    """The local file for a split (task.data_dir first, then <data_dir>/<task.mirror>/), None to use the hub.
    Raises when a local source is configured but lacks the split, naming the path(s) looked for."""
    name = task.files.get(split)  # an explicit file name (e.g. PTB's valid.txt), else <split>.<ext>
    if task.data_dir:
        candidates = [Path(task.data_dir) / (name or f"{split}{ext}") for ext in READERS]
        candidates = list(dict.fromkeys(candidates))
    elif data_dir and task.mirror:
        candidates = [Path(data_dir) / task.mirror / (name or f"{split}.parquet")]
    else:
        return None
    for c in candidates:
        if c.is_file():
            return c
    raise QbenchError(f"task {task.name}: split {split!r} not found; expected {' or '.join(map(str, candidates))}")


def load_split(task: TaskSpec, split: str, data_dir: str | None):
    """One split as a datasets.Dataset with the hub's column names."""
    import datasets
    import pandas as pd

    path = split_file(task, split, data_dir)
    if path is not None:
        reader, kwargs = READERS[path.suffix]
        if reader is None:
            lines = path.read_text(encoding="utf-8").splitlines()
            df = pd.DataFrame({task.text_fields[0] if task.text_fields else "text": lines})
        else:
            df = getattr(pd, reader)(path, **kwargs)
        log.info("task %s: %s from %s (%d rows)", task.name, split, path, len(df))
    else:
        if not task.hub:
            raise QbenchError(f"task {task.name}: no hub source; put the {split!r} split in task.data_dir=<folder>")
        if not hub_reachable():
            raise QbenchError(
                f"task {task.name}: no local data and the hub is unreachable; set QBENCH_DATA_DIR=<dir> "
                f"(<dir>/{task.mirror}/{split}.parquet) or task.data_dir=<folder>"
            )
        return datasets.load_dataset(task.hub["path"], task.hub.get("name"), split=split)
    missing = [c for c in (*task.text_fields, task.label_field) if c and c not in df.columns]
    if missing:
        raise QbenchError(f"task {task.name}: {path} lacks column(s) {missing}; it has {list(df.columns)}")
    if task.id_field not in df.columns:
        df[task.id_field] = range(len(df))
    return datasets.Dataset.from_pandas(df, preserve_index=False)


def load_task_data(
    task: TaskSpec, data_dir: str | None, need_train: bool, max_train: int | None, max_eval: int | None, seed: int
) -> dict:
    """{split: dataset} with train (a seeded random subset if capped) when needed, and every evaluation split
    (its first `max_eval` rows if capped)."""
    out = {}
    if need_train:
        ds = load_split(task, task.train_split, data_dir)
        if max_train and max_train < len(ds):
            ds = ds.shuffle(seed=seed).select(range(max_train))
        out[task.train_split] = ds
    for split in task.eval_splits:
        ds = load_split(task, split, data_dir)
        out[split] = ds.select(range(min(max_eval, len(ds)))) if max_eval else ds
    return out
