"""scripts/quantizer_lr_search.py: the pick on training losses, and the rates it runs past an edge pick."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, qbench_env

SCRIPT = REPO / "scripts" / "quantizer_lr_search.py"
spec = importlib.util.spec_from_file_location("quantizer_lr_search", SCRIPT)
search = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search)
OVERRIDES = ["+experiment=paper_b_smollm2_qlr", "study=s", "seed=42", "distill=none"]


def test_step_past_continues_the_grid_at_either_edge():
    rates = [1e-3, 3e-3, 1e-2, 3e-2]  # a 1-3 grid: x3, x3.33, x3
    assert search.step_past(rates, up=True) == 0.1 and search.step_past(rates, up=False) == 3e-4
    assert search.step_past([3e-4, *rates, 0.1], up=True) == 0.3
    assert search.step_past([1e-4, 1e-3, 1e-2, 1e-1], up=False) == 1e-5  # a decade grid stays one
    assert search.step_past([1e-3, 1e-2], up=True) == 0.1 and search.step_past([1e-2], up=True) is None


def test_pick_lowest_score_smaller_rate_on_ties_none_when_all_failed():
    assert search.pick([(3.7, 1e-2), (3.6, 3e-2), (3.6, 1e-3)]) == 1e-3
    assert search.pick([(math.inf, 1e-3), (math.inf, 1e-2)]) is None and search.pick([]) is None


def fake_records(folder: Path, losses: dict[float, float]) -> None:
    """One completed MDS cell per rate, named by its real cell id, whose QAT loss curve ends at `losses[rate]`."""
    from hydra import initialize_config_module

    with initialize_config_module("qbench.conf", version_base="1.3"):
        for lr, loss in losses.items():
            cell = search.cell_dir(OVERRIDES, "mds", lr, folder)
            cell.mkdir(parents=True)
            record = {"status": "completed", "training": {"qat": {"loss_curve": [[1, 9.0], [2, loss]]}},
                      "diagnosis": {"range_moves": {"gamma": {"median": lr, "max": 2 * lr}}}}  # fmt: skip
            (cell / "record.json").write_text(json.dumps(record))


def select(folder: Path, extend: int, out: Path) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--select-only", "--records", str(folder), "--grid", "1e-3,3e-3,1e-2",
           "--schemes", "mds", "--last", "1", "--extend", str(extend), "--out", str(out), "--", *OVERRIDES]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=qbench_env(), cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_an_edge_pick_is_extended_once_the_records_show_the_next_rate(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))  # the cell ids name the data: compose here as the script does
    # the loss falls up to the grid's top (1e-2); 3e-2, one step past it, is worse: the pick stays 1e-2, now inside
    fake_records(tmp_path / "r", {1e-3: 3.9, 3e-3: 3.8, 1e-2: 3.7, 3e-2: 3.75})
    plain = select(tmp_path / "r", 0, tmp_path / "plain.json")
    assert plain["picks"] == {"mds": 0.01} and [c["quantizer_lr"] for c in plain["candidates"]] == [1e-3, 3e-3, 1e-2]
    ext = select(tmp_path / "r", 2, tmp_path / "ext.json")
    assert ext["picks"] == {"mds": 0.01}
    assert [(c["quantizer_lr"], c["final_loss"]) for c in ext["candidates"]] == [
        (1e-3, 3.9), (3e-3, 3.8), (1e-2, 3.7), (3e-2, 3.75)]  # fmt: skip
    assert ext["candidates"][-1]["range_moves"] == {"gamma": {"median": 3e-2, "max": 6e-2}}
    # a better rate past the edge is picked, and the search goes one more step (0.1), whose record is missing
    (tmp_path / "r" / ext["candidates"][-1]["cell_id"] / "record.json").write_text(json.dumps(
        {"status": "completed", "training": {"qat": {"loss_curve": [[2, 3.6]]}}}))  # fmt: skip
    ext = select(tmp_path / "r", 2, tmp_path / "ext.json")
    assert ext["picks"] == {"mds": 0.03}
    assert [(c["quantizer_lr"], c["status"]) for c in ext["candidates"][-2:]] == [(0.03, "completed"),
                                                                                  (0.1, "missing")]  # fmt: skip
    assert ext["candidates"][-1]["final_loss"] == math.inf


def test_the_cells_run_are_the_cells_read(data_dir, monkeypatch):
    """The multirun's rate override composes the same cell ids that the scoring reads (1.0 stayed an int with '%g',
    and the search then read a missing cell for a rate it had run)."""
    from hydra import compose, initialize_config_module

    import qbench.cli  # noqa: F401  (the cell_id resolver)
    from qbench.sweep import cell_id

    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    rates = [1e-5, 3e-4, 0.1, 1.0]
    value = search.rate_override(rates).split("=", 1)[1]
    with initialize_config_module("qbench.conf", version_base="1.3"):
        for lr, text in zip(rates, value.split(","), strict=True):
            run = compose("config", overrides=[*OVERRIDES, "scheme=mds", f"train.qat.quantizer_lr={text}"])
            assert search.cell_dir(OVERRIDES, "mds", lr).name == cell_id(run)
