#!/usr/bin/env bash
# Issue 15's SmolLM2-135M QAT study (conf/experiment/paper_b_smollm2.yaml), in the order that makes each finished
# cell useful: the FP fine-tune, the QAT learning-rate search on MDS (4-4-8, no distillation), the rest of the 4-4-8
# grid at the chosen rate, then 2-2-8 for the two best 4-4-8 configurations. Cells resume (a completed cell is
# skipped), so the script can be rerun after an interruption. Records: results/sweeps/paper_b_smollm2/.
# Selection never reads test perplexity: a configuration's score is the mean training loss of its last 5 steps
# (QAT reads each training block once, so every step's loss is on blocks the model has not been trained on yet).
set -euo pipefail
cd "$(dirname "$0")/.."
Q=(python -m qbench run +experiment=paper_b_smollm2)
SWEEP=results/sweeps/paper_b_smollm2

"${Q[@]}" scheme=none distill=none                                       # FP fine-tune (the teacher)
"${Q[@]}" scheme=mds distill=none 'train.qat.lr=1e-4,3e-4,1e-3'          # learning-rate search
LR=$(python scripts/paper_b_select.py "$SWEEP" --pick lr)
echo "QAT learning rate: $LR"
"${Q[@]}" scheme=mds distill=kd_tcd "train.qat.lr=$LR"
"${Q[@]}" scheme=pact,lsq,laq distill=none,kd_tcd "train.qat.lr=$LR"
python scripts/paper_b_select.py "$SWEEP" --pick best2 --lr "$LR" | while read -r scheme distill; do
  "${Q[@]}" "scheme=$scheme" "distill=$distill" bits=2 "train.qat.lr=$LR"   # 2-2-8
done
