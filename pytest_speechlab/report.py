"""Terminal summary, JSON run records and provenance."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from .golden import atomic_write_text
from .schema import RECORD_SCHEMA

PACKAGES = ("pytest-speechlab", "pytest", "faster-whisper", "ctranslate2", "openai-whisper", "torch", "piper-tts",
            "onnxruntime", "liquid-audio", "jiwer", "whisper-normalizer", "soundfile", "soxr", "numpy")
# RECORD_SCHEMA 2: a header count ``collected`` (every collected matrix case has a row), ``origin`` per row,
# and the verdicts ``error`` and ``accepted`` (schemas/run-record-2.schema.json).


@cache
def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results (missing ones are left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


@cache
def git_commit(cwd: str) -> str | None:
    """The current git commit of ``cwd``'s repository, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(root: Path) -> dict[str, Any]:
    """Where and with what a run happened."""
    from .devices import cpu_model

    return {
        "versions": versions(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "git_commit": git_commit(str(root)),
        "argv": sys.argv[1:],
    }


def run_record(
    results: list[dict[str, Any]], root: Path, extra: dict[str, Any] | None = None, collected: int = 0
) -> dict[str, Any]:
    """The session's run record: every case (ran, failed or skipped) plus provenance.  ``collected`` is
    how many matrix cases the session selected; each has exactly one row of ``origin: matrix``."""
    return {
        "schema": RECORD_SCHEMA,
        "collected": collected,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": provenance(root),
        "settings": extra or {},
        "cases": sorted(results, key=lambda r: r.get("case", "")),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically write a JSON document."""
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def vs_golden(r: dict[str, Any]) -> str:
    """A short 'vs golden' cell: WER/CER deltas and the RTF ratio."""
    g = r.get("golden_metrics") or {}
    m = r.get("metrics") or {}
    parts = []
    for k, label in (("wer", "WER"), ("cer", "CER"), ("entity_acc", "ENT")):
        if g.get(k) is not None and m.get(k) is not None:
            parts.append(f"{label} {m[k] - g[k]:+.4f}")
    checks = {c["metric"]: c for c in r.get("checks", [])}
    if g.get("rtf") and m.get("rtf") is not None:
        rtf_check = checks.get("RTF")
        tag = ""
        if rtf_check and rtf_check["status"] in ("not-comparable", "off"):
            tag = f" ({rtf_check['status']}: {short_reason(rtf_check)})"
        parts.append(f"RTF x{m['rtf'] / g['rtf']:.2f}{tag}")
    speed = checks.get("SPEED")
    if speed and speed["status"] not in ("not-compared", "off") and g.get("speed_rel") and m.get("speed_rel"):
        parts.append(f"speed x{m['speed_rel'] / g['speed_rel']:.2f}")
    elif speed:
        parts.append(f"speed {speed['status'].replace('-', ' ')}")
    rss = checks.get("RSS_MB")
    if rss and rss["status"] in ("fail", "improved") and g.get("case_peak_rss_mb"):
        parts.append(f"RSS x{m['case_peak_rss_mb'] / g['case_peak_rss_mb']:.2f}")
    if r.get("golden_device"):
        parts.append(f"vs {r['golden_device']} golden")
    return ", ".join(parts) or "-"


def speed_notes(results: list[dict[str, Any]]) -> list[str]:
    """One line per case whose speed was not compared, saying why and how to fix it: never a silent pass."""
    out = []
    for r in sorted(results, key=lambda r: r.get("case", "")):
        c = next((c for c in r.get("checks", []) if c["metric"] == "SPEED"), None)
        if c is not None and c["status"] == "not-compared":
            out.append(f"{r.get('case')}: speed not compared: {c['note']}")
    return out


def short_reason(check: dict[str, Any]) -> str:
    """Why a check was not compared, in a few words for the summary table (the note has the rest)."""
    note = str(check.get("note") or "")
    if check.get("status") == "off":
        return "gate off"
    if "saturated" in note:
        load = re.search(r"load ([0-9.]+) on (\d+) CPUs", note)
        return f"saturated CPU, load {load.group(1)}/{load.group(2)}" if load else "saturated CPU"
    if "golden measured on" in note:
        return "other machine"
    if "dataset changed" in note:
        return "dataset changed"
    return note.split(";")[0][:40] or "see the record"


def verdict_text(r: dict[str, Any]) -> str:
    """The summary's verdict cell: the verdict and, when it failed, its first cause."""
    verdict = str(r.get("verdict") or r.get("status", "?"))
    causes = r.get("causes") or []
    if verdict in ("fail", "error") and causes:
        return f"{verdict}: {causes[0]}" + (f" (+{len(causes) - 1})" if len(causes) > 1 else "")
    return verdict


def summary_lines(
    results: list[dict[str, Any]], notes: list[str], detail: list[dict[str, Any]] | None = None
) -> list[str]:
    """The end-of-session table: case, WER, CER, RTF, vs golden, verdict; then the notes (:func:`_trailer`)."""
    return _table(results) + _trailer(results, notes, results if detail is None else detail)


def _table(results: list[dict[str, Any]]) -> list[str]:
    """The summary table of ``results``, header row first."""
    rows = [("case", "WER", "CER", "RTF", "vs golden", "verdict")]
    for r in sorted(results, key=lambda r: r.get("case", "")):
        m = r.get("metrics") or {}
        verdict = verdict_text(r)
        if r.get("status") == "skipped":
            verdict = f"skipped: {r.get('reason', '')}"
        elif r.get("status") == "error" or r.get("verdict") == "error":
            cause = f"{r['causes'][0]}: " if r.get("causes") else ""
            verdict = f"error: {cause}{r.get('reason', '')}"
        rows.append((r.get("case", "?"), _f(m.get("wer")), _f(m.get("cer")), _f(m.get("rtf")), vs_golden(r), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5] for row in rows]


def _trailer(results: list[dict[str, Any]], notes: list[str], detail: list[dict[str, Any]]) -> list[str]:
    """The lines under the table: session notes and statistical-gate lines for every case; each case's notes,
    tolerances and speed lines for the ``detail`` cases (with -q only those that need attention)."""
    by_case = sorted(results, key=lambda r: r.get("case", ""))
    # The statistical gate's verdicts (both ways) are shown with their intervals, so a pass that the
    # strict gate would have failed is never silent.
    gate_notes = [
        f"{r.get('case')}: {c['metric']} {c['note']}"
        for r in by_case
        for c in r.get("checks", [])
        if c.get("status") == "noise" or "real regression" in (c.get("note") or "")
    ]
    # Each case's checks that were left undone, and why (golden predates weights/audio identity, ...):
    # a pass that could not verify something says so.
    case_notes = [
        f"{r.get('case')}: {n}"
        for r in sorted(detail, key=lambda r: r.get("case", ""))
        for n in r.get("verdict_notes") or []
    ]
    from .tolerances import summary_lines as tolerance_lines

    return (
        [f"note: {n}" for n in notes]
        + [f"gate: {n}" for n in gate_notes]
        + [f"note: {n}" for n in case_notes]
        + tolerance_lines(detail)
        + [f"speed: {n}" for n in speed_notes(detail) if "golden yet" not in n]
    )


#: Verdicts that need no attention; with ``-q`` the summary lists every other case.
QUIET_OK = ("pass", "improved", "accepted", "skipped", "chunk")  # a chunk: its corpus row is the verdict


def _verdict_word(r: dict[str, Any]) -> str:
    if r.get("status") == "skipped":
        return "skipped"
    return str(r.get("verdict") or r.get("status") or "?").split(" ")[0].rstrip(":,")


def quiet_lines(results: list[dict[str, Any]], notes: list[str]) -> list[str]:
    """The ``-q`` summary: only the cases that need attention (failed, error, missing, ...), the notes, then one
    total line."""
    problems = [r for r in results if _verdict_word(r) not in QUIET_OK]
    # the table of those cases (with its header row), then every note and statistical-gate line, as without -q:
    # a pass that the strict gate would have failed is never silent
    lines = (_table(problems) if problems else []) + _trailer(results, notes, problems)
    counts: dict[str, int] = {}
    for r in results:
        word = _verdict_word(r)
        counts[word] = counts.get(word, 0) + 1
    order = sorted(counts, key=lambda w: (w in QUIET_OK, w))
    total = ", ".join(f"{counts[w]} {w}" for w in order)
    return lines + [f"speechlab: {len(results)} cases: {total}"]


# ---- GitHub Actions step summary ----------------------------------------------------------------------


def _md_num(x: Any, digits: int = 4) -> str:
    return "-" if x is None or x == float("inf") else f"{float(x):.{digits}f}"


def step_summary_markdown(results: list[dict[str, Any]], notes: list[str]) -> str:
    """The session's summary table as Markdown (what goes into ``$GITHUB_STEP_SUMMARY``)."""
    from .records import case_state, failure_reason

    lines = ["## pytest-speechlab", "", "| case | WER | CER | RTF | vs golden | verdict |", "|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r.get("case", "")):
        m = r.get("metrics") or {}
        state = case_state(r)
        verdict = str(r.get("verdict") or r.get("status"))
        if state != "ran":
            verdict = f"{state}: {failure_reason(r)}"
        nums = [_md_num(m.get(k)) for k in ("wer", "cer", "rtf")]
        cells = [r.get("case", "?"), *nums, vs_golden(r), verdict]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += [""] + [f"> {n}" for n in notes]
    return "\n".join(lines) + "\n"


def append_step_summary(path: Path, results: list[dict[str, Any]], notes: list[str]) -> None:
    """Append the Markdown summary to GitHub's step-summary file (appending is how that file is meant to grow)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(step_summary_markdown(results, notes))
