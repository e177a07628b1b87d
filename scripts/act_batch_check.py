"""Does an example's output depend on its batch-mates? Real MiniLM on real SST-2 validation sentences.

Scores the first --n sentences one at a time (batch 1, no padding) and in padded batches of --batch (padded to
each batch's longest sentence, as evaluation does), with activation fake-quantization (act_bits=8) and without,
and prints max |Δlogit| between the two and the number of flipped predictions (in float32, and with act_bits=8
also in float64). The model is the real all-MiniLM-L6-v2 (conf/model/minilm.yaml) with a fresh seeded 2-class
head, its weights quantized by --scheme at --bits without training (a forward-pass check, not an accuracy).

    QBENCH_DATA_DIR=/work/shared/data python scripts/act_batch_check.py [--n 64] [--batch 32] [--scheme mds]
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import datasets
import torch
import transformers
from omegaconf import OmegaConf
from transformers import DataCollatorWithPadding

from qbench.config import model_schema
from qbench.data import load_split
from qbench.kinds import classification
from qbench.quant.wiring import quantize_model
from qbench.tasks import TaskSpec

CONF = Path(__file__).resolve().parents[1] / "conf"
MAX_LENGTH = 128  # conf/train/default.yaml


def make_scheme(name: str, bits: int, act_bits: int | None):
    """conf/scheme/<name>.yaml's class with bits, embed_bits = bits and act_bits; its other settings at their
    defaults (read straight from the class, so an older qbench checkout runs the same check)."""
    mod, _, cls = OmegaConf.load(CONF / "scheme" / f"{name}.yaml")["_target_"].rpartition(".")
    return getattr(importlib.import_module(mod), cls)(bits=bits, act_bits=act_bits)


@torch.no_grad()
def logits(model, enc: list[dict], collate, batch: int) -> torch.Tensor:
    """(n, 2) logits of the encoded examples, scored in consecutive batches of `batch` (padded per batch)."""
    out = [model(**collate(enc[i : i + batch])).logits for i in range(0, len(enc), batch)]
    return torch.cat(out)


def check(scheme: str, bits: int, act_bits: int | None, n: int, batch: int, seed: int, dtype: torch.dtype
          ) -> tuple[float, int]:  # fmt: skip
    """(max |Δlogit|, flipped predictions) between one-at-a-time and batched scoring, the model in `dtype`."""
    model_cfg = OmegaConf.load(CONF / "model" / "minilm.yaml")
    task = TaskSpec.from_config(OmegaConf.to_container(OmegaConf.load(CONF / "task" / "sst2.yaml")))
    model, tok = classification.load_model(model_schema(model_cfg), task, seed)
    quantize_model(model, make_scheme(scheme, bits, act_bits), list(model_cfg.include), list(model_cfg.exclude))
    model.to(dtype).eval()
    ds = load_split(task, "validation", os.environ["QBENCH_DATA_DIR"]).select(range(n))
    enc = classification.encode(ds, tok, task, MAX_LENGTH).remove_columns(["sentence", "label", "idx"])
    enc = [dict(e) for e in enc]
    collate = DataCollatorWithPadding(tok)
    alone, batched = logits(model, enc, collate, 1), logits(model, enc, collate, batch)
    flips = int((alone.argmax(-1) != batched.argmax(-1)).sum())
    return (alone - batched).abs().max().item(), flips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="validation sentences (the first n)")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the batched scoring")
    ap.add_argument("--scheme", default="mds", help="mds | linear | pact | lsq | laq")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    transformers.logging.set_verbosity_error()  # the fresh head's "newly initialized" table
    datasets.disable_progress_bars()
    print(f"minilm, sst2 validation[:{a.n}], scheme={a.scheme} bits={a.bits}: one at a time vs padded batches of "
          f"{a.batch}")  # fmt: skip
    # float64 too: batched and one-at-a-time matmuls differ in the last float32 bits, and an activation that sits
    # on a rounding boundary of the 8-bit grid can then land on the neighbouring level; float64 shows what is left
    for act, dtype in ((8, torch.float32), (8, torch.float64), (None, torch.float32)):
        d, flips = check(a.scheme, a.bits, act, a.n, a.batch, a.seed, dtype)
        print(f"act_bits={act} {str(dtype)[6:]}: max |dlogit| = {d:.3e}, flipped predictions = {flips} of {a.n}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
