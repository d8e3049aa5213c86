"""What average WER hides: catastrophic outputs per utterance, and words emitted on non-speech.

* **Catastrophic output**: an utterance whose normalised hypothesis has more than
  :data:`LENGTH_RATIO` times the words of its reference, or whose raw hypothesis has a compression ratio
  above :data:`COMPRESSION_RATIO` (a repetition loop; the ratio is Whisper's own: UTF-8 bytes / zlib-compressed
  bytes, the test behind its ``compression_ratio_threshold`` of 2.4; raised to 1.1x the reference's own ratio
  when the reference itself repeats, see :func:`compression_limit`).  Counted per case as ``catastrophic``;
  gated one-sided by :func:`gate`.
* **Hallucination on non-speech**: utterances whose reference is empty are non-speech clips (silence, noise,
  music).  ``hallucination_wpm`` = words emitted per minute of non-speech audio, ``hallucination_rate`` =
  the share of those clips with any output after normalisation.  Silero VAD (shipped with faster-whisper,
  ONNX, no torch) measures the speech in each such clip (``vad_speech_s``): in a non-speech dataset (every
  reference empty) a clip in which it finds speech is an error; in a speech dataset such a clip (a forgotten
  transcript) is scored as before and left out of the non-speech metrics (``not_nonspeech`` on its row).

Everything here is additive to a case record: new per-utterance fields and new metric keys.  A golden
recorded before them lacks them; :func:`gate` says so instead of passing silently.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .datasets import DatasetError

LENGTH_RATIO = 3.0
COMPRESSION_RATIO = 2.4
REFERENCE_MARGIN = 1.1
# Silero VAD speech (seconds) tolerated in a clip whose reference is empty before it counts as speech.
VAD_SPEECH_MAX_S = 0.25
VAD_RATE = 16000


class NonSpeechError(DatasetError):
    """A clip with an empty reference holds speech (Silero VAD found it); the message names it and the fix."""


def compression_ratio(text: str) -> float:
    """Whisper's repetition test: UTF-8 bytes / zlib-compressed bytes (0 for empty text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def compression_limit(reference: str) -> float:
    """The compression ratio above which a hypothesis is a repetition loop: :data:`COMPRESSION_RATIO`, or
    10% above the reference's own ratio when the reference itself repeats (a recording that says the same
    sentences twice is not a loop; Whisper applies 2.4 per 30 s segment, where that rarely happens)."""
    return max(COMPRESSION_RATIO, REFERENCE_MARGIN * compression_ratio(reference))


def catastrophic_reason(ref_norm: str, hyp_norm: str, hypothesis: str) -> str | None:
    """Why one utterance's output is catastrophic, or None.

    The length rule needs reference words (an empty reference is a non-speech clip: what it emits is
    counted by the hallucination metrics); the repetition rule applies to every hypothesis.
    """
    ref_words, hyp_words = len(ref_norm.split()), len(hyp_norm.split())
    reasons = []
    if ref_words and hyp_words > LENGTH_RATIO * ref_words:
        reasons.append(f"{hyp_words} words for {ref_words} in the reference (> {LENGTH_RATIO:g}x)")
    cr, limit = compression_ratio(hypothesis), compression_limit(ref_norm)
    if cr > limit:
        reasons.append(f"compression ratio {cr:.2f} (> {limit:.2f}: a repetition loop)")
    return "; ".join(reasons) or None


def _severity(row: dict[str, Any]) -> float:
    """How far past its thresholds a flagged utterance is (the worst is printed)."""
    ref_words = len(str(row.get("ref_norm", "")).split())
    length = len(str(row.get("hyp_norm", "")).split()) / ref_words / LENGTH_RATIO if ref_words else 0.0
    return max(length, float(row.get("compression_ratio", 0.0)) / compression_limit(str(row.get("ref_norm", ""))))


#: Silero's speech regions per clip in this process, by (sha1 of the samples, rate): every model x device case of
#: a dataset asks about the same clips.
_VAD_REGIONS: dict[tuple[str, int], list[tuple[float, float]] | None] = {}


def vad_speech_seconds(audio: np.ndarray, sample_rate: int) -> float | None:
    """Seconds of speech Silero VAD (``faster_whisper.vad``) finds in ``audio``; None without faster-whisper."""
    regions = vad_regions(audio, sample_rate)
    return None if regions is None else float(sum(end - start for start, end in regions))


def vad_regions(audio: np.ndarray, sample_rate: int) -> list[tuple[float, float]] | None:
    """The speech regions ``(start_s, end_s)`` Silero VAD finds in ``audio``; None without faster-whisper."""
    import hashlib

    key = (hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest(), int(sample_rate))
    if key not in _VAD_REGIONS:
        _VAD_REGIONS[key] = _vad_regions(audio, sample_rate)
    return _VAD_REGIONS[key]


def _vad_regions(audio: np.ndarray, sample_rate: int) -> list[tuple[float, float]] | None:
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return None
    if sample_rate != VAD_RATE:
        import soxr

        audio = soxr.resample(audio, sample_rate, VAD_RATE, quality="HQ")
    chunks = get_speech_timestamps(np.ascontiguousarray(audio, dtype=np.float32), VadOptions())
    return [(c["start"] / VAD_RATE, c["end"] / VAD_RATE) for c in chunks]


def prepare_vad() -> bool:
    """Import Silero VAD and build its ONNX session now (both are cached for the process), so the memory a
    case measures does not include them only when it happens to be the session's first VAD user.  False
    without faster-whisper (the VAD checks then say so)."""
    try:
        from faster_whisper.vad import get_vad_model
    except ImportError:
        return False
    get_vad_model()
    return True


def vad_ident() -> str:
    """Which VAD confirmed the non-speech clips (recorded with the metrics)."""
    import importlib.metadata

    try:
        return f"silero (faster-whisper=={importlib.metadata.version('faster-whisper')})"
    except importlib.metadata.PackageNotFoundError:
        return "none (faster-whisper not installed: the non-speech clips were not checked for speech)"


def score_outputs(rows: list[dict[str, Any]], audios: Sequence[np.ndarray], sample_rate: int,
                  source: str = "") -> dict[str, Any]:
    """Annotate scored utterance ``rows`` (``compression_ratio``, ``catastrophic``, ``vad_speech_s``) and
    return the pooled metrics: ``catastrophic`` always, the hallucination metrics when some reference is empty.

    Raises :class:`NonSpeechError` when Silero VAD finds speech in a clip whose reference is empty.
    """
    # A non-speech dataset (every reference empty) is gated by these metrics alone: speech in it is an error.
    # In a speech dataset, a clip with a forgotten transcript is scored as before (its words are insertions)
    # and left out of the non-speech metrics.
    all_empty = all(not r["ref_norm"].strip() for r in rows)
    for row, audio in zip(rows, audios, strict=True):
        row["compression_ratio"] = round(compression_ratio(row["hypothesis"]), 4)
        reason = catastrophic_reason(row["ref_norm"], row["hyp_norm"], row["hypothesis"])
        if reason:
            row["catastrophic"] = reason
        if row["ref_norm"].strip():
            continue
        speech = vad_speech_seconds(audio, sample_rate)
        if speech is not None:
            row["vad_speech_s"] = round(speech, 3)
            if speech > VAD_SPEECH_MAX_S and not all_empty:
                row["not_nonspeech"] = (f"the reference is empty but Silero VAD finds {speech:.2f} s of speech: scored "
                                        "as a speech clip (its words are insertions), not as non-speech")
                continue
            if speech > VAD_SPEECH_MAX_S:
                raise NonSpeechError(
                    f"{source} (utterance {row['id']}): the reference is empty (a non-speech clip) but Silero VAD "
                    f"finds {speech:.2f} s of speech in {row.get('audio')}; its hallucination score would count real "
                    "words. Transcribe the clip in the manifest, or remove it")
    return pool_outputs(rows)


def pool_outputs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled catastrophic and hallucination metrics of rows annotated by :func:`score_outputs` (also
    used to join a chunked dataset's rows into its corpus metrics, chunks.py)."""
    flagged = sum(1 for r in rows if r.get("catastrophic"))
    rejected = sum(1 for r in rows if r.get("not_nonspeech"))
    nonspeech_s = 0.0
    words = 0
    emitting = 0
    n_nonspeech = 0
    for row in rows:
        if row["ref_norm"].strip() or row.get("not_nonspeech"):
            continue
        n_nonspeech += 1
        nonspeech_s += float(row["duration"])
        n = len(row["hyp_norm"].split())
        words += n
        emitting += 1 if n else 0
    out: dict[str, Any] = {"catastrophic": flagged}
    if rejected:
        out["empty_references_with_speech"] = rejected
    if n_nonspeech:
        out.update({
            "hallucination_wpm": words / (nonspeech_s / 60.0) if nonspeech_s else 0.0,
            "hallucination_rate": emitting / n_nonspeech,
            "nonspeech_clips": n_nonspeech,
            "nonspeech_seconds": round(nonspeech_s, 6),
            "nonspeech_words": words,
            "nonspeech_vad": vad_ident(),
        })
    return out


def nonspeech_only(record: dict[str, Any]) -> bool:
    """Whether every utterance of the record has an empty reference (WER/CER say nothing there)."""
    rows = record.get("utterances")
    if not isinstance(rows, list) or not rows:
        return False
    return all(isinstance(r, dict) and not str(r.get("ref_norm", r.get("reference", "x"))).strip() for r in rows)


def _num(x: Any) -> bool:
    """A finite number (golden's own test)."""
    from .checks import finite_number as _number

    return _number(x)


def worst_catastrophic(record: dict[str, Any]) -> str | None:
    """The worst flagged utterance with its word alignment (jiwer), as lines for the failure block."""
    rows = [r for r in record.get("utterances") or [] if isinstance(r, dict) and r.get("catastrophic")]
    if not rows:
        return None
    row = max(rows, key=_severity)
    text = (f"worst catastrophic output [{row['id']}]: {row['catastrophic']}\n"
            f"    REF: {row.get('reference', '')}\n    HYP: {row.get('hypothesis', '')}")
    ref, hyp = str(row.get("ref_norm", "")), str(row.get("hyp_norm", ""))
    if ref.strip():
        import jiwer

        align = jiwer.visualize_alignment(jiwer.process_words(ref, hyp or ""), show_measures=False)
        lines = [ln for ln in align.splitlines() if ln.strip() and not ln.startswith("===")]
        text += "\n    alignment (normalised; I = inserted, S = substituted, D = deleted):\n" + "\n".join(
            "      " + ln for ln in lines)
    return text


def gate(
    golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float]
) -> tuple[list[Any], list[str], list[str]]:
    """The catastrophic-output and hallucination checks of one case: ``(checks, problems, notes)``.

    * ``catastrophic``: fails above ``catastrophic_max`` when set (production models: 0 by default), else
      above the golden's count; a golden without a count holds the case to 0 (and a note says so).
    * ``hallucination_wpm`` / ``hallucination_rate``: one-sided against the golden, with
      ``hallucination_wpm_abs`` / ``hallucination_rate_abs``.
    """
    from .checks import Check

    checks: list[Check] = []
    problems: list[str] = []
    notes: list[str] = []
    gm, om = golden.get("metrics") or {}, obtained.get("metrics") or {}
    if _num(om.get("catastrophic")):
        count = int(om["catastrophic"])
        g_count: int | None = int(gm["catastrophic"]) if _num(gm.get("catastrophic")) else None
        if "catastrophic_max" in thresholds:
            limit, allowed = int(thresholds["catastrophic_max"]), f"<= {int(thresholds['catastrophic_max'])}"
        elif g_count is not None:
            limit, allowed = g_count, "<= golden"
        else:
            limit, allowed = 0, "<= 0"
            notes.append(
                "the golden has no catastrophic count (recorded before it was measured): held to 0; "
                "re-record the golden (--speechlab-update-golden) to gate against its own count"
            )
        cat = Check("CATASTR", float(count), None if g_count is None else float(g_count), allowed, "pass")
        if count > limit:
            cat.status = "fail"
            cat.note = (
                f"{count} utterance(s) with a catastrophic output (hypothesis > {LENGTH_RATIO:g}x the reference "
                f"or a repetition loop), {limit} allowed"
            )
            worst = worst_catastrophic(obtained)
            if worst:
                notes.append(worst)
        elif g_count is not None and count < g_count:
            cat.status, cat.note = "improved", f"{count} instead of {g_count}"
        checks.append(cat)
    for metric, tol_key, default, label in (
        ("hallucination_wpm", "hallucination_wpm_abs", 5.0, "HAL-WPM"),
        ("hallucination_rate", "hallucination_rate_abs", 0.0, "HAL-RATE"),
    ):
        g_has, o_has = _num(gm.get(metric)), _num(om.get(metric))
        if o_has and not g_has:
            problems.append(
                f"this run measured {metric} (the dataset has non-speech clips) but the golden has "
                f"{gm.get(metric)!r}; re-record the golden (--speechlab-update-golden) so that it can be gated"
            )
            continue
        if g_has and not o_has:
            problems.append(
                f"the golden has {metric} {gm[metric]!r} but this run measured {om.get(metric)!r}; "
                "nothing to compare it with"
            )
            continue
        if not g_has:
            continue
        tol = float(thresholds.get(tol_key, default))
        gv, ov = float(gm[metric]), float(om[metric])
        check = Check(label, ov, gv, f"+{tol:.4f} abs", "pass")
        if ov > gv + tol + 1e-12:
            check.status, check.note = "fail", f"+{ov - gv:.4f} over the golden: more output on non-speech"
        elif ov < gv - 1e-12:
            check.status, check.note = "improved", f"{ov - gv:+.4f}, better than the golden"
        checks.append(check)
    return checks, problems, notes
