"""Shared test setup: offline hub, the real local data mirror, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["QBENCH_CACHE"] = tempfile.mkdtemp(prefix="qbench-test-cache-")  # never the user's cache

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QBENCH_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "glue").is_dir():
        pytest.fail(f"the local data mirror is missing: {DATA} (set QBENCH_DATA_DIR)")
    return DATA


def qbench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "qbench.cli", *args]


def qbench_env(data_dir: Path | None = None) -> dict:
    return {**os.environ, "QBENCH_DATA_DIR": str(data_dir or DATA), "PYTHONUNBUFFERED": "1"}


def qbench(*args: str, data_dir: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `qbench` CLI in a subprocess (fresh Hydra state), offline."""
    return subprocess.run(qbench_cmd(*args), capture_output=True, text=True, env=qbench_env(data_dir),
                          timeout=timeout, cwd=REPO)  # fmt: skip


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())
