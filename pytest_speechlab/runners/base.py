"""What every case runner gets and satisfies: a typed :class:`CaseContext` and the :class:`CaseRunner`
protocol.

The plugin side (:mod:`pytest_speechlab.running`) builds the context from pytest's request (the
pytest-benchmark fixture, the progress line, the accept command, the JUnit properties, a temp folder), so a
runner knows nothing of pytest's fixtures or hook order.  No explicit ``Any`` here: mypy checks this
module with ``disallow_any_explicit`` (pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..session import Case, SpeechlabSession

# Runs ``fn`` for ``rounds`` timed rounds (a plain loop, or pytest-benchmark's pedantic mode).
RoundRunner = Callable[[Callable[[], None], int], None]
# Called with (utterances done, total) while a case runs.
Progress = Callable[[int, int], None]


class BenchmarkInfo(Protocol):
    """The part of pytest-benchmark's fixture a runner writes to: the figures saved with the benchmark."""

    @property
    def extra_info(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class CaseContext:
    """One matrix case, ready to run."""

    session: SpeechlabSession
    case: Case
    # The command that accepts this case's new values as its golden (the failure block's last line).
    accept: str
    progress: Progress | None
    # (pytest-benchmark fixture or None, round runner); asked for only once the model is loaded, so a
    # case that skips while loading leaves no unused-fixture warning behind.
    benchmark: Callable[[], tuple[BenchmarkInfo | None, RoundRunner]]
    # Adds a case record's metrics to the test's JUnit properties.
    junit: Callable[[Mapping[str, object]], None]
    # A new, empty folder for this case's files (e.g. synthesized audio), named after ``prefix``.
    tmp_dir: Callable[[str], Path]


class CaseRunner(Protocol):
    """Runs one case of its task: records the result in ``ctx.session.results`` and passes, fails or skips
    the test (``pytest.fail``/``pytest.skip``)."""

    def __call__(self, ctx: CaseContext) -> None: ...
