#!/usr/bin/env bash
# Issue 14's study (conf/experiment/codebooks_{minilm,smollm2}.yaml), in the order its parts became available. Every
# step resumes: completed cells are skipped. Run it from a frozen copy of the code (git worktree) with
# QBENCH_DATA_DIR set; records land in results/sweeps/codebooks. The FP, linear-per-row and per-tensor k-means cells
# of MiniLM (seed 42, 2-4 bits) are the same cells as paper A's CPU study: their records were copied from
# results/paper_a_glue_cpu, not rerun (same cell ids).
set -euo pipefail
Q="${QBENCH:-.venv/bin/python -m qbench.cli} run"
M="$Q +experiment=codebooks_minilm"
S="$Q +experiment=codebooks_smollm2"
step="${1:-all}"
if [[ $step == all || $step == 1 ]]; then
  # 1. data-free schemes whose code did not change during the study: NF4 on MiniLM; SmolLM2's FP, linear, NF4
  $M scheme=nf4 && $M scheme=nf4 train.order=ptq
  $S scheme=none,linear_row,nf4
fi
if [[ $step == all || $step == 2 ]]; then
  # 2. k-means per tensor, per row, Fisher-weighted per row (WikiText-2's local mirror has no train split: its Fisher
  #    cells calibrate on the validation split; evaluation stays on test)
  $M scheme=kmeans_row,kmeans_fisher && $M scheme=kmeans_row,kmeans_fisher train.order=ptq
  $S scheme=kmeans,kmeans_row && $S task=ptb scheme=kmeans_fisher
  $S task=wikitext2 scheme=kmeans_fisher task.train_split=validation
fi
