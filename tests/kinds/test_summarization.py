"""The summarization kind (qbench.kinds.summarization) end to end: BART on the Lee news summaries."""

from __future__ import annotations

import pandas as pd

from tests.kinds.generative_cli import (
    DATA,
    DEBUG,
    pytestmark,  # noqa: F401  (skipped without the local data mirror)
    qbench,
    record,
)


def test_bart_xsum_zeroshot_on_lee_news(tmp_path):
    lee = DATA / "summarization" / "lee_news"
    qbench(tmp_path, "model=tiny_bart", "task=xsum", f"task.data_dir={lee}", "train.order=zeroshot", "scheme=linear",
           "bits=4", *DEBUG, "train.max_eval_examples=6", "task.generation.num_beams=2",
           "task.generation.max_target_length=12", "task.generation.min_target_length=2")  # fmt: skip
    r = record(tmp_path)
    m = r["metrics"]["test"]
    assert m["examples"] == 6 and set(m) >= {"rouge1", "rouge2", "rougeL"}
    assert all(0 <= m[k] <= 100 for k in ("rouge1", "rouge2", "rougeL"))
    assert r["main_metric"]["name"] == "rouge2" and r["scheme"]["bits"] == 4
    ev = r["evaluation"]
    assert ev["generation"]["num_beams"] == 2 and ev["generation"]["max_source_length"] == 128
    assert "use_stemmer=True" in ev["metric"] and len(ev["samples"]) == 5
    refs = pd.read_parquet(lee / "test.parquet")["summary"][:5].tolist()
    assert [s["reference"] for s in ev["samples"]] == refs and all(
        isinstance(s["prediction"], str) for s in ev["samples"]
    )
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 6


def test_bart_finetune_then_quantize(tmp_path):
    df = pd.read_parquet(DATA / "summarization" / "lee_news" / "test.parquet")
    folder = tmp_path / "summ"
    folder.mkdir()
    df.iloc[10:42].to_parquet(folder / "train.parquet")
    df.iloc[:3].to_parquet(folder / "test.parquet")
    qbench(tmp_path, "model=tiny_bart", "task=xsum", f"task.data_dir={folder}", "train.order=ptq", "scheme=kmeans",
           "bits=3", *DEBUG, "task.generation.num_beams=1", "task.generation.max_target_length=8",
           "task.generation.max_source_length=96")  # fmt: skip
    r = record(tmp_path)
    assert r["order"] == "ptq" and r["training"]["full_precision"]["steps"] == 2  # 32 examples, batch 16
    assert r["metrics"]["test"]["examples"] == 3 and r["evaluation"]["generation"]["max_source_length"] == 96
    assert "lm_head.weight" in next(iter(r["scheme"]["shared_tensors"].values()))
