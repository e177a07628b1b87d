"""End to end: the real `qbench run` CLI (in this process) on tiny random GPT-2 / BART with small slices of the real
local corpora (PTB, WikiText-2, Persona-Chat, the Lee news summaries) and GPT-2's real tokenizer; asserts the
records."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from qbench.kinds.generative import lm_windows
from tests.conftest import in_process

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA, TOKENIZER = SHARED / "data", SHARED / "models" / "gpt2-tokenizer"
pytestmark = pytest.mark.skipif(
    not (DATA / "lm" / "ptb" / "test.txt").is_file() or not TOKENIZER.is_dir(), reason="local data mirror not found"
)
DEBUG = ["train=debug", "train.progress_bar=false"]


def qbench(tmp_path: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """`qbench run ARGS` in this process (tests.conftest.in_process), on the local mirror and GPT-2 tokenizer."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QBENCH_DATA_DIR": str(DATA), "QBENCH_GPT2_TOKENIZER": str(TOKENIZER),
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    p = in_process(["run", *args, f"hydra.run.dir={tmp_path / 'run'}"], env)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def record(tmp_path: Path) -> dict:
    r = json.loads((tmp_path / "run" / "record.json").read_text())
    assert r["status"] == "completed"
    return r


def test_ptb_qat_kmeans_on_corpus_slices(tmp_path):
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    for name, n in [("train.txt", 400), ("valid.txt", 40), ("test.txt", 40)]:
        lines = (DATA / "lm" / "ptb" / name).read_text().splitlines()[:n]
        (ptb / name).write_text("\n".join(lines) + "\n")
    qbench(tmp_path, "model=tiny_gpt2", "task=ptb", f"task.data_dir={ptb}", "scheme=kmeans", "bits=2", *DEBUG,
           "train.max_length=64", "train.max_train_examples=32")  # fmt: skip
    r = record(tmp_path)
    assert r["model"] == "tiny_gpt2" and r["task"] == "ptb" and r["order"] == "qat"
    assert r["training"]["qat"]["steps"] == 2  # 32 blocks of 64 tokens, batch 16
    assert r["scheme"]["name"] == "kmeans" and r["scheme"]["bits"] == 2
    assert r["scheme"]["shared_tensors"] == {"transformer.wte.weight": ["lm_head.weight"]}  # tied head: once
    for split in ("test", "validation"):
        m = r["metrics"][split]
        assert m["context_length"] == 128 and m["stride"] == 128  # the model's maximum, disjoint windows
        assert m["windows"] == len(lm_windows(m["tokens"] + 1, 128, 128)) and m["tokens"] > 500
        assert 1 < m["perplexity"] < 2 * 50257 and 0 <= m["token_accuracy"] <= 1
    assert r["main_metric"] == {"name": "perplexity", "split": "test", "value": r["metrics"]["test"]["perplexity"]}
    ev = r["evaluation"]
    assert ev["document_start_token"] == "<|endoftext|>" and ev["windows"] == "disjoint"
    assert ev["sources"]["test"] == str(ptb / "test.txt") and ev["train_block_tokens"] == 64
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sum(x["scored"] for x in rows if x["split"] == "test") == r["metrics"]["test"]["tokens"]


def test_wikitext2_zeroshot_sliding_window_without_train_split(tmp_path):
    """The mirror has no WikiText-2 train: zeroshot runs; a fine-tuning order fails in one line, naming it."""
    p = qbench(tmp_path, "model=tiny_gpt2", "task=wikitext2", "scheme=linear", "bits=4", "train.order=qat", ok=False)
    assert p.returncode == 2 and "lm/wikitext-2-v1/train.txt" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    qbench(tmp_path, "model=tiny_gpt2", "task=wikitext2", "scheme=linear", "bits=4", "train.order=zeroshot", *DEBUG,
           "task.lm.stride=32", "task.lm.max_eval_tokens=300", "train.max_eval_examples=200")  # fmt: skip
    r = record(tmp_path)
    assert r["order"] == "zeroshot" and r["training"] == {}
    for split in ("test", "validation"):
        m = r["metrics"][split]
        assert m["tokens"] == 300 and m["stride"] == 32 and m["windows"] == len(lm_windows(301, 128, 32))
    assert r["evaluation"]["windows"].startswith("sliding") and r["evaluation"]["max_eval_tokens"] == 300
    assert r["evaluation"]["sources"]["test"] == str(DATA / "lm" / "wikitext-2-v1" / "test.txt")


def test_personachat_response_perplexity(tmp_path):
    qbench(tmp_path, "model=tiny_gpt2", "task=personachat", "train.order=zeroshot", "scheme=linear", "bits=4",
           *DEBUG, "train.max_eval_examples=12")  # fmt: skip
    r = record(tmp_path)
    m = r["metrics"]["validation"]
    assert m["examples"] == 12 and m["tokens"] > 12 and m["perplexity"] > 1
    assert r["evaluation"]["context_length"] == 128 and "response" in r["evaluation"]["metric"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and sum(x["tokens"] for x in rows) == m["tokens"] and rows[0]["dialog"] == 0


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
