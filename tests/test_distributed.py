"""Several processes (torchrun, gloo on CPU): the same result as one process on the same global batch, and only
process 0 writes."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.pipeline import run

from .conftest import REPO, qbench_env

# dropout off: each process draws its own dropout masks, so only a deterministic forward pass can match exactly
COMMON = ["model=tiny_bert", "task=sst2", "train=debug", "scheme=kmeans", "train.order=ft_then_qat",
          "train.logging_steps=1", "+model.config.hidden_dropout_prob=0",
          "+model.config.attention_probs_dropout_prob=0"]  # fmt: skip


def cell(*overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=[*COMMON, *overrides])


def predictions(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_two_processes_match_one_on_the_same_global_batch(tmp_path, data_dir):
    # train=debug: batch 16 in one process = 2 processes x 8; 64 examples -> 4 steps in both
    two = [f"cache_dir={tmp_path / 'cache2'}", f"hydra.run.dir={tmp_path / 'two'}", "train.batch_size=8"]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "qbench", "run", *COMMON, *two], capture_output=True, text=True, cwd=REPO,
                       env={**qbench_env(data_dir), "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("validation accuracy=") == 2  # both processes ran the cell...
    r2 = json.loads((tmp_path / "two/record.json").read_text())
    assert r2["processes"] == 2 and len(list((tmp_path / "cache2/finetuned").iterdir())) == 1  # ...one wrote
    r1 = run(cell(f"cache_dir={tmp_path / 'cache1'}", f"data_dir={data_dir}"), tmp_path / "one")
    for stage in ("full_precision", "qat"):
        a, b = r1["training"][stage], r2["training"][stage]
        assert a["steps"] == b["steps"] == 4
        assert [v for _, v in a["loss_curve"]] == pytest.approx([v for _, v in b["loss_curve"]], abs=1e-5)
    assert r1["metrics"] == r2["metrics"]
    for x, y in zip(predictions(tmp_path / "one"), predictions(tmp_path / "two"), strict=True):
        assert x == y


def test_only_process_zero_writes(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    r = run(cell(f"cache_dir={tmp_path / 'cache'}", f"data_dir={data_dir}", "export=true"), tmp_path / "run")
    assert r["status"] == "completed" and r["training"]["full_precision"]["cached"] is None
    assert list((tmp_path / "run").iterdir()) == []  # no record, predictions or packed file
    assert not (tmp_path / "cache").exists()  # and no FP cache entry
