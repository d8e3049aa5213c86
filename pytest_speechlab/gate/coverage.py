"""Green means compared: what a session (or a saved run record) actually compared.

pytest's exit code is all that most CI reads.  A session in which every case skipped (``pytest -m mps`` on a
machine whose Metal probe fails), accepted new goldens or held only part of a chunked corpus compared nothing,
so it must not read as a pass.  And a case whose golden is committed is one the project expects to be gated:
when it skips (no GPU, an extra not installed) the gate did not run, which is a failure unless the job says it
expects that skip (``--speechlab-expect-skip cuda`` on a laptop without a GPU).

The same rows give the same answer wherever they are judged: pytest at the end of the session, ``speechlab
check`` on the run record, ``speechlab merge --gate`` on the merged record.  This module imports no pytest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

#: Verdicts of a case that was judged against a golden baseline (a failure was compared too).
COMPARED_VERDICTS = ("pass", "improved", "fail", "differs")
#: Tasks judged by their own checks instead of a golden (the chat smoke): a verdict, but no baseline.
NO_GOLDEN_TASKS = ("chat",)
EXPECT_SKIP_OPTION = "--speechlab-expect-skip"


@dataclass(frozen=True)
class SkipPolicy:
    """Which skips of cases with a committed golden a job expects: names matched against the case's device,
    model, ``model/device`` and case id (shell patterns, e.g. ``cuda``, ``fw-*``, ``lfm25-audio/mps``)."""

    expected: tuple[str, ...] = ()


def expected_skip(row: Mapping[str, Any], expected: Iterable[str]) -> str | None:
    """The pattern of ``expected`` that names this case (device, model, model/device or case id), or None."""
    names = [str(row.get("device")), str(row.get("model")), f"{row.get('model')}/{row.get('device')}",
             str(row.get("case")), str(row.get("corpus") or "")]
    for pat in expected:
        if any(n and fnmatchcase(n, pat) for n in names):
            return pat
    return None


def skipped_with_golden(row: Mapping[str, Any], golden_file: Path | None, expected: Iterable[str] = ()) -> str | None:
    """Why a skipped case fails the gate: it has a committed golden (``golden_file`` exists) that was not
    compared, and the job did not say it expects that skip.  None when the skip is fine."""
    if row.get("status") != "skipped" or row.get("stage") == "experimental" or golden_file is None:
        return None
    if not golden_file.is_file() or expected_skip(row, expected):
        return None
    device, model = row.get("device"), row.get("model")
    return (
        f"speechlab: {row.get('case')} has a committed golden ({golden_file}) but did not run: "
        f"{row.get('reason') or 'skipped'}\n"
        "  a skipped case with a golden is not a pass: the gate compared nothing for it. Run it where its "
        f"device and extras are, or say this job expects the skip: {EXPECT_SKIP_OPTION} {device} "
        f"(or {EXPECT_SKIP_OPTION} {model})"
    )


def _is_chunk(row: Mapping[str, Any]) -> bool:
    return row.get("verdict") == "chunk"


@dataclass
class Coverage:
    """What the matrix rows of one run compared; ``problems`` are why the run cannot be green."""

    selected: int = 0
    compared: int = 0
    failed: int = 0
    skipped: int = 0
    expected_skips: int = 0
    accepted: int = 0
    partial: int = 0
    reported: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The closing count: "N compared, M skipped, K accepted" (and what else happened)."""
        parts = [f"{self.compared} compared", f"{self.skipped} skipped", f"{self.accepted} accepted"]
        if self.expected_skips:
            parts[1] += f" ({self.expected_skips} expected)"
        for n, what in ((self.failed, "failed or errored"), (self.partial, "partial"),
                        (self.reported, "reported, not gated")):
            if n:
                parts.append(f"{n} {what}")
        return "speechlab: " + ", ".join(parts)


def _state(row: Mapping[str, Any]) -> str:
    """compared | worse (compared, and failed) | failed (error, no golden) | skipped | accepted | partial |
    reported (one matrix or corpus row)."""
    status, verdict = row.get("status"), str(row.get("verdict") or "")
    if status == "skipped":
        return "skipped"
    if status == "error" or verdict in ("error", "missing"):
        return "failed"
    if verdict == "accepted":
        return "accepted"
    if verdict == "partial":
        return "partial"
    if row.get("stage") == "experimental":
        return "reported"
    if verdict in COMPARED_VERDICTS:
        return "worse" if verdict == "fail" else "compared"
    if row.get("task") in NO_GOLDEN_TASKS and verdict:
        return "worse" if verdict.startswith("fail") else "compared"
    return "reported"


def coverage(rows: Sequence[Mapping[str, Any]], *, update: bool = False, where: str = "this run",
             expected: Iterable[str] = (), shard: bool = False) -> Coverage:
    """Count what ``rows`` (a session's results or a run record's cases) compared, and say why the run cannot be
    green: nothing compared although matrix cases were selected (all skipped, accepted, partial or reported),
    or a chunked corpus only partly present.  Under ``update`` (goldens being recorded) accepting is the point:
    only the counts are given.  A ``shard`` (``--speechlab-shard I/N``) holds part of a chunked corpus by design:
    its corpus is judged by ``speechlab merge --gate``, so a partial row is deferred there, not a problem."""
    expected = tuple(expected)
    cov = Coverage()
    first_skip: str | None = None
    for row in rows:
        if row.get("origin", "matrix") not in ("matrix", "corpus") or _is_chunk(row):
            continue
        cov.selected += 1
        state = _state(row)
        if state in ("compared", "worse"):
            cov.compared += 1
            cov.failed += state == "worse"
        elif state == "failed":
            cov.failed += 1
        elif state == "skipped":
            cov.skipped += 1
            if row.get("expected_skip") or expected_skip(row, expected):
                cov.expected_skips += 1
            first_skip = first_skip or f"{row.get('case')}: {row.get('reason') or 'skipped'}"
        elif state == "accepted":
            cov.accepted += 1
        elif state == "partial":
            cov.partial += 1
            if not update and not shard:
                cov.problems.append(
                    f"{row.get('case')}: only part of its chunks are in {where} "
                    f"({row.get('reason') or 'chunks missing'}): no corpus verdict, and partial is never a pass; "
                    "run every chunk, or merge the shards' records with speechlab merge --gate"
                )
        else:
            cov.reported += 1
    if not update and cov.selected and not cov.compared and not cov.failed and not (shard and cov.partial):
        why = ", ".join(f"{n} {w}" for n, w in ((cov.skipped, "skipped"), (cov.accepted, "accepted"),
                                                 (cov.partial, "partial"), (cov.reported, "reported, not gated"))
                        if n)
        cov.problems.insert(0, (
            f"{where} compared nothing: {cov.selected} speech case(s) selected, none compared with a golden "
            f"({why}); a run that compared nothing is not green"
            + (f" (first skip: {first_skip})" if first_skip else "")
        ))
    return cov
