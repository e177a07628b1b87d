"""The dialog kind (qbench.kinds.dialog) end to end: response perplexity on Persona-Chat."""

from __future__ import annotations

import json

from tests.kinds.generative_cli import (
    DEBUG,
    pytestmark,  # noqa: F401  (skipped without the local data mirror)
    qbench,
    record,
)


def test_personachat_response_perplexity(tmp_path):
    qbench(tmp_path, "model=tiny_gpt2", "task=personachat", "train.order=zeroshot", "scheme=linear", "bits=4",
           *DEBUG, "train.max_eval_examples=12")  # fmt: skip
    r = record(tmp_path)
    m = r["metrics"]["validation"]
    assert m["examples"] == 12 and m["tokens"] > 12 and m["perplexity"] > 1
    assert r["evaluation"]["context_length"] == 128 and "response" in r["evaluation"]["metric"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and sum(x["tokens"] for x in rows) == m["tokens"] and rows[0]["dialog"] == 0
