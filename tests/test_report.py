"""`qbench table` / `qbench plot` on hand-made records; the table is compared with a golden file."""

import json
from pathlib import Path

import pytest

from qbench.cli import main
from qbench.report import load_records

GOLDEN = Path(__file__).parent / "golden"
CELLS = [  # (task, metric, scheme, bits, seed, value, effective bits)
    ("rte", "accuracy", "none", None, 1, 0.70, None),
    ("rte", "accuracy", "none", None, 2, 0.72, None),
    ("rte", "accuracy", "linear", 2, 1, 0.55, 2.5),
    ("rte", "accuracy", "linear", 2, 2, 0.57, 2.5),
    ("rte", "accuracy", "kmeans", 2, 1, 0.66, 2.0),
    ("rte", "accuracy", "kmeans", 8, 1, 0.71, 8.0),
    ("xsum", "rougeL", "mds", 2, 1, 0.30, 2.0),
    ("stsb", "spearman", "kmeans", 2, 1, 0.801, 2.0),
]


def write_records(root: Path) -> None:
    for i, (task, metric, scheme, bits, seed, value, eff) in enumerate(CELLS):
        d = root / f"cell{i}"
        d.mkdir(parents=True)
        rec = {"status": "completed", "model": "minilm", "task": task, "order": "qat", "seed": seed,
               "scheme": {"name": scheme, "bits": bits, "effective_bits": eff},
               "main_metric": {"name": metric, "split": "validation", "value": value}}  # fmt: skip
        (d / "record.json").write_text(json.dumps(rec))
    (root / "failed").mkdir()
    (root / "failed" / "record.json").write_text(json.dumps({"status": "failed", "error": "x"}))


@pytest.mark.parametrize("fmt, ext", [("markdown", "md"), ("csv", "csv"), ("latex", "tex")])
def test_table_matches_golden(tmp_path, capsys, fmt, ext):
    write_records(tmp_path)
    ref = GOLDEN / "reference.yaml"
    main(["table", str(tmp_path), "--format", fmt, "--reference", str(ref), "--digits", "1"])
    out = capsys.readouterr().out
    golden = GOLDEN / f"table.{ext}"
    assert out == golden.read_text(), out


def test_records_skip_failures_and_average_seeds(tmp_path):
    write_records(tmp_path)
    df = load_records([tmp_path])
    assert len(df) == len(CELLS)
    fp = df[(df.task == "rte") & (df.scheme == "none")]["value"]
    assert fp.mean() == pytest.approx(0.71)


def test_table_of_nothing_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["table", str(tmp_path)])
    assert e.value.code == 2 and "no completed record.json" in capsys.readouterr().err


def test_plot_writes_png_and_svg(tmp_path):
    write_records(tmp_path / "records")
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "plots" / "study")])
    for name in ("bits", "pareto"):
        for ext in ("png", "svg"):
            f = tmp_path / "plots" / f"study_{name}.{ext}"
            assert f.stat().st_size > 1000
