"""Helpers of the generative kinds' end-to-end tests: the real `qbench run` CLI (in this process) on tiny random
GPT-2 / BART with small slices of the real local corpora (PTB, WikiText-2, Persona-Chat, the Lee news summaries)
and GPT-2's real tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import in_process

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
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
