"""The causal_lm kind (qbench.kinds.causal_lm) end to end: PTB QAT and WikiText-2 sliding-window perplexity."""

from __future__ import annotations

import json

from qbench.kinds.generative import lm_windows
from tests.kinds.generative_cli import (
    DATA,
    DEBUG,
    pytestmark,  # noqa: F401  (skipped without the local data mirror)
    qbench,
    record,
)


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


def test_also_eval_scores_another_corpus_with_the_same_model(tmp_path):
    """also_eval: WikiText-2's test split scored by the PTB cell's final model, under 'wikitext2:test', exactly as a
    WikiText-2 cell scores it; the cell id does not change; a task of another kind fails in one line."""
    lm = ["task.lm.max_eval_tokens=200", "task.lm.context_length=64", "train.max_eval_examples=100"]
    other = ["+task@also_eval.wikitext2=wikitext2", "also_eval.wikitext2.eval_splits=[test]",
             "also_eval.wikitext2.lm.max_eval_tokens=150", "also_eval.wikitext2.lm.context_length=32"]  # fmt: skip
    base = ["model=tiny_gpt2", "scheme=linear", "bits=4", "train.order=zeroshot", *DEBUG, *lm]
    qbench(tmp_path / "ptb", "task=ptb", "task.eval_splits=[test]", *base, *other)
    r = record(tmp_path / "ptb")
    m = r["metrics"]["wikitext2:test"]
    assert set(r["metrics"]) == {"test", "wikitext2:test"} and r["main_metric"]["split"] == "test"
    assert m["tokens"] == 150 and m["context_length"] == 32
    assert m["source"] == str(DATA / "lm" / "wikitext-2-v1" / "test.txt")
    qbench(tmp_path / "wt2", "task=wikitext2", "task.eval_splits=[test]", *base[:4], *DEBUG,
           "task.lm.max_eval_tokens=150", "task.lm.context_length=32", "train.max_eval_examples=100")  # fmt: skip
    alone = record(tmp_path / "wt2")["metrics"]["test"]
    assert {k: v for k, v in m.items() if k != "source"} == alone  # same model (seeded init), same tokens, same numbers
    rows = [json.loads(x) for x in (tmp_path / "ptb" / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sum(x["scored"] for x in rows if x["split"] == "wikitext2:test") == 150
    qbench(tmp_path / "plain", "task=ptb", "task.eval_splits=[test]", *base)
    assert record(tmp_path / "plain")["cell_id"] == r["cell_id"]
    p = qbench(tmp_path / "bad", "task=ptb", *base, "+task@also_eval.sst2=sst2", ok=False)
    assert p.returncode == 2 and "also_eval.sst2: task sst2 is classification" in p.stderr
