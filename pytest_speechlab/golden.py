"""Golden baselines: ``golden/<model>/<dataset>/<device>.json`` — read, compare with tolerances, write atomically."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes as atomic_write_bytes  # re-exported: the writers lived here
from .atomic import atomic_write_text as atomic_write_text
from .checks import Check, Verdict
from .checks import finite_number as _number
from .metrics import bootstrap_delta
from .schema import GOLDEN_SCHEMA as SCHEMA  # noqa: F401  (re-exported: golden.SCHEMA)


class GoldenError(Exception):
    """A golden file is unreadable or invalid; the message names the file and the fix."""


def golden_path(golden_dir: Path, model: str, dataset: str, device: str) -> Path:
    """Where the baseline of one case lives."""
    return Path(golden_dir) / model / dataset / f"{device}.json"


def read_json(path: Path, error: type[Exception], what: str, *, unreadable_fix: str, invalid_fix: str) -> Any:
    """Parse the JSON document at ``path``.  A missing file raises :class:`FileNotFoundError`; an unreadable
    or invalid one raises ``error`` naming the file, what it is, where the JSON breaks, and the fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc}); {unreadable_fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                    f"{invalid_fix}") from None


def read_golden(path: Path) -> dict[str, Any] | None:
    """The golden at ``path``, None when there is none; :class:`GoldenError` when it is not valid."""
    path = Path(path)
    try:
        data = read_json(
            path,
            GoldenError,
            "golden file",
            unreadable_fix="restore it from git or re-create it with --speechlab-update-golden",
            invalid_fix="restore it with `git checkout -- <file>` or re-create it with --speechlab-update-golden",
        )
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise GoldenError(
            f"{path}: golden file has no 'metrics' object; restore it from git or re-create it with "
            f"--speechlab-update-golden"
        )
    from .schema import validate

    validate(
        data, "golden", str(path), GoldenError, "restore it from git or re-create it with --speechlab-update-golden"
    )
    return data


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on a golden folder, so two processes updating it at once take turns."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".speechlab.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_golden(golden_dir: Path, path: Path, data: dict[str, Any]) -> None:
    """Atomically write one golden file while holding the golden folder's lock.  The path must stay under
    ``golden_dir`` and the data must satisfy the golden schema: otherwise :class:`GoldenError`, nothing written."""
    try:
        Path(path).resolve().relative_to(Path(golden_dir).resolve())
    except ValueError:
        raise GoldenError(
            f"{path}: refused to write a golden outside golden_dir {golden_dir}; "
            "check the model and dataset names in speechlab.yaml"
        ) from None
    from .schema import validate

    validate(
        data,
        "golden",
        str(path),
        GoldenError,
        "not written: the run measured values a golden cannot hold; fix the run, then accept again",
    )
    with _dir_lock(Path(golden_dir)):
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _machine(m: dict[str, Any]) -> str:
    """A machine as the RTF note names it: device, CPU model when it is not the device, threads."""
    name = str(m.get("device_name"))
    cpu = m.get("cpu_model")
    if cpu and cpu != name:
        name += f" with CPU {cpu}"
    return f"{name} ({m.get('threads')} threads)"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _setting_problems(v: Verdict, golden: dict[str, Any], obtained: dict[str, Any]) -> None:
    """Append to ``v`` what makes the two records incomparable: normaliser, decode settings, dataset, audio."""
    if golden.get("normalizer") != obtained.get("normalizer"):
        v.problems.append(
            f"normaliser mismatch: golden used {golden.get('normalizer')}, this run {obtained.get('normalizer')}; "
            "scores are not comparable"
        )
    gd, od = golden.get("decode"), obtained.get("decode")
    gd, od = (gd if isinstance(gd, dict) else {}), (od if isinstance(od, dict) else {})
    # The library's version is provenance, not a setting: a release that changes a default shows up through
    # the changed setting itself; one that changes nothing the golden recorded is only a note.
    diff = sorted(k for k in set(gd) | set(od) if k != "library" and gd.get(k) != od.get(k))
    if diff:
        text = ", ".join(f"{k}: golden {gd.get(k)!r} vs now {od.get(k)!r}" for k in diff)
        if _policy(gd) < _policy(od):
            from .backends.decode_defaults import POLICY_NOTE

            v.problems.append(
                f"the decode defaults changed in this version: {POLICY_NOTE}. This golden was recorded with the old "
                f"defaults; settings that differ: {text}. If the model entry did not set them, the new values are "
                "what users of the library run: accept them with the command below (or set the old values in "
                "speechlab.yaml to keep decoding the old way)"
            )
        else:
            v.problems.append("decode settings differ from the golden: " + text)
    elif gd.get("library") != od.get("library") and gd.get("library") and od.get("library"):
        v.notes.append(
            f"decode library changed: golden {gd.get('library')}, now {od.get('library')} "
            "(every recorded decode setting is the same)"
        )
    swap = _dataset_change(golden, obtained)
    if swap:
        v.problems.append(swap)
    from .perturb import spec_change

    other_audio = spec_change(golden, obtained)
    if other_audio:
        v.problems.append(other_audio)


def _one_sided_metrics(v: Verdict, gm: dict[str, Any], om: dict[str, Any]) -> None:
    """Append to ``v`` a problem for each metric measured on one side only."""
    for metric in ("wer", "cer", "entity_acc", "rtf"):
        # A metric on one side only is never skipped in silence: nothing would be compared.
        g_has, o_has = _number(gm.get(metric)), _number(om.get(metric))
        if g_has and not o_has:
            v.problems.append(
                f"the golden has {metric} {gm[metric]!r} but this run measured {om.get(metric)!r}; "
                "nothing to compare it with"
            )
        elif o_has and not g_has and metric in ("wer", "cer", "entity_acc"):
            v.problems.append(
                f"this run measured {metric} but the golden has {gm.get(metric)!r}; re-record the golden "
                "(--speechlab-update-golden) so that it can be gated"
            )


def _error_rate_checks(
    v: Verdict,
    golden: dict[str, Any],
    obtained: dict[str, Any],
    thresholds: dict[str, float],
    gate: str,
    bootstrap: int,
) -> None:
    """Append to ``v`` the WER and CER checks (one-sided, absolute tolerance; statistical gate on failure)."""
    from .hallucination import nonspeech_only

    gm, om = golden["metrics"], obtained.get("metrics") or {}
    for metric, tol_key in (("wer", "wer_abs"), ("cer", "cer_abs")):
        if not (_number(gm.get(metric)) and _number(om.get(metric))):
            continue
        if nonspeech_only(obtained):  # empty references: the hallucination metrics below gate this dataset
            v.checks.append(
                Check(
                    metric.upper(),
                    float(om[metric]),
                    float(gm[metric]),
                    "-",
                    "off",
                    "non-speech dataset (every reference empty): gated by HAL-WPM/HAL-RATE",
                )
            )
            continue
        tol = thresholds.get(tol_key, 0.0)
        g, o = float(gm[metric]), float(om[metric])
        check = Check(metric.upper(), o, g, f"+{tol:.4f} abs", "pass")
        if o > g + tol + 1e-12:
            check.status = "fail"
            check.note = f"+{o - g:.4f} over the golden"
        elif o < g - 1e-12:
            check.status = "improved"
            check.note = f"{o - g:+.4f}, better than the golden"
        if gate == "statistical" and check.status == "fail":
            _statistical(check, metric, golden, obtained, tol, bootstrap, thresholds.get("confidence", 0.95))
        v.checks.append(check)


def _entity_check(
    golden: dict[str, Any],
    obtained: dict[str, Any],
    thresholds: dict[str, float],
    gate: str,
    bootstrap: int,
) -> Check:
    """ENTITY: entity accuracy, gated one-sided with ``entity_abs``."""
    gm, om = golden["metrics"], obtained.get("metrics") or {}
    tol = thresholds.get("entity_abs", 0.02)
    g, o = float(gm["entity_acc"]), float(om["entity_acc"])
    check = Check("ENTITY", o, g, f"-{tol:.4f} abs", "pass")
    if o < g - tol - 1e-12:
        check.status, check.note = "fail", f"{o - g:+.4f} under the golden"
    elif o > g + 1e-12:
        check.status, check.note = "improved", f"{o - g:+.4f}, better than the golden"
    if gate == "statistical" and check.status == "fail":
        # The interval is over the entity miss rate (1 - accuracy), so "worse" is positive as for WER.
        _statistical(check, "entity", golden, obtained, tol, bootstrap, thresholds.get("confidence", 0.95))
    return check


def compare(
    golden: dict[str, Any],
    obtained: dict[str, Any],
    thresholds: dict[str, float],
    *,
    gate: str = "strict",
    rtf_gate: bool = True,
    force_rtf: bool = False,
    abs_rtf: bool = False,
    bootstrap: int = 2000,
) -> Verdict:
    """Compare an obtained case record with its golden; one-sided (only getting worse fails)."""
    v = Verdict("pass")
    _setting_problems(v, golden, obtained)
    gm, om = golden["metrics"], obtained.get("metrics") or {}
    _one_sided_metrics(v, gm, om)
    from .hallucination import gate as output_gate

    _error_rate_checks(v, golden, obtained, thresholds, gate, bootstrap)
    if _number(gm.get("entity_acc")) and _number(om.get("entity_acc")):
        v.checks.append(_entity_check(golden, obtained, thresholds, gate, bootstrap))
    if _number(om.get("rtf")):
        v.checks.append(_speed_check(golden, obtained, thresholds, rtf_gate))
    if _number(gm.get("rtf")) and _number(om.get("rtf")):
        v.checks.append(_rtf_check(golden, obtained, thresholds, rtf_gate, abs_rtf, force_rtf))
    for metric, key in (("RSS_MB", "case_peak_rss_mb"), ("GPU_MB", "cuda_peak_mb")):
        mem = _memory_check(metric, key, gm, om, thresholds)
        if mem is not None:
            v.checks.append(mem)
    checks, problems, notes = output_gate(golden, obtained, thresholds)  # catastrophic outputs, hallucination
    from .longform import gate as timing_gate

    more = timing_gate(golden, obtained, thresholds)  # long-form start error, precision/recall
    v.checks += checks + more[0]
    v.problems += problems + more[1]
    v.notes += notes + more[2]
    from .tts_quality import gate as quality_gate

    checks, problems, notes = quality_gate(golden, obtained, thresholds)  # TTS: DNSMOS
    v.checks += checks
    v.problems += problems
    v.notes += notes
    if v.problems or any(c.status == "fail" for c in v.checks):
        v.status = "fail"
    elif any(c.status == "improved" for c in v.checks):
        v.status = "improved"
    return v


SPEED_REL_MAX = 0.20  # relative-speed tolerance never looser than this (a 30% slowdown always fails)
SPEED_REL_MIN = 0.15  # ... and never tighter than this, whatever the measured noise
RSS_REL = 0.25
#: Memory growth below this many MB is allocator noise, whatever the ratio: measured in this project's own test
#: runs, where several sessions share one process, a case's peak moved by +29 to +103 MB with nothing changed
#: (arenas and caches left by earlier cases, a library's lazy state), and a fake backend's 0 MB golden met 9 MB.
RSS_FLOOR_MB = 128.0
NOT_COMPARED = "not-compared"


def speed_tolerance(thresholds: dict[str, float], band_golden: float, band_now: float) -> float:
    """The relative-speed tolerance: the larger reference noise band of the two runs, clamped to
    [``speed_rel_min``, ``speed_rel``] (defaults 15% and 20%)."""
    hi = thresholds.get("speed_rel", SPEED_REL_MAX)
    lo = min(hi, thresholds.get("speed_rel_min", SPEED_REL_MIN))
    return min(hi, max(lo, band_golden, band_now))


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _machine_class_difference(golden: dict[str, Any], obtained: dict[str, Any]) -> list[str]:
    """How the two runs' machines differ in what selects kernels (CPU model, CPU features, GPU), or []."""
    from .devices import machine_difference

    return machine_difference(golden.get("machine") or {}, obtained.get("machine") or {})


def _speed_check(
    golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float], rtf_gate: bool
) -> Check:
    """SPEED: the case's speed relative to its speed reference (see speed.py), gated one-sided.

    Not compared (and said so, never a silent pass) when the golden predates relative speed, when its
    speed was recorded on a saturated machine, when it was recorded on another machine class (CPU model or
    features), or when the two runs used different reference workloads."""
    gm, om = golden["metrics"], obtained["metrics"]
    g, o = _num(gm.get("speed_rel")), _num(om.get("speed_rel"))
    gref, oref = golden.get("speed_reference") or {}, obtained.get("speed_reference") or {}
    check = Check("SPEED", o, g, "-", NOT_COMPARED)
    if not rtf_gate:
        check.status, check.note = "off", "speed gate off for this run (see summary)"
    elif o is None:
        why = "this run measured no speed reference" + (
            f" (device {obtained.get('device')})" if obtained.get("device") != "cpu" else " (speed_reference: none)"
        )
        check.note = why
    elif g is None:
        check.note = "golden predates relative speed (no speed_rel): re-record the golden to gate speed"
    elif gref.get("usable") is False:
        check.note = f"the golden's speed is unusable: {gref.get('unusable_reason')}; re-record it on a quiet machine"
    elif golden.get("rtf_unreliable"):
        check.note = (
            f"the golden's speed is unusable ({golden['rtf_unreliable']}); re-record it on a quiet machine without -n"
        )
    elif (gref.get("workload"), gref.get("threads")) != (oref.get("workload"), oref.get("threads")):
        check.note = (
            f"speed reference differs: golden {gref.get('workload')} ({gref.get('threads')} threads), "
            f"now {oref.get('workload')} ({oref.get('threads')} threads); re-record the golden"
        )
    elif other_hardware := _machine_class_difference(golden, obtained):
        check.note = (
            f"the golden's speed was measured on other hardware ({'; '.join(other_hardware)}): the case/reference "
            "ratio does not travel between CPU classes (int8 and ONNX kernels differ by CPU features; README, "
            "'How speed is gated'); re-record the golden on this machine class to gate speed here"
        )
    elif gref.get("describe") != oref.get("describe"):
        check.note = (
            f"speed reference {oref.get('workload')} changed: golden timed {gref.get('describe')!r}, now "
            f"{oref.get('describe')!r}; re-record the golden"
        )
    else:
        tol = speed_tolerance(thresholds, _num(gm.get("speed_rel_band")) or 0.0, _num(om.get("speed_rel_band")) or 0.0)
        check.tolerance = f"x{1 + tol:.2f} rel"
        ratio = o / g if g else float("inf")
        check.status = "pass"
        check.note = f"{ratio:.2f}x the golden's speed relative to {oref.get('workload')}"
        if o > g * (1 + tol):
            check.status = "fail"
        elif o * (1 + tol) < g:
            check.status = "improved"
    return check


def _rtf_check(
    golden: dict[str, Any],
    obtained: dict[str, Any],
    thresholds: dict[str, float],
    rtf_gate: bool,
    abs_rtf: bool,
    force_rtf: bool,
) -> Check:
    """RTF: absolute real-time factor.  Reported, not gated, unless ``abs_rtf`` (identical machines only)
    or ``force_rtf`` (any machine)."""
    gm, om = golden["metrics"], obtained["metrics"]
    tol = thresholds.get("rtf_rel", 0.5)
    g, o = float(gm["rtf"]), float(om["rtf"])
    check = Check("RTF", o, g, f"x{1 + tol:.2f}", "pass")
    gmach, omach = golden.get("machine") or {}, obtained.get("machine") or {}
    keys = ("device_name", "cpu_model", "threads", "cpu_flags", "usable_cpus")
    comparable = all(gmach.get(k) == omach.get(k) for k in keys)
    ratio = f"{o / g:.2f}x the golden" if g else "golden RTF is 0"
    if not rtf_gate:
        check.status, check.note = "off", "RTF gate off for this run (see summary)"
    elif not (abs_rtf or force_rtf):
        check.status, check.tolerance = "reported", "-"
        check.note = (
            f"{ratio}; absolute RTF is reported, not gated (--speechlab-abs-rtf gates it on identical machines)"
        )
    elif not comparable and not force_rtf:
        check.status = "not-comparable"
        check.note = (
            f"golden measured on {_machine(gmach)}, this run on {_machine(omach)}; "
            "--speechlab-force-rtf compares anyway"
        )
    elif golden.get("rtf_unreliable") and not force_rtf:
        check.status = "not-comparable"
        check.note = (
            f"the golden's RTF is unreliable ({golden['rtf_unreliable']}); re-record it on a quiet machine "
            "without -n to gate speed"
        )
    elif o > g * (1 + tol):
        check.status, check.note = "fail", ratio
    elif o * (1 + tol) < g:
        # Faster only counts as an improvement beyond the same band that counts as a regression.
        check.status, check.note = "improved", ratio
    spread = om.get("rtf_rounds") or []
    if len(spread) > 1:
        check.note = (check.note + "; " if check.note else "") + f"rounds {min(spread):.4f}..{max(spread):.4f}"
    return check


def _memory_check(
    metric: str, key: str, gm: dict[str, Any], om: dict[str, Any], thresholds: dict[str, float]
) -> Check | None:
    """RSS_MB / GPU_MB: the case's own peak resident (or CUDA) memory, gated one-sided with ``rss_rel``
    (default +25%); memory travels between machines, unlike speed.  None when this run measured none."""
    g, o = _num(gm.get(key)), _num(om.get(key))
    if o is None:
        return None
    tol = thresholds.get("rss_rel", RSS_REL)
    check = Check(metric, o, g, f"x{1 + tol:.2f}", "pass")
    if g is None:
        check.status, check.tolerance = NOT_COMPARED, "-"
        check.note = f"golden predates the per-case peak ({key}): re-record the golden to gate memory"
    elif o > g * (1 + tol) and o - g > RSS_FLOOR_MB:
        check.status, check.note = "fail", f"{o / g:.2f}x the golden's peak" if g else "more memory than the golden"
    elif o > g * (1 + tol):
        check.note = f"+{o - g:.1f} MB over the golden's peak: within the {RSS_FLOOR_MB:.0f} MB allocator-noise floor"
    elif o * (1 + tol) < g:
        # Reported, not an "improved" verdict: less memory usually means allocations reused from the case
        # before (run order), not a leaner model.
        check.note = f"{o / g:.2f}x the golden's peak"
    return check


def _dataset_change(golden: dict[str, Any], obtained: dict[str, Any]) -> str | None:
    """How this run's utterances differ from the golden's (ids and references), or None when they are the
    same: scores over another set of utterances say nothing about getting worse (a swapped or trimmed
    dataset could pass with a lower WER)."""
    g_rows, o_rows = golden.get("utterances"), obtained.get("utterances")
    if not isinstance(g_rows, list) or not isinstance(o_rows, list) or not g_rows:
        return None

    def refs(rows: list[Any]) -> dict[str, Any]:
        return {str(r.get("id")): r.get("reference") for r in rows if isinstance(r, dict)}

    g, o = refs(g_rows), refs(o_rows)
    gone, new = sorted(set(g) - set(o)), sorted(set(o) - set(g))
    changed = sorted(k for k in set(g) & set(o) if g[k] is not None and o[k] is not None and g[k] != o[k])
    if not (gone or new or changed):
        return None

    def few(ids: list[str]) -> str:
        return ", ".join(ids[:5]) + (f", ... ({len(ids)})" if len(ids) > 5 else "")

    parts = (
        ([f"{len(gone)} only in the golden ({few(gone)})"] if gone else [])
        + ([f"{len(new)} only in this run ({few(new)})"] if new else [])
        + ([f"{len(changed)} with another reference text ({few(changed)})"] if changed else [])
    )
    return (
        "the dataset differs from the golden's: utterances " + "; ".join(parts) + "; scores over other "
        "utterances are not comparable. If the dataset change is intended, re-record the golden"
    )


def saturated(machine: dict[str, Any], cpus_key: str = "cpu_count") -> bool:
    """Whether other work left a run's CPU-bound timings meaningless (1-minute load above 1.5x the CPUs, counted by
    ``cpus_key``: ``cpu_count``, or ``usable_cpus`` where the affinity mask and CPU quota are known)."""
    load, cpus = machine.get("load_avg_1m"), machine.get(cpus_key) or machine.get("cpu_count")
    return (
        machine.get("device") == "cpu"
        and isinstance(load, (int, float))
        and isinstance(cpus, int)
        and load > 1.5 * cpus
    )


def _statistical(
    check: Check,
    metric: str,
    golden: dict[str, Any],
    obtained: dict[str, Any],
    tol: float,
    resamples: int,
    confidence: float,
) -> None:
    """Keep a strict failure only when a paired bootstrap over utterances says the regression is real."""
    key_e, key_n = {
        "wer": ("word_errors", "ref_words"),
        "cer": ("char_errors", "ref_chars"),
        "entity": ("entity_misses", "entity_total"),
    }[metric]
    g_rows = {r["id"]: r for r in golden.get("utterances", []) if metric != "entity" or key_n in r}
    o_rows = {r["id"]: r for r in obtained.get("utterances", []) if metric != "entity" or key_n in r}
    if set(g_rows) != set(o_rows) or not g_rows or any(key_e not in r for r in g_rows.values()):
        check.note += (
            "; statistical gate needs the same utterances with per-utterance errors in the golden: judged strictly"
        )
        return
    ids = sorted(g_rows)
    delta, low, high = bootstrap_delta(
        [(g_rows[i][key_e], g_rows[i][key_n]) for i in ids],
        [(o_rows[i][key_e], o_rows[i][key_n]) for i in ids],
        resamples=resamples,
        confidence=confidence,
    )
    what = "miss-rate delta" if metric == "entity" else "delta"
    interval = f"{what} {delta:+.4f}, {confidence:.0%} CI [{low:+.4f}, {high:+.4f}] over {len(ids)} utterances"
    if low <= 0:
        check.status = "noise"
        check.note = f"within noise: {interval} includes 0"
    else:
        check.note = f"real regression: {interval} excludes 0 and exceeds the {tol:.4f} tolerance"


def _policy(decode: dict[str, Any]) -> int:
    """The decode-settings policy a record was made under (1 before it was recorded: pytest-speechlab 0.1)."""
    p = decode.get("policy")
    return p if isinstance(p, int) and not isinstance(p, bool) else 1
