"""scripts/check_results.py on a tiny synthetic repository: a study rebuilds, a hand-edited cell or a failing command
fails it, a superseded study is skipped but may not be cited, a README without records fails."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_results.py"
spec = importlib.util.spec_from_file_location("check_results", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

TABLE = """\
| task   | metric   | FP   | kmeans 2b   |
|:-------|:---------|:-----|:------------|
| sst2   | accuracy | 88.0 | 83.0        |
"""


def record(scheme: str, value: float) -> dict:
    cfg = {"model": {"name": "minilm"}, "task": {"name": "sst2", "mirror": "glue/sst2", "data_dir": None},
           "scheme": {"_target_": f"qbench.quant.{scheme}", **({"bits": 2} if scheme != "none" else {})},
           "train": {"order": "ptq", "lr": 1e-4}, "bits": 2, "seed": 42, "study": "toy"}  # fmt: skip
    return {"status": "completed", "model": "minilm", "task": "sst2", "order": "ptq", "seed": 42,
            "scheme": {"name": scheme, "bits": None if scheme == "none" else 2}, "git_sha": "abcdef0123",
            "main_metric": {"name": "accuracy", "split": "validation", "value": value}, "config": cfg}  # fmt: skip


def readme(command: str) -> str:
    return f"""# Toy study

<!-- table: table.md -->
{TABLE}
## Rebuild

```sh rebuild
{command}
```

Code version (the records' `git_sha`): `abcdef0` (2 records).
"""


@pytest.fixture
def repo(tmp_path) -> Path:
    study = tmp_path / "results" / "toy"
    for scheme, value in (("none", 0.88), ("kmeans", 0.83)):
        (study / f"minilm-sst2-{scheme}").mkdir(parents=True)
        (study / f"minilm-sst2-{scheme}" / "record.json").write_text(json.dumps(record(scheme, value)))
    (study / "README.md").write_text(readme("qbench table results/toy --out results/toy/table.md"))
    (study / "table.md").write_text(TABLE)
    (tmp_path / "README.md").write_text("Results: `results/toy/`.\n")
    return tmp_path


def run(repo: Path, capsys) -> tuple[int, str]:
    code = check.main(["--root", str(repo)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_study_that_rebuilds_passes(repo, capsys):
    code, out = run(repo, capsys)
    assert code == 0, out
    assert "toy: ok (2 records, " in out
    assert (repo / "results" / "toy" / "table.md").read_text() == TABLE  # the committed file is never touched


def test_a_hand_edited_cell_fails_with_its_diff(repo, capsys):
    table = repo / "results" / "toy" / "table.md"
    table.write_text(TABLE.replace("83.0 ", "84.0 "))
    code, out = run(repo, capsys)
    assert code == 1
    assert "table.md differs" in out
    assert "-| sst2   | accuracy | 88.0 | 84.0" in out and "+| sst2   | accuracy | 88.0 | 83.0" in out  # the diff


def test_a_failing_command_fails(repo, capsys):
    (repo / "results" / "toy" / "README.md").write_text(
        readme("qbench table results/toy --where scheme=nf4 --out results/toy/table.md")
    )
    code, out = run(repo, capsys)
    assert code == 1 and "command failed" in out and "no record matches --where scheme=nf4" in out


def test_a_committed_file_no_command_writes_fails(repo, capsys):
    (repo / "results" / "toy" / "old_table.md").write_text(TABLE)
    code, out = run(repo, capsys)
    assert code == 1 and "old_table.md is committed but no rebuild command writes it" in out


def test_a_named_input_file_is_not_an_output_and_scripts_may_write_stdout(repo, capsys):
    (repo / "scripts").mkdir()
    (repo / "scripts" / "show.py").write_text("import sys\nprint(open(sys.argv[1]).read().upper(), end='')\n")
    (repo / "results" / "toy" / "spec.yaml").write_text("claim: k-means wins\n")
    (repo / "results" / "toy" / "claims.md").write_text("CLAIM: K-MEANS WINS\n")
    commands = ("qbench table results/toy --out results/toy/table.md\n"
                "python scripts/show.py results/toy/spec.yaml > results/toy/claims.md")  # fmt: skip
    (repo / "results" / "toy" / "README.md").write_text(readme(commands))
    code, out = run(repo, capsys)
    assert code == 0, out
    (repo / "results" / "toy" / "claims.md").write_text("CLAIM: LINEAR WINS\n")
    code, out = run(repo, capsys)
    assert code == 1 and "claims.md differs" in out


def test_a_readme_table_must_be_a_copy_of_its_source(repo, capsys):
    text = (repo / "results" / "toy" / "README.md").read_text()
    (repo / "results" / "toy" / "README.md").write_text(text.replace("| 83.0        |", "| 82.0        |", 1))
    code, out = run(repo, capsys)
    assert code == 1 and "is not a row of table.md" in out


def test_the_code_version_line_must_match_the_records(repo, capsys):
    text = (repo / "results" / "toy" / "README.md").read_text()
    (repo / "results" / "toy" / "README.md").write_text(text.replace("(2 records)", "(3 records)"))
    code, out = run(repo, capsys)
    assert code == 1 and "lacks the code-version line" in out


def test_superseded_is_skipped_but_not_citable_and_a_study_needs_records(repo, capsys):
    old = repo / "results" / "old"
    old.mkdir()
    (old / "README.md").write_text("> Superseded: old code.\n\n# Old\n\n| a |\n|---|\n| 1 |\n")
    (repo / "results" / "empty").mkdir()
    (repo / "results" / "empty" / "README.md").write_text("# A table without records\n")
    code, out = run(repo, capsys)
    assert code == 1 and "old: superseded, skipped" in out
    assert "empty: README.md but no record.json" in out and "README.md cites" not in out
    (repo / "README.md").write_text("See `results/old/` and `results/empty/`.\n")
    code, out = run(repo, capsys)
    assert "README.md cites results/old/, which is superseded" in out
    assert "README.md cites results/empty/, which has no records" in out


def test_a_study_readme_without_a_rebuild_block_fails(repo, capsys):
    text = (repo / "results" / "toy" / "README.md").read_text()
    (repo / "results" / "toy" / "README.md").write_text(text.replace("```sh rebuild", "```sh"))
    code, out = run(repo, capsys)
    assert code == 1 and "has no ```sh rebuild block" in out
