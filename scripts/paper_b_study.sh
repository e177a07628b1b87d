#!/usr/bin/env bash
# Issue 26's paper B studies, each quantizer's learned range at its own searched rate (train.qat.quantizer_lr):
#   glue     MiniLM on SST-2 and STS-B at W-E-A 2-2-8 (conf/experiment/paper_b_glue_cpu.yaml; TASKS: the tasks,
#            default "sst2 stsb"; MRPC's 2-2-8 cells sit at its constant predictor, results/paper_b_glue_cpu)
#   smollm2  SmolLM2-135M on PTB (and WikiText-2) at 4-4-8, then 2-2-8 (conf/experiment/paper_b_smollm2_qlr.yaml)
# Usage: bash scripts/paper_b_study.sh glue|smollm2 [STEP]  (no STEP: all steps of that study, in order). Every step
# resumes: completed cells are skipped, and the searches' picks are re-read from their records. Every choice is made
# on training losses (scripts/quantizer_lr_search.py, scripts/paper_b_select.py), never on an evaluation split.
# Records: results/sweeps/<study>; run it from a frozen copy of the code with QBENCH_DATA_DIR set.
# A dry run end to end on a tiny model: STUDY=<another study> EXTRA="model=tiny_gpt2 train.max_steps=2 ..." (EXTRA:
# overrides added to every cell and search; GRID: the searched rates).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
Q="${QBENCH:-$PY -m qbench.cli} run"
study="${1:?usage: paper_b_study.sh glue|smollm2 [STEP]}"
step="${2:-all}"
at() { [[ $step == all || $step == "$1" ]]; }
pick() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["picks"][sys.argv[2]])' "$1" "$2"; }

if [[ $study == glue ]]; then
  STUDY="${STUDY:-paper_b_glue_cpu}"
  X="+experiment=paper_b_glue_cpu study=$STUDY ${EXTRA:-}"
  G="$Q $X"
  SWEEP=results/sweeps/$STUDY
  GRID="${GRID:-1e-4,1e-3,1e-2,1e-1}"  # 1e-4 = the weights' rate (train=cpu); MiniLM 2-bit: γ ~ 2, α and s ~ 0.05
  TASKS="${TASKS:-sst2 stsb}"
  if at 1; then  # 1. the FP cells (the cached fine-tunes, also the teachers), 3 seeds per task
    for task in $TASKS; do
      $G task=$task scheme=none distill=none
    done
  fi
  if at 2; then  # 2. the quantizer_lr search per task: seed 42, no distillation, the full QAT stage (63 steps)
    for task in $TASKS; do
      "$PY" scripts/quantizer_lr_search.py --grid $GRID --schemes pact,lsq,mds --last 10 \
        --out $SWEEP/quantizer_lr_$task.json -- $X task=$task seed=42 distill=none
    done
  fi
  if at 3; then  # 3. the grid: 4 distillations x 3 seeds per (task, scheme), each scheme at its task's pick
    for task in $TASKS; do
      for scheme in pact lsq mds; do
        $G task=$task scheme=$scheme "train.qat.quantizer_lr=$(pick $SWEEP/quantizer_lr_$task.json $scheme)"
      done
      $G task=$task scheme=laq  # LAQ fits its range every step: no learned range, no rate
    done
  fi
elif [[ $study == smollm2 ]]; then
  STUDY="${STUDY:-paper_b_smollm2_qlr}"
  X="+experiment=paper_b_smollm2_qlr study=$STUDY ${EXTRA:-}"
  S="$Q $X"
  SWEEP=results/sweeps/$STUDY
  GRID="${GRID:-1e-3,3e-3,1e-2,3e-2}"  # 1e-3 = the weights' QAT rate; SmolLM2 4-bit: γ 3-6, α 0.14-1.5, s 0.02-0.2
  if at 1; then  # 1. FP fine-tunes (the teachers), 3 seeds
    $S scheme=none distill=none seed=42,1,2
  fi
  if at 2; then  # 2. the quantizer_lr search at 4-4-8: seed 42, no distillation, 100 QAT steps; a pick on the
    # grid's edge is extended past it (up to 2 rates; a later run of this step resumes there)
    "$PY" scripts/quantizer_lr_search.py --grid $GRID --extend 2 --schemes pact,lsq,mds --last 10 \
      --out $SWEEP/quantizer_lr_b4.json -- $X seed=42 distill=none
  fi
  if at 3; then  # 3. the 4-4-8 grid, seed 42, each scheme at its pick
    for scheme in pact lsq mds; do
      $S scheme=$scheme "train.qat.quantizer_lr=$(pick $SWEEP/quantizer_lr_b4.json $scheme)"
    done
    $S scheme=laq
  fi
  best2() { "$PY" scripts/paper_b_select.py $SWEEP --pick best2q --bits 4 --last 10 --picks $SWEEP/quantizer_lr_b4.json; }
  qlr() {  # the train.qat.quantizer_lr override of scheme $1 from picks file $2 (none for LAQ)
    [[ $1 == laq ]] || echo "train.qat.quantizer_lr=$(pick "$2" "$1")"
  }
  if at 4; then  # 4. seeds 1 and 2 of the best two 4-4-8 configurations (training loss) and of MDS + KD + TCD
    { best2; echo mds kd_tcd; } | sort -u | while read -r scheme distill; do
      $S scheme=$scheme distill=$distill seed=1,2 $(qlr $scheme $SWEEP/quantizer_lr_b4.json)
    done
  fi
  if at 5; then  # 5. 2-2-8 for the best two: their schemes' rates searched again at 2 bits, then seed 42
    learned=$(best2 | awk '$1 != "laq" {print $1}' | sort -u | paste -sd, -)
    if [[ -n $learned ]]; then
      "$PY" scripts/quantizer_lr_search.py --grid $GRID --extend 2 --schemes "$learned" --last 10 \
        --out $SWEEP/quantizer_lr_b2.json -- $X seed=42 distill=none bits=2
    fi
    best2 | while read -r scheme distill; do
      $S scheme=$scheme distill=$distill bits=2 $(qlr $scheme $SWEEP/quantizer_lr_b2.json)
    done
  fi
else
  echo "usage: paper_b_study.sh glue|smollm2 [STEP]" >&2
  exit 2
fi
