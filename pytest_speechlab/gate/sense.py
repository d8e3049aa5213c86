"""Goldens checked for sense before they are trusted (issue 24, item 6).

A golden is a committed file that people edit, merge and resolve conflicts in.  Its pooled WER/CER may not be
worse than its own per-utterance rows give (``wer: 1e308`` or ``7.0`` over rows that pool to 0.0625 is an edited
or corrupt file, and it would make any run look "improved" or hide a regression); one *better* than its rows only
makes the gate stricter, so it is judged as stored, with a note; a golden without per-utterance rows cannot
show dataset drift, so it is said so and never counts an improvement.  Pure functions: no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: (metric, error count, reference length) pooled from the per-utterance rows.
POOLED = (("wer", "word_errors", "ref_words"), ("cer", "char_errors", "ref_chars"))
#: How far a stored pooled value may sit from the rows' (rounding of the stored value).
SLACK = 5e-4


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def golden_problems(golden: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, notes) of a golden's own consistency: a problem makes the golden unusable for a verdict."""
    problems: list[str] = []
    notes: list[str] = []
    raw = golden.get("metrics")
    metrics: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    rows = golden.get("utterances")
    if not isinstance(rows, list) or not rows:
        notes.append("the golden holds no per-utterance rows: dataset drift cannot be checked against it and no "
                     "metric is counted as improved; re-record it with --speechlab-update-golden")
        return problems, notes
    for metric, err, ref in POOLED:
        stored = _num(metrics.get(metric))
        if stored is None:
            continue
        if not math.isfinite(stored):
            problems.append(f"its pooled {metric.upper()} is {stored!r}, not a number a run can be compared with")
            continue
        counts = [(_num(r.get(err)), _num(r.get(ref))) for r in rows if isinstance(r, Mapping)]
        if len(counts) != len(rows) or any(e is None or n is None for e, n in counts):
            continue  # rows without counts (an older golden): nothing to check against
        total = sum(n for _, n in counts if n is not None)
        if total <= 0:
            continue  # empty references (a non-speech set): WER is 1.0 by construction
        pooled = sum(e for e, _ in counts if e is not None) / total
        if pooled - stored > SLACK:
            # Stored better than its rows: the gate is stricter than the rows, never looser (fail-safe), so it is
            # judged as stored, with a note (a tightened golden is also how a regression is simulated).
            notes.append(f"the golden's pooled {metric.upper()} {stored:.4f} is lower than its own per-utterance "
                         f"rows give ({pooled:.4f}): judged against the stored, stricter value")
        elif stored - pooled > SLACK:
            problems.append(
                f"its pooled {metric.upper()} {stored:.6g} disagrees with its own per-utterance rows, which pool to "
                f"{pooled:.4f} ({int(sum(e for e, _ in counts if e is not None))} errors over {int(total)}): the file "
                "was edited or is corrupt. Restore it from git, or re-record it with --speechlab-update-golden"
            )
    return problems, notes
