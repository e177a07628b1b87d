"""scripts/copy_records.sh: every cell, or a quantizer-rate search split from the grid it chose."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "copy_records.sh"


def copy(src: Path, dst: Path, *args: str) -> list[str]:
    subprocess.run(["bash", str(SCRIPT), str(src), str(dst), *args], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})  # fmt: skip
    return sorted(p.name for p in dst.iterdir())


def test_search_and_grid_split(tmp_path):
    src = tmp_path / "sweep"
    cells = ["m-stsb-none-s42-a", "m-stsb-pact-b2-s42-lo", "m-stsb-pact-b2-s42-hi", "m-stsb-pact-b2-s1-hi",
             "m-stsb-laq-b2-s42-x", "m-sst2-pact-b2-s42-y"]  # fmt: skip
    for c in cells:
        (src / c).mkdir(parents=True)
        (src / c / "record.json").write_text("{}")
    (src / "m-stsb-none-s42-a" / "predictions.jsonl").write_text("{}\n")
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"picks": {"pact": 0.01}, "overrides": ["study=s", "task=stsb"], "candidates": [
        {"scheme": "pact", "quantizer_lr": 0.001, "cell_id": "m-stsb-pact-b2-s42-lo"},
        {"scheme": "pact", "quantizer_lr": 0.01, "cell_id": "m-stsb-pact-b2-s42-hi"}]}))  # fmt: skip
    assert copy(src, tmp_path / "all") == sorted(cells)
    assert copy(src, tmp_path / "s", "--search", str(search), "search") == ["m-stsb-pact-b2-s42-hi",
                                                                             "m-stsb-pact-b2-s42-lo"]  # fmt: skip
    # the grid: the search's task, without the rates it did not pick; the FP cell keeps its predictions
    assert copy(src, tmp_path / "g", "--search", str(search), "grid") == [
        "m-stsb-laq-b2-s42-x", "m-stsb-none-s42-a", "m-stsb-pact-b2-s1-hi", "m-stsb-pact-b2-s42-hi"]  # fmt: skip
    assert (tmp_path / "g" / "m-stsb-none-s42-a" / "predictions.jsonl").is_file()
    bad = subprocess.run(
        ["bash", str(SCRIPT), str(src), str(tmp_path / "b"), "--search", str(search), "picks"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert bad.returncode != 0 and "valid: search, grid" in bad.stderr and not (tmp_path / "b").exists()


def test_two_searches_without_a_task_split_together(tmp_path):
    """A language-model sweep (no task= override) with a search at 4 bits and one at 2 bits: the grid keeps every
    cell neither search tried, and each search's pick; cells of the other search are not grid cells."""
    src = tmp_path / "sweep"
    cells = ["s-ptb-none-s42-a", "s-ptb-mds-b4-s42-lo", "s-ptb-mds-b4-s42-hi", "s-ptb-mds-b2-s42-lo",
             "s-ptb-mds-b2-s42-hi", "s-ptb-laq-b4-s42-x", "s-ptb-mds-b4-s1-hi"]  # fmt: skip
    for c in cells:
        (src / c).mkdir(parents=True)
        (src / c / "record.json").write_text("{}")
    searches = []
    for bits, pick in ((4, 0.03), (2, 0.001)):
        searches.append(tmp_path / f"b{bits}.json")
        searches[-1].write_text(json.dumps({"picks": {"mds": pick}, "overrides": ["study=s", f"bits={bits}"],
                                            "candidates": [
            {"scheme": "mds", "quantizer_lr": 0.001, "cell_id": f"s-ptb-mds-b{bits}-s42-lo"},
            {"scheme": "mds", "quantizer_lr": 0.03, "cell_id": f"s-ptb-mds-b{bits}-s42-hi"}]}))  # fmt: skip
    both = ",".join(map(str, searches))
    assert copy(src, tmp_path / "s", "--search", both, "search") == sorted(
        c for c in cells if "-s42-lo" in c or "-s42-hi" in c)  # fmt: skip
    assert copy(src, tmp_path / "g", "--search", both, "grid") == [
        "s-ptb-laq-b4-s42-x", "s-ptb-mds-b2-s42-lo", "s-ptb-mds-b4-s1-hi", "s-ptb-mds-b4-s42-hi",
        "s-ptb-none-s42-a"]  # fmt: skip
