#!/usr/bin/env bash
# Copy a study's records (record.json, predictions.jsonl) from a sweep folder into a committed results folder,
# keeping the cell folders: scripts/copy_records.sh results/sweeps/STUDY results/STUDY
set -euo pipefail
src=$1 dst=$2
for f in "$src"/*/record.json; do
  cell=$(basename "$(dirname "$f")")
  mkdir -p "$dst/$cell"
  cp "$f" "$dst/$cell/"
  [ -f "$src/$cell/predictions.jsonl" ] && cp "$src/$cell/predictions.jsonl" "$dst/$cell/"
done
echo "$(ls "$dst"/*/record.json | wc -l) cells in $dst"
