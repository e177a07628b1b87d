#!/usr/bin/env bash
# Issue 12: the FP recipe search rows, then paper A's CPU study (conf/experiment/paper_a_glue_cpu.yaml), in the
# order that makes partial results readable. Every step resumes: completed cells are skipped. Run it from a frozen
# copy of the code (git worktree) with QBENCH_DATA_DIR set; records land in results/sweeps/{fp_recipe,paper_a_glue_cpu}.
set -euo pipefail
Q="${QBENCH:-.venv/bin/python -m qbench.cli} run"
FP="$Q -m study=fp_recipe scheme=none train=cpu train.progress_bar=false"
E="$Q +experiment=paper_a_glue_cpu"
# 1. the recipe (train=cpu, with its per-task entries) on every task, seed 42: these FP models are the study's
$FP task=sst2,cola,mrpc,stsb,rte
#    the search's other rows: what the per-task entries replaced (3 epochs for MRPC and RTE, 8,000 x 3 for SST-2)
$FP task=mrpc train.tasks.mrpc.epochs=3 train.lr=1e-4,2e-4
$FP task=rte train.tasks.rte.epochs=3 train.lr=1e-4,2e-4
$FP task=sst2 train.tasks.sst2.max_train_examples=8000 train.tasks.sst2.epochs=3
# 2. SST-2 complete first: seed 42 QAT at 1-4 bits and PTQ at 1-4 and 8, seeds 1 and 2 at 2 bits
$E task=sst2
$E task=sst2 train.order=ptq bits=1,2,3,4,8
$E task=sst2 seed=1,2 bits=2
$E task=sst2 seed=1,2 bits=2 train.order=ptq
# 3. the other tasks, seed 42: FP + QAT at 1-4 bits, then PTQ of the same FP models
$E task=cola,stsb,mrpc,rte
$E task=cola,stsb,mrpc,rte train.order=ptq bits=1,2,3,4,8
# 4. which order works best at 2 bits: QAT from the pre-trained model with the SST-2 FP fine-tune's whole budget
$Q -m study=paper_a_glue_cpu train=cpu train.progress_bar=false task=sst2 scheme=linear,kmeans bits=2 \
  train.order=qat train.qat.epochs=2 train.qat.max_train_examples=16000
# 5. seeds 1 and 2 for the other tasks' FP fine-tunes and 2-bit cells
$E task=cola,stsb,mrpc,rte seed=1,2 bits=2
$E task=cola,stsb,mrpc,rte seed=1,2 bits=2 train.order=ptq
