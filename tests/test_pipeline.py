"""The pipeline in-process on a tiny model and real data: QAT-stage overrides (train.qat.*)."""

import pytest
from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.errors import QbenchError
from qbench.pipeline import run, validate


def cell(tmp_path, *overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", "scheme=kmeans",
                                             f"cache_dir={tmp_path / 'cache'}", *overrides])  # fmt: skip


def test_qat_stage_trains_on_its_own_settings(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    cfg = cell(tmp_path, "train.order=ft_then_qat", "train.qat.max_train_examples=16", "train.qat.epochs=2")
    r = run(cfg, tmp_path / "run")
    assert r["training"]["full_precision"]["steps"] == 4  # 64 examples / batch 16, 1 epoch
    assert r["training"]["qat"]["steps"] == 2  # the first 16 of them, 2 epochs
    assert r["data"]["train"]["file"] == "train.parquet" and len(r["data"]["train"]["sha256"]) == 16
    again = run(cell(tmp_path, "train.order=ft_then_qat", "train.qat.epochs=1"), tmp_path / "run2")
    assert again["training"]["full_precision"]["cached"]  # train.qat does not change the FP fine-tune
    assert again["training"]["qat"]["steps"] == 4


def test_qat_cap_above_the_fp_cap_is_refused(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    with pytest.raises(QbenchError, match="train.qat.max_train_examples=100: at most train.max_train_examples=64"):
        validate(cell(tmp_path, "train.order=ft_then_qat", "train.qat.max_train_examples=100"))
