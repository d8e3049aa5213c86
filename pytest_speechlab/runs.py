"""Reading run records (the JSON ``--speechlab-json`` / ``--speechlab-save`` write) for the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .golden import read_json

# Verdicts that mean a case that ran did not pass its golden gate.
FAILED_VERDICTS = ("fail", "missing", "error")
# ``accepted``: --speechlab-update-golden wrote the case's result as its new golden; nothing was compared.
ACCEPT_FLAG = "--speechlab-update-golden"


class RunRecordError(Exception):
    """A run record cannot be used; the message names the file and the fix."""


def load_run(path: Path, *, gate: bool = False) -> dict[str, Any]:
    """Read one run record and validate it against its schema (schemas/run-record-2.schema.json);
    :class:`RunRecordError` names the file, the key and the fix on any problem.  ``gate``: the record is
    about to be gated (``speechlab check``/``merge``), so an old record without a case count is refused."""
    path = Path(path)
    try:
        data = read_json(path, RunRecordError, "run record",
                         unreadable_fix="pass the file that --speechlab-json wrote",
                         invalid_fix="re-create it with pytest --speechlab-json PATH")
    except FileNotFoundError:
        raise RunRecordError(
            f"{path}: run record not found; pass the file that pytest --speechlab-json PATH wrote"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise RunRecordError(
            f"{path}: not a speechlab run record (no 'cases' list); re-create it with pytest --speechlab-json PATH"
        )
    old = data.get("schema") is None or (type(data.get("schema")) is int and data["schema"] == 1)
    if old and not gate:
        # Written before run records had a schema file: read for history (scorecards), never gated.
        _check_v1(path, data)
        data["_path"] = str(path)
        return data
    if old:
        raise RunRecordError(
            f"{path}: schema: run record schema {data.get('schema', 'none')} (older pytest-speechlab) "
            "has no 'collected' count, "
            f"so it cannot prove that every case is in it; re-create it with pytest --speechlab-json PATH"
        )
    from .schema import validate

    validate(data, "run record", str(path), RunRecordError, "re-create it with pytest --speechlab-json PATH")
    data["_path"] = str(path)
    return data


def _check_v1(path: Path, data: dict[str, Any]) -> None:
    for i, case in enumerate(data["cases"]):
        if not isinstance(case, dict) or not all(
            isinstance(case.get(k), str) for k in ("case", "model", "dataset", "device", "status")
        ):
            raise RunRecordError(
                f"{path}: cases[{i}] lacks case/model/dataset/device/status; the record is damaged, re-create it"
            )
        if case["status"] == "ran" and not isinstance(case.get("metrics"), dict):
            raise RunRecordError(
                f"{path}: cases[{i}] ({case['case']}) ran but has no 'metrics' object; re-create the record"
            )


def case_state(case: dict[str, Any]) -> str:
    """``ran``, ``failed`` (an error, or a golden gate that did not pass) or ``skipped``."""
    if case.get("status") == "skipped":
        return "skipped"
    if case.get("status") == "error" or case.get("verdict") in FAILED_VERDICTS:
        return "failed"
    return "ran"


def failure_reason(case: dict[str, Any]) -> str:
    """One line saying why a failed or skipped case did not pass."""
    if case.get("status") in ("skipped", "error"):
        return str(case.get("reason") or case.get("status"))
    if case.get("verdict") == "missing":
        return "no golden baseline"
    bad = [
        f"{c['metric']} {c.get('note') or 'worse than the golden'}"
        for c in case.get("checks", [])
        if c.get("status") == "fail"
    ]
    return "; ".join(bad) or f"verdict {case.get('verdict')}"


def case_problem(case: dict[str, Any]) -> str | None:
    """Why one row of a run record can never pass a gate (an error, or a run that measured nothing), or None."""
    if case.get("status") == "error" or case.get("verdict") == "error":
        return f"error: {case.get('reason') or 'the case errored'}"
    if case.get("status") == "ran":
        m = case.get("metrics")
        if not isinstance(m, dict) or not any(
            isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool) for k in ("wer", "cer", "rtf")
        ):
            return "ran but recorded no metrics (no wer, cer or rtf); nothing can be compared"
    return None


def compared_nothing(record: dict[str, Any], path: str) -> str | None:
    """A message when no case of ``record`` ran (all skipped, or no case at all): such a record proves
    nothing, so it cannot pass a gate.  None when at least one case ran."""
    cases = record.get("cases") or []
    if any(c.get("status") == "ran" for c in cases):
        return None
    skipped = sum(1 for c in cases if c.get("status") == "skipped")
    return (
        f"{path}: compared nothing: no case ran ({skipped} skipped, {len(cases)} in all); a gate over it would "
        "pass without checking anything. Run the cases on a machine that has their device and extras"
    )


def record_problems(record: dict[str, Any], path: str) -> list[str]:
    """Why a whole run record cannot pass a gate: it accepted goldens instead of comparing (``accepted``
    verdicts), or it holds a different number of matrix cases than its header says the session collected."""
    out: list[str] = []
    cases = record.get("cases") or []
    accepted = [str(c.get("case")) for c in cases if c.get("verdict") == "accepted"]
    if accepted:
        out.append(
            f"{path}: {len(accepted)} case(s) accepted new goldens instead of being compared "
            f"({ACCEPT_FLAG} was given): {', '.join(accepted)}; this record compared nothing. "
            f"Commit the goldens, then gate a record of a run without {ACCEPT_FLAG}"
        )
    if "collected" in record:
        matrix = [c for c in cases if c.get("origin", "matrix") == "matrix"]
        ids = {c.get("case") for c in matrix}
        if len(matrix) != record["collected"] or len(ids) != len(matrix):
            dupes = len(matrix) - len(ids)
            out.append(
                f"{path}: the header says the session collected {record['collected']} case(s) but the record "
                f"holds {len(matrix)} matrix case row(s)"
                + (f" ({dupes} duplicated)" if dupes else "")
                + "; the record is incomplete or was edited, re-create it with pytest --speechlab-json PATH"
            )
    return out
