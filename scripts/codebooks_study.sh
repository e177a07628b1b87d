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
if [[ $step == all || $step == 3 ]]; then
  # 3. mixed precision from sensitivity, k-means per row: each MiniLM group (embeddings, attention and FFN of each
  #    layer: 13) quantized alone at 2, 3, 4 bits (PTQ of the FP fine-tune), bits per group at an average of 3.0
  #    code bits (qbench allocate --budget-unit code: the study predates effective budgets), then the mixed cell,
  #    PTQ and QAT, next to uniform 3-bit
  for task in sst2 mrpc; do
    ${QBENCH:-.venv/bin/python -m qbench.cli} sensitivity model=minilm task=$task train=cpu train.progress_bar=false \
      scheme=kmeans_row bits=2,3,4 study=codebooks_sensitivity_minilm_$task
    mixed=$(${QBENCH:-.venv/bin/python -m qbench.cli} allocate results/sweeps/codebooks_sensitivity_minilm_$task \
      --budget 3.0 --budget-unit code --out results/sweeps/codebooks_sensitivity_minilm_$task/allocation_3.0.yaml \
      | grep -o "+scheme.bits_by={[^}]*}")
    $M task=$task scheme=kmeans_row bits=3 "$mixed" && $M task=$task scheme=kmeans_row bits=3 "$mixed" train.order=ptq
  done
fi
if [[ $step == all || $step == 4 ]]; then
  # 4. the same for SmolLM2 (61 groups: the embedding with its tied head, attention and MLP of each layer), measured
  #    on PTB's first 2,048 validation tokens (one PTQ cell per group and bits; the test split is kept for the
  #    mixed cell), applied to PTB and WikiText-2 (test)
  L="model=smollm2 task=ptb train.order=zeroshot task.eval_splits=[validation] task.lm.context_length=512"
  ${QBENCH:-.venv/bin/python -m qbench.cli} sensitivity $L task.lm.max_eval_tokens=2048 train.progress_bar=false \
    scheme=kmeans_row bits=2,3,4 study=codebooks_sensitivity_smollm2_ptb
  mixed=$(${QBENCH:-.venv/bin/python -m qbench.cli} allocate results/sweeps/codebooks_sensitivity_smollm2_ptb \
    --budget 3.0 --budget-unit code --out results/sweeps/codebooks_sensitivity_smollm2_ptb/allocation_3.0.yaml \
    | grep -o "+scheme.bits_by={[^}]*}")
  $S scheme=kmeans_row bits=3 "$mixed"
fi
if [[ $step == all || $step == 5 ]]; then
  # 5. seeds' spread at 2 bits, where the schemes differ most: seeds 1 and 2 of every MiniLM cell (QAT and PTQ).
  #    (its FP, linear_row and per-tensor kmeans cells repeat paper A's seed cells under this study's id)
  for task in sst2 mrpc; do
    $M task=$task bits=2 seed=1,2 && $M task=$task bits=2 seed=1,2 train.order=ptq
  done
fi
