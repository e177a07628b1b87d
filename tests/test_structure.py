"""The package's shape: no first-party import cycle, counting function-local imports."""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "qbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """First-party modules that the file imports anywhere (module level, functions, TYPE_CHECKING blocks alike):
    `import a.b` and `from a import b` name a.b when it is a module, else a; relative imports are resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import qbench.quant.wiring.x` -> the longest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(path, name, set(mods)) for name, path in mods.items()}


def test_the_walk_sees_function_local_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from ..errors import QbenchError\nfrom . import wiring\n\ndef g():\n    import qbench.size\n")
    known = {"qbench.errors", "qbench.quant.wiring", "qbench.size", "qbench.quant.m"}
    assert imported(f, "qbench.quant.m", known) == {"qbench.errors", "qbench.quant.wiring", "qbench.size"}
    graph = import_graph()
    assert "qbench.pipeline" in graph["qbench.cli"]  # imported inside job()
    assert "qbench.errors" in graph["qbench.cell"]  # module level
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_first_party_import_cycle():
    assert cycles(import_graph()) == []
