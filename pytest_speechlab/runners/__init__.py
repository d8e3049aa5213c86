"""Case runners: one module per task, each with a ``run(ctx: CaseContext)`` that satisfies
:class:`~pytest_speechlab.runners.base.CaseRunner`.  Adding a task = one module + one line in :data:`RUNNERS`
(like backends: the module is imported only when a case of its task runs)."""

from __future__ import annotations

import importlib

from .base import CaseRunner

# task -> module whose ``run`` runs one matrix case of that task
RUNNERS: dict[str, str] = {
    "asr": "pytest_speechlab.runners.asr",
    "tts": "pytest_speechlab.runners.tts",
    "chat": "pytest_speechlab.runners.chat",
}


def get_runner(task: str) -> CaseRunner | None:
    """The runner of ``task``, or None when no module runs that task."""
    name = RUNNERS.get(task)
    if name is None:
        return None
    run: CaseRunner = importlib.import_module(name).run
    return run
