"""faster-whisper (CTranslate2) backend: cpu and cuda; CTranslate2 has no MPS support."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import Audio, BackendError, BaseBackend, ModelSpec
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
