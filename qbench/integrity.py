"""Files qbench reads back later (FP cache entries, teacher-cache entries, packed checkpoints), verified on read.

A writer finishes a file or a folder, then writes its manifest last ({relative path: {bytes, sha256}}), atomically
(a temporary file renamed into place): a manifest that is there describes a whole entry. A reader checks the
sizes and checksums against it (`problem`), so a file cut short by a full disk, emptied or overwritten since is
found before anything reads it. A folder's manifest is `MANIFEST` inside it; a single file's is `<file>.sha256`.
Records are JSON checked by their shape instead (qbench.record.read_record): older ones have no manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
SIDECAR = ".sha256"  # suffix of a single file's manifest


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (remembered per path, size and mtime: a file read twice is hashed once)."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def describe(files: dict[str, Path]) -> dict[str, dict]:
    return {name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for name, p in sorted(files.items())}


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that readers see no file or the whole file (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def folder_files(folder: Path) -> dict[str, Path]:
    """Every file under folder by its relative path, the manifest and temporary files aside."""
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")}  # fmt: skip


def seal_folder(folder: Path) -> None:
    """Write folder's manifest: call it when every other file of the folder is written."""
    write_atomic(folder / MANIFEST, json.dumps({"files": describe(folder_files(folder))}, indent=1))


def seal_file(path: Path) -> None:
    """Write `<path>.sha256`: call it once path is written."""
    write_atomic(sidecar(path), json.dumps({"files": describe({path.name: path})}))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def _check(manifest: Path, base: Path) -> str | None:
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {str(k): (int(v["bytes"]), str(v["sha256"])) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"unreadable manifest {manifest.name} ({type(e).__name__})"
    try:
        for name, (size, digest) in expected.items():
            p = base / name
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != size:
                return f"{name} has {p.stat().st_size} bytes, its manifest says {size}"
            if sha256(p) != digest:
                return f"{name}'s checksum differs from its manifest"
    except OSError as e:  # removed or unreadable meanwhile
        return f"unreadable ({type(e).__name__})"
    return None


def folder_problem(folder: Path) -> str | None:
    """What is wrong with a sealed folder (None: every file as its manifest says); 'no manifest' if unsealed."""
    manifest = folder / MANIFEST
    return _check(manifest, folder) if manifest.is_file() else "no manifest"


def file_problem(path: Path) -> str | None:
    """What is wrong with a sealed file (None: as its `.sha256` says); 'no manifest' if unsealed."""
    manifest = sidecar(path)
    if not manifest.is_file():
        return "no manifest"
    problem = _check(manifest, path.parent)
    if problem is None and path.name not in json.loads(manifest.read_text())["files"]:
        return f"{manifest.name} does not describe {path.name}"
    return problem


def discard(folder: Path) -> None:
    """Remove a damaged folder: renamed aside first (atomic; another job discarding it too finds it gone), then
    deleted."""
    aside = folder.with_name(f".{folder.name}.{os.getpid()}.damaged")
    try:
        os.replace(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)
