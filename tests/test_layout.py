"""The package's layout: old import paths of moved modules still work (loudly), and the import graph has no
circle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_speechlab import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_moved_module_keeps_its_old_path(old: str, new: str) -> None:
    """``import <old path>`` gives the module at its new path (the same object) and warns, naming the new path."""
    code = (
        "import importlib, json, sys, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "print(json.dumps([old is new, old.__spec__.name, "
        "[str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    same, spec_name, warned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert same is True
    assert spec_name == new
    assert any(f"{old} moved to {new}" in w for w in warned), warned


def test_old_cli_entry_point_still_runs() -> None:
    """A console script installed before the move (``pytest_speechlab.cli:main``) still runs."""
    code = "import sys; from pytest_speechlab.cli import main; sys.exit(main(['--help']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "speechlab" in proc.stdout


def _import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (top-level and inside functions alike), from the source."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "pytest_speechlab"

    def name(path: Path) -> str:
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps.update(n for n in names if n in files and n != mod)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a two-module circle and a three-module one are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_the_package() -> None:
    """No module imports, even lazily inside a function, a module that imports it back (directly or not)."""
    assert _cycles(_import_graph()) == []


def test_layers_import_downwards_only() -> None:
    """The library never imports the commands (``speechlab ...``), the case runners or the pytest glue
    (running.py, plugin.py); the runners never import the pytest glue or the commands."""
    graph = _import_graph()
    offenders = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            into_commands = dep.startswith("pytest_speechlab.commands") and not mod.startswith(
                "pytest_speechlab.commands"
            )
            into_runners = dep.startswith("pytest_speechlab.runners") and not mod.startswith(
                ("pytest_speechlab.runners", "pytest_speechlab.running", "pytest_speechlab.plugin")
            )
            into_glue = dep in ("pytest_speechlab.plugin", "pytest_speechlab.running") and mod not in (
                "pytest_speechlab.plugin",
                "pytest_speechlab._matrix",
            )
            if into_commands or into_runners or into_glue:
                offenders.append(f"{mod} -> {dep}")
    assert offenders == []


def test_old_cli_module_still_runs_with_dash_m() -> None:
    """``python -m pytest_speechlab.cli`` (the old module path) still runs the command."""
    cmd = [sys.executable, "-m", "pytest_speechlab.cli", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "speechlab" in proc.stdout


def test_nothing_under_gate_imports_pytest() -> None:
    """gate/ holds the decisions that pytest, speechlab check and merge --gate share (issue 24): it must not
    depend on pytest, or the commands that judge saved records would judge differently."""
    import ast
    from pathlib import Path

    gate = Path(__file__).resolve().parent.parent / "pytest_speechlab" / "gate"
    files = sorted(gate.rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n == "pytest" or n.startswith(("pytest.", "_pytest")) for n in names), (path, names)
