#!/usr/bin/env bash
# Copy a study's records (record.json, predictions.jsonl) from a sweep folder into a committed results folder,
# keeping the cell folders: scripts/copy_records.sh results/sweeps/STUDY results/STUDY
# Split a quantizer-rate search from the grid it chose (scripts/quantizer_lr_search.py's --out JSON):
#   scripts/copy_records.sh SRC DST --search JSON search   the search's candidate cells
#   scripts/copy_records.sh SRC DST --search JSON grid     the other cells of the search's task, and its picks
set -euo pipefail
src=$1 dst=$2
if [[ ${3:-} == --search ]]; then
  list=$("${PYTHON:-python3}" - "$4" "${5:?--search JSON search|grid}" "$src" <<'PY'
import json, sys
from pathlib import Path
s, part, src = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2], Path(sys.argv[3])
task = next(o.split("=", 1)[1] for o in s["overrides"] if o.startswith("task="))
searched = {c["cell_id"] for c in s["candidates"]}
picked = {c["cell_id"] for c in s["candidates"] if s["picks"].get(c["scheme"]) == c["quantizer_lr"]}
if part not in ("search", "grid"):
    sys.exit(f"--search JSON {part}: valid: search, grid")
names = sorted(p.parent.name for p in src.glob("*/record.json"))
for n in names:
    if (n in searched) if part == "search" else (f"-{task}-" in n and (n not in searched or n in picked)):
        print(n)
PY
  )
  cells=()
  [[ -z $list ]] || mapfile -t cells <<< "$list"
else
  cells=()
  for f in "$src"/*/record.json; do cells+=("$(basename "$(dirname "$f")")"); done
fi
for cell in "${cells[@]}"; do
  mkdir -p "$dst/$cell"
  cp "$src/$cell/record.json" "$dst/$cell/"
  [ -f "$src/$cell/predictions.jsonl" ] && cp "$src/$cell/predictions.jsonl" "$dst/$cell/"
done
echo "${#cells[@]} cells copied; $(ls "$dst"/*/record.json | wc -l) cells in $dst"
