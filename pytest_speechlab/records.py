"""Run records (the JSON ``--speechlab-json`` / ``--speechlab-save`` write): read and validate them
(:func:`load_run` for ``speechlab check``/scorecards/capability, :func:`load_record` for ``speechlab merge``),
judge their cases (:data:`FAILED_VERDICTS`, :func:`case_state`, :func:`failure_reason`), and merge the
records of several shards into one (:func:`merge_records`).

Merging: each CI job runs ``pytest --speechlab-shard I/N --speechlab-json run-I.json``; the shards partition
the matrix, so their records hold disjoint cases.  ``speechlab merge run-*.json -o run.json`` joins them into
one run record with the same schema (so ``speechlab check``, the summary and history tools read it like any
other).  A case present in two records is accepted only when both say the same thing (same status, verdict
and scores, e.g. the same shard merged twice); a conflicting duplicate is refused with a message naming both
files, because picking one silently could hide a regression.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schema import RECORD_SCHEMA

# What must agree for two copies of one case to count as the same result.
_SAME_RESULT_FIELDS = ("status", "verdict", "normalizer", "decode")
_SAME_METRICS = ("wer", "cer", "word_errors", "ref_words", "char_errors", "ref_chars")


class MergeError(Exception):
    """Run records that cannot be merged; the message names the files and the fix."""


# Verdicts that mean a case that ran did not pass its golden gate.
FAILED_VERDICTS = ("fail", "missing", "error")
# ``accepted``: --speechlab-update-golden wrote the case's result as its new golden; nothing was compared.
ACCEPT_FLAG = "--speechlab-update-golden"


class RunRecordError(Exception):
    """A run record cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class _Wording:
    """How a caller words a run record it cannot use (``{path}``, ``{exc}``, ``{msg}``, ``{line}``, ``{col}``)."""

    error: type[Exception]
    missing: str
    unreadable: str
    invalid: str
    not_record: str


_FIX = "re-create it with pytest --speechlab-json PATH"
_CHECK_WORDING = _Wording(
    RunRecordError,
    missing="{path}: run record not found; pass the file that pytest --speechlab-json PATH wrote",
    unreadable="{path}: cannot read run record ({exc}); pass the file that --speechlab-json wrote",
    invalid="{path}: run record is not valid JSON ({msg} at line {line}, column {col}); " + _FIX,
    not_record="{path}: not a speechlab run record (no 'cases' list); " + _FIX,
)


def _read_run(path: Path, words: _Wording, schema_policy: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The one reader of run records: read ``path``, parse it, check it is a run record, apply the caller's
    ``schema_policy`` (it raises for a schema version the caller refuses and returns False for a record read
    without the schema, for history only), then validate it against its schema; errors worded by ``words``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise words.error(words.missing.format(path=path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise words.error(words.unreadable.format(path=path, exc=exc)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise words.error(words.invalid.format(path=path, msg=exc.msg, line=exc.lineno, col=exc.colno)) from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise words.error(words.not_record.format(path=path))
    if not schema_policy(data):
        return data
    from .schema import validate

    validate(data, "run record", str(path), words.error, _FIX)
    return data


def load_run(path: Path, *, gate: bool = False) -> dict[str, Any]:
    """Read one run record and validate it against its schema (schemas/run-record-2.schema.json);
    :class:`RunRecordError` names the file, the key and the fix on any problem.  ``gate``: the record is
    about to be gated (``speechlab check``/``merge``), so an old record without a case count is refused."""
    path = Path(path)

    def schema_policy(data: dict[str, Any]) -> bool:
        old = data.get("schema") is None or (type(data.get("schema")) is int and data["schema"] == 1)
        if old and not gate:
            # Written before run records had a schema file: read for history (scorecards), never gated.
            _check_v1(path, data)
            return False
        if old:
            raise RunRecordError(
                f"{path}: schema: run record schema {data.get('schema', 'none')} (older pytest-speechlab) "
                "has no 'collected' count, "
                f"so it cannot prove that every case is in it; re-create it with pytest --speechlab-json PATH"
            )
        return True

    data = _read_run(path, _CHECK_WORDING, schema_policy)
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


def is_part(case: dict[str, Any]) -> bool:
    """A chunk row or a shard's partial corpus row (chunks.py): a part of a case, never the case's result (its
    corpus row is); readers keyed by model/dataset/device leave these out."""
    return case.get("verdict") in ("chunk", "partial")


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
    if case.get("verdict") == "partial":
        return str(case.get("reason") or "partial: not every chunk is in this record")
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


_MERGE_WORDING = _Wording(
    MergeError,
    missing="{path}: no such run record; pass files written by pytest --speechlab-json",
    unreadable="{path}: cannot read run record ({exc})",
    invalid="{path}: not valid JSON ({msg} at line {line}); was the job interrupted? re-run that shard",
    not_record="{path}: not a speechlab run record (no 'cases' list); pass files written by --speechlab-json",
)


def load_record(path: Path) -> dict[str, Any]:
    """A run record from ``path`` for ``speechlab merge``: the same reader as :func:`load_run`, worded for
    merging, and only records of this version's schema."""
    path = Path(path)

    def schema_policy(data: dict[str, Any]) -> bool:
        if data.get("schema") != RECORD_SCHEMA:
            raise MergeError(
                f"{path}: run record schema {data.get('schema')!r}, this speechlab reads schema {RECORD_SCHEMA}; "
                "merge records written by the same pytest-speechlab version"
            )
        return True

    return _read_run(path, _MERGE_WORDING, schema_policy)


def _result_key(case: dict[str, Any]) -> tuple[Any, ...]:
    """What two copies of a case must share to be the same result (timings and provenance may differ)."""
    m = case.get("metrics") or {}
    hyps = tuple((u.get("id"), u.get("hypothesis")) for u in case.get("utterances") or [])
    return (
        *(json.dumps(case.get(k), sort_keys=True) for k in _SAME_RESULT_FIELDS),
        *(m.get(k) for k in _SAME_METRICS),
        hyps,
    )


def _describe(case: dict[str, Any]) -> str:
    m = case.get("metrics") or {}
    parts = [f"status {case.get('status')}", f"verdict {case.get('verdict')}"]
    if m.get("wer") is not None:
        parts.append(f"WER {m['wer']:.4f}")
    if m.get("cer") is not None:
        parts.append(f"CER {m['cer']:.4f}")
    return ", ".join(parts)


def merge_records(
    records: list[dict[str, Any]], sources: list[str], allow_mixed_configs: bool = False
) -> dict[str, Any]:
    """One run record holding every case of ``records`` (``sources`` names them in messages).

    Raises :class:`MergeError` on a conflicting duplicate case.  ``settings.merged_from`` lists each input
    (file, created, shard, git commit); notes say when inputs come from different commits or when shards
    of an N-way split are missing.
    """
    if not records:
        raise MergeError("nothing to merge: pass at least one run record")
    hashes = [((r.get("settings") or {}).get("config_sha256"), src) for r, src in zip(records, sources, strict=True)]
    first_hash, first_src = hashes[0]
    other = next(((h, s) for h, s in hashes[1:] if h != first_hash), None)
    if other is not None and not allow_mixed_configs:
        raise MergeError(
            f"{first_src} and {other[1]} were run with different speechlab configs (sha256 "
            f"{str(first_hash)[:12]} vs {str(other[0])[:12]}); their cases are not one matrix. Merge the "
            "shards of one config, or pass --allow-mixed-configs to merge anyway"
        )
    cases: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    notes: list[str] = []
    loads: dict[str, int] = {}
    merged_from = []
    collected = 0
    dropped = 0
    for rec, src in zip(records, sources, strict=True):
        settings = rec.get("settings") or {}
        merged_from.append(
            {
                "file": src,
                "created": rec.get("created"),
                "shard": settings.get("shard"),
                "git_commit": (rec.get("provenance") or {}).get("git_commit"),
            }
        )
        collected += int(rec.get("collected") or 0)
        for k, v in (settings.get("model_loads") or {}).items():
            loads[k] = loads.get(k, 0) + int(v)
        for n in settings.get("notes") or []:
            if n not in notes:
                notes.append(n)
        for case in rec["cases"]:
            if case.get("origin") == "corpus":
                continue  # a shard's corpus row (partial): rebuilt from the merged chunk rows (chunks.settle)
            cid = case["case"]
            if cid in cases:
                if _result_key(cases[cid]) != _result_key(case):
                    raise MergeError(
                        f"case {cid} is in both {where[cid]} ({_describe(cases[cid])}) and {src} "
                        f"({_describe(case)}) with different results; merge the records of disjoint shards "
                        "(--speechlab-shard I/N with the same N), or leave one of the two files out"
                    )
                if case.get("origin", "matrix") == "matrix":
                    dropped += 1  # counted in both headers' ``collected``
                continue  # the same result twice (e.g. one shard passed twice): keep the first
            cases[cid] = case
            where[cid] = src
    commits = {m["git_commit"] for m in merged_from if m["git_commit"]}
    if len(commits) > 1:
        notes.append(f"merged records come from {len(commits)} different git commits: {', '.join(sorted(commits))}")
    shards = [m["shard"] for m in merged_from if m["shard"]]
    if shards:
        totals = {int(s[1]) for s in shards}
        if len(totals) > 1:
            notes.append(
                f"merged shards of different splits (N = {', '.join(map(str, sorted(totals)))}); "
                "the matrix may be covered unevenly"
            )
        else:
            n = totals.pop()
            missing = sorted(set(range(1, n + 1)) - {int(s[0]) for s in shards})
            if missing:
                notes.append(
                    f"shard(s) {', '.join(map(str, missing))} of {n} missing from the merge: "
                    "their cases are not in this record"
                )
    first = records[0]
    return {
        "schema": RECORD_SCHEMA,
        "collected": collected - dropped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": {**(first.get("provenance") or {}), "merged": True},
        "settings": {
            **(first.get("settings") or {}),
            "shard": None,
            "model_loads": loads,
            "notes": notes,
            "merged_from": merged_from,
        },
        "cases": sorted(cases.values(), key=lambda c: c["case"]),
    }


def failed_cases(record: dict[str, Any]) -> list[str]:
    """Ids of the cases whose verdict fails the gate (fail, missing golden, error, no metrics), except
    experimental ones (reported, not gated)."""
    return [
        c["case"]
        for c in record["cases"]
        if c.get("stage") != "experimental"
        and (c.get("verdict") in (*FAILED_VERDICTS, "partial") or case_problem(c) is not None)
    ]
