"""scripts/paper_b_select.py --pick best2q: the two seed-42 configurations with the lowest final task loss, each
learned scheme only at its searched rate."""

import importlib.util
import json

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "paper_b_select.py"
spec = importlib.util.spec_from_file_location("paper_b_select", SCRIPT)
select = importlib.util.module_from_spec(spec)
spec.loader.exec_module(select)


def cell(folder, name, scheme, distill, qlr, losses, seed=42, bits=4, status="completed"):
    curve = [[i + 1, x] for i, x in enumerate(losses)]
    r = {"status": status, "seed": seed, "scheme": {"name": scheme, "bits": bits},
         "distill": {"name": distill} if distill != "none" else None,
         "config": {"train": {"qat": {"quantizer_lr": qlr}}},
         "training": {"qat": {"loss_curve": [[s, x + 5] for s, x in curve], "task_loss_curve": curve}}}  # fmt: skip
    (folder / name).mkdir()
    (folder / name / "record.json").write_text(json.dumps(r))


def test_best_two_on_the_last_steps_task_loss_at_the_picks_only(tmp_path):
    picks = {"lsq": 0.003, "mds": 0.1}
    cell(tmp_path, "a", "lsq", "kd_tcd", 0.003, [9.0] * 5 + [3.0] * 10)
    cell(tmp_path, "b", "laq", "none", None, [1.0] * 5 + [3.2] * 10)  # best over the last 5, not the last 10
    cell(tmp_path, "c", "mds", "none", 0.1, [3.1] * 15)
    cell(tmp_path, "d", "mds", "none", 0.03, [1.0] * 15)  # not at MDS's pick
    cell(tmp_path, "e", "lsq", "none", 0.003, [1.0] * 15, seed=1)  # not seed 42
    cell(tmp_path, "f", "lsq", "none", 0.003, [1.0] * 15, bits=2)  # other bits
    cell(tmp_path, "g", "laq", "kd_tcd", None, [1.0] * 15, status="failed")
    assert select.best_two(tmp_path, picks, 4, 10) == [("lsq", "kd_tcd"), ("mds", "none")]
    assert select.best_two(tmp_path, picks, 4, 15) == [("laq", "none"), ("mds", "none")]
