"""End-to-end: the real CLI on tiny models and slices of the real GLUE data; assertions on the records."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.conftest import qbench, read_record

DEBUG = ["train=debug", "train.max_eval_examples=48"]


def run_ok(tmp_path, *args):
    p = qbench("run", *DEBUG, *args, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    return read_record(tmp_path)


def test_kmeans_qat_record_and_predictions(tmp_path, data_dir):
    r = run_ok(tmp_path, "model=tiny_bert", "task=rte", "scheme=kmeans", "bits=2")
    assert r["status"] == "completed"
    assert (r["model"], r["task"], r["order"], r["seed"]) == ("tiny_bert", "rte", "qat", 42)
    s = r["scheme"]
    assert (s["name"], s["bits"], s["init"]) == ("kmeans", 2, "linear")
    assert s["quantized_tensors"] == 3 + 2 * 6 and 0.99 < s["quantized_share"] < 1  # embeddings dominate
    assert 2.0 < s["effective_bits"] < 2.01  # codes + one 4-entry fp32 codebook per tensor
    assert all(np.isfinite(layer["sqnr_db"]) and layer["sqnr_db"] > 0 for layer in s["layers"])
    assert r["training"]["qat"]["steps"] == 4 and math.isfinite(r["training"]["qat"]["loss"])
    assert set(r["timings"]) >= {"load", "quantize", "train_qat", "eval", "total"}
    assert r["config"]["bits"] == 2 and r["config"]["scheme"]["bits"] == 2  # resolved config
    assert r["versions"]["torch"] and r["versions"]["transformers"] and r["versions"]["python"]
    assert "git_sha" in r and r["device"] == "cpu"
    # predictions: one row per validation example, real ids and labels; the metric recomputes from them
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    truth = pd.read_parquet(data_dir / "glue" / "rte" / "validation.parquet").head(48)
    assert [x["idx"] for x in rows] == truth["idx"].tolist() and [x["label"] for x in rows] == truth["label"].tolist()
    acc = np.mean([x["label"] == x["prediction"] for x in rows])
    assert r["metrics"]["validation"]["accuracy"] == pytest.approx(acc)
    assert r["main_metric"] == {"name": "accuracy", "split": "validation", "value": pytest.approx(acc)}


def test_albert_linear_ptq_regression(tmp_path):
    r = run_ok(tmp_path, "model=tiny_albert", "task=stsb", "scheme=linear", "bits=4", "train.order=ptq",
               "scheme.granularity=group", "scheme.group_size=16")  # fmt: skip
    assert set(r["metrics"]["validation"]) == {"pearson", "spearman"}
    assert r["main_metric"]["name"] == "spearman"
    assert list(r["training"]) == ["full_precision"] and "train_fp" in r["timings"]
    assert r["scheme"]["granularity"] == "group" and r["scheme"]["weight_sharing"]["uses_per_group"] == 4
    layer_names = [x["name"] for x in r["scheme"]["layers"]]
    assert sum("albert_layer_groups" in n for n in layer_names) == 6  # shared tensors quantized once
    preds = [json.loads(line)["prediction"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(p, float) for p in preds)


def test_full_precision_baseline_and_zeroshot(tmp_path):
    r = run_ok(tmp_path / "fp", "model=tiny_bert", "task=cola", "scheme=none")
    assert r["scheme"] == {"name": "none", "bits": None} and list(r["training"]) == ["full_precision"]
    assert "matthews" in r["metrics"]["validation"]
    z = run_ok(tmp_path / "zs", "model=tiny_bert", "task=sst2", "scheme=linear", "bits=8", "train.order=zeroshot")
    assert z["training"] == {} and "train_qat" not in z["timings"]


def test_multirun_sweep_one_record_per_cell_and_failures_recorded(tmp_path):
    p = qbench("run", "-m", *DEBUG, "model=tiny_bert", "task=wnli", "scheme=linear,kmeans", "bits=1,3",
               f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("*/record.json"))]
    assert sorted((r["scheme"]["name"], r["scheme"]["bits"]) for r in records) == [
        ("kmeans", 1), ("kmeans", 3), ("linear", 1), ("linear", 3)]  # fmt: skip
    # a cell with a user error (batch size 0) is recorded as failed and the sweep goes on; the first cell is valid
    # (a sweep whose first cell is invalid is refused up front)
    p = qbench("run", "-m", *DEBUG, "model=tiny_bert", "task=wnli", "train.batch_size=8,0",
               f"hydra.sweep.dir={tmp_path / 'mixed'}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    status = {r["config"]["train"]["batch_size"]: r for r in
              (json.loads(f.read_text()) for f in (tmp_path / "mixed").glob("*/record.json"))}  # fmt: skip
    assert status[0]["status"] == "failed" and "batch_size" in status[0]["error"]
    assert status[8]["status"] == "completed"


def test_real_minilm_on_real_mrpc(tmp_path):
    r = run_ok(tmp_path, "model=minilm", "task=mrpc", "scheme=kmeans", "bits=3", "train.max_steps=2")
    s = r["scheme"]
    # MiniLM-L6: 22.7M parameters, all but the pooler/classifier/LayerNorm/biases quantized
    assert 22_500_000 < s["total_params"] < 22_800_000 and s["quantized_tensors"] == 3 + 6 * 6
    assert s["quantized_share"] > 0.98 and set(r["metrics"]["validation"]) == {"accuracy", "f1"}
