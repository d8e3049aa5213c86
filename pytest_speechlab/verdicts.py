"""Verdicts that name their cause.

:func:`judge` is the gate used by pytest and ``speechlab check``: ``golden.compare`` scores the metrics, then
this module adds what else may have changed since the golden was recorded (the weights, the dataset) and
orders the causes, so the failure's first line names the first of them:

1. ``golden invalid``    the golden file cannot be read or is not a golden (no verdict possible);
2. ``weights changed``   another model was loaded (content hash of the weight files differs);
3. ``settings changed``  decode settings or the text normaliser differ: scores are not comparable;
4. ``dataset changed``   references edited, audio replaced, utterances added or removed;
5. ``metric worse``      none of the above: the model got worse (WER, CER, entity accuracy or RTF).

A change in 2-4 is never reported as "improved", and a WER/CER difference against a golden recorded on
other hardware is said to be that, not an improvement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checks import Verdict
from .golden import _fmt, compare

GOLDEN_INVALID = "golden invalid"
WEIGHTS = "weights changed"
SETTINGS = "settings changed"
DATASET = "dataset changed"
METRIC = "metric worse"
CAUSES = (GOLDEN_INVALID, WEIGHTS, SETTINGS, DATASET, METRIC)

_HEADLINE = {
    GOLDEN_INVALID: "golden invalid: its golden baseline cannot be used",
    WEIGHTS: "weights changed since its golden baseline (another model was loaded; not a metric verdict)",
    SETTINGS: "settings changed since its golden baseline (scores are not comparable)",
    DATASET: "dataset changed since its golden baseline (not a model regression)",
}
_QUALITY = ("WER", "CER", "ENTITY")


def _machine_name(m: dict[str, Any]) -> str:
    name = str(m.get("device_name") or "?")
    cpu = m.get("cpu_model")
    return name + (f" with CPU {cpu}" if cpu and cpu != name else "")


def _other_hardware(golden: dict[str, Any], obtained: dict[str, Any]) -> str | None:
    """The golden's machine when it is not this run's class (device, CPU model, the CPU features and kernels
    that select int8/fp32 kernels: devices.machine_difference), else None."""
    from .devices import machine_difference

    gm, om = golden.get("machine") or {}, obtained.get("machine") or {}
    if not gm or not om:
        return None
    differs = machine_difference(gm, om)
    if differs:
        return f"{_machine_name(gm)} ({'; '.join(differs)})"
    return None


def _model_causes(v: Verdict, golden: dict[str, Any], obtained: dict[str, Any]) -> list[str]:
    """WEIGHTS and/or SETTINGS when the golden was recorded with other weights or settings (weights problem
    and note added to ``v``)."""
    from .provenance import weights_change

    causes: list[str] = []
    w_problem, w_note = weights_change(golden, obtained)
    if w_problem:
        v.problems.insert(0, w_problem)
        causes.append(WEIGHTS)
    if w_note:
        v.notes.append(w_note)
    gd, od = golden.get("decode"), obtained.get("decode")
    gd, od = (gd if isinstance(gd, dict) else {}), (od if isinstance(od, dict) else {})
    # As compare: the library's version is provenance (a note), not a setting.
    if golden.get("normalizer") != obtained.get("normalizer") or any(
            gd.get(k) != od.get(k) for k in set(gd) | set(od) if k != "library"):
        causes.append(SETTINGS)
    return causes


def _dataset_drift(v: Verdict, golden: dict[str, Any], obtained: dict[str, Any]) -> None:
    """The dataset changed since the golden (``v.drift``): say so, and take the quality checks out of the verdict."""
    from .drift import summary, unchanged_scores

    # compare() already names id/reference changes in one line; audio changes only this module sees.
    if not any(p.startswith("the dataset differs from the golden's") for p in v.problems):
        v.problems.append(f"dataset changed since the golden: {summary(v.drift)}; the scores below measure a "
                          "different dataset, so they are not a model verdict")
    for c in v.checks:
        if c.metric in _QUALITY and c.status in ("fail", "improved", "noise"):
            c.status, c.note = "not-comparable", f"dataset changed ({c.note})" if c.note else "dataset changed"
    same = unchanged_scores(golden, obtained, v.drift)
    if same:
        v.notes.append(same)


def _not_improved_on_other_hardware(v: Verdict, other: str) -> None:
    """A better number of any metric (WER/CER, words on non-speech, timestamps...) against a golden from ``other``
    hardware is shown as "differs", not "improved" (README: a golden from another CPU class or device DIFFERS)."""
    for c in v.checks:
        if c.status == "improved":
            # The same model and audio can decode differently on another CPU/GPU (kernels, float order):
            # a difference from such a golden is not news about the model.
            c.status = "differs"
            c.note = (f"{c.note}; the golden was recorded on {other}: transcripts differ across hardware, "
                      "so this is not counted as an improvement (re-record the golden on this machine)")


def judge(golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float], **kw: Any) -> Verdict:
    """Compare a case record with its golden (``golden.compare``) and name the causes of any difference."""
    from .drift import dataset_changes, unverified_audio_note
    from .gate.sense import golden_problems

    v = compare(golden, obtained, thresholds, **kw)
    sense, sense_notes = golden_problems(golden)
    v.notes.extend(sense_notes)
    if sense or any("no per-utterance rows" in n for n in sense_notes):
        # A golden that contradicts its own rows, or has none, cannot show progress: no "improved" from it.
        for c in v.checks:
            if c.metric in _QUALITY and c.status == "improved":
                c.status, c.note = "differs", f"{c.note}; the golden cannot be trusted for an improvement"
    if sense:
        v.problems[:0] = [f"golden invalid: {p}" for p in sense]
    causes = [GOLDEN_INVALID] if sense else []
    causes += _model_causes(v, golden, obtained)
    if causes:
        # Another model or other settings: a better number is what the change did, not progress of the model
        # the golden measured; it is shown, never counted as "improved".
        for c in v.checks:
            if c.metric in _QUALITY and c.status == "improved":
                c.status, c.note = "differs", f"{c.note}; {causes[0]}, so not counted as an improvement"
    v.drift = dataset_changes(golden, obtained)
    if v.drift:
        causes.append(DATASET)
        _dataset_drift(v, golden, obtained)
    audio_note = unverified_audio_note(golden, obtained)
    if audio_note:
        v.notes.append(audio_note)
    other = _other_hardware(golden, obtained)
    if other:
        _not_improved_on_other_hardware(v, other)
    if any(c.status == "fail" for c in v.checks):
        causes.append(METRIC)
    v.causes = causes
    if v.problems or any(c.status == "fail" for c in v.checks):
        v.status = "fail"
    elif any(c.status == "improved" for c in v.checks):
        v.status = "improved"
    else:
        v.status = "pass"
    return v


def headline(case_id: str, verdict: Verdict) -> str:
    """The first line of a failure: the case and its first cause (others follow as "also: ...")."""
    if verdict.status == "missing":
        return f"speechlab: {case_id} has no golden baseline"
    causes = verdict.causes or ([METRIC] if any(c.status == "fail" for c in verdict.checks) else [])
    if not causes:
        return f"speechlab: {case_id}: cannot be compared with its golden baseline"
    first, rest = causes[0], causes[1:]
    if first == METRIC:
        worse = ", ".join(c.metric for c in verdict.checks if c.status == "fail")
        line = f"speechlab: {case_id} is worse than its golden baseline" + (f" ({worse})" if worse else "")
    else:
        line = f"speechlab: {case_id}: {_HEADLINE[first]}"
    if rest:
        line += f" [also: {', '.join(rest)}]"
    return line


def render_failure(case_id: str, verdict: Verdict, path: Path, changed: list[dict[str, str]], accept: str) -> str:
    """The one block a failing case prints."""
    from .drift import render as render_drift

    lines = [headline(case_id, verdict)]
    for p in verdict.problems:
        lines.append(f"  ! {p}")
    if verdict.drift:
        lines.extend(render_drift(verdict.drift))
    if verdict.checks:
        lines.append(f"  {'metric':<8}{'obtained':>10}{'golden':>10}  {'tolerance':<12}verdict")
        for c in verdict.checks:
            lines.append(
                f"  {c.metric:<8}{_fmt(c.obtained):>10}{_fmt(c.golden):>10}  {c.tolerance:<12}{c.status.upper()}"
                + (f" ({c.note})" if c.note else "")
            )
    lines.append(f"  golden: {path}")
    if changed:
        lines.append(f"  utterances whose hypothesis changed ({len(changed)}):")
        for row in changed[:20]:
            lines.append(f"    [{row['id']}] REF:    {row['reference']}")
            lines.append(f"    {'':{len(row['id']) + 2}} GOLDEN: {row['golden']}")
            lines.append(f"    {'':{len(row['id']) + 2}} NOW:    {row['hypothesis']}")
        if len(changed) > 20:
            lines.append(f"    ... and {len(changed) - 20} more (see --speechlab-json)")
    for n in verdict.notes:
        lines.append(f"  note: {n}")
    lines.append(f"  to accept the new values as the baseline, run:\n    {accept}")
    return "\n".join(lines)
