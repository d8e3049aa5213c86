"""What comparing a case with its golden finds: one :class:`Check` per metric and the case's :class:`Verdict`.

A leaf module: :mod:`.golden` (the comparison), :mod:`.hallucination` (output checks) and :mod:`.verdicts`
(causes and the failure block) all build these, so none of them imports another back for the types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    """One metric compared with its golden."""

    metric: str
    obtained: float | None
    golden: float | None
    tolerance: str
    status: str  # pass | improved | fail | not-comparable | not-compared | reported | off | noise
    note: str = ""


@dataclass
class Verdict:
    """The outcome of comparing a run with its golden."""

    status: str  # pass | improved | fail | missing
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # mismatches that make the comparison meaningless
    notes: list[str] = field(default_factory=list)
    # Why it failed, first cause first (verdicts.CAUSES): the headline names causes[0].
    causes: list[str] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)  # utterances changed in the dataset (drift.py)

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "missing")


def finite_number(x: Any) -> bool:
    """A finite number (not a bool, not None, not a string)."""
    import math

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
