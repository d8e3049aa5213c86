"""Long-form datasets: long recordings built from any manifest, with the start of every utterance known.

A dataset entry with ``longform:`` is built from its manifest's utterances, concatenated with gaps of silence::

    datasets:
      meeting:
        manifest: data/librispeech-dev/manifest.jsonl
        longform: {minutes: 10, gap_s: [0.3, 1.5], seed: 0, collar_ms: 200}

* ``minutes``: the length of each recording.  When one pass over the manifest (with its gaps) is shorter, the
  manifest is cycled to fill one recording; otherwise each utterance is used once and a recording is closed
  before the utterance that would take it past ``minutes`` (the last one keeps what is left).
* ``gap_s``: the silence between utterances, in seconds, or ``[lo, hi]``: drawn uniformly per gap (default 0.5).
* ``seed``: shuffles the utterances (and each cycle) and draws the gaps; left out, manifest order.
* ``collar_ms``: how close a hypothesis segment's start must be to an utterance's start to count (default 200).

Recordings are 16 kHz mono, written as 16-bit FLAC into the speechlab cache (rebuilt in every process: the
source audio decides, never a stale file) with a manifest beside them, so each case row names its recording
and hashes it like any audio.  The reference of a recording is its utterances' texts in order, so the case's
WER is the long-form WER.  Where the backend gives segment timestamps (``transcribe_segments``: faster-whisper,
openai-whisper, unless ``without_timestamps``), the case also measures how far each known utterance start is
from the nearest hypothesis segment start (median and p95 in ms) and the precision/recall of segment starts
within the collar (one-to-one, closest pairs first); :func:`gate` holds them against the golden.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

KEYS = ("minutes", "gap_s", "seed", "collar_ms")
SAMPLE_RATE = 16000
DEFAULT_GAP_S = 0.5
DEFAULT_COLLAR_MS = 200.0
#: Default tolerances: start error (median and p95) may grow by this many ms; precision/recall may fall this much.
TS_MS_ABS = 100.0
TS_PR_ABS = 0.05
METRICS = ("ts_start_median_ms", "ts_start_p95_ms", "ts_precision", "ts_recall")
#: A segment with words is "over non-speech" when less than this share of its span lies in Silero VAD speech.
NONSPEECH_OVERLAP_MAX = 0.2
VAD_WORDS_ABS = 0


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def problem(raw: Any) -> tuple[str, str] | None:
    """Why a ``longform:`` mapping is invalid, as ``(key, message)``, or None."""
    if not isinstance(raw, dict):
        return "", f"must be a mapping such as {{minutes: 10, gap_s: 0.5, seed: 0}}, got {raw!r}"
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        return unknown[0], f"unknown key; known: {', '.join(KEYS)}"
    minutes = raw.get("minutes")
    if not isinstance(minutes, (int, float)) or not _is_num(minutes) or minutes <= 0:
        return "minutes", f"is required: the length of each recording in minutes (a number > 0), got {minutes!r}"
    gap = raw.get("gap_s", DEFAULT_GAP_S)
    gaps = gap if isinstance(gap, list) else [gap]
    if (
        not gaps
        or len(gaps) > 2
        or not all(_is_num(g) and g >= 0 for g in gaps)
        or (len(gaps) == 2 and gaps[0] > gaps[1])
    ):
        return "gap_s", f"must be seconds of silence >= 0, or [lo, hi] with lo <= hi (drawn per gap), got {gap!r}"
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        return "seed", f"must be an integer >= 0 (or left out for manifest order), got {seed!r}"
    collar = raw.get("collar_ms", DEFAULT_COLLAR_MS)
    if not _is_num(collar) or collar <= 0:
        return "collar_ms", f"must be a number of milliseconds > 0, got {collar!r}"
    return None


def spec_of(raw: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec of a validated ``longform:`` mapping (what a case records)."""
    gap = raw.get("gap_s", DEFAULT_GAP_S)
    return {
        "minutes": float(raw["minutes"]),
        "gap_s": [float(g) for g in gap] if isinstance(gap, list) else float(gap),
        "seed": raw.get("seed"),
        "collar_ms": float(raw.get("collar_ms", DEFAULT_COLLAR_MS)),
        "sample_rate": SAMPLE_RATE,
    }


def plan(durations: list[float], spec: dict[str, Any]) -> list[list[tuple[int, float]]]:
    """The recordings as lists of ``(utterance index, start second)``: deterministic in ``spec``."""
    n = len(durations)
    target = float(spec["minutes"]) * 60.0
    seed = spec.get("seed")
    rng = np.random.default_rng(int(seed) if seed is not None else 0)
    gap = spec.get("gap_s", DEFAULT_GAP_S)

    def order() -> list[int]:
        return [int(i) for i in rng.permutation(n)] if seed is not None else list(range(n))

    def next_gap() -> float:
        if isinstance(gap, list):
            return float(gap[0]) if len(gap) == 1 else float(rng.uniform(gap[0], gap[1]))
        return float(gap)

    # Gaps are quantised to whole samples, so the starts are exact sample positions.
    def q(seconds: float) -> float:
        return round(seconds * SAMPLE_RATE) / SAMPLE_RATE

    first = order()
    # One pass shorter than a recording (even with the shortest gaps): cycle the manifest to fill one recording.
    shortest_gap = float(gap[0]) if isinstance(gap, list) else float(gap)
    cycle = sum(q(d) for d in durations) + (n - 1) * shortest_gap < target
    recordings: list[list[tuple[int, float]]] = [[]]
    t = 0.0
    queue = first
    while True:
        for i in queue:
            current = recordings[-1]
            g = q(next_gap()) if current else 0.0
            if current and t + g + q(durations[i]) > target:
                if cycle:
                    return recordings
                recordings.append([])
                t, g = 0.0, 0.0
            recordings[-1].append((i, t + g))
            t += g + q(durations[i])
        if not cycle:
            return recordings
        queue = order()


def build(name: str, dataset: Any, raw: dict[str, Any], cache: Path | None = None) -> Any:
    """The long-form version of ``dataset`` (a :class:`datasets.Dataset`): one utterance per built recording,
    its ``extra["longform"]`` holding the parts, their ids and their start/end seconds."""
    import dataclasses

    import soundfile as sf

    from .atomic import atomic_write_bytes
    from .datasets import Dataset, DatasetError, Utterance, load_audio

    spec = spec_of(raw)
    audios = []
    for u in dataset.utterances:
        if u.audio_path is None:
            raise DatasetError(f"{dataset.source}: longform: needs audio; {u.id} has none (a TTS manifest?)")
        if not u.text.strip():
            raise DatasetError(
                f"{dataset.source} (utterance {u.id}): longform: every utterance needs a reference "
                "(its start is scored); this one's is empty. Leave non-speech clips out of the manifest"
            )
        audios.append(load_audio(u.audio_path, SAMPLE_RATE, reference=u.text)[0])
    durations = [len(a) / SAMPLE_RATE for a in audios]
    key = hashlib.sha256(
        json.dumps([name, str(Path(dataset.source).resolve()), spec], sort_keys=True).encode("utf-8")
    ).hexdigest()[:16]
    if cache is None:
        from .backends.weights import cache_dir

        cache = cache_dir() / "longform"
    out_dir = Path(cache) / f"{name}-{key}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"{dataset.source}: longform: cannot write the built recordings to {out_dir} ({exc}); "
            "point SPEECHLAB_CACHE at a writable folder"
        ) from None
    rows: list[Any] = []
    manifest_lines = []
    for k, parts in enumerate(plan(durations, spec), start=1):
        last_i, last_start = parts[-1]
        total = round((last_start + durations[last_i]) * SAMPLE_RATE)
        signal = np.zeros(total, dtype=np.float32)
        for i, start in parts:
            at = round(start * SAMPLE_RATE)
            signal[at : at + len(audios[i])] = audios[i]
        rid = f"{name}-{k:02d}"
        dest = out_dir / f"{rid}.flac"
        import io

        buf = io.BytesIO()
        sf.write(buf, signal[:, None], SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        atomic_write_bytes(dest, buf.getvalue())
        u_list = dataset.utterances
        text = " ".join(u_list[i].text for i, _ in parts)
        info = {
            "parts": [u_list[i].id for i, _ in parts],
            "starts": [round(s, 6) for _, s in parts],
            "ends": [round(s + durations[i], 6) for i, s in parts],
            "collar_ms": spec["collar_ms"],
        }
        rows.append(Utterance(rid, text, dest, total / SAMPLE_RATE, {"longform": info}))
        manifest_lines.append(
            json.dumps(
                {
                    "audio_filepath": dest.name,
                    "text": text,
                    "id": rid,
                    "duration": round(total / SAMPLE_RATE, 6),
                    "longform": info,
                }
            )
            + "\n"
        )
    manifest = out_dir / "manifest.jsonl"
    atomic_write_bytes(manifest, "".join(manifest_lines).encode("utf-8"))
    out: Dataset = dataclasses.replace(dataset, name=name, source=manifest, utterances=tuple(rows))
    return out


def is_longform(dataset: Any) -> bool:
    """Whether ``dataset``'s utterances are built long-form recordings (their starts are known)."""
    return any("longform" in u.extra for u in dataset.utterances)


def no_timestamps_reason(model: Any) -> str | None:
    """Why ``model`` gives no usable segment timestamps, or None when it does."""
    if not callable(getattr(model, "transcribe_segments", None)):
        return f"no timestamps: the {type(model).__name__} backend gives no segment timestamps"
    if getattr(model, "offers_segments", None) is False:  # an http model whose server has no verbose_json
        return "no timestamps: the server does not offer response_format verbose_json (or timestamps: off)"
    if (getattr(model, "decode_settings", None) or {}).get("without_timestamps") is True:
        return "no timestamps: the model decodes with without_timestamps: true (segment starts would be window starts)"
    return None


class SegmentTap:
    """Transcribes through ``transcribe_segments`` so the timed calls also give the segments (same decode, same
    text as ``transcribe``); keeps the segments of the first ``n`` calls (the scored round)."""

    def __init__(self, model: Any, n: int) -> None:
        self.model = model
        self.n = n
        self.segments: list[list[dict[str, Any]]] = []

    def transcribe(self, audio: Any) -> str:
        segs = self.model.transcribe_segments(audio)
        if len(self.segments) < self.n:
            self.segments.append(segs)
        return "".join(str(s.get("text", "")) for s in segs).strip()

    def fill(self, audios: list[Any]) -> None:
        """Segments for the recordings the timed rounds did not tap (a batched model): one untimed call each."""
        while len(self.segments) < min(self.n, len(audios)):
            self.segments.append(self.model.transcribe_segments(audios[len(self.segments)]))


def tap_for(model: Any, dataset: Any) -> tuple[SegmentTap | None, Callable[[Any], str]]:
    """``(tap, transcribe)`` for one case: a tap when the dataset is long-form and the model gives timestamps."""
    if is_longform(dataset) and no_timestamps_reason(model) is None:
        tap = SegmentTap(model, len(dataset.utterances))
        return tap, tap.transcribe
    return None, model.transcribe


def match_starts(ref: list[float], hyp: list[float], collar_s: float) -> int:
    """How many reference starts pair one-to-one with a hypothesis start within ``collar_s`` (closest first)."""
    pairs = sorted((abs(r - h), i, j) for i, r in enumerate(ref) for j, h in enumerate(hyp) if abs(r - h) <= collar_s)
    used_r: set[int] = set()
    used_h: set[int] = set()
    for _, i, j in pairs:
        if i not in used_r and j not in used_h:
            used_r.add(i)
            used_h.add(j)
    return len(used_r)


def over_nonspeech(segs: list[dict[str, Any]], speech: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """The segments with words of which less than ``NONSPEECH_OVERLAP_MAX`` of the span lies in ``speech``
    (VAD regions, seconds): words a model wrote where the VAD heard no one speak."""
    out = []
    for s in segs:
        words = re.findall(r"\w+", str(s.get("text", "")))
        if not words:
            continue
        start, end = float(s["start"]), float(s["end"])
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in speech)
        if overlap < NONSPEECH_OVERLAP_MAX * max(end - start, 1e-9):
            out.append({"start": round(start, 3), "end": round(end, 3), "text": str(s.get("text", "")).strip(),
                        "words": len(words)})
    return out


def vad_flags(rows: list[dict[str, Any]], segments: list[list[dict[str, Any]]], audios: list[Any] | None,
              sample_rate: int) -> dict[str, Any]:
    """Silero VAD over each long recording; segments over its non-speech are listed on the row and counted."""
    from .hallucination import vad_ident, vad_regions

    if audios is None:
        return {}
    total = flagged_segments = 0
    for row, segs, audio in zip(rows, segments, audios, strict=True):
        speech = vad_regions(audio, sample_rate)
        if speech is None:
            return {"vad": "no VAD: faster-whisper (Silero VAD) is not installed"}
        flagged = over_nonspeech(segs, speech)
        row["segments_over_nonspeech"] = flagged
        total += sum(f["words"] for f in flagged)
        flagged_segments += len(flagged)
    return {"vad": vad_ident(), "vad_nonspeech_words": total, "vad_nonspeech_segments": flagged_segments}


def score(dataset: Any, rows: list[dict[str, Any]], model: Any, tap: SegmentTap | None,
          audios: list[Any] | None = None) -> dict[str, Any]:
    """The long-form timing metrics of a case (and per-row starts), or the reason there are none; with the
    recordings (``audios``, at the model's rate), words over Silero VAD non-speech too."""
    reason = no_timestamps_reason(model)
    if tap is None or reason is not None:
        return {"timestamps": reason or "no timestamps: the segments were not captured"}
    collar_ms = float(dataset.utterances[0].extra["longform"].get("collar_ms", DEFAULT_COLLAR_MS))
    errors: list[float] = []
    matched = n_ref = n_hyp = 0
    for u, row, segs in zip(dataset.utterances, rows, tap.segments, strict=True):
        ref = [float(s) for s in u.extra["longform"]["starts"]]
        hyp = sorted(float(s["start"]) for s in segs if str(s.get("text", "")).strip())
        for r in ref:  # no segment at all: the whole recording's length is the error
            errors.append(1000.0 * (min(abs(r - h) for h in hyp) if hyp else float(row["duration"])))
        m = match_starts(ref, hyp, collar_ms / 1000.0)
        row.update({"ref_starts": ref, "segment_starts": [round(h, 3) for h in hyp], "starts_matched": m})
        matched, n_ref, n_hyp = matched + m, n_ref + len(ref), n_hyp + len(hyp)
    from .metrics import percentile

    return {
        "timestamps": f"segment starts ({type(model).__name__}.transcribe_segments)",
        "ts_start_median_ms": round(percentile(errors, 50), 3),
        "ts_start_p95_ms": round(percentile(errors, 95), 3),
        "ts_precision": round(matched / n_hyp, 6) if n_hyp else 0.0,
        "ts_recall": round(matched / n_ref, 6) if n_ref else 0.0,
        "ts_collar_ms": collar_ms,
        "ts_ref_starts": n_ref,
        "ts_hyp_starts": n_hyp,
        **vad_flags(rows, tap.segments, audios, int(getattr(model, "sample_rate", SAMPLE_RATE))),
    }


def gate(
    golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float]
) -> tuple[list[Any], list[str], list[str]]:
    """The long-form timing checks of one case: ``(checks, problems, notes)``.

    Start error (median, p95) may exceed the golden's by ``ts_start_ms_abs`` ms (default 100); precision and
    recall may fall by ``ts_pr_abs`` (default 0.05).  A golden without them is said so (not compared, with how to
    re-record), a run without them against a golden with them fails, and a backend without timestamps is
    reported as such, never faked.
    """
    from .checks import Check
    from .checks import finite_number as _number

    gm, om = golden.get("metrics") or {}, obtained.get("metrics") or {}
    checks: list[Any] = []
    problems: list[str] = []
    notes: list[str] = []
    _vad_gate(gm, om, thresholds, checks, problems, notes, obtained.get("utterances") or [])
    g_has = all(_number(gm.get(k)) for k in METRICS)
    o_has = all(_number(om.get(k)) for k in METRICS)
    if not o_has:
        if g_has:
            problems.append(
                f"the golden has long-form timestamp metrics but this run measured none "
                f"({om.get('timestamps') or 'not a long-form dataset'}); nothing to compare them with"
            )
        elif isinstance(om.get("timestamps"), str):
            checks.append(Check("TS", None, None, "-", "off", f"{om['timestamps']}; start error not gated"))
        return checks, problems, notes
    if not g_has:
        notes.append(
            "the golden has no long-form timestamp metrics (recorded before they were measured): start "
            f"error median {om['ts_start_median_ms']:.0f} ms, p95 {om['ts_start_p95_ms']:.0f} ms, "
            f"precision {om['ts_precision']:.3f}, recall {om['ts_recall']:.3f} are reported, not gated; "
            "re-record the golden (--speechlab-update-golden) to gate them"
        )
        checks.append(
            Check("TS", None, None, "-", "not-compared", "golden predates long-form timestamps: re-record it")
        )
        return checks, problems, notes
    if float(gm.get("ts_collar_ms", DEFAULT_COLLAR_MS)) != float(om.get("ts_collar_ms", DEFAULT_COLLAR_MS)):
        problems.append(
            f"the timestamp collar differs from the golden's ({gm.get('ts_collar_ms')} ms vs "
            f"{om.get('ts_collar_ms')} ms): precision/recall are not comparable; re-record the golden"
        )
    ms_tol = float(thresholds.get("ts_start_ms_abs", TS_MS_ABS))
    pr_tol = float(thresholds.get("ts_pr_abs", TS_PR_ABS))
    for key, label in (("ts_start_median_ms", "TS-MED"), ("ts_start_p95_ms", "TS-P95")):
        g, o = float(gm[key]), float(om[key])
        c = Check(label, o, g, f"+{ms_tol:.0f} ms", "pass")
        if o > g + ms_tol + 1e-9:
            c.status, c.note = (
                "fail",
                f"utterance starts {o - g:+.0f} ms further from the segment starts than the golden's",
            )
        elif o < g - 1e-9:
            c.status, c.note = "improved", f"{o - g:+.0f} ms"
        checks.append(c)
    for key, label in (("ts_precision", "TS-PREC"), ("ts_recall", "TS-REC")):
        g, o = float(gm[key]), float(om[key])
        c = Check(label, o, g, f"-{pr_tol:.4f} abs", "pass")
        if o < g - pr_tol - 1e-12:
            c.status, c.note = "fail", f"{o - g:+.4f} under the golden (starts within {om.get('ts_collar_ms'):.0f} ms)"
        elif o > g + 1e-12:
            c.status, c.note = "improved", f"{o - g:+.4f}"
        checks.append(c)
    return checks, problems, notes


def _vad_gate(gm: dict[str, Any], om: dict[str, Any], thresholds: dict[str, float], checks: list[Any],
              problems: list[str], notes: list[str], rows: list[dict[str, Any]]) -> None:
    """Words over VAD non-speech in long recordings may exceed the golden's count by ``vad_words_abs`` (0)."""
    from .checks import Check

    g, o = gm.get("vad_nonspeech_words"), om.get("vad_nonspeech_words")
    if o is None:
        if g is not None:
            problems.append(f"the golden counts words over VAD non-speech ({g}) but this run could not "
                            f"({om.get('vad') or om.get('timestamps') or 'no long-form segments'})")
        return
    if g is None:
        notes.append(f"the golden has no VAD count of words over non-speech (recorded before it was measured): "
                     f"{o} now, reported, not gated; re-record the golden (--speechlab-update-golden) to gate it")
        checks.append(Check("VAD-WORDS", float(o), None, "-", "not-compared", "golden predates it: re-record"))
        return
    tol = int(thresholds.get("vad_words_abs", VAD_WORDS_ABS))
    c = Check("VAD-WORDS", float(o), float(g), f"+{tol}", "pass")
    if o > g + tol:
        worst = [f for r in rows for f in r.get("segments_over_nonspeech") or []]
        where = "; ".join(f"{f['start']:.1f}-{f['end']:.1f} s {f['text']!r}" for f in worst[:3])
        c.status, c.note = "fail", f"{o - g:+d} words where Silero VAD hears no speech: {where}"
    elif o < g:
        c.status, c.note = "improved", f"{o - g:+d} words"
    checks.append(c)
