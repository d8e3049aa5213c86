"""Reading run records (the JSON ``--speechlab-json`` / ``--speechlab-save`` write) for the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .golden import read_json

# Verdicts that mean a case that ran did not pass its golden gate.
FAILED_VERDICTS = ("fail", "missing", "error")


class RunRecordError(Exception):
    """A run record cannot be used; the message names the file and the fix."""


def load_run(path: Path) -> dict[str, Any]:
    """Read one run record and check its shape; :class:`RunRecordError` names the file on any problem."""
    path = Path(path)
    try:
        data = read_json(path, RunRecordError, "run record",
                         unreadable_fix="pass the file that --speechlab-json wrote",
                         invalid_fix="re-create it with pytest --speechlab-json PATH")
    except FileNotFoundError:
        raise RunRecordError(f"{path}: run record not found; pass the file that pytest --speechlab-json PATH wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise RunRecordError(f"{path}: not a speechlab run record (no 'cases' list); re-create it with pytest --speechlab-json PATH")
    for i, case in enumerate(data["cases"]):
        if not isinstance(case, dict) or not all(isinstance(case.get(k), str) for k in ("case", "model", "dataset", "device", "status")):
            raise RunRecordError(f"{path}: cases[{i}] lacks case/model/dataset/device/status; the record is damaged, re-create it")
        if case["status"] == "ran" and not isinstance(case.get("metrics"), dict):
            raise RunRecordError(f"{path}: cases[{i}] ({case['case']}) ran but has no 'metrics' object; re-create the record")
    data["_path"] = str(path)
    return data


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
    bad = [f"{c['metric']} {c.get('note') or 'worse than the golden'}" for c in case.get("checks", []) if c.get("status") == "fail"]
    return "; ".join(bad) or f"verdict {case.get('verdict')}"
