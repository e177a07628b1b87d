"""Time per training step of 2-bit MDS QAT over a whole run: plain vs + TCD vs + KD + TCD, the teacher run on every
batch vs its outputs cached (distill.cache_teacher, qbench.teacher_cache). Paper B reports ~+10% for TCD.

The same quantized student (scheme=mds bits=2, the model's include patterns from conf/model/<name>.yaml), the same
FP teacher, the same batches: a seeded random subset of the real SST-2 training set tokenized by the model's
tokenizer (classification models; batches padded to their longest, as qbench trains), or random token ids of
--length (causal LMs). Each step is qbench's real loss (transformers.Trainer.compute_loss for plain QAT,
qbench.distill.DistillTrainer.compute_loss otherwise, the cache lookup included), backward and an AdamW step; the
configs take turns step by step (after warm-up steps) so background load hits them alike, for --epochs epochs. A
cached config first builds its cache entry (one pass of the teacher over the training set, in a fresh folder):
that time is charged to its first epoch. "reused" is the run of a later cell of a sweep, which finds the entry
built. MiniLM loads its real weights (or --model-path); models without local weights (gpt2 offline) are built
randomly initialised from their full-size `arch`: step time does not depend on the weights' values.

    python benchmarks/distill_overhead.py                  # MiniLM, 512 SST-2 examples, batch 32, 3 epochs
    python benchmarks/distill_overhead.py --quick          # smoke check: 64 examples, batch 16, 2 epochs
    python benchmarks/distill_overhead.py --model gpt2 --device cuda --length 128   # paper B's GPT-2 small
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer, TrainingArguments

from qbench.config import model_schema
from qbench.distill import DistillSpec, DistillTrainer
from qbench.models import load_model, load_tokenizer, resolve
from qbench.quant.mds import MDS
from qbench.quant.wiring import quantize_model

REPO = Path(__file__).resolve().parents[1]
TCD, KD_TCD = DistillSpec(name="tcd", tcd_weight=0.1), DistillSpec(name="kd_tcd", kd_weight=1.0, tcd_weight=0.1)
CONFIGS = {  # name -> (distillation, cached)
    "mds (plain QAT)": (DistillSpec(), False),
    "mds + tcd": (TCD, False),
    "mds + tcd, cached": (TCD, True),
    "mds + kd + tcd": (KD_TCD, False),
    "mds + kd + tcd, cached": (KD_TCD, True),
}


def build(name: str, path: str | None, random_init: bool) -> tuple[torch.nn.Module, dict, str]:
    """The FP model (teacher), its conf/model yaml and a description of where its weights came from."""
    mcfg = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    causal = mcfg["family"] == "causal_lm"
    auto, kw = (AutoModelForCausalLM, {}) if causal else (AutoModelForSequenceClassification, {"num_labels": 2})
    if path:
        mcfg["name_or_path"] = path
    if random_init or not (mcfg.get("name_or_path") and Path(resolve(mcfg["name_or_path"])).exists()):
        mcfg["config"] = mcfg["arch"]  # no local weights (gpt2 offline): the full-size shape, random weights
    model = load_model(model_schema(mcfg), auto, 0, **kw)
    what = "random init from arch" if mcfg.get("config") else f"weights {mcfg['name_or_path']}"
    return model, mcfg, what


def training_set(mcfg: dict, n: int, length: int):
    """(dataset, collator, description): n SST-2 examples (a seeded random subset, as train.max_train_examples
    takes it) truncated to `length` tokens, or n random blocks of `length` token ids for a causal LM."""
    import datasets

    from qbench.data import load_task_data
    from qbench.kinds import classification
    from qbench.tasks import TaskSpec

    if mcfg["family"] == "causal_lm":
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, 30000, (n, length), generator=g).tolist()
        ds = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
        collate = lambda f: {k: torch.tensor([x[k] for x in f]) for k in ("input_ids", "labels")}  # noqa: E731
        return ds, collate, f"{n} random blocks of {length} tokens"
    task = TaskSpec.from_config(yaml.safe_load((REPO / "conf" / "task" / "sst2.yaml").read_text()))
    tok = load_tokenizer(model_schema(mcfg))
    raw = load_task_data(task, os.environ.get("QBENCH_DATA_DIR"), True, n, 1, seed=42)[task.train_split]
    ds = classification.encode(raw, tok, task, length).select_columns(["input_ids", "attention_mask", "label"])
    tokens = sum(len(x) for x in ds["input_ids"])
    return ds, classification.collator(tok), f"{n} SST-2 examples ({tokens / n:.1f} tokens on average, max {length})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", help="a conf/model name (minilm, gpt2, bart, ...)")
    ap.add_argument("--model-path", default=None, help="local weights folder instead of model.name_or_path")
    ap.add_argument("--random-init", action="store_true", help="build from the full-size arch, random weights")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--examples", type=int, default=512, help="training examples (SST-2 rows or random blocks)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=64, help="max tokens per example (SST-2), tokens per block (LM)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per config before the run")
    ap.add_argument("--act-bits", type=int, default=None, help="also fake-quantize Linear inputs (paper B: 8)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 64 examples, batch 16, 2 epochs, 1 warm-up")
    a = ap.parse_args()
    if a.quick:
        a.examples, a.batch, a.epochs, a.warmup = 64, 16, 2, 1

    dev = torch.device(a.device)
    teacher, mcfg, what = build(a.model, a.model_path, a.random_init)
    teacher.to(dev)
    student = copy.deepcopy(teacher)
    quantize_model(student, MDS(bits=2, act_bits=a.act_bits), mcfg["include"], mcfg.get("exclude") or [])
    student.train()
    ds, collate, data = training_set(mcfg, a.examples, a.length)
    cache = Path(tempfile.mkdtemp(prefix="qbench-teacher-cache-"))  # fresh: every cached config builds its entry
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=dev.type == "cpu", report_to="none",
                             per_device_eval_batch_size=128)  # fmt: skip
    trainers, build_s = {}, {}
    for name, (spec, cached) in CONFIGS.items():
        kw = {"teacher": teacher, "spec": spec, "teacher_cache": cache / "finetuned" / name} if spec.active else {}
        trainers[name] = (DistillTrainer if spec.active else Trainer)(model=student, args=args, train_dataset=ds,
                                                                       data_collator=collate, **kw)  # fmt: skip
        if cached:  # the first epoch's extra: one teacher pass over the training set, written to disk
            t0 = time.perf_counter()
            trainers[name].states = trainers[name].teacher_states()
            build_s[name] = time.perf_counter() - t0
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(trainer, rows: list[int]) -> float:
        tds = trainer.train_dataset  # with its ROW column when cached
        inputs = {k: v.to(dev) for k, v in trainer.data_collator([tds[r] for r in rows]).items()}
        sync()
        t0 = time.perf_counter()
        loss = trainer.compute_loss(student, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    epochs = [torch.randperm(len(ds), generator=g).tolist() for _ in range(a.epochs)]
    batches = [[order[i : i + a.batch] for i in range(0, len(order), a.batch)] for order in epochs]
    for _, rows in zip(range(a.warmup), batches[0], strict=False):
        for tr in trainers.values():
            step(tr, rows)
    times = {name: [[] for _ in batches] for name in CONFIGS}  # config -> epoch -> step times
    for e, epoch in enumerate(batches):
        for rows in epoch:
            for name, tr in trainers.items():
                times[name][e].append(step(tr, rows))
    report(a, mcfg, what, data, teacher, dev, times, build_s)


def report(a, mcfg: dict, what: str, data: str, teacher, dev, times: dict, build_s: dict) -> None:
    """Seconds per step: first epoch (with the cache's build), all epochs (with it), all epochs with the cache found
    built (a later cell); ratios to plain QAT."""
    n = sum(p.numel() for p in teacher.parameters()) / 1e6
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    steps = len(times["mds (plain QAT)"][0])
    print(f"{a.model} ({n:.1f}M, {what}), scheme=mds bits=2 act_bits={a.act_bits}, {data}, batch {a.batch}, "
          f"{a.epochs} epochs x {steps} steps, {a.warmup} warm-up steps, torch {torch.__version__}, {hw}; "
          f"load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print(f"{'config':24s} {'build s':>8s} {'epoch 1 s/step':>15s} {'ratio':>6s} {'run s/step':>11s} {'ratio':>6s} "
          f"{'reused s/step':>14s} {'ratio':>6s} {'median':>7s}")  # fmt: skip
    rows = {}
    for name, per_epoch in times.items():
        b, flat = build_s.get(name, 0.0), [t for ep in per_epoch for t in ep]
        rows[name] = ((b + sum(per_epoch[0])) / len(per_epoch[0]), (b + sum(flat)) / len(flat), statistics.mean(flat),
                      statistics.median(flat))  # fmt: skip
    base = rows["mds (plain QAT)"]
    for name, (first, run, reused, med) in rows.items():
        b = f"{build_s[name]:8.2f}" if name in build_s else f"{'-':>8s}"
        print(f"{name:24s} {b} {first:15.4f} {first / base[0]:6.3f} {run:11.4f} {run / base[1]:6.3f} "
              f"{reused:14.4f} {reused / base[2]:6.3f} {med:7.4f}")  # fmt: skip
    pct = lambda name, i: f"{100 * (rows[name][i] / base[i] - 1):+.1f}%"  # noqa: E731
    both = "mds + kd + tcd, cached"
    print(f"summary ({a.epochs}-epoch run, cache built in it): tcd {pct('mds + tcd', 1)} -> cached "
          f"{pct('mds + tcd, cached', 1)}; kd_tcd {pct('mds + kd + tcd', 1)} -> cached {pct(both, 1)} (first epoch "
          f"{pct(both, 0)}; cache reused {pct(both, 2)})")  # fmt: skip


if __name__ == "__main__":
    main()
