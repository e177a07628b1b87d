"""Time per training step of 2-bit MDS QAT: plain vs + TCD vs + KD + TCD (paper B reports ~+10% for TCD).

The same quantized student (scheme=mds bits=2, the model's include patterns from conf/model/<name>.yaml), the same
FP teacher, the same batch of random token ids; each step is qbench's real loss (transformers.Trainer.compute_loss
for plain QAT, qbench.distill.DistillTrainer.compute_loss with distill weights otherwise), backward and an AdamW
step. Configs are interleaved round-robin (warm-up rounds first) so background load hits them alike; the median of
N is reported. MiniLM loads its real weights (or --model-path); models without local weights (gpt2 offline) are
built randomly initialised from their full-size `arch`: step time does not depend on the weights' values.

    python benchmarks/distill_overhead.py                 # MiniLM, batch 32, length 128, 2 warm-up + 7 timed steps
    python benchmarks/distill_overhead.py --steps 3 --warmup 1 --batch 8 --length 64   # quick
    python benchmarks/distill_overhead.py --model gpt2 --device cuda                   # paper B's GPT-2 small
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer, TrainingArguments

from qbench.config import model_schema
from qbench.distill import DistillSpec, DistillTrainer
from qbench.models import load_model, resolve
from qbench.quant.mds import MDS
from qbench.quant.wiring import quantize_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
CONFIGS = {
    "mds (plain QAT)": DistillSpec(),
    "mds + tcd": DistillSpec(name="tcd", tcd_weight=0.1),
    "mds + kd + tcd": DistillSpec(name="kd_tcd", kd_weight=1.0, tcd_weight=0.1),
}


def build(name: str, path: str | None, random_init: bool) -> tuple[torch.nn.Module, dict, str]:
    """The FP model (teacher), its conf/model yaml and a description of where its weights came from."""
    mcfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    causal = mcfg["family"] == "causal_lm"
    auto, kw = (AutoModelForCausalLM, {}) if causal else (AutoModelForSequenceClassification, {"num_labels": 2})
    if path:
        mcfg["name_or_path"] = path
    if random_init or not (mcfg.get("name_or_path") and Path(resolve(mcfg["name_or_path"])).exists()):
        mcfg["config"] = mcfg["arch"]  # no local weights (gpt2 offline): the full-size shape, random weights
    model = load_model(model_schema(mcfg), auto, 0, **kw)
    what = "random init from arch" if mcfg.get("config") else f"weights {mcfg['name_or_path']}"
    return model, mcfg, what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", help="a conf/model name (minilm, gpt2, bart, ...)")
    ap.add_argument("--model-path", default=None, help="local weights folder instead of model.name_or_path")
    ap.add_argument("--random-init", action="store_true", help="build from the full-size arch, random weights")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--act-bits", type=int, default=None, help="also fake-quantize Linear inputs (paper B: 8)")
    a = ap.parse_args()

    dev = torch.device(a.device)
    teacher, mcfg, what = build(a.model, a.model_path, a.random_init)
    teacher.to(dev)
    student = copy.deepcopy(teacher)
    quantize_model(student, MDS(bits=2, act_bits=a.act_bits), mcfg["include"], mcfg.get("exclude") or [])
    student.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (a.batch, a.length), generator=g)
    causal = mcfg["family"] == "causal_lm"
    labels = ids.clone() if causal else torch.randint(0, 2, (a.batch,), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=dev.type == "cpu", report_to="none")
    trainers = {
        name: Trainer(model=student, args=args)
        if not spec.active
        else DistillTrainer(model=student, args=args, teacher=teacher, spec=spec)
        for name, spec in CONFIGS.items()
    }
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(trainer) -> float:
        sync()
        t0 = time.perf_counter()
        loss = trainer.compute_loss(student, dict(inputs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    times = {name: [] for name in CONFIGS}
    for i in range(a.warmup + a.steps):
        for name, tr in trainers.items():
            dt = step(tr)
            if i >= a.warmup:
                times[name].append(dt)
    n = sum(p.numel() for p in teacher.parameters()) / 1e6
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{a.model} ({n:.1f}M, {what}), scheme=mds bits=2 act_bits={a.act_bits}, batch {a.batch} x length "
          f"{a.length}, torch {torch.__version__}, {hw}; {a.warmup} warm-up rounds, median of {a.steps} interleaved "
          "steps")  # fmt: skip
    print(f"{'config':18s} {'median s/step':>13s} {'min':>7s} {'max':>7s} {'ratio':>7s}")
    base = statistics.median(times["mds (plain QAT)"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:18s} {m:13.4f} {min(ts):7.4f} {max(ts):7.4f} {m / base:7.3f}")
    tcd = statistics.median(times["mds + tcd"]) / base
    both = statistics.median(times["mds + kd + tcd"]) / base
    print(f"summary: tcd_overhead={100 * (tcd - 1):+.1f}% kd_tcd_overhead={100 * (both - 1):+.1f}%")


if __name__ == "__main__":
    main()
