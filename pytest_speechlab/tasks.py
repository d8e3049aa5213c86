"""Matrix cases of tasks other than ASR: dispatch to the module that runs them."""

from __future__ import annotations

from typing import Any


def run_task_case(sess: Any, case: Any, request: Any) -> None:
    """Run a non-ASR matrix case (``task: tts`` today); other tasks skip with the reason."""
    __tracebackhide__ = True
    task = sess.cfg.models[case.model].task
    if task == "tts":
        from .tts import run_tts_case

        run_tts_case(sess, case, request)
        return
    import pytest

    reason = f"{case.model}: task {task!r} has no matrix runner yet"
    sess.results.append({**sess.base_record(case), "status": "skipped", "reason": reason})
    pytest.skip(reason)
