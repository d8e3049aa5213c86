"""The gate's decisions, outside pytest (issue 24): nothing under ``gate/`` imports pytest, so pytest,
``speechlab check`` and ``speechlab merge --gate`` call the same functions on the same rows and give one verdict.

* :mod:`.coverage` — *green means compared*: whether a session (or a saved run record) compared anything,
  which skipped cases had a committed golden, which corpora are only partly present, and the closing count
  line ("N compared, M skipped, K accepted").
"""

from __future__ import annotations

from .coverage import (
    COMPARED_VERDICTS,
    Coverage,
    SkipPolicy,
    coverage,
    expected_skip,
    skipped_with_golden,
)

__all__ = ["COMPARED_VERDICTS", "Coverage", "SkipPolicy", "coverage", "expected_skip", "skipped_with_golden"]
