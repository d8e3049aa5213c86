"""Running one case inside pytest: the session lookup, the matrix test's body and the helpers that the ASR,
TTS and chat runners share (accept command, progress line, pytest-benchmark runner, JUnit properties).

It sits below :mod:`pytest_speechlab.plugin` (which registers hooks and fixtures and imports this module), so
the case runners (:mod:`pytest_speechlab.runners`) get a :class:`~.runners.base.CaseContext` built here and
never import pytest's request or the plugin.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from .runners.base import BenchmarkInfo, CaseContext, RoundRunner
from .session import CONFIG_ERROR_KEY, SESSION_KEY, Case, SpeechlabSession


def get_session(config: pytest.Config) -> SpeechlabSession:
    """The session object, or a usage error saying how to configure one."""
    sess = config.stash.get(SESSION_KEY, None)
    if sess is None:
        err = config.stash.get(CONFIG_ERROR_KEY, None)
        if err:
            raise pytest.UsageError(err)
        raise pytest.UsageError(
            "pytest-speechlab found no speechlab.yaml in the rootdir; create one or pass --speechlab-config PATH"
        )
    return sess


def _accept_command(item: pytest.Item) -> str:
    return f"pytest {shlex.quote(item.nodeid)} --speechlab-update-golden"


def _progress(request: pytest.FixtureRequest, case_id: str) -> Callable[[int, int], None] | None:
    config = request.config
    if config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return None
    tr = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if tr is None:
        return None
    start = time.monotonic()
    last = [start]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        # Only cases that run for more than a few seconds show progress, every 2 s at most.
        if now - start < 3 or (now - last[0] < 2 and done != total):
            return
        last[0] = now
        text = f" [{done}/{total} utterances]"
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write(text)
        else:
            tr.write(text)

    return progress


def _benchmark_runner(
    request: pytest.FixtureRequest, case: Case
) -> tuple[Any, Callable[[Callable[[], None], int], None]]:
    from .evaluation import loop_runner

    if not request.config.pluginmanager.hasplugin("pytest_benchmark") and not request.config.pluginmanager.hasplugin(
        "benchmark"
    ):
        return None, loop_runner
    bs = getattr(request.config, "_benchmarksession", None)
    if bs is not None and (getattr(bs, "skip", False) or getattr(bs, "disabled", False)):
        # --benchmark-skip / --benchmark-disable (also from PYTEST_ADDOPTS) switch pytest-benchmark off, never a
        # speech case: it is timed by the plain loop and still gated (issue 24).
        return None, loop_runner
    try:
        bench = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        return None, loop_runner
    bench.group = f"{case.dataset}-{case.device}"
    # pytest-benchmark matches saved runs by fullname, which is the node id ("speechlab.yaml::test_speech[...]"):
    # the case id alone keeps --benchmark-compare working when the config file is renamed or another one is used.
    bench.fullname = case.id

    def runner(fn: Callable[[], None], rounds: int) -> None:
        bench.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)

    return bench, runner


def case_context(request: pytest.FixtureRequest, sess: SpeechlabSession, case: Case) -> CaseContext:
    """Everything a case runner needs from pytest, for one case of this test."""

    def benchmark() -> tuple[BenchmarkInfo | None, RoundRunner]:
        return _benchmark_runner(request, case)

    def junit(record: Mapping[str, object]) -> None:
        _junit_properties(request, record)

    def tmp_dir(prefix: str) -> Path:
        path: Path = request.getfixturevalue("tmp_path_factory").mktemp(prefix, numbered=True)
        return path

    return CaseContext(
        session=sess,
        case=case,
        accept=_accept_command(request.node),
        progress=_progress(request, case.id),
        benchmark=benchmark,
        junit=junit,
        tmp_dir=tmp_dir,
    )


def run_matrix_case(case: Any, request: pytest.FixtureRequest) -> None:
    """Run a collected matrix case end to end (used by the built-in matrix test): the runner of its task."""
    __tracebackhide__ = True
    from .runners import get_runner

    sess = get_session(request.config)
    assert isinstance(case, Case)
    spec = sess.cfg.models[case.model]
    sess.skip_if_unrunnable(case)
    run = get_runner(spec.task)
    if run is None:
        reason = f"{case.model}: task {spec.task!r} has no matrix runner"
        sess.results.append({**sess.base_record(case), "status": "skipped", "reason": reason})
        pytest.skip(reason)
    run(case_context(request, sess, case))


def _junit_properties(request: pytest.FixtureRequest, record: Mapping[str, Any]) -> None:
    m = record.get("metrics") or {}
    for k in ("wer", "cer", "rtf", "entity_acc"):
        if m.get(k) is not None:
            request.node.user_properties.append((f"speechlab_{k}", f"{m[k]:.6f}"))
