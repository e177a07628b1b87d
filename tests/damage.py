"""Ways a file read back later gets damaged: a full disk or a killed job cuts it short or leaves it empty, another
program overwrites it (garbage, or valid JSON of another shape). Each takes the file's path."""

from pathlib import Path


def truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def garbage(p: Path) -> None:
    n = max(1, p.stat().st_size)
    p.write_bytes((bytes(range(256)) * (n // 256 + 1))[:n])  # the same size, other bytes


def wrong_json(p: Path) -> None:
    p.write_text('{"hello": [1, 2, 3]}')


DAMAGES = {"truncated": truncated, "zero_bytes": zero_bytes, "garbage": garbage, "wrong_json": wrong_json}
