"""Shared test setup: offline hub, the real local data mirror, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from absl import logging as absl_logging

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["QBENCH_CACHE"] = tempfile.mkdtemp(prefix="qbench-test-cache-")  # never the user's cache

# rouge-score imports absl, whose log handler keeps the sys.stderr of that moment (pytest's capture file while a test
# runs) and closes it when a Hydra job run in-process reconfigures logging: every later test then fails with "I/O
# operation on closed file". Imported here and pointed at the process's own stderr, which absl never closes.
absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__

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


def qbench(*args: str, data_dir: Path | None = None, timeout: int = 300, fresh: bool = False):
    """Run the `qbench` CLI offline and return (returncode, stdout, stderr) as a CompletedProcess. In this process
    by default (the ~6 s import of torch, transformers and Hydra is paid once per suite); `fresh=True` runs the
    real binary in a subprocess, for what needs a new process (start-up time, kill, launchers)."""
    if fresh:
        return subprocess.run(qbench_cmd(*args), capture_output=True, text=True, env=qbench_env(data_dir),
                              timeout=timeout, cwd=REPO)  # fmt: skip
    return in_process(list(args), qbench_env(data_dir))


def in_process(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """qbench.cli.main(argv) here, with env, cwd and sys.argv restored after; SystemExit gives the return code."""
    import contextlib
    import io
    import logging

    from hydra.core.global_hydra import GlobalHydra

    from qbench.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_env, saved_argv, cwd = dict(os.environ), sys.argv[:], os.getcwd()
    os.environ.update(env)
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            GlobalHydra.instance().clear()
            try:
                main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception as e:  # what the real binary would print before exiting 1
                print(f"{type(e).__name__}: {e}", file=sys.stderr)
                code = 1
    finally:
        GlobalHydra.instance().clear()
        for name in [None, *logging.Logger.manager.loggerDict]:  # Hydra's logging config points handlers at the
            logger = logging.getLogger(name)  # streams of this call (and the job's folder): drop them
            if isinstance(logger, logging.Logger):
                logger.handlers.clear()
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.chdir(cwd)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())
