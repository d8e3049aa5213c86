"""``speechlab merge``: join the run records of several shards (CI matrix jobs) into one.

Each CI job runs ``pytest --speechlab-shard I/N --speechlab-json run-I.json``; the shards partition the matrix,
so their records hold disjoint cases.  ``speechlab merge run-*.json -o run.json`` joins them into one run
record with the same schema (so ``speechlab check``, the summary and history tools read it like any other).

A case present in two records is accepted only when both say the same thing (same status, verdict and
scores, e.g. the same shard merged twice); a conflicting duplicate is refused with a message naming both
files, because picking one silently could hide a regression.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .schema import RECORD_SCHEMA

# What must agree for two copies of one case to count as the same result.
_SAME_RESULT_FIELDS = ("status", "verdict", "normalizer", "decode")
_SAME_METRICS = ("wer", "cer", "word_errors", "ref_words", "char_errors", "ref_chars")
_FAILED_VERDICTS = ("fail", "missing", "error")


class MergeError(Exception):
    """Run records that cannot be merged; the message names the files and the fix."""


def load_record(path: Path) -> dict[str, Any]:
    """A run record from ``path``, checked to look like one (``cases`` list of objects with a ``case`` id)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: no such run record; pass files written by pytest --speechlab-json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MergeError(f"{path}: cannot read run record ({exc})") from None
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); was the job interrupted? "
                         "re-run that shard") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise MergeError(
            f"{path}: not a speechlab run record (no 'cases' list); pass files written by --speechlab-json"
        )
    if data.get("schema") != RECORD_SCHEMA:
        raise MergeError(
            f"{path}: run record schema {data.get('schema')!r}, this speechlab reads schema {RECORD_SCHEMA}; "
            "merge records written by the same pytest-speechlab version"
        )
    from .schema import validate

    # the schema, with the same messages as speechlab check (runs.load_run), on the document already read
    validate(data, "run record", str(path), MergeError, "re-create it with pytest --speechlab-json PATH")
    return data


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
    from .runs import case_problem

    return [
        c["case"]
        for c in record["cases"]
        if c.get("stage") != "experimental" and (c.get("verdict") in _FAILED_VERDICTS or case_problem(c) is not None)
    ]
