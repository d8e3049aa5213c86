"""faster-whisper (CTranslate2) backend: cpu and cuda; CTranslate2 has no MPS support."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, ModelSpec, Opt
from .weights import resolve_ct2_weights


class FasterWhisperASR:
    """A loaded faster-whisper model (sequential, or batched when ``batch_size`` is set)."""

    sample_rate = 16000

    def __init__(self, model: Any, decode_settings: dict[str, Any], batch_size: int | None) -> None:
        self.model = model
        self.decode_settings = decode_settings
        self.batch_size = batch_size
        self._batched: Any = None
        if batch_size:
            from faster_whisper import BatchedInferencePipeline

            self._batched = BatchedInferencePipeline(model=model)

    def _kwargs(self) -> dict[str, Any]:
        d = self.decode_settings
        return {
            "beam_size": d["beam_size"],
            "language": d["language"],
            "temperature": d["temperature"],
            "condition_on_previous_text": d["condition_on_previous_text"],
            "without_timestamps": d["without_timestamps"],
            "vad_filter": d["vad_filter"],
        }

    def transcribe_batch(self, audios: list[Audio]) -> list[str]:
        """Transcribe several utterances with one encoder pass and one batched beam search.

        ``BatchedInferencePipeline`` batches the 30 s windows of *one* long recording, which cannot speed up
        a corpus of short utterances (each is a single window).  This batches *across* utterances instead:
        each one's features are padded to the 30 s window exactly as the sequential path pads them, the
        batch is encoded at once and decoded by one ``generate`` call with the sequential path's decode
        options (beam size, patience, suppressed tokens, no-speech rule), so hypotheses match the
        sequential ones.  Utterances longer than one window, sampling temperatures, a prompt or language
        detection are outside that equivalence: those fall back to :meth:`transcribe`, one at a time.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        d = self.decode_settings
        window = m.feature_extractor.n_samples  # 30 s at 16 kHz
        temps = d["temperature"] if isinstance(d["temperature"], (list, tuple)) else [d["temperature"]]
        language = d["language"] or (None if m.model.is_multilingual else "en")
        batchable = language is not None and len(temps) == 1 and float(temps[0]) == 0.0
        out: list[str | None] = [None] * len(audios)
        idx = [i for i, a in enumerate(audios) if batchable and 0 < len(a) <= window]
        for i, a in enumerate(audios):
            if i not in idx:
                out[i] = self.transcribe(a)
        if idx:
            tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language=language)
            feats = np.stack([pad_or_trim(m.feature_extractor(audios[i])[..., :-1]) for i in idx])
            encoder_output = m.encode(feats)
            prompt = m.get_prompt(tokenizer, [], without_timestamps=d["without_timestamps"])
            results = m.model.generate(
                encoder_output, [list(prompt) for _ in idx],
                beam_size=d["beam_size"], patience=1.0, length_penalty=1.0, repetition_penalty=1.0,
                no_repeat_ngram_size=0, max_length=m.max_length, return_scores=True, return_no_speech_prob=True,
                suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
                max_initial_timestamp_index=round(1.0 / m.time_precision),
            )
            for i, r in zip(idx, results, strict=True):
                tokens = r.sequences_ids[0]
                avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
                # the sequential path's no-speech rule (faster-whisper defaults 0.6 and -1.0)
                out[i] = "" if (r.no_speech_prob > 0.6 and avg_logprob <= -1.0) else tokenizer.decode(tokens).strip()
        return [o or "" for o in out]

    def transcribe(self, audio: Audio) -> str:
        if self._batched is not None:
            segments, _ = self._batched.transcribe(audio, batch_size=self.batch_size, **self._kwargs())
        else:
            segments, _ = self.model.transcribe(audio, **self._kwargs())
        return "".join(s.text for s in segments).strip()


class FasterWhisperBackend(BaseBackend):
    name: ClassVar[str] = "faster-whisper"
    extra: ClassVar[str] = "faster-whisper"
    tasks: ClassVar[tuple[str, ...]] = ("asr",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    requires: ClassVar[tuple[str, ...]] = ("faster_whisper", "ctranslate2")
    options: ClassVar[tuple[str, ...] | None] = (
        "compute_type", "beam_size", "language", "temperature", "condition_on_previous_text",
        "without_timestamps", "vad_filter", "cpu_threads", "batch_size",
    )
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "compute_type": Opt("str", choices=("default", "auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16",
                                            "int16", "float16", "float32", "bfloat16")),
        "beam_size": Opt("int", lo=1, hi=100),
        "language": Opt("str", null=True),
        "temperature": Opt("numbers", lo=0, hi=2),
        "condition_on_previous_text": Opt("bool"),
        "without_timestamps": Opt("bool"),
        "vad_filter": Opt("bool"),
        "cpu_threads": Opt("int", lo=0, hi=1024),
        "batch_size": Opt("int", lo=1, hi=1024, null=True),
    }

    def unsupported_reason(self, device: str) -> str | None:
        if device == "mps":
            return "faster-whisper has no MPS support (CTranslate2 runs on cpu and cuda only)"
        return super().unsupported_reason(device)

    def load(self, spec: ModelSpec, device: str) -> FasterWhisperASR:
        self.check_installed()
        from faster_whisper import WhisperModel

        path: Path = resolve_ct2_weights(spec)
        o = spec.options
        compute_type = str(o.get("compute_type", "int8" if device == "cpu" else "float16"))
        threads = int(o.get("cpu_threads", 0))
        settings = {
            "compute_type": compute_type,
            "beam_size": int(o.get("beam_size", 5)),
            "language": o.get("language"),
            "temperature": o.get("temperature", 0.0),
            "condition_on_previous_text": bool(o.get("condition_on_previous_text", False)),
            "without_timestamps": bool(o.get("without_timestamps", True)),
            "vad_filter": bool(o.get("vad_filter", False)),
            "cpu_threads": threads,
            "batch_size": o.get("batch_size"),
        }
        try:
            model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads)
        except (RuntimeError, ValueError, OSError) as exc:
            raise BackendError(
                f"faster-whisper could not load the CTranslate2 model in {path}: {exc}. "
                "Check that the folder holds model.bin, config.json and tokenizer.json from a Whisper conversion."
            ) from exc
        batch = o.get("batch_size")
        return FasterWhisperASR(model, settings, int(batch) if batch else None)
