"""The multirun callback prints the study folder's table when a sweep ends."""

from omegaconf import OmegaConf

from qbench.callbacks import PrintTable
from tests.test_report import write_records


def test_multirun_end_prints_the_sweep_table(tmp_path, capsys):
    write_records(tmp_path)
    PrintTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out = capsys.readouterr().out
    assert "| task   | metric   |" in out and "| rte    | accuracy | 71.0 ± 1.4 |" in out
    assert out.rstrip().endswith(f"(rebuild: qbench table {tmp_path})")


def test_multirun_end_without_records_says_so(tmp_path, capsys):
    PrintTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "no table for" in capsys.readouterr().out
