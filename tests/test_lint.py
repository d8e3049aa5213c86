"""Static checks: the GitHub workflow is valid, and importing the plugin imports no heavy library."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ctranslate2", "faster_whisper", "whisper", "liquid_audio", "onnxruntime", "piper", "speechmos",
         "librosa")


def test_github_workflows_valid() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "no workflow under .github/workflows"
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(exe).exists():
        pytest.skip("check-jsonschema is not installed (it is in the dev dependency group: uv sync)")
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *map(str, workflows)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_runs_the_readme_gate() -> None:
    """The project's CI calls the reusable gate (the one users call) with the same marker as .ci/run: the README's
    `pytest -m "not real_e2e"`, on Python 3.11 and 3.12."""
    import yaml

    wf = yaml.safe_load((REPO / ".github" / "workflows" / "speechlab.yml").read_text(encoding="utf-8"))
    job = wf["jobs"]["regression"]
    assert job["uses"] == "./.github/workflows/speechlab-gate.yml"
    assert job["with"]["marker"] == "not real_e2e"
    assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    gate = yaml.safe_load((REPO / ".github" / "workflows" / "speechlab-gate.yml").read_text(encoding="utf-8"))
    assert "workflow_call" in gate[True]  # YAML 1.1 reads the key `on` as True
    steps = "\n".join(str(s.get("run", "")) for s in gate["jobs"]["gate"]["steps"])
    assert 'uv run pytest -m "${{ inputs.marker }}"' in steps
    assert 'pytest -m "not real_e2e"' in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'uv run pytest -m "not real_e2e"' in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", ["pytest_speechlab.plugin", "pytest_speechlab.commands.cli"])
def test_import_pulls_in_no_heavy_library(module: str) -> None:
    code = (f"import sys, json, {module}\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_collecting_the_matrix_pulls_in_no_heavy_library() -> None:
    """Collecting the project's speechlab.yaml (config with every backend, datasets, matrix) imports no
    heavy library: only running a case does.  (--noconftest: the root conftest pre-imports native
    extensions on purpose, for in-process pytester sessions.)"""
    code = ("import sys, json, pytest\n"
            "rc = pytest.main(['speechlab.yaml', '--collect-only', '-q', '-p', 'no:cacheprovider', '--noconftest'])\n"
            f"print(json.dumps([int(rc), sorted(m for m in {HEAVY!r} if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    rc, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0, proc.stdout
    assert "test_speech[fw-tiny-en-cpu-smoke]" in proc.stdout
    assert heavy == [], proc.stdout


@pytest.mark.slow
def test_mypy_clean() -> None:
    """The package type-checks (config in pyproject.toml [tool.mypy])."""
    pytest.importorskip("mypy", reason="mypy is in the dev dependency group: uv sync")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def test_ruff_clean() -> None:
    """ruff finds nothing in the package, tests and benchmarks."""
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(exe).exists():
        pytest.skip("ruff is not installed (it is in the dev dependency group: uv sync)")
    proc = subprocess.run([exe, "check", "pytest_speechlab", "tests", "benchmarks", "conftest.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nothing_below_the_plugin_imports_it() -> None:
    """plugin.py registers hooks and fixtures on top of the package; no module imports it back (no circle
    through the plugin: the case runners use pytest_speechlab.running)."""
    import ast

    offenders = []
    for path in sorted((REPO / "pytest_speechlab").rglob("*.py")):
        if path.name == "plugin.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "plugin":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
