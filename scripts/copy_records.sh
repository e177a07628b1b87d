#!/usr/bin/env bash
# Copy a study's records (record.json, predictions.jsonl) from a sweep folder into a committed results folder,
# keeping the cell folders: scripts/copy_records.sh results/sweeps/STUDY results/STUDY
# Split quantizer-rate searches from the grid they chose (scripts/quantizer_lr_search.py's --out JSON; several
# searches of one sweep, e.g. at 4 and 2 bits, as JSON1,JSON2):
#   scripts/copy_records.sh SRC DST --search JSON[,JSON...] search   the searches' candidate cells
#   scripts/copy_records.sh SRC DST --search JSON[,JSON...] grid     every other cell (of the searches' task when
#                                                                    they name one), and the picks
set -euo pipefail
src=$1 dst=$2
if [[ ${3:-} == --search ]]; then
  list=$("${PYTHON:-python3}" - "$4" "${5:?--search JSON search|grid}" "$src" <<'PY'
import json, sys
from pathlib import Path
files, part, src = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3])
if part not in ("search", "grid"):
    sys.exit(f"--search JSON {part}: valid: search, grid")
searched, picked, tasks = set(), set(), set()
for f in files:
    s = json.loads(Path(f).read_text())
    tasks |= {o.split("=", 1)[1] for o in s["overrides"] if o.startswith("task=")}
    searched |= {c["cell_id"] for c in s["candidates"]}
    picked |= {c["cell_id"] for c in s["candidates"] if s["picks"].get(c["scheme"]) == c["quantizer_lr"]}
in_task = lambda n: not tasks or any(f"-{t}-" in n for t in tasks)
for n in sorted(p.parent.name for p in src.glob("*/record.json")):
    if (n in searched) if part == "search" else (in_task(n) and (n not in searched or n in picked)):
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
