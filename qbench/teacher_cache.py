"""The distillation teacher's outputs per training example, computed once and kept on disk: `distill.cache_teacher`.

The teacher is frozen and runs in eval mode (no dropout), so what distillation reads from it for one training
example never changes: computing it again in every epoch and every distilled cell of a sweep was the whole cost
of KD/TCD over plain QAT. An entry holds, for each example of the training set (row i = the dataset's row i) and
each of its scored tokens (`token_mask`: the attention mask; labelled decoder tokens for
encoder-decoder models), as flat arrays with row i at offsets[i]:offsets[i + 1], read memory-mapped:
- `hidden` (tokens, d) float16: the states of hidden layer `distill.layer` (TCD);
- `head` (tokens, d) float16: what goes into the teacher's output layer when its logits are per token (language
  models): the KD logits are that layer applied again at each step, one matmul (checked when the entry is built;
  usually the same states as `hidden` at layer -1, then stored once);
- `logits` (examples, classes) float32: per-example logits (classification, regression): tiny, stored as they are.
Each entry serves kd, tcd and kd_tcd cells alike (what a sweep over `distill` needs, built once).

Equivalence: per-example logits are stored exactly. Float16 states are the float32 states rounded to 11
significant bits (relative error <= 2^-11 ≈ 4.9e-4 per value); the TCD loss and the per-token KD logits derived
from them differ from the uncached ones by that rounding carried through a normalisation or a matmul.
tests/test_teacher_cache.py bounds it on real SST-2 rows (tiny BERT) and PTB lines (tiny GPT-2): every loss
(task, kd, tcd, total) within relative 1e-4 and the student's gradient within 1e-3 (norm of the difference over
the norm; measured: 7e-6 and 2e-4); with float32 states within 1e-6 and 1e-5, the float noise of a batch padded
to another length. That is far under training's run-to-run noise, hence on by default and not part of the cell
id (qbench.sweep.EXCLUDED), like the device; `distill.cache_teacher=false` runs the teacher on every batch.

Key: the teacher's FP cache entry (model, task, seed, training config, data: qbench.fp_cache), a digest of the
teacher's weights (`weights_digest`: a teacher fine-tuned again into the same entry is another teacher), a digest
of the training set's model inputs (so another max length, subset or tokenizer is another entry) and the layer.
Written into a temporary folder, its manifest last (qbench.integrity), renamed into place, so an interrupted build
leaves no entry and a concurrent job finds a whole one or none; an entry damaged since is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qbench.distributed import barrier, is_main
from qbench.errors import QbenchError
from qbench.integrity import discard, folder_problem, seal_folder

log = logging.getLogger(__name__)
ROW = "qbench_row"  # the column (and batch key) holding each example's row in the training set
META = "meta.json"  # written last into the temporary folder: the entry's description
STATES = np.float16  # the hidden states' dtype on disk (module docstring: equivalence)


def inputs_digest(ds, columns: list[str]) -> str:
    """Digest of the values of `columns` of every row of ds, in order (lists: their lengths and their values)."""
    import pyarrow.compute as pc

    h = hashlib.sha1(json.dumps(sorted(columns)).encode())
    for table in ds.with_format("arrow").iter(batch_size=8192):
        for c in sorted(columns):
            col = table.column(c).combine_chunks()
            if hasattr(col, "flatten"):  # a list column (token ids): lengths, then the values
                h.update(pc.list_value_length(col).to_numpy(zero_copy_only=False).tobytes())
                col = pc.list_flatten(col)
            h.update(col.to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def token_mask(model, inputs: dict) -> torch.Tensor | None:
    """Which positions are real tokens: decoder tokens with a label (encoder-decoder), else the attention mask."""
    if getattr(model.config, "is_encoder_decoder", False):
        return inputs["labels"] != -100
    return inputs.get("attention_mask")


def hidden(out, layer: int) -> torch.Tensor:
    states = getattr(out, "decoder_hidden_states", None) or out.hidden_states
    return states[layer]


def weights_digest(model) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes, in order): two teachers share a cache
    entry only when their weights are the same, whatever folder they were loaded from."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def entry_dir(fp_cache: Path, layer: int, digest: str, teacher: str) -> Path:
    """<cache root>/teacher/<FP cache entry name>-<12 hex of (inputs digest, layer, teacher's weights digest)>:
    next to the teacher's entry (<cache root>/finetuned/<name>)."""
    key = hashlib.sha1(json.dumps({"inputs": digest, "layer": layer, "teacher": teacher}).encode()).hexdigest()[:12]
    return fp_cache.parent.parent / "teacher" / f"{fp_cache.name}-{key}"


@dataclass
class TeacherStates:
    """A cache entry, memory-mapped: `offsets` (examples + 1,) and the arrays named in the module docstring."""

    path: Path
    offsets: np.ndarray
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: Path) -> TeacherStates:
        meta = json.loads((path / META).read_text())
        arrays = {name: np.load(path / f"{file}.npy", mmap_mode="r") for name, file in meta["arrays"].items()}
        return cls(path, np.load(path / "offsets.npy"), arrays)

    def tokens(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """(tokens of the rows, d) float32 of array `name`: the batch's rows one after the other."""
        off, a = self.offsets, self.arrays[name]
        return torch.from_numpy(np.concatenate([a[off[r] : off[r + 1]] for r in rows.tolist()])).float()

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """(batch, classes) float32: the per-example logits."""
        return torch.from_numpy(self.arrays["logits"][rows.cpu().numpy()]).float()


def place(flat: torch.Tensor, mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """(batch, length, d) of flat (tokens, d), each row's tokens at the positions of its mask (right or left padding
    alike; no mask: every position), zeros elsewhere (no loss reads them)."""
    if mask is None:
        return flat.view(*shape, -1)
    if int(mask.sum()) != len(flat):  # another tokenization than the cached one: the key should have told
        raise RuntimeError(f"teacher cache: {len(flat)} cached tokens for a batch of {int(mask.sum())}")
    out = flat.new_zeros(*shape, flat.shape[-1])
    out[mask.bool()] = flat
    return out


def teacher_states(path: Path, build: Callable[[Path], None]) -> TeacherStates:
    """The entry at `path`: built by `build(temporary folder)` first when missing or damaged (by process 0 of
    several, the others waiting), sealed (its manifest written last: qbench.integrity), then renamed into place; a
    failed build removes its folder. A damaged entry is named in one log line and removed first."""
    if (path / META).is_file() and is_main() and (problem := folder_problem(path)):
        log.warning("damaged teacher-cache entry %s (%s): removed, computing it again", path, problem)
        discard(path)
    if not (path / META).is_file() and is_main():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            seal_folder(tmp)
            os.replace(tmp, path)
        except OSError:
            if not (path / META).is_file():
                raise
            log.info("teacher cache written meanwhile by another job: %s", path)  # the same entry: keep theirs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    return TeacherStates.load(path)


class Writer:
    """Fills a temporary entry batch by batch, in any order of examples: the arrays are .npy files opened
    memory-mapped once their width is known (first batch), rows placed at their offsets."""

    def __init__(self, folder: Path, offsets: np.ndarray):
        self.folder, self.offsets, self.arrays, self.files = folder, offsets, {}, {}
        np.save(folder / "offsets.npy", offsets)

    def _array(self, name: str, rows: int, width: int, dtype) -> np.ndarray:
        if name not in self.arrays:
            self.files[name] = name
            self.arrays[name] = np.lib.format.open_memmap(self.folder / f"{name}.npy", "w+", dtype, (rows, width))
        return self.arrays[name]

    def tokens(self, name: str, rows: list[int], states: torch.Tensor, mask: torch.Tensor | None) -> None:
        """states (batch, length, d): each row's tokens at its mask's positions, as STATES (float16)."""
        a = self._array(name, int(self.offsets[-1]), states.shape[-1], STATES)
        per_row = states.unbind(0) if mask is None else [s[m.bool()] for s, m in zip(states, mask, strict=True)]
        for r, s in zip(rows, per_row, strict=True):
            a[self.offsets[r] : self.offsets[r + 1]] = s.float().cpu().numpy()  # cast to STATES on assignment

    def per_example(self, name: str, rows: list[int], values: torch.Tensor) -> None:
        """values (batch, classes), as float32."""
        self._array(name, len(self.offsets) - 1, values.shape[-1], np.float32)[rows] = values.float().cpu().numpy()

    def alias(self, name: str, of: str) -> None:
        """Array `name` is array `of` (stored once)."""
        self.files[name] = of

    def close(self, meta: dict) -> None:
        for a in self.arrays.values():
            a.flush()
        (self.folder / META).write_text(json.dumps({**meta, "arrays": self.files}, indent=1))


@torch.inference_mode()
def build(folder: Path, teacher, ds, collate, layer: int, batch_size: int, device) -> None:
    """Write the entry of teacher on ds (the model's input columns only) into `folder`: one eval-mode forward pass
    per batch of `batch_size` examples of similar lengths (less padding than training batches)."""
    lengths = [len(x) for x in ds["input_ids"]]
    order = sorted(range(len(ds)), key=lengths.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    collated = [(rows, collate([ds[r] for r in rows])) for rows in batches]
    counts = np.zeros(len(ds), dtype=np.int64)
    for rows, inputs in collated:  # scored tokens per example, as training will count them
        mask = token_mask(teacher, inputs)
        counts[rows] = mask.sum(-1).numpy() if mask is not None else inputs["input_ids"].shape[1]
    w = Writer(folder, np.concatenate([[0], np.cumsum(counts)]))
    head, seen = teacher.get_output_embeddings(), {}
    hook = head.register_forward_hook(lambda m, args, out: seen.update(x=args[0])) if head is not None else None
    teacher.eval()
    try:
        for i, (rows, inputs) in enumerate(collated):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = teacher(**inputs, output_hidden_states=True)
            mask, states = token_mask(teacher, inputs), hidden(out, layer)
            w.tokens("hidden", rows, states, mask)
            if out.logits.dim() == 2:  # one logit vector per example
                w.per_example("logits", rows, out.logits)
                continue
            if i == 0:  # per-token logits: derived from the output layer's input at each step, if they are that
                check_head(teacher, head, seen.get("x"), out.logits)
                same = torch.equal(seen["x"], states)  # layer -1 of GPT-2, Llama: store once
                if same:
                    w.alias("head", "hidden")
            if not same:
                w.tokens("head", rows, seen["x"], mask)
    finally:
        if hook is not None:
            hook.remove()
    w.close({"examples": len(ds), "tokens": int(w.offsets[-1]), "layer": layer, "columns": ds.column_names,
             "teacher": type(teacher).__name__})  # fmt: skip


def check_head(teacher, head, x: torch.Tensor | None, logits: torch.Tensor) -> None:
    """The teacher's logits must be its output layer applied to that layer's input (no bias added after, no
    soft-capping), for the cache to derive them."""
    if x is None or x.shape[:-1] != logits.shape[:-1] or not torch.allclose(head(x), logits, rtol=1e-5, atol=1e-5):
        raise QbenchError(f"distill.cache_teacher: {type(teacher).__name__}'s logits are not its output layer of the "
                          "states before it; set distill.cache_teacher=false")  # fmt: skip
