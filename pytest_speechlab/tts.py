"""TTS evaluation: text-only datasets, round-trip intelligibility through a judge ASR model, audio sanity.

A TTS case synthesises every sentence of a text dataset, measures the audio (sample rate, duration per
character, clipping, leading/trailing silence, RMS level, NaN/inf), transcribes it with a *judge* ASR model
(by default the bundled faster-whisper tiny.en) and scores the transcript against the input text with the
same normaliser and pooled WER/CER as ASR cases.  Rows use the ASR row keys (``reference`` = the input
text, ``hypothesis`` = what the judge heard) so the golden machinery treats both tasks alike.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Audio, BackendError, ModelSpec
from .datasets import DatasetError
from .evaluation import MIN_TIMED_AUDIO_S, adaptive_rounds
from .metrics import (
    Normalizer,
    case_memory_mb,
    case_peak_rss_mb,
    cuda_peak_mb,
    get_normalizer,
    pool,
    reset_case_peak,
    rss_mb,
    utterance_errors,
    utterance_wer,
)
from .speed import DEFAULT_RUNS, Pacer, Workload

Progress = Callable[[int, int], None]
Runner = Callable[[Callable[[], None], int], None]


class TTSDatasetError(DatasetError, ValueError):
    """A TTS text dataset is unusable; the message names the file (and line) and the fix."""


class JudgeUnavailable(BackendError):
    """The judge ASR model cannot be loaded (not installed, unknown backend, missing weights)."""


# --------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class TTSItem:
    """One sentence to synthesise."""

    id: str
    text: str
    line: int = 0


@dataclass(frozen=True)
class TTSDataset:
    """A loaded text dataset: its name, its manifest and its sentences."""

    name: str
    source: Path
    items: tuple[TTSItem, ...]

    def __len__(self) -> int:
        return len(self.items)


def load_tts_manifest(path: Path | str, name: str | None = None) -> TTSDataset:
    """Read a text-only JSONL manifest: one object per line with ``text`` and an optional ``id``.

    Blank lines are skipped.  Errors name the file and line: missing file, invalid JSON, a row that is not
    an object, missing/empty/non-string ``text``, duplicate ids, no rows at all.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a manifest file" if path.is_dir() else "not found"
        raise TTSDatasetError(
            f"{path}: TTS manifest {what}; fix 'manifest:' in speechlab.yaml (a JSONL file of {{\"text\": ...}} lines)"
        )
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise TTSDatasetError(f"{path}:{bad_line}: manifest is not UTF-8 ({exc.reason}); re-save it as UTF-8") from None
    items: list[TTSItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TTSDatasetError(
                f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno}); each line must be one JSON object "
                'such as {"id": "s1", "text": "Hello there."}'
            ) from None
        if not isinstance(obj, dict):
            raise TTSDatasetError(f"{path}:{lineno}: each line must be a JSON object, got {type(obj).__name__}")
        text = obj.get("text")
        if not isinstance(text, str):
            raise TTSDatasetError(
                f"{path}:{lineno}: row has no 'text' string (the sentence to synthesise); add \"text\": \"...\""
            )
        if not text.strip():
            raise TTSDatasetError(f"{path}:{lineno}: 'text' is empty; a TTS row needs words to synthesise")
        uid = obj.get("id", f"{lineno:04d}")
        if not isinstance(uid, (str, int)) or isinstance(uid, bool) or not str(uid).strip():
            raise TTSDatasetError(f"{path}:{lineno}: 'id' must be a non-empty string or number, got {uid!r}")
        uid = str(uid)
        if uid in seen:
            raise TTSDatasetError(
                f"{path}:{lineno}: duplicate id {uid!r} (first on line {seen[uid]}); ids must be unique"
            )
        seen[uid] = lineno
        items.append(TTSItem(uid, text, lineno))
    if not items:
        raise TTSDatasetError(
            f'{path}: TTS manifest has no rows; add at least one line like {{"text": "Hello there."}}'
        )
    return TTSDataset(name or path.parent.name, path, tuple(items))


# --------------------------------------------------------------------------------------------- judge


DEFAULT_JUDGE = ModelSpec("judge", "faster-whisper", "bundled:tiny.en", options={"beam_size": 5, "language": "en"})


class JudgeASR:
    """An ASR model used as the listener of a TTS round trip; remembers what it is, for goldens."""

    def __init__(self, model: Any, spec: ModelSpec, device: str) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.sample_rate: int = int(model.sample_rate)
        self.decode_settings: dict[str, Any] = dict(getattr(model, "decode_settings", {}))

    def transcribe(self, audio: Audio) -> str:
        """What the judge hears in ``audio`` (float32 mono at :attr:`sample_rate`)."""
        text: str = self.model.transcribe(audio)
        return text

    def ident(self) -> dict[str, Any]:
        """What a golden records about the judge: a different judge makes round-trip scores incomparable."""
        return {"backend": self.spec.backend, "weights": self.spec.weights, "decode": self.decode_settings}


def load_judge(spec: ModelSpec | None = None, device: str = "cpu") -> JudgeASR:
    """Load the judge ASR model (default: the bundled faster-whisper tiny.en on cpu).

    Raises :class:`JudgeUnavailable` with the reason and the fix when it cannot be loaded, so a caller can
    turn it into a skip.
    """
    from .backends import get_backend

    spec = spec or DEFAULT_JUDGE
    where = f"TTS judge model {spec.name!r} ({spec.backend} {spec.weights or ''})".replace(" )", ")")
    try:
        backend = get_backend(spec.backend)
    except KeyError:
        from .backends import REGISTRY

        raise JudgeUnavailable(
            f"{where}: unknown backend {spec.backend!r}; known backends: {', '.join(sorted(REGISTRY))}. "
            "Set the judge to an installed ASR model"
        ) from None
    if "asr" not in backend.tasks:
        raise JudgeUnavailable(
            f"{where}: backend {spec.backend!r} does not transcribe (tasks: {', '.join(backend.tasks)})"
        )
    try:
        model = backend.load(spec, device)
    except BackendError as exc:
        raise JudgeUnavailable(f"{where} is not available: {exc}") from exc
    return JudgeASR(model, spec, device)


# --------------------------------------------------------------------------------------------- sanity

# Thresholds of the audio sanity checks: absolute bands, not golden-relative.  speechlab.yaml
# ``thresholds:`` (global, per model, per dataset) may override each under the same key.
SANITY_DEFAULTS: dict[str, float] = {
    "sec_per_char_min": 0.03,  # faster than ~33 chars/s is truncated or garbled audio
    "sec_per_char_max": 0.25,  # slower than 4 chars/s is stretched audio or padding (numbers expand: keep slack)
    "clipping_max": 0.001,  # share of samples at full scale; a peak-normalised voice has a handful
    "silence_max_s": 0.5,  # longest leading or trailing silence
    "rms_min_dbfs": -35.0,
    "rms_max_dbfs": -6.0,
    "roundtrip_wer_max": 0.5,  # absolute ceiling on pooled round-trip WER, golden or not
}

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped (float audio in [-1, 1])
SILENCE_DBFS = -45.0  # a 10 ms frame quieter than this is silence
FRAME_S = 0.010


def _dbfs(x: float) -> float:
    return 20.0 * math.log10(x) if x > 1e-10 else -200.0


def audio_sanity(audio: Audio, sample_rate: int, text: str) -> dict[str, Any]:
    """Measurements of one synthesised utterance (NaN/inf samples count as zero for the level figures)."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    nonfinite = int(a.size - np.count_nonzero(np.isfinite(a)))
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    n = a.size
    duration = n / sample_rate if sample_rate > 0 else 0.0
    chars = len("".join(text.split())) or 1
    rms = float(np.sqrt(np.mean(a * a))) if n else 0.0
    frame = max(1, round(FRAME_S * sample_rate))
    nframes = n // frame
    if nframes:
        f = a[: nframes * frame].reshape(nframes, frame)
        loud = 20.0 * np.log10(np.sqrt(np.mean(f * f, axis=1)) + 1e-10) >= SILENCE_DBFS
        idx = np.flatnonzero(loud)
        if idx.size:
            lead = idx[0] * frame / sample_rate
            trail = (n - (idx[-1] + 1) * frame) / sample_rate
        else:
            lead = trail = duration
    else:
        lead = trail = duration
    return {
        "duration": round(duration, 6),
        "sec_per_char": round(duration / chars, 6),
        "clipping_ratio": round(float(np.count_nonzero(np.abs(a) >= CLIP_LEVEL)) / n, 6) if n else 0.0,
        "leading_silence_s": round(float(lead), 4),
        "trailing_silence_s": round(float(trail), 4),
        "rms_dbfs": round(_dbfs(rms), 3),
        "peak": round(float(np.max(np.abs(a))) if n else 0.0, 6),
        "nonfinite": nonfinite,
    }


# --------------------------------------------------------------------------------------------- evaluation


def _loop(fn: Callable[[], None], rounds: int) -> None:
    for _ in range(rounds):
        fn()


def _synth_timed(model: Any, text: str, stream: bool) -> tuple[Audio, int, float, float | None]:
    """Synthesise ``text``: (audio, sample_rate, seconds, time-to-first-audio or None)."""
    if stream:
        chunks: list[Audio] = []
        t0 = time.perf_counter()
        first: float | None = None
        it: Iterator[Audio] = model.synthesize_stream(text)
        for chunk in it:
            if first is None:
                first = time.perf_counter() - t0
            chunks.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
        secs = time.perf_counter() - t0
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return audio.astype(np.float32, copy=False), int(model.sample_rate), secs, first
    t0 = time.perf_counter()
    audio, sr = model.synthesize(text)
    secs = time.perf_counter() - t0
    return np.asarray(audio, dtype=np.float32).reshape(-1), int(sr), secs, None


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass
class TTSResult:
    """The outcome of one TTS model × dataset run.

    ``metrics``: pooled round-trip ``wer``/``cer`` (and S/D/I counts), ``rtf`` (synthesis seconds / audio
    seconds, median over rounds), ``ttfa_s``/``ttfa_p95_s`` when the model streams, and sanity aggregates.
    ``rows``: one dict per sentence (``id``, ``reference`` = input text, ``hypothesis`` = what the judge heard,
    ``wer``, ``cer``, ``duration``, ``seconds``, sanity values).  ``audio_files`` maps each id to the WAV
    kept under ``audio_dir`` (outside the rows, so goldens do not record temp paths).
    """

    dataset: str
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    decode: dict[str, Any]
    normalizer: dict[str, str]
    judge: dict[str, Any]
    audio_dir: Path
    audio_files: dict[str, str]
    deterministic: bool
    sample_rate: int
    thresholds: dict[str, float] = field(default_factory=dict)
    speed_reference: dict[str, Any] = field(default_factory=dict)
    rounds: int = 1

    def sanity_thresholds(self, thresholds: dict[str, float] | None = None) -> dict[str, float]:
        """The defaults, overridden by the result's own thresholds, overridden by ``thresholds``."""
        return {**SANITY_DEFAULTS, **self.thresholds, **(thresholds or {})}

    def row_violations(self, row: dict[str, Any], thresholds: dict[str, float] | None = None) -> list[str]:
        """Why one sentence's audio fails the sanity checks (empty when it passes)."""
        t = self.sanity_thresholds(thresholds)
        out: list[str] = []
        if row["sample_rate"] != self.sample_rate:
            out.append(f"sample rate {row['sample_rate']} Hz, but the model declares {self.sample_rate} Hz")
        if row["nonfinite"]:
            out.append(f"{row['nonfinite']} NaN/inf samples")
        if row["duration"] <= 0:
            out.append("no audio (0 samples)")
        spc = row["sec_per_char"]
        if spc < t["sec_per_char_min"]:
            out.append(
                f"{spc:.4f} s/char < min {t['sec_per_char_min']} (sec_per_char_min): audio too short, truncated?"
            )
        elif spc > t["sec_per_char_max"]:
            out.append(
                f"{spc:.4f} s/char > max {t['sec_per_char_max']} (sec_per_char_max): audio too long, padded or "
                f"stretched?"
            )
        if row["clipping_ratio"] > t["clipping_max"]:
            out.append(f"clipping ratio {row['clipping_ratio']:.4f} > max {t['clipping_max']} (clipping_max)")
        if row["leading_silence_s"] > t["silence_max_s"]:
            out.append(f"leading silence {row['leading_silence_s']:.2f} s > max {t['silence_max_s']} s (silence_max_s)")
        if row["trailing_silence_s"] > t["silence_max_s"]:
            out.append(
                f"trailing silence {row['trailing_silence_s']:.2f} s > max {t['silence_max_s']} s (silence_max_s)"
            )
        if row["duration"] > 0 and not t["rms_min_dbfs"] <= row["rms_dbfs"] <= t["rms_max_dbfs"]:
            out.append(
                f"RMS level {row['rms_dbfs']:.1f} dBFS outside [{t['rms_min_dbfs']}, {t['rms_max_dbfs']}] "
                "(rms_min_dbfs/rms_max_dbfs)"
            )
        return out

    def check_sanity(self, thresholds: dict[str, float] | None = None) -> list[str]:
        """Human-readable violations of the audio sanity and round-trip ceilings (empty list: all fine).

        Each line names the sentence, the measured value, the threshold and its config key, and the WAV
        to listen to.
        """
        t = self.sanity_thresholds(thresholds)
        out: list[str] = []
        for row in self.rows:
            for v in self.row_violations(row, t):
                out.append(f"{row['id']} {_short(row['reference'])!r}: {v}; listen: {self.audio_files[row['id']]}")
        wer = self.metrics["wer"]
        if wer > t["roundtrip_wer_max"]:
            worst = sorted(self.rows, key=lambda r: -r["wer"])[:3]
            heard = "; ".join(
                f"{r['id']} input {r['reference']!r} heard {r['hypothesis']!r} (WER {r['wer']:.2f}, listen: "
                f"{self.audio_files[r['id']]})"
                for r in worst
            )
            out.append(
                f"round-trip WER {wer:.4f} > max {t['roundtrip_wer_max']} (roundtrip_wer_max): the judge "
                f"cannot understand the voice; worst: {heard}"
            )
        return out

    def failing_audio(self, thresholds: dict[str, float] | None = None) -> list[Path]:
        """WAV paths of the sentences that violate a sanity check or were mostly misheard (WER > ceiling)."""
        t = self.sanity_thresholds(thresholds)
        return [
            Path(self.audio_files[r["id"]])
            for r in self.rows
            if self.row_violations(r, t) or r["wer"] > t["roundtrip_wer_max"]
        ]

    def audio_paths(self, ids: Sequence[str] | None = None) -> list[Path]:
        """WAV paths of the given sentence ids (all when None), for a person to listen to."""
        want = None if ids is None else set(ids)
        return [Path(self.audio_files[r["id"]]) for r in self.rows if want is None or r["id"] in want]

    def record(self) -> dict[str, Any]:
        """Plain JSON-able data in the shape of an ASR case record (``metrics``, ``utterances``, ...)."""
        return {
            "task": "tts",
            "dataset": self.dataset,
            "metrics": self.metrics,
            "utterances": self.rows,
            "decode": {**self.decode, "judge": self.judge},
            "normalizer": self.normalizer,
            "deterministic": self.deterministic,
            "audio_dir": str(self.audio_dir),
            "audio_files": self.audio_files,
        }


def evaluate_tts(
    model: Any,
    dataset: TTSDataset | Sequence[TTSItem],
    judge: Any,
    *,
    normalizer: str | Normalizer = "whisper-en",
    rounds: int | None = 1,
    runner: Runner = _loop,
    stream: bool | None = None,
    audio_dir: Path | str | None = None,
    progress: Progress | None = None,
    thresholds: dict[str, float] | None = None,
    reference: Workload | None = None,
    reference_runs: int = DEFAULT_RUNS,
    min_timed_audio_s: float = MIN_TIMED_AUDIO_S,
    dnsmos: bool = False,
) -> TTSResult:
    """Synthesise every sentence (timed, after one warm-up call), measure it, and have ``judge`` transcribe it.

    ``model`` has ``sample_rate``, ``decode_settings``, ``synthesize(text) -> (audio, sr)`` and optionally
    ``synthesize_stream(text)`` yielding chunks (used when ``stream`` is None or True, giving time to first
    audio).  ``judge`` is any object with ``sample_rate`` and ``transcribe(audio) -> str``; the audio is
    resampled to its rate with soxr.  ``rounds`` > 1 re-synthesises everything to steady the RTF (median
    round) and to tell whether synthesis is deterministic.  ``dnsmos`` scores every sentence with DNSMOS
    (``tts_quality``: rows and metrics gain ``dnsmos_sig/bak/ovrl/p808``).  Every sentence's audio is written as
    a float WAV under ``audio_dir`` (a new temp folder when None) so a failing case can be listened to.
    """
    import soundfile as sf
    import soxr

    items = tuple(dataset.items) if isinstance(dataset, TTSDataset) else tuple(dataset)
    name = dataset.name if isinstance(dataset, TTSDataset) else "adhoc"
    if not items:
        raise TTSDatasetError(f"dataset {name!r} has no sentences")
    norm = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    for it in items:
        if not norm(it.text):
            where = f"{dataset.source}:{it.line}" if isinstance(dataset, TTSDataset) else f"sentence {it.id!r}"
            raise TTSDatasetError(
                f"{where}: text {it.text!r} is empty after the {norm.name} normaliser, so round-trip WER is "
                "undefined; give the sentence words"
            )
    use_stream = hasattr(model, "synthesize_stream") if stream is None else stream
    if use_stream and not hasattr(model, "synthesize_stream"):
        raise BackendError(f"{type(model).__name__} does not stream (no synthesize_stream); use stream=None")
    out_dir = Path(audio_dir) if audio_dir is not None else Path(tempfile.mkdtemp(prefix=f"speechlab-tts-{name}-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    case_peak = reset_case_peak()  # this case's own memory peak, model already resident
    start_rss = rss_mb()
    n = len(items)
    # Warm-up on the shortest sentence (first-call costs, session setup, espeak-ng init, allocations, are not
    # synthesis speed); its audio is also the determinism check: the first timed pass must give it again.
    shortest = min(range(n), key=lambda i: len(items[i].text))
    warm_audio, warm_sr, _, _ = _synth_timed(model, items[shortest].text, use_stream)
    if rounds is None:
        # Adaptive: the audio length is not known before synthesis; the warm-up's seconds per character
        # estimate it, and passes are added until min_timed_audio_s of audio would be timed.
        per_char = warm_audio.size / max(warm_sr, 1) / max(len(items[shortest].text), 1)
        rounds = adaptive_rounds(per_char * sum(len(it.text) for it in items), min_timed_audio_s, n)
    rounds = max(1, int(rounds))
    done: list[list[tuple[Audio, int, float, float | None]]] = []
    pacer = Pacer(reference, n * rounds, reference_runs)

    def one_round() -> None:
        res = []
        for i, it in enumerate(items):
            pacer.at(len(done) * n + i)
            res.append(_synth_timed(model, it.text, use_stream))
            if progress is not None:
                progress(len(done) * n + i + 1, n * (rounds + 1))
        done.append(res)

    runner(one_round, rounds)
    while len(done) < rounds:  # a disabled benchmark runs the function once
        one_round()
    pacer.finish()
    first = done[0]
    rerun_same = warm_audio.shape == first[shortest][0].shape and bool(
        np.array_equal(warm_audio, first[shortest][0], equal_nan=True)
    )

    judge_sr = int(judge.sample_rate)
    rows: list[dict[str, Any]] = []
    audio_files: dict[str, str] = {}
    errs: list[dict[str, int]] = []
    for i, (it, (audio, sr, secs, ttfa)) in enumerate(zip(items, first, strict=True)):
        s = audio_sanity(audio, sr, it.text)
        wav = out_dir / f"{i:04d}-{_safe(it.id)}.wav"  # the index keeps ids that sanitise alike apart
        audio_files[it.id] = str(wav)
        _write_wav(sf, wav, audio, sr)
        clean = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        if clean.size == 0:
            heard = ""
        else:
            x = clean if sr == judge_sr else soxr.resample(clean, sr, judge_sr, quality="HQ").astype(np.float32)
            heard = judge.transcribe(x)
        ref_n, hyp_n = norm(it.text), norm(heard)
        e = utterance_errors(ref_n, hyp_n)
        errs.append(e)
        rows.append(
            {
                "id": it.id,
                "reference": it.text,
                "hypothesis": heard,
                "ref_norm": ref_n,
                "hyp_norm": hyp_n,
                "wer": round(utterance_wer(e), 6),
                "cer": round(e["char_errors"] / e["ref_chars"], 6),  # ref_chars > 0: empty texts were refused above
                "word_errors": e["word_errors"],
                "ref_words": e["ref_words"],
                "char_errors": e["char_errors"],
                "ref_chars": e["ref_chars"],
                "seconds": round(secs, 6),
                "ttfa_s": None if ttfa is None else round(ttfa, 6),
                "sample_rate": sr,
                **s,
            }
        )
        if progress is not None:
            progress(rounds * n + i + 1, n * (rounds + 1))

    audio_total = sum(r["duration"] for r in rows)
    rtfs = [sum(x[2] for x in rnd) / audio_total if audio_total > 0 else float("inf") for rnd in done]
    ttfas = [x[3] for rnd in done for x in rnd if x[3] is not None]
    speed_metrics, speed_block = pacer.summary(
        statistics.median(rtfs), [[x[2] for x in rnd] for rnd in done], [r["duration"] for r in rows]
    )
    metrics: dict[str, Any] = {
        **pool(errs),  # wer, cer, S/D/I, ref_words, ref_chars, utterances: pooled over the corpus
        "rtf": statistics.median(rtfs),
        **speed_metrics,
        "rtf_rounds": [round(r, 6) for r in rtfs],
        "synthesis_seconds": round(sum(x[2] for x in first), 6),
        "audio_seconds": round(audio_total, 6),
        "ttfa_s": statistics.median(ttfas) if ttfas else None,
        "ttfa_p95_s": float(np.percentile(ttfas, 95)) if ttfas else None,
        "sec_per_char_min": min(r["sec_per_char"] for r in rows),
        "sec_per_char_max": max(r["sec_per_char"] for r in rows),
        "clipping_ratio_max": max(r["clipping_ratio"] for r in rows),
        "leading_silence_max_s": max(r["leading_silence_s"] for r in rows),
        "trailing_silence_max_s": max(r["trailing_silence_s"] for r in rows),
        "rms_dbfs_min": min(r["rms_dbfs"] for r in rows),
        "rms_dbfs_max": max(r["rms_dbfs"] for r in rows),
        "nonfinite_samples": sum(r["nonfinite"] for r in rows),
        "sample_rate_mismatches": sum(1 for r in rows if r["sample_rate"] != int(model.sample_rate)),
        # the voice's load + the case's growth (the judge's work included, the judge's load not)
        "case_peak_rss_mb": case_memory_mb(model, start_rss, case_peak_rss_mb() if case_peak else None),
        "cuda_peak_mb": cuda_peak_mb(),
    }
    if dnsmos:
        from .tts_quality import score_rows

        metrics.update(score_rows(rows, [(a, sr) for a, sr, *_ in first]))
    deterministic = rerun_same and all(
        all(
            a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            for (a, *_), (b, *_) in zip(rnd, first, strict=True)
        )
        for rnd in done[1:]
    )
    judge_ident = (
        judge.ident()
        if hasattr(judge, "ident")
        else {"backend": type(judge).__name__, "decode": dict(getattr(judge, "decode_settings", {}))}
    )
    return TTSResult(
        dataset=name,
        metrics=metrics,
        rows=rows,
        decode=dict(getattr(model, "decode_settings", {})),
        normalizer=norm.ident(),
        judge=judge_ident,
        audio_dir=out_dir,
        audio_files=audio_files,
        deterministic=deterministic,
        sample_rate=int(model.sample_rate),
        thresholds=dict(thresholds or {}),
        speed_reference=speed_block,
        rounds=rounds,
    )


def _safe(uid: str) -> str:
    """A file-name-safe form of a sentence id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uid)[:80] or "sentence"


def _write_wav(sf: Any, path: Path, audio: Audio, sample_rate: int) -> None:
    """Write float WAV atomically (NaN/inf kept: a person listening should hear what the model made)."""
    import os

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, audio if audio.size else np.zeros(1, dtype=np.float32), max(int(sample_rate), 1), subtype="FLOAT")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------- matrix cases


def worse_sentences(golden: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    """Sentences whose round-trip WER rose against the golden: input, what was heard then and now, the WAV."""
    g = {r["id"]: r for r in golden.get("utterances", [])}
    out = []
    for row in record.get("utterances", []):
        old = g.get(row["id"])
        if old is None or row["wer"] > float(old.get("wer", 0.0)) + 1e-9:
            out.append(
                {
                    "id": row["id"],
                    "input": row["reference"],
                    "golden_heard": None if old is None else old.get("hypothesis"),
                    "heard": row["hypothesis"],
                    "golden_wer": None if old is None else old.get("wer"),
                    "wer": row["wer"],
                    "audio": (record.get("audio_files") or {}).get(row["id"]),
                }
            )
    return out


def render_worse(rows: list[dict[str, Any]]) -> str:
    """The block listing the sentences that got worse (input vs heard), with the WAV to listen to."""
    lines = [f"  sentences that got worse ({len(rows)}): input vs what the judge heard"]
    for r in rows[:20]:
        pad = " " * (len(r["id"]) + 2)
        gw = "new" if r["golden_wer"] is None else f"{r['golden_wer']:.2f}"
        lines.append(f"    [{r['id']}] INPUT:        {r['input']}")
        if r["golden_heard"] is not None:
            lines.append(f"    {pad} GOLDEN HEARD: {r['golden_heard']}")
        lines.append(f"    {pad} NOW HEARD:    {r['heard']}   (WER {gw} -> {r['wer']:.2f})")
        lines.append(f"    {pad} listen:       {r['audio']}")
    if len(rows) > 20:
        lines.append(f"    ... and {len(rows) - 20} more (see --speechlab-json)")
    return "\n".join(lines)
