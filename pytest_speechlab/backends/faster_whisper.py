"""faster-whisper (CTranslate2) backend: cpu and cuda; CTranslate2 has no MPS support."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, ModelSpec, Opt
from .decode_defaults import POLICY, resolve, signature_defaults
from .weights import resolve_ct2_weights

#: ``WhisperModel.transcribe`` keywords a model entry may set.  Their *values* default to the installed
#: faster-whisper's own (read from the signature at load time: :func:`decode_defaults.signature_defaults`).
DECODE_OPTIONS = (
    "language", "task", "beam_size", "best_of", "patience", "length_penalty", "repetition_penalty",
    "no_repeat_ngram_size", "temperature", "compression_ratio_threshold", "log_prob_threshold",
    "no_speech_threshold", "condition_on_previous_text", "prompt_reset_on_temperature", "initial_prompt", "prefix",
    "suppress_blank", "suppress_tokens", "without_timestamps", "max_initial_timestamp", "word_timestamps",
    "prepend_punctuations", "append_punctuations", "multilingual", "vad_filter", "vad_parameters",
    "max_new_tokens", "chunk_length", "clip_timestamps", "hallucination_silence_threshold", "hotwords",
    "language_detection_threshold", "language_detection_segments",
)
#: Load-time settings (``WhisperModel(...)`` and the plugin's own): compute type, threads, batching, seed.
LOAD_OPTIONS = ("compute_type", "cpu_threads", "batch_size", "seed")
#: What the cross-utterance batched path decodes with; a batched model must say so in its entry.
BATCH_REQUIRES = {"temperature": 0.0, "without_timestamps": True}


class FasterWhisperASR:
    """A loaded faster-whisper model (sequential, or batched across utterances when ``batch_size`` is set)."""

    sample_rate = 16000

    def __init__(self, model: Any, decode_settings: dict[str, Any], batch_size: int | None,
                 ct2_args: dict[str, Any] | None = None) -> None:
        self.model = model
        # How the CTranslate2 model was built (path, device, compute type, threads), to build a fresh one for
        # a decode that samples (see :meth:`transcribe`); None: not known, sampling uses the loaded model.
        self.ct2_args = ct2_args
        self.decode_settings = decode_settings
        self.batch_size = batch_size
        self.seed = int(decode_settings.get("seed") or 0)
        #: The CPU kernels CTranslate2 selected (kernels.py), for the machine fingerprint; None off the CPU.
        self.kernels: dict[str, Any] | None = None
        #: What the last :meth:`transcribe` call decoded with (the temperature each segment finally used).
        self.last_details: dict[str, Any] = {}

    def _kwargs(self) -> dict[str, Any]:
        d = self.decode_settings
        return {k: d[k] for k in DECODE_OPTIONS if k in d}

    def transcribe_batch(self, audios: list[Audio]) -> list[str]:
        """Transcribe several utterances with one encoder pass and one batched beam search.

        faster-whisper's ``BatchedInferencePipeline`` batches the 30 s windows of *one* long recording, which
        cannot speed up a corpus of short utterances (each is a single window).  This batches *across*
        utterances instead: each one's features are padded to the 30 s window exactly as the sequential path
        pads them, the batch is encoded at once and decoded by one ``generate`` call with the model entry's
        decode options (beam size, patience, penalties, suppressed tokens, no-speech rule).  It honours only
        temperature 0 without timestamps (:data:`BATCH_REQUIRES`, checked at load), so hypotheses match the
        sequential ones.  Utterances longer than one window, a prompt or language detection fall back to
        :meth:`transcribe`, one at a time, with the same settings.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        d = self.decode_settings
        window = m.feature_extractor.n_samples  # 30 s at 16 kHz
        language = d["language"] or (None if m.model.is_multilingual else "en")
        batchable = language is not None and not d.get("initial_prompt") and not d.get("prefix")
        out: list[str | None] = [None] * len(audios)
        idx = [i for i, a in enumerate(audios) if batchable and 0 < len(a) <= window]
        for i, a in enumerate(audios):
            if i not in idx:
                out[i] = self.transcribe(a)
        if idx:
            tokenizer = Tokenizer(
                m.hf_tokenizer, m.model.is_multilingual, task=d.get("task", "transcribe"), language=language
            )
            feats = np.stack([pad_or_trim(m.feature_extractor(audios[i])[..., :-1]) for i in idx])
            encoder_output = m.encode(feats)
            prompt = m.get_prompt(tokenizer, [], without_timestamps=d["without_timestamps"])
            results = m.model.generate(
                encoder_output,
                [list(prompt) for _ in idx],
                beam_size=d["beam_size"],
                patience=d["patience"],
                length_penalty=d["length_penalty"],
                repetition_penalty=d["repetition_penalty"],
                no_repeat_ngram_size=d["no_repeat_ngram_size"],
                max_length=m.max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=d["suppress_blank"],
                suppress_tokens=get_suppressed_tokens(tokenizer, d["suppress_tokens"]),
                max_initial_timestamp_index=round(d["max_initial_timestamp"] / m.time_precision),
            )
            no_speech, logprob = d["no_speech_threshold"], d["log_prob_threshold"]
            for i, r in zip(idx, results, strict=True):
                tokens = r.sequences_ids[0]
                avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
                # the sequential path's no-speech rule, with the same thresholds
                silent = (
                    no_speech is not None
                    and r.no_speech_prob > no_speech
                    and (logprob is None or avg_logprob <= logprob)
                )
                out[i] = "" if silent else tokenizer.decode(tokens).strip()
        self.last_details = {}
        return [o or "" for o in out]

    def transcribe(self, audio: Audio) -> str:
        """The text of ``audio``, the same on every run whatever was decoded before it.

        Temperature fallback samples, and CTranslate2 samples from a generator that lives in its worker thread,
        seeded once when the thread first samples (``ctranslate2.set_random_seed`` does not reset it later).
        The temperature-0 pass is deterministic, so whether an utterance falls back is too; when it does, the
        utterance is decoded again on a freshly built CTranslate2 model (a new worker thread) right after
        ``set_random_seed(seed)``, so its transcript depends only on the audio and the seed.  That second decode
        is part of the utterance's time: it happens on every run of the same audio alike.
        """
        return "".join(s["text"] for s in self.transcribe_segments(audio)).strip()

    def transcribe_segments(self, audio: Audio) -> list[dict[str, Any]]:
        """The segments of ``audio`` (start/end in seconds, text, the temperature finally used, ...), decoded as
        :meth:`transcribe` decodes them."""
        segs = self._decode(self.model.model, audio)
        if any(s.temperature > 0 for s in segs) and self.ct2_args is not None:
            import ctranslate2

            ctranslate2.set_random_seed(self.seed)
            fresh = ctranslate2.models.Whisper(**self.ct2_args)
            try:
                segs = self._decode(fresh, audio)
            finally:
                del fresh
        self.last_details = {"temperatures": [float(s.temperature) for s in segs]}
        return [
            {
                "id": i,
                "start": float(s.start),
                "end": float(s.end),
                "text": s.text,
                "temperature": float(s.temperature),
                "avg_logprob": float(s.avg_logprob),
                "compression_ratio": float(s.compression_ratio),
                "no_speech_prob": float(s.no_speech_prob),
            }
            for i, s in enumerate(segs)
        ]

    def _decode(self, ct2_model: Any, audio: Audio) -> list[Any]:
        """All segments of one ``WhisperModel.transcribe`` call, run on ``ct2_model``."""
        loaded = self.model.model
        self.model.model = ct2_model
        try:
            segments, _ = self.model.transcribe(audio, **self._kwargs())
            return list(segments)
        finally:
            self.model.model = loaded


class FasterWhisperBackend(BaseBackend):
    name: ClassVar[str] = "faster-whisper"
    extra: ClassVar[str] = "faster-whisper"
    tasks: ClassVar[tuple[str, ...]] = ("asr",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    requires: ClassVar[tuple[str, ...]] = ("faster_whisper", "ctranslate2")
    speed_reference: ClassVar[str | None] = "ctranslate2-int8"
    runtime: ClassVar[str | None] = "ctranslate2"  # devices.probe runs a tiny op through it
    import_modules: ClassVar[tuple[str, ...]] = ("faster_whisper",)
    options: ClassVar[tuple[str, ...] | None] = LOAD_OPTIONS + DECODE_OPTIONS
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    # Value checks of every option (one validator: speechlab.yaml is checked with it at load time, and
    # ``settings`` checks a ModelSpec built in code with it too), naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "compute_type": Opt(
            "str",
            choices=(
                "default",
                "auto",
                "int8",
                "int8_float16",
                "int8_float32",
                "int8_bfloat16",
                "int16",
                "float16",
                "float32",
                "bfloat16",
            ),
        ),
        "cpu_threads": Opt("int", lo=0, hi=1024),
        "batch_size": Opt("int", lo=1, hi=1024, null=True),
        "seed": Opt("int", lo=0, hi=2**32 - 1),
        "language": Opt("str", null=True),
        "task": Opt("str", choices=("transcribe", "translate")),
        "beam_size": Opt("int", lo=1, hi=100),
        "best_of": Opt("int", lo=1, hi=100),
        "patience": Opt("number", lo=0, lo_open=True),
        "length_penalty": Opt("number"),
        "repetition_penalty": Opt("number", lo=0, lo_open=True),
        "no_repeat_ngram_size": Opt("int", lo=0),
        "temperature": Opt("numbers", lo=0, hi=2),
        "compression_ratio_threshold": Opt("number", lo=0, null=True),
        "log_prob_threshold": Opt("number", null=True),
        "no_speech_threshold": Opt("number", lo=0, hi=1, null=True),
        "condition_on_previous_text": Opt("bool"),
        "prompt_reset_on_temperature": Opt("number", lo=0, hi=2),
        "initial_prompt": Opt("str", null=True),
        "prefix": Opt("str", null=True),
        "suppress_blank": Opt("bool"),
        "suppress_tokens": Opt("ints", null=True),
        "without_timestamps": Opt("bool"),
        "max_initial_timestamp": Opt("number", lo=0),
        "word_timestamps": Opt("bool"),
        "prepend_punctuations": Opt("str"),
        "append_punctuations": Opt("str"),
        "multilingual": Opt("bool"),
        "vad_filter": Opt("bool"),
        "vad_parameters": Opt("mapping", null=True),
        "max_new_tokens": Opt("int", lo=1, null=True),
        "chunk_length": Opt("int", lo=1, hi=30, null=True),
        "clip_timestamps": Opt("str"),
        "hallucination_silence_threshold": Opt("number", lo=0, null=True),
        "hotwords": Opt("str", null=True),
        "language_detection_threshold": Opt("number", lo=0, hi=1, null=True),
        "language_detection_segments": Opt("int", lo=1),
    }

    def unsupported_reason(self, device: str) -> str | None:
        if device == "mps":
            return "faster-whisper has no MPS support (CTranslate2 runs on cpu and cuda only)"
        return super().unsupported_reason(device)

    def load(self, spec: ModelSpec, device: str) -> FasterWhisperASR:
        self.check_installed()
        from faster_whisper import WhisperModel

        path: Path = resolve_ct2_weights(spec)
        settings = self.settings(spec, device)
        compute_type, threads = settings["compute_type"], settings["cpu_threads"]
        try:
            model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads)
        except (RuntimeError, ValueError, OSError) as exc:
            raise BackendError(
                f"faster-whisper could not load the CTranslate2 model in {path}: {exc}. "
                "Check that the folder holds model.bin, config.json and tokenizer.json from a Whisper conversion."
            ) from exc
        ct2_args = {
            "model_path": str(path),
            "device": device,
            "compute_type": compute_type,
            "intra_threads": threads,
            "inter_threads": 1,
        }
        asr = FasterWhisperASR(model, settings, settings["batch_size"], ct2_args)
        if device == "cpu":
            from ..kernels import ctranslate2_kernels

            asr.kernels = ctranslate2_kernels(path, compute_type)
        return asr

    def settings(self, spec: ModelSpec, device: str) -> dict[str, Any]:
        """The full decode settings of ``spec`` on ``device``: ``WhisperModel.transcribe``'s own defaults from
        the installed faster-whisper, the entry's options over them, and the load settings; recorded whole."""
        import faster_whisper
        from faster_whisper.transcribe import (
            WhisperModel,  # the class itself (``faster_whisper.WhisperModel`` may be wrapped)
        )

        o, name = spec.options, spec.name
        settings = resolve(
            name,
            o,
            signature_defaults(WhisperModel.transcribe, ("audio", "log_progress")),
            DECODE_OPTIONS,
            self.option_types,
        )
        settings.update(
            {
                "compute_type": o.get("compute_type", "int8" if device == "cpu" else "float16"),
                "cpu_threads": o.get("cpu_threads", 0),
                "batch_size": o.get("batch_size"),
                "seed": o.get("seed", 0),
                "policy": POLICY,
                "library": f"faster-whisper {faster_whisper.__version__}",
            }
        )
        if settings["batch_size"]:
            wrong = {
                k: o.get(k, "(library default " + repr(settings[k]) + ")")
                for k, v in BATCH_REQUIRES.items()
                if k not in o or settings[k] != v
            }
            if wrong:
                raise BackendError(
                    f"model {name!r}: batch_size {settings['batch_size']} batches across utterances, which decodes "
                    "only at temperature 0.0 without timestamps (no temperature fallback); this entry has "
                    + ", ".join(f"{k}: {v}" for k, v in wrong.items())
                    + ". Add 'temperature: 0.0' and 'without_timestamps: true' to the entry in speechlab.yaml to "
                    "batch with those settings, or remove batch_size to decode one utterance at a time with them."
                )
        return settings
