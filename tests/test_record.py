"""Records read back (qbench.record.read_record): a damaged one is named and refused, every committed one loads;
sweeps run a cell with a damaged record again, tables skip it with one warning line."""

import json
import logging
import math

import pytest

from qbench.cli import main
from qbench.record import DamagedRecord, final_task_loss, read_record, write_json_atomic
from qbench.sweep import completed
from tests.conftest import REPO
from tests.damage import DAMAGES

RECORD = {"status": "completed", "model": "minilm", "task": "rte", "order": "qat", "seed": 1,
          "scheme": {"name": "kmeans", "bits": 2, "effective_bits": 2.3},
          "main_metric": {"name": "accuracy", "split": "validation", "value": 0.6}}  # fmt: skip
WRONG_SHAPES = {  # parseable JSON that no run writes
    "list": [RECORD],
    "no status": {k: v for k, v in RECORD.items() if k != "status"},
    "no main metric": {k: v for k, v in RECORD.items() if k != "main_metric"},
    "main metric without value": {**RECORD, "main_metric": {"name": "accuracy", "split": "validation"}},
    "scheme a string": {**RECORD, "scheme": "kmeans"},
}


def written(tmp_path, record=RECORD, name="cell"):
    path = tmp_path / name / "record.json"
    write_json_atomic(path, record)
    return path


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_record_is_refused_naming_it(tmp_path, damage):
    path = written(tmp_path)
    assert read_record(path) == RECORD
    DAMAGES[damage](path)
    with pytest.raises(DamagedRecord, match=f"{path}: damaged record"):
        read_record(path)


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_json_of_another_shape_is_damaged(tmp_path, shape):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(WRONG_SHAPES[shape]))
    with pytest.raises(DamagedRecord, match="damaged record"):
        read_record(path)


def test_failed_records_and_committed_records_load():
    """Older records have no checksum and fewer fields: every record under results/ still loads."""
    paths = sorted((REPO / "results").rglob("record.json"))
    assert paths and all(read_record(p)["status"] in ("completed", "failed") for p in paths)


@pytest.mark.parametrize("damage", [*DAMAGES, "list"])
def test_sweep_reruns_a_cell_whose_record_is_damaged(tmp_path, caplog, damage):
    path = written(tmp_path)
    assert completed(path.parent) == RECORD  # a whole completed record: skipped
    DAMAGES[damage](path) if damage in DAMAGES else path.write_text("[]")
    with caplog.at_level(logging.WARNING, logger="qbench.sweep"):
        assert completed(path.parent) is None  # as if missing: the cell runs again
    assert str(path) in caplog.text


@pytest.mark.parametrize("command", ["table", "plot"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_table_and_plot_skip_a_damaged_record_with_one_warning(tmp_path, capsys, command, damage):
    good = written(tmp_path, name="good")
    written(tmp_path, {**RECORD, "scheme": {"name": "linear", "bits": 2, "effective_bits": 2.5}}, name="bad")
    DAMAGES[damage](tmp_path / "bad" / "record.json")
    out = ["--out", str(tmp_path / "plots" / "p")] if command == "plot" else []
    main([command, str(tmp_path), *out])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(tmp_path / "bad" / "record.json") in warnings[0], captured.err
    if command == "table":
        assert "kmeans" in captured.out and "linear" not in captured.out and good.is_file()


def test_final_task_loss_is_the_mean_of_the_last_steps_task_loss_inf_when_missing():
    qat = {"loss_curve": [[1, 9.0], [2, 4.0], [3, 2.0]], "task_loss_curve": [[1, 5.0], [2, 3.0], [3, 1.0]]}
    done = {"status": "completed", "training": {"qat": qat}}
    assert final_task_loss(done, 2) == 2.0  # the task part, not the distillation objective
    assert final_task_loss({**done, "training": {"qat": {"loss_curve": qat["loss_curve"]}}}, 2) == 3.0
    assert final_task_loss(done, 10) == 3.0  # fewer steps than asked: all of them
    assert final_task_loss({**done, "status": "failed"}, 2) == math.inf
    assert final_task_loss(None, 2) == math.inf
