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
