"""Records are the only source: rebuild every committed study table from its records and fail on any difference.

    python scripts/check_results.py [--root REPO] [STUDY ...]

For every study folder `results/<study>/` (a folder with a README.md or a record.json):

- its README.md has a `## Rebuild` section holding one fenced block whose info string is `sh rebuild`: one command a
  line, run from the repository root. Each command runs in a scratch copy of `results/` (the rest of the
  repository linked beside it), so relative paths resolve there and the committed files are never touched;
- a committed file of the folder that a command names as an argument is an input (a claims spec, a reference);
- every text file a command writes (.md .csv .tex .yaml .yml .json .txt) must equal the committed file byte for byte
  (a unified diff is printed otherwise); every plot (.png .svg) must be written, non-empty and committed; a command
  that fails, or writes outside its study folder, fails the check; a committed file of the folder that no command
  rebuilds or names (outside the cell folders, which hold the records) fails it too;
- the folder holds at least one record.json, and its README carries the code-version line generated from the
  records' `git_sha` (`code_version_line`);
- a Markdown table under a `<!-- table: PATH -->` comment (PATH relative to the README) must be a copy of rows of
  that table: its header names columns of the source, and each row equals a source row on those columns.

A study whose README starts with `> Superseded` is skipped (its numbers came from code that no longer runs that
way); README.md and docs/*.md may not cite it. README.md, docs/*.md and the study READMEs may cite `results/<name>`
only where `<name>` is a study with records, a folder without a README (data such as results/references), or one
of the folders qbench writes at run time (GENERATED).

`qbench ...` lines and `python SCRIPT ... [> FILE]` lines run in this process (one import of qbench for all);
other lines run in bash. Exit status 1 on any failure, with every failure listed.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

SUPERSEDED = "> Superseded"
TEXT = {".md", ".csv", ".tex", ".yaml", ".yml", ".json", ".txt"}
PLOTS = {".png", ".svg"}
GENERATED = {"sweeps", "runs", "plots", "alloc"}  # written by qbench at run time, ignored by git
CITE = re.compile(r"results/([A-Za-z0-9_.-]+)")
TABLE_MARK = re.compile(r"<!--\s*table:\s*(\S+)\s*-->")


def studies(results: Path) -> list[Path]:
    """Folders of results/ with a Markdown file (a README, a table) or a record.json somewhere below."""
    return sorted(d for d in results.iterdir() if d.is_dir() and (any(d.rglob("*.md")) or records(d)))


def records(study: Path) -> list[Path]:
    return sorted(study.rglob("record.json"))


def superseded(study: Path) -> bool:
    readme = study / "README.md"
    return readme.is_file() and readme.read_text().lstrip().startswith(SUPERSEDED)


def rebuild_commands(readme: Path) -> list[str]:
    """The lines of the `sh rebuild` block of the README's `## Rebuild` section (comments, blank lines dropped,
    backslash continuations joined)."""
    text = readme.read_text()
    section = re.search(r"^## Rebuild\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not section:
        raise ValueError(f"{readme}: no '## Rebuild' section")
    block = re.search(r"^```sh rebuild\s*$(.*?)^```\s*$", section.group(1), re.M | re.S)
    if not block:
        raise ValueError(f"{readme}: its '## Rebuild' section has no ```sh rebuild block")
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not commands:
        raise ValueError(f"{readme}: the rebuild block is empty")
    return commands


def code_version_line(paths: list[Path]) -> str:
    """'Code version (the records' `git_sha`): `cb76ef9` (198 records), `18574d4` (29 records).'; most records
    first. A record without a git_sha counts as `unknown`."""
    shas = Counter((json.loads(p.read_text()).get("git_sha") or "unknown")[:7] for p in paths)
    ranked = sorted(shas.items(), key=lambda s: (-s[1], s[0]))
    parts = [f"`{sha}` ({n} record{'s' if n > 1 else ''})" for sha, n in ranked]
    return "Code version (the records' `git_sha`): " + ", ".join(parts) + "."


# ---------------------------------------------------------------------------------------------------------------
def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
    """(succeeded, output) of one rebuild line, run with `cwd` as the repository root."""
    argv = shlex.split(command)
    plain = not any(c in command for c in "|;&<`$(")
    out_file = None
    if plain and len(argv) > 2 and argv[-2] == ">" and ">" not in argv[:-2]:
        argv, out_file = argv[:-2], argv[-1]
    if plain and ">" not in argv and argv[0] == "qbench":
        return in_process(lambda: qbench_main(argv[1:]), cwd, out_file)
    if plain and ">" not in argv and argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return in_process(lambda: run_script(argv[1:]), cwd, out_file)
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr


def qbench_main(args: list[str]) -> None:
    from qbench.cli import main

    main(args)


def run_script(argv: list[str]) -> None:
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = old


def in_process(call, cwd: Path, out_file: str | None) -> tuple[bool, str]:
    """Run call() with cwd as the working directory, stdout to out_file (or captured) and stderr captured."""
    here, out, err = Path.cwd(), io.StringIO(), io.StringIO()
    ok = True
    os.chdir(cwd)
    try:
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(open(out_file, "w")) if out_file else out  # noqa: SIM115
            stack.enter_context(contextlib.redirect_stdout(sink))
            stack.enter_context(contextlib.redirect_stderr(err))
            try:
                call()
            except SystemExit as e:
                ok = e.code in (None, 0)
            except Exception:  # a crash is a failed command, reported with its traceback
                ok = False
                err.write(traceback.format_exc())
    finally:
        os.chdir(here)
    return ok, out.getvalue() + err.getvalue()


def snapshot(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def scratch_copy(root: Path, scratch: Path) -> None:
    """scratch/results: a copy of root/results (mtimes kept); every other top-level entry of root linked."""
    shutil.copytree(root / "results", scratch / "results", symlinks=True)
    for entry in root.iterdir():
        if entry.name not in ("results", ".git"):
            (scratch / entry.name).symlink_to(entry)


def cell_folders(study: Path) -> set[Path]:
    return {p.parent for p in records(study)}


def outputs(study: Path) -> list[Path]:
    """The committed files of a study that its commands must rebuild: all but README.md and what lies in a cell
    folder (a folder holding a record.json: the records and what came with them)."""
    cells = cell_folders(study)
    return sorted(p for p in study.rglob("*") if p.is_file() and p.name != "README.md"
                  and not any(c == p.parent or c in p.parents for c in cells))  # fmt: skip


def inputs(root: Path, commands: list[str]) -> set[Path]:
    """Committed files a command names as an argument (`--reference X.yaml`, `--spec=claims.yaml`): its inputs."""
    args = [a.split("=", 1)[-1] for c in commands for a in shlex.split(c)]
    return {root / a for a in args if a and (root / a).is_file()}


def check_study(root: Path, study: Path, env: dict[str, str], update: bool = False) -> list[str]:
    """Failures of one study folder (empty: it rebuilds exactly). update: copy what the commands wrote inside the
    study folder over the committed files instead of comparing (after a deliberate change; review the git diff)."""
    name, readme = study.name, study / "README.md"
    if not readme.is_file():
        return [f"{name}: records but no README.md"]
    recs = records(study)
    if not recs:
        return [f"{name}: README.md but no record.json (a table or number without records)"]
    errors = []
    line = code_version_line(recs)
    if line not in readme.read_text():
        errors.append(f"{name}: README.md lacks the code-version line generated from its records:\n    {line}")
    try:
        commands = rebuild_commands(readme)
    except ValueError as e:
        return [*errors, str(e)]
    written: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix=f"check-{name}-") as tmp:
        scratch = Path(tmp)
        scratch_copy(root, scratch)
        for command in commands:
            before = snapshot(scratch / "results")
            ok, output = run(command, scratch, env)
            if not ok:
                errors.append(f"{name}: command failed: {command}\n" + indent(output.strip()[-3000:]))
                continue
            after = snapshot(scratch / "results")
            for p, t in after.items():
                if before.get(p) != t:
                    written[p.relative_to(scratch)] = command
        for rel, command in sorted(written.items()):
            if update and study.relative_to(root) in rel.parents:
                shutil.copy2(scratch / rel, root / rel)
            else:
                errors += compare(root, scratch, rel, study, command)
    rebuilt = {root / rel for rel in written} | inputs(root, commands)
    errors += [f"{name}: {p.relative_to(root)} is committed but no rebuild command writes it (or names it)"
               for p in outputs(study) if p not in rebuilt]  # fmt: skip
    return errors


def compare(root: Path, scratch: Path, rel: Path, study: Path, command: str) -> list[str]:
    """A written file against the committed one."""
    new, old = scratch / rel, root / rel
    if study.relative_to(root) not in rel.parents:
        return [f"{study.name}: `{command}` writes {rel}, outside its study folder"]
    if rel.suffix not in TEXT | PLOTS:
        return []
    if not old.is_file():
        return [f"{study.name}: `{command}` writes {rel}, which is not committed"]
    if rel.suffix in PLOTS:
        return [] if new.stat().st_size > 0 else [f"{study.name}: `{command}` writes an empty {rel}"]
    if new.read_bytes() == old.read_bytes():
        return []
    diff = difflib.unified_diff(old.read_text().splitlines(), new.read_text().splitlines(),
                                f"committed/{rel}", f"rebuilt/{rel}", lineterm="")  # fmt: skip
    return [f"{study.name}: {rel} differs from what `{command}` rebuilds from the records:\n" + "\n".join(diff)]


def indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())


# ---------------------------------------------------------------------------------------------------------------
def check_citations(root: Path, all_studies: list[Path]) -> list[str]:
    """README.md, docs/*.md and the study READMEs cite only studies with records; README.md and docs never cite a
    superseded one."""
    results = root / "results"
    known = {s.name: s for s in all_studies}
    errors = []
    tops = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for doc in [*tops, *[s / "README.md" for s in all_studies if (s / "README.md").is_file()]]:
        if not doc.is_file():
            continue
        for name in sorted(set(CITE.findall(doc.read_text()))):
            name = name.rstrip(".")
            where = f"{doc.relative_to(root)} cites results/{name}/"
            if name in GENERATED or name == "README.md" or (results / name).is_file():
                continue
            if name not in known:
                if not (results / name).is_dir():
                    errors.append(f"{where}, which does not exist")
                continue  # a folder without README or records (data, e.g. results/references)
            if superseded(known[name]):
                if doc in tops:
                    errors.append(f"{where}, which is superseded (its first line says so)")
            elif not records(known[name]):
                errors.append(f"{where}, which has no records")
    return errors


def markdown_table(lines: list[str], start: int) -> list[list[str]]:
    """The rows (header first, the separator dropped) of the Markdown table at lines[start] (after blank lines)."""
    i = start
    while i < len(lines) and not lines[i].strip():  # blank lines between a marker and its table
        i += 1
    rows = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if not all(re.fullmatch(r":?-+:?", c) for c in cells):
            rows.append(cells)
        i += 1
    return rows


def check_table_copies(root: Path, docs: list[Path]) -> list[str]:
    """Each table under a `<!-- table: PATH -->` comment is a copy of rows of PATH's table (a subset of its
    columns, matched by header)."""
    errors = []
    for doc in docs:
        if not doc.is_file():
            continue
        lines = doc.read_text().splitlines()
        for i, ln in enumerate(lines):
            if not (m := TABLE_MARK.search(ln)):
                continue
            src = (doc.parent / m.group(1)).resolve()
            where = f"{doc.relative_to(root)}:{i + 1}"
            if not src.is_file():
                errors.append(f"{where}: the table's source {m.group(1)} does not exist")
                continue
            copy = markdown_table(lines, i + 1)
            text = src.read_text().splitlines()
            source = markdown_table(text, next((k for k, t in enumerate(text) if t.startswith("|")), len(text)))
            if not copy or not source:
                errors.append(f"{where}: no Markdown table here or in {m.group(1)}")
                continue
            missing = [h for h in copy[0] if h not in source[0]]
            if missing:
                errors.append(f"{where}: columns {missing} are not in {m.group(1)}")
                continue
            cols = [source[0].index(h) for h in copy[0]]
            have = {tuple(r[c] if c < len(r) else "" for c in cols) for r in source[1:]}
            errors += [f"{where}: row {' | '.join(r)} is not a row of {m.group(1)}" for r in copy[1:]
                       if tuple(r) not in have]  # fmt: skip
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="only these studies (default: all)")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="repository root")
    p.add_argument("--versions", action="store_true", help="print each study's code-version line and stop")
    p.add_argument("--update", action="store_true", help="write the rebuilt files into the study folders instead of "
                   "comparing them (after a deliberate change to tables or plots; review the git diff)")  # fmt: skip
    a = p.parse_args(argv)
    root = Path(a.root).resolve()
    all_studies = studies(root / "results")
    if a.versions:
        for s in all_studies:
            print(f"{s.name}: {code_version_line(records(s)) if records(s) else 'no records'}")
        return 0
    chosen = [s for s in all_studies if not a.names or s.name in a.names]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    errors = check_citations(root, all_studies)
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "results" / "README.md"]
    errors += check_table_copies(root, docs + [s / "README.md" for s in all_studies])
    for study in chosen:
        if superseded(study):
            print(f"{study.name}: superseded, skipped")
            continue
        start, cpu = time.perf_counter(), time.process_time()
        found = check_study(root, study, env, a.update)
        took, cpu = time.perf_counter() - start, time.process_time() - cpu
        state = "FAILED" if found else "ok"
        print(f"{study.name}: {state} ({len(records(study))} records, {took:.1f} s, cpu {cpu:.1f} s)", flush=True)
        errors += found
    for e in errors:
        print(f"\nFAIL {e}", file=sys.stderr)
    print(f"\n{len(errors)} failure(s)" if errors else "\nevery study rebuilds from its records", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
