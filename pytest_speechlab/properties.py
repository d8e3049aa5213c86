"""Metamorphic properties of an ASR model: changes to the audio that must not change the transcript.

A person hears the same sentence whether it is 12 dB louder, starts after two seconds of silence, went
through a 44.1 kHz file on its way, or arrives as a stereo file with the same signal on both channels.
:class:`SpeechProperties` checks that a model agrees, with `hypothesis <https://hypothesis.readthedocs.io>`_
choosing the clip and the amount (gain in dB, seconds of silence) and shrinking a failure to the smallest
change that breaks the transcript.  The transcript of the changed audio is compared with the model's own
transcript of the unchanged audio (both normalised), as word error rate; a property holds while that WER
stays within its tolerance.

Resampling and stereo go through :func:`pytest_speechlab.datasets.load_audio` (the loader every dataset
uses): the clip is written as a float WAV at 44.1 kHz or with two identical channels and read back at the
model's rate, so the check covers the path users' files take.

hypothesis is imported when a check runs, never at plugin load.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Audio
from .metrics import get_normalizer, utterance_errors, utterance_wer

PROPERTIES = ("gain", "silence", "resample", "stereo")
GAIN_DB = 12.0  # gain is drawn from [-GAIN_DB, +GAIN_DB]
SILENCE_S = 2.0  # leading and trailing silence are each drawn from [0, SILENCE_S] seconds
VIA_RATE = 44100  # the resampling round trip: model rate -> VIA_RATE -> model rate, soxr HQ both ways

#: WER allowed between the transcript of the changed audio and that of the unchanged audio, per property.
#: Measured on the bundled fw-tiny-en (faster-whisper tiny.en int8, beam 5) over the six bundled smoke clips
#: on a grid (gain -12..+12 dB in 3 dB steps; silence 0/0.5/1/2 s leading x 0/1/2 s trailing; resampling;
#: stereo; 108 examples): every transcript stayed identical after normalisation (10 differed only in capital
#: letters before it), so every property holds exactly (0.0).
#: A model that needs slack passes its own, measured, ``tolerance={...}``.
DEFAULT_TOLERANCE: dict[str, float] = {"gain": 0.0, "silence": 0.0, "resample": 0.0, "stereo": 0.0}


class PropertyError(ValueError):
    """A property check was called with unusable arguments; the message says which and the fix."""


@dataclass
class Clip:
    """One clip to check: its id and its samples (float32 mono at the model's rate)."""

    id: str
    audio: Audio


@dataclass
class Example:
    """One checked change: which property, clip and amount, the two transcripts and their WER."""

    prop: str
    clip: str
    params: dict[str, float]
    original: str
    changed: str
    wer: float
    tolerance: float

    @property
    def holds(self) -> bool:
        return self.wer <= self.tolerance + 1e-12

    def describe(self) -> str:
        amount = ", ".join(f"{k} {v:+.2f}" if k == "gain_db" else f"{k} {v:.2f}" for k, v in self.params.items())
        return (f"{self.prop}{f' ({amount})' if amount else ''} on clip {self.clip!r}: WER {self.wer:.4f} against the "
                f"model's own transcript of the unchanged clip (tolerance {self.tolerance:.4f})\n"
                f"      unchanged: {self.original!r}\n      changed:   {self.changed!r}")


@dataclass
class PropertyReport:
    """Every example a check ran; ``worst[prop]`` is the largest WER seen for each property."""

    examples: list[Example] = field(default_factory=list)

    @property
    def worst(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.examples:
            out[e.prop] = max(out.get(e.prop, 0.0), e.wer)
        return out

    def failures(self) -> list[Example]:
        return [e for e in self.examples if not e.holds]


# --------------------------------------------------------------------------------------------- transforms


def apply_gain(audio: Audio, gain_db: float) -> Audio:
    """``audio`` scaled by ``gain_db`` decibels (float samples, not clipped: a float pipeline)."""
    return (np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def pad_silence(audio: Audio, sample_rate: int, lead_s: float, trail_s: float) -> Audio:
    """``audio`` with ``lead_s`` and ``trail_s`` seconds of digital silence before and after it."""
    lead = np.zeros(round(lead_s * sample_rate), dtype=np.float32)
    trail = np.zeros(round(trail_s * sample_rate), dtype=np.float32)
    return np.concatenate([lead, np.asarray(audio, dtype=np.float32), trail])


def through_file(audio: Audio, sample_rate: int, *, file_rate: int | None = None, channels: int = 1) -> Audio:
    """``audio`` written as a float WAV (resampled to ``file_rate`` with soxr HQ, ``channels`` identical
    channels) and read back at ``sample_rate`` by the datasets' loader (downmix, soxr HQ)."""
    import soundfile as sf
    import soxr

    from .datasets import load_audio

    x = np.asarray(audio, dtype=np.float32)
    rate = file_rate or sample_rate
    if rate != sample_rate:
        x = soxr.resample(x, sample_rate, rate, quality="HQ").astype(np.float32)
    data = np.repeat(x[:, None], channels, axis=1) if channels > 1 else x
    with tempfile.TemporaryDirectory(prefix="speechlab-props-") as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(str(path), data, rate, subtype="FLOAT")
        back, _ = load_audio(path, sample_rate)
    return back


# --------------------------------------------------------------------------------------------- the checker


class SpeechProperties:
    """Metamorphic checks of one ASR model.

    ``model`` is a loaded model (``transcribe(audio) -> str`` and ``sample_rate``, as the ``speech_model``
    fixture gives) or a plain function with ``sample_rate=`` given.  Transcripts are normalised with
    ``normalizer`` (default ``whisper-en``) before they are compared.  ``tolerance`` overrides
    :data:`DEFAULT_TOLERANCE` per property.
    """

    def __init__(self, model: Any, *, sample_rate: int | None = None, normalizer: str = "whisper-en",
                 tolerance: dict[str, float] | None = None) -> None:
        fn = getattr(model, "transcribe", model)
        if not callable(fn):
            raise PropertyError(f"speech_properties: {model!r} is neither a model with transcribe() nor a function")
        rate = sample_rate or getattr(model, "sample_rate", None)
        if not isinstance(rate, int) or rate <= 0:
            raise PropertyError("speech_properties: the model has no sample_rate; pass sample_rate=16000 (the rate "
                                "its transcribe() expects)")
        unknown = set(tolerance or {}) - set(PROPERTIES)
        if unknown:
            raise PropertyError(f"speech_properties: unknown property {min(unknown)!r} in tolerance=; "
                                f"known: {', '.join(PROPERTIES)}")
        self.transcribe: Callable[[Audio], str] = fn
        self.sample_rate = rate
        self.normalizer = get_normalizer(normalizer)
        self.tolerance = {**DEFAULT_TOLERANCE, **(tolerance or {})}
        self._original: dict[str, str] = {}

    # ---- clips

    def clips(self, source: Any) -> list[Clip]:
        """Clips from a :class:`~pytest_speechlab.datasets.Dataset` (the ``speech_dataset`` fixture), audio
        paths, or ``(id, samples)`` pairs at the model's rate."""
        from .datasets import Dataset, load_audio

        if isinstance(source, Dataset):
            clips = [Clip(u.id, load_audio(u.audio_path, self.sample_rate)[0])
                     for u in source.utterances if u.audio_path is not None]
            if source.perturb:  # a derived dataset (perturb: in speechlab.yaml): check its perturbed audio
                from .perturb import apply

                clips = [Clip(c.id, apply(c.audio, source.perturb, c.id, self.sample_rate)) for c in clips]
            return clips
        out: list[Clip] = []
        for item in source:
            if isinstance(item, (str, Path)):
                out.append(Clip(Path(item).stem, load_audio(Path(item), self.sample_rate)[0]))
            elif isinstance(item, Clip):
                out.append(item)
            elif isinstance(item, tuple) and len(item) == 2:
                out.append(Clip(str(item[0]), np.asarray(item[1], dtype=np.float32).reshape(-1)))
            else:
                raise PropertyError(f"speech_properties: cannot use {item!r} as a clip; give a Dataset, audio paths "
                                    "or (id, samples) pairs")
        return out

    def original(self, clip: Clip) -> str:
        """The model's transcript of the unchanged clip (computed once per clip)."""
        if clip.id not in self._original:
            self._original[clip.id] = self.transcribe(clip.audio)
        return self._original[clip.id]

    # ---- one example

    def changed(self, prop: str, clip: Clip, params: dict[str, float]) -> Audio:
        """The clip after ``prop`` with ``params`` (gain_db; lead_s/trail_s; none for resample/stereo)."""
        if prop == "gain":
            return apply_gain(clip.audio, params["gain_db"])
        if prop == "silence":
            return pad_silence(clip.audio, self.sample_rate, params["lead_s"], params["trail_s"])
        if prop == "resample":
            return through_file(clip.audio, self.sample_rate, file_rate=VIA_RATE)
        if prop == "stereo":
            return through_file(clip.audio, self.sample_rate, channels=2)
        raise PropertyError(f"speech_properties: unknown property {prop!r}; known: {', '.join(PROPERTIES)}")

    def example(self, prop: str, clip: Clip, params: dict[str, float] | None = None) -> Example:
        """Transcribe one changed clip and score it against the unchanged clip's transcript."""
        params = dict(params or {})
        before = self.original(clip)
        after = self.transcribe(self.changed(prop, clip, params))
        ref, hyp = self.normalizer(before), self.normalizer(after)
        # nothing heard before: any words now are a change
        wer = round(utterance_wer(utterance_errors(ref, hyp)), 6) if ref else float(bool(hyp))
        return Example(prop, clip.id, params, before, after, wer, self.tolerance[prop])

    # ---- the hypothesis-driven check

    def check(self, source: Any, properties: Iterable[str] = PROPERTIES, *, max_examples: int = 4,
              seed: int = 0) -> PropertyReport:
        """Check each property on clips of ``source``; raise ``AssertionError`` naming the smallest change
        hypothesis found that moves a transcript beyond its tolerance.

        Per property, hypothesis draws ``max_examples`` (clip, amount) examples, after two explicit ones at
        the extremes (gain -12 and +12 dB; 2 s of silence on both sides, and 2 s leading only).  Resampling
        and stereo have no amount: each runs once per clip.  Deterministic: a fixed ``seed``
        (hypothesis.seed), no example database, no deadline (a model call takes as long as it takes).
        """
        __tracebackhide__ = True
        clips, props = self._validated(source, properties, max_examples)
        report = PropertyReport()

        def record(prop: str, clip: Clip, params: dict[str, float]) -> None:
            __tracebackhide__ = True
            ex = self.example(prop, clip, params)
            report.examples.append(ex)
            assert ex.holds, "speechlab: metamorphic property broken: " + ex.describe()

        for prop in props:
            if prop in ("resample", "stereo"):  # no amount to draw: once per clip
                for clip in clips:
                    record(prop, clip, {})
            else:
                _drawn(prop, clips, record, max_examples, seed)()
        return report

    def _validated(self, source: Any, properties: Iterable[str], max_examples: int) -> tuple[list[Clip], list[str]]:
        props = list(properties)
        for p in props:
            if p not in PROPERTIES:
                raise PropertyError(f"speech_properties: unknown property {p!r}; known: {', '.join(PROPERTIES)}")
        if max_examples < 1:
            raise PropertyError(f"speech_properties: max_examples={max_examples}; give 1 or more")
        clips = self.clips(source)
        if not clips:
            raise PropertyError("speech_properties: no clips to check (the dataset has no audio rows)")
        return clips, props


def _drawn(prop: str, clips: list[Clip], record: Callable[[str, Clip, dict[str, float]], None],
           max_examples: int, seed: int) -> Callable[..., None]:
    """One property's hypothesis test: explicit extremes first, then drawn (clip index, amount) examples."""
    try:
        from hypothesis import HealthCheck, example, given, settings
        from hypothesis import seed as fixed_seed
        from hypothesis import strategies as st
    except ImportError:
        raise PropertyError("speech_properties needs hypothesis: pip install 'pytest-speechlab[properties]' "
                            "(or pip install hypothesis)") from None
    index = st.integers(0, len(clips) - 1)
    if prop == "gain":
        amounts = st.fixed_dictionaries({"gain_db": st.floats(-GAIN_DB, GAIN_DB, allow_nan=False)})
        extremes = [{"gain_db": -GAIN_DB}, {"gain_db": GAIN_DB}]
    else:
        secs = st.floats(0.0, SILENCE_S, allow_nan=False)
        amounts = st.fixed_dictionaries({"lead_s": secs, "trail_s": secs})
        extremes = [{"lead_s": SILENCE_S, "trail_s": SILENCE_S}, {"lead_s": SILENCE_S, "trail_s": 0.0}]

    def run(i: int, params: dict[str, float]) -> None:
        __tracebackhide__ = True
        record(prop, clips[i], {k: round(v, 3) for k, v in params.items()})

    for n, extreme in enumerate(extremes):
        run = example(n % len(clips), extreme)(run)
    test = settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)(given(index, amounts)(run))
    return fixed_seed(seed)(test)


def measure(model: Any, source: Any, *, sample_rate: int | None = None, normalizer: str = "whisper-en",
            gains: Sequence[float] = (-12, -9, -6, -3, 3, 6, 9, 12),
            silences: Sequence[tuple[float, float]] = ((0.5, 0), (1, 0), (2, 0), (0, 1), (0, 2), (1, 1), (2, 2),
                                                       (0.5, 2)),
            ) -> PropertyReport:
    """Every property on every clip over a fixed grid, without assertions: how to measure a model's
    tolerances (the worst WER per property is ``report.worst``)."""
    sp = SpeechProperties(model, sample_rate=sample_rate, normalizer=normalizer,
                          tolerance={p: float("inf") for p in PROPERTIES})
    report = PropertyReport()
    for clip in sp.clips(source):
        for g in gains:
            report.examples.append(sp.example("gain", clip, {"gain_db": float(g)}))
        for lead, trail in silences:
            report.examples.append(sp.example("silence", clip, {"lead_s": float(lead), "trail_s": float(trail)}))
        report.examples.append(sp.example("resample", clip))
        report.examples.append(sp.example("stereo", clip))
    return report
