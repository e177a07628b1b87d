#!/usr/bin/env bash
# Issue 25's study (conf/experiment/gptq_{smollm2,minilm}.yaml): GPTQ's error feedback on linear and k-means grids
# against round-to-nearest, k-means, Fisher k-means and NF4. Every step resumes: completed cells are skipped. Run it
# from a frozen copy of the code (git worktree) with QBENCH_DATA_DIR set; records land in results/sweeps/gptq.
#   bash scripts/gptq_study.sh [all|1|2|3]
set -euo pipefail
Q="${QBENCH:-.venv/bin/python -m qbench.cli} run"
S="$Q --multirun +experiment=gptq_smollm2"
M="$Q +experiment=gptq_minilm"
step="${1:-all}"
# WikiText-2's local mirror has no train split: calibrating cells (gptq, kmeans_fisher) read its validation split
CAL_W="task=wikitext2 task.train_split=validation"
if [[ $step == all || $step == 1 ]]; then
  # 1. SmolLM2 at 4 and 3 bits, per row and per group of 192 (its weights are de-quantized Q4_1, blocks of 32: a 4-bit
  #    grid aligned with them is lossless, so not 32; 128 does not divide its 576-wide rows, 192 does, and 1536).
  #    GPTQ cells with act-order (columns by decreasing Hessian diagonal) and 32 calibration batches (32,768
  #    tokens). Data-free cells first; 3 bits on PTB, then WikiText-2, then 4 bits. The embedding / LM head stays FP
  #    (conf/experiment/gptq_smollm2.yaml).
  $S task=ptb,wikitext2 scheme=none
  for bits in 3 4; do
    for task in ptb wikitext2; do
      cal="task=$task"; [[ $task == wikitext2 ]] && cal=$CAL_W
      $S task=$task bits=$bits scheme=linear_row,kmeans_row
      $S task=$task bits=$bits scheme=linear scheme.granularity=group scheme.group_size=192
      $S task=$task bits=$bits scheme=nf4 scheme.block_size=192
      $S $cal bits=$bits scheme=kmeans_fisher
      # one scheme per command: a multirun composes its base config without the swept keys, so scheme.act_order
      # (a key of the gptq schemes only) fails against the default scheme when scheme= is swept
      $S $cal bits=$bits scheme=gptq scheme.act_order=true
      $S $cal bits=$bits scheme=gptq_kmeans scheme.act_order=true
      $S $cal bits=$bits scheme=gptq scheme.group_size=192 scheme.act_order=true
    done
  done
fi
if [[ $step == all || $step == 2 ]]; then
  # 2. MiniLM PTQ of the FP fine-tune, SST-2 and MRPC, 2-4 bits, seed 42
  $M
fi
if [[ $step == all || $step == 3 ]]; then
  # 3. seeds 1 and 2 at 2 bits (their FP fine-tunes are trained first when not cached)
  $M bits=2 seed=1,2
fi
