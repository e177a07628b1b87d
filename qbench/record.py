"""The run record: one JSON file per run, written atomically, plus the evaluation predictions."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from qbench.errors import QbenchError
from qbench.integrity import write_atomic

SCHEMA_VERSION = 1
PACKAGES = ("torch", "transformers", "datasets", "hydra-core", "scikit-learn", "qbench")


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_sha() -> str | None:
    """HEAD of the qbench checkout (with '-dirty' if it has uncommitted changes); None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _clean(x):
    """JSON-safe: non-finite floats become strings ('inf', 'nan')."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def write_json_atomic(path: Path, obj) -> None:
    """Write obj as JSON to path so that readers see the old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(_clean(obj), indent=2, allow_nan=False))


class DamagedRecord(QbenchError):
    """A record.json that cannot be what a run wrote: not JSON, or not a record's shape."""


# what every record has (failed ones included), and what a completed one adds: the fields sweeps and tables read
FIELDS = {"status": str}
COMPLETED = {"model": str, "task": str, "scheme": dict, "main_metric": dict}
MAIN_METRIC = ("name", "split", "value")


def read_record(path: Path) -> dict:
    """The record at path; DamagedRecord (naming the path and what is wrong) when it is cut short, empty, not JSON,
    or JSON of another shape. Older records without a newer field still load: only FIELDS (and COMPLETED, for a
    completed record) are required."""
    try:
        r = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedRecord(f"{path}: damaged record (not JSON: {str(e).splitlines()[0]})") from None
    wanted = {**FIELDS, **(COMPLETED if isinstance(r, dict) and r.get("status") == "completed" else {})}
    if not isinstance(r, dict):
        problem = f"a JSON {type(r).__name__}, not an object"
    elif missing := [k for k, t in wanted.items() if not isinstance(r.get(k), t)]:
        problem = f"no {', '.join(missing)}" if all(k not in r for k in missing) else f"bad {', '.join(missing)}"
    elif "scheme" in wanted and "name" not in r["scheme"]:
        problem = "scheme without a name"
    elif "main_metric" in wanted and not all(k in r["main_metric"] for k in MAIN_METRIC):
        problem = "main_metric without name, split and value"
    else:
        return r
    raise DamagedRecord(f"{path}: damaged record ({problem})")


def final_task_loss(record: dict | None, last: int) -> float:
    """Mean task loss of a QAT record's last `last` logged steps (with distillation its task part, task_loss_curve):
    the score the studies pick quantizer rates and configurations on. inf for a missing or failed cell."""
    if not record or record.get("status") != "completed":
        return math.inf
    qat = record["training"]["qat"]
    losses = [loss for _, loss in qat.get("task_loss_curve") or qat["loss_curve"]][-last:]
    return sum(losses) / len(losses) if losses else math.inf


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(_clean(r)) + "\n")
    os.replace(tmp, path)


class Timer:
    """Named wall-clock sections: `with timer('train'): ...`; `timer.seconds` maps names to seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
