"""liquid-audio backend: LFM2.5-Audio for ASR, TTS and speech/text chat on cpu, cuda and mps.

liquid-audio 1.3.0 assumes CUDA in three places, all worked around here (see the tests in
``tests/test_lfm.py``, which reproduce each against the raw library):

* ``LFM2AudioProcessor.from_pretrained`` and ``LFM2AudioModel.from_pretrained`` default to
  ``device="cuda"`` (processor.py:61, model/lfm2_audio.py:142); off CUDA the processor's
  ``.to(device)`` (processor.py:82) raises ("Torch not compiled with CUDA enabled" on CPU-only and
  Apple builds, "Found no NVIDIA driver" on a CUDA build without a GPU).  The backend always passes
  the device.
* ``LFM2AudioProcessor.audio_detokenizer`` builds the detokenizer with a hard-coded ``.cuda()``
  (processor.py:151), so ``processor.decode`` fails off CUDA even when the device was given.  The
  backend builds the detokenizer itself on the chosen device and installs it on the processor.
* ``get_model_dir`` (utils.py:40-54) sends any ``str`` to ``huggingface_hub.snapshot_download``; only
  a ``pathlib.Path`` is used as a local folder.  The backend resolves weights to a local ``Path``
  itself (hub ids from the local Hugging Face cache only, never the network) and passes the Path.

Heavy imports (torch, liquid_audio, huggingface_hub) happen inside functions only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, MissingExtraError, ModelSpec, Opt

# System prompts and voices: in lfm_prompts, shared with the tiny model's builder (lfm_tiny).
from .lfm_prompts import ASR_SYSTEM_PROMPT, CHAT_SYSTEM_PROMPT, DEFAULT_VOICE, TTS_SYSTEM_PROMPT, VOICES

HUB_ID = "LiquidAI/LFM2.5-Audio-1.5B"
WEIGHTS_ENV = "SPEECHLAB_LFM_WEIGHTS"
TINY = "tiny-random"
INPUT_SAMPLE_RATE = 16000  # the processor's mel front end runs at 16 kHz
OUTPUT_SAMPLE_RATE = 24000  # detokenizer (and Mimi) waveforms are 24 kHz


# Special ids hard-coded in liquid_audio/model/lfm2_audio.py's generation loops.
END_OF_AUDIO = 2048  # a frame whose first code is 2048 ends an audio segment

# Sampling defaults per task, as in the liquid-audio README: ASR greedy; TTS audio T=0.8, top-k 64;
# chat audio T=1.0, top-k 4.  Text is greedy everywhere.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "asr": {"text_temperature": None, "text_top_k": None, "audio_temperature": None, "audio_top_k": None},
    "tts": {"text_temperature": None, "text_top_k": None, "audio_temperature": 0.8, "audio_top_k": 64},
    "chat": {"text_temperature": None, "text_top_k": None, "audio_temperature": 1.0, "audio_top_k": 4},
}


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn of interleaved generation: the text, the 24 kHz audio and token counts."""

    text: str
    audio: Audio
    sample_rate: int
    text_tokens: int
    audio_frames: int


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder that hub ids are looked up in (HF_HUB_CACHE / HF_HOME aware)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with liquid-audio
        home = os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def find_cached_hub_weights(repo_id: str) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the Hugging Face cache, or None; never downloads."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover
        return None
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    return path if (path / "config.json").is_file() else None


def where_lfm_weights_are_looked_for(repo_id: str = HUB_ID) -> str:
    """A sentence naming every place the real weights are searched (for errors and skip reasons)."""
    env = os.environ.get(WEIGHTS_ENV)
    env_part = f"${WEIGHTS_ENV}={env}" if env else f"${WEIGHTS_ENV} (unset)"
    return f"{env_part}, then the local Hugging Face cache {hf_cache_dir()} (models--{repo_id.replace('/', '--')})"


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "~"))


def resolve_lfm_weights(spec: ModelSpec) -> tuple[Path, str]:
    """The local model folder for ``spec.weights`` and a label for it (recorded in decode settings).

    ``tiny-random`` builds (once, cached) the tiny test model; a hub id such as
    ``LiquidAI/LFM2.5-Audio-1.5B`` (the default) is taken from ``$SPEECHLAB_LFM_WEIGHTS`` when set,
    else from the local Hugging Face cache only; anything else is a local folder (relative to the
    config file).  Missing weights raise :class:`BackendError` saying where they were looked for.
    """
    weights = spec.weights or HUB_ID
    where = spec.config_path or "speechlab.yaml"
    if weights == TINY:
        from .lfm_tiny import tiny_model_dir

        return tiny_model_dir(), TINY
    local = spec.resolve_path(weights)
    if local.is_dir():
        _check_model_dir(local, spec)
        return local, weights
    if _looks_like_hub_id(weights):
        env = os.environ.get(WEIGHTS_ENV)
        if env:
            env_path = Path(env).expanduser()
            if not env_path.is_dir():
                raise BackendError(
                    f"model {spec.name!r}: ${WEIGHTS_ENV} points to {env_path}, which is not a folder; "
                    f"set it to a local copy of {weights} (the folder holding config.json) or unset it"
                )
            _check_model_dir(env_path, spec)
            return env_path, weights
        cached = find_cached_hub_weights(weights)
        if cached is not None:
            _check_model_dir(cached, spec)
            return cached, weights
        raise BackendError(
            f"model {spec.name!r}: the weights {weights} were not found locally (looked in "
            f"{where_lfm_weights_are_looked_for(weights)}); the plugin never downloads. Fetch them once "
            f"with `huggingface-cli download {weights}`, or set ${WEIGHTS_ENV} or 'weights:' in {where} "
            f"to a local folder, or use weights: {TINY} for the tiny test model"
        )
    raise BackendError(
        f"model {spec.name!r}: weights folder {local} does not exist; set 'weights:' in {where} to a "
        f"local LFM2-Audio folder (with config.json), to a hub id in the local cache such as {HUB_ID}, or to {TINY}"
    )


def _check_model_dir(path: Path, spec: ModelSpec) -> None:
    if not (path / "config.json").is_file():
        raise BackendError(
            f"model {spec.name!r}: {path} has no config.json; it is not an LFM2-Audio model folder "
            f"(expected config.json, model.safetensors, tokenizer files and audio_detokenizer/)"
        )


def build_detokenizer(detokenizer_dir: Path, device: Any) -> Any:
    """Build the LFM2 audio detokenizer on ``device`` (what processor.py:130-160 does, minus ``.cuda()``)."""
    from liquid_audio.detokenizer import LFM2AudioDetokenizer
    from safetensors.torch import load_file
    from transformers import Lfm2Config

    config = Lfm2Config.from_pretrained(detokenizer_dir / "config.json")
    # Same rename as upstream: llama.cpp's sliding_attention is transformers' full_attention plus the
    # detokenizer's own sliding-window mask.
    config.layer_types = ["full_attention" if t == "sliding_attention" else t for t in (config.layer_types or [])]
    detok = LFM2AudioDetokenizer(config).eval().to(device)
    detok.load_state_dict(load_file(detokenizer_dir / "model.safetensors", device=str(device)))
    return detok.eval()


def load_processor(model_dir: Path, device: str) -> Any:
    """An ``LFM2AudioProcessor`` on ``device`` with its detokenizer (if any) built on ``device`` too."""
    import torch
    from liquid_audio import LFM2AudioProcessor

    dev = torch.device(device)
    # Path, not str: a str goes to the hub (utils.py get_model_dir); device explicit (default "cuda").
    processor = LFM2AudioProcessor.from_pretrained(Path(model_dir), device=dev).eval()
    if processor.detokenizer_path is not None:
        # Installing our instance in the cache the property reads means processor.decode never
        # reaches the hard-coded .cuda() at processor.py:151.
        processor._audio_detokenizer = build_detokenizer(Path(processor.detokenizer_path), dev)
    return processor


def _default_dtype(device: str) -> str:
    # bfloat16 is what the weights ship in and what CUDA runs fast; on cpu bf16 matmuls are slow and
    # on mps bf16 support depends on the macOS version, so those use float32.
    return "bfloat16" if device == "cuda" else "float32"


class LiquidAudioModel:
    """A loaded LFM2-Audio model: ``transcribe`` (ASR), ``synthesize`` (TTS) and ``chat``.

    ``sample_rate`` follows the task the model was loaded for, so the object satisfies the ASR
    protocol (16 kHz input) when loaded as ``task: asr`` or ``chat`` and the TTS protocol (24 kHz
    output) when loaded as ``task: tts``; ``input_sample_rate`` and ``output_sample_rate`` are
    always available.  ``last_stats`` holds the token counts of the most recent call.
    """

    input_sample_rate = INPUT_SAMPLE_RATE
    output_sample_rate = OUTPUT_SAMPLE_RATE

    def __init__(
        self, model: Any, processor: Any, device: str, task: str, weights_label: str, options: dict[str, Any]
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.task = task
        self.weights_label = weights_label
        self.options = dict(options)
        self.sample_rate = OUTPUT_SAMPLE_RATE if task == "tts" else INPUT_SAMPLE_RATE
        self.decode_settings = self.settings_for(task)
        self.last_stats: dict[str, Any] = {}
        self._clamped = 0  # codes clamped by the last _decode_audio

    def settings_for(self, task: str) -> dict[str, Any]:
        """The decode settings really used for ``task`` (recorded in goldens and run records)."""
        o = self.options
        settings: dict[str, Any] = {
            "task": task,
            "weights": self.weights_label,
            "dtype": str(o.get("dtype") or _default_dtype(self.device)),
            "seed": int(o.get("seed", 0)),
            "max_new_tokens": int(o.get("max_new_tokens", 512)),
            "mode": "interleaved" if task == "chat" else "sequential",
            "cpu_threads": int(o.get("cpu_threads", 0)),
        }
        for key, default in TASK_DEFAULTS[task].items():
            value = o.get(key, default)
            settings[key] = None if value is None else (int(value) if key.endswith("top_k") else float(value))
        if task == "asr":
            settings["system_prompt"] = str(o.get("asr_system_prompt", ASR_SYSTEM_PROMPT))
        elif task == "tts":
            voice = str(o.get("voice", DEFAULT_VOICE))
            if voice not in VOICES:
                raise BackendError(f"liquid-audio: unknown voice {voice!r}; choose one of {', '.join(VOICES)}")
            settings["voice"] = voice
            settings["system_prompt"] = str(o.get("tts_system_prompt", TTS_SYSTEM_PROMPT.format(voice=voice)))
        else:
            settings["system_prompt"] = str(o.get("chat_system_prompt", CHAT_SYSTEM_PROMPT))
        return settings

    # -- prompt building and generation ------------------------------------------------------------

    def _chat_state(self, system_prompt: str, audio: Audio | None, sample_rate: int | None, text: str | None) -> Any:
        import torch
        from liquid_audio import ChatState

        state = ChatState(self.processor, dtype=self.model_dtype)
        state.new_turn("system")
        state.add_text(system_prompt)
        state.end_turn()
        state.new_turn("user")
        if audio is not None:
            wave = np.ascontiguousarray(audio, dtype=np.float32)
            if wave.ndim != 1:
                raise BackendError(f"liquid-audio expects mono audio (1-D), got shape {wave.shape}")
            sr = int(sample_rate or self.input_sample_rate)
            # The Conformer needs at least 9 mel frames (utils.py mel2emb_len note): ~0.1 s of audio.
            if wave.shape[0] < sr // 10:
                raise BackendError(
                    f"liquid-audio needs at least 0.1 s of audio, got {wave.shape[0]} samples at {sr} Hz"
                )
            state.add_audio(torch.from_numpy(wave).unsqueeze(0), sr)
        if text is not None:
            state.add_text(text)
        state.end_turn()
        state.new_turn("assistant")
        return state

    @property
    def model_dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    @contextmanager
    def _cpu_threads(self) -> Iterator[None]:
        """Apply ``cpu_threads`` for the duration of one call only: torch's thread count is
        process-wide, and other backends in the same pytest session must keep theirs."""
        import torch

        wanted = int(self.options.get("cpu_threads", 0))
        if wanted <= 0 or self.device != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _generate(self, state: Any, settings: dict[str, Any]) -> tuple[list[int], list[Any], int]:
        """Run the task's generation mode; return text ids, audio frames (EOA frames dropped), steps."""
        import torch

        torch.manual_seed(settings["seed"])  # sampled audio reproducible run to run
        gen = self.model.generate_interleaved if settings["mode"] == "interleaved" else self.model.generate_sequential
        text_ids: list[int] = []
        frames: list[Any] = []
        steps = 0
        codebooks = self.model.codebooks
        for tok in gen(
            **state,
            max_new_tokens=settings["max_new_tokens"],
            text_temperature=settings["text_temperature"],
            text_top_k=settings["text_top_k"],
            audio_temperature=settings["audio_temperature"],
            audio_top_k=settings["audio_top_k"],
        ):
            steps += 1
            if tok.numel() == 1:
                text_ids.append(int(tok))
            elif tok.numel() == codebooks:
                if int(tok[0]) == END_OF_AUDIO:  # end-of-audio marker frame: not decodable audio
                    continue
                frames.append(tok)
        return text_ids, frames, steps

    def _decode_text(self, ids: list[int]) -> str:
        text: str = self.processor.text.decode(ids, skip_special_tokens=True)
        return text.strip()

    def _decode_audio(self, frames: list[Any]) -> Audio:
        import torch

        if not frames:
            self._clamped = 0
            return np.zeros(0, dtype=np.float32)
        codes = torch.stack(frames, 1).unsqueeze(0)  # (1, codebooks, T)
        # The end-of-audio code 2048 is only meaningful in codebook 0 (handled in _generate); a model
        # can still sample it in another codebook, which the detokenizer rejects ("expected audio
        # codes in range", processor.py:175).  Such codes are clamped to the last real code and
        # counted in last_stats["clamped_codes"] rather than failing the whole utterance.
        bad = codes >= END_OF_AUDIO
        self._clamped = int(bad.sum())
        if self._clamped:
            codes = codes.masked_fill(bad, END_OF_AUDIO - 1)
        with torch.no_grad():
            if self.processor.detokenizer_path is not None:
                wave = self.processor.decode(codes)  # our device-placed detokenizer (see load_processor)
            else:  # LFM2-Audio-1.5B (no LFM detokenizer): Mimi, built on the processor's device
                wave = self.processor.mimi.decode(codes)[0]
        return np.ascontiguousarray(wave[0].detach().float().cpu().numpy(), dtype=np.float32)

    def _stats(self, text_ids: list[int], frames: list[Any], steps: int, settings: dict[str, Any]) -> None:
        self.last_stats = {
            "text_tokens": len(text_ids),
            "audio_frames": len(frames),
            "steps": steps,
            "hit_max_new_tokens": steps >= settings["max_new_tokens"],
            "clamped_codes": self._clamped,
        }

    # -- the three tasks ---------------------------------------------------------------------------

    def transcribe(self, audio: Audio, sample_rate: int | None = None) -> str:
        """ASR: float32 mono audio (at ``sample_rate``, default 16 kHz) to text (sequential mode)."""
        settings = self.settings_for("asr")
        with self._cpu_threads():
            state = self._chat_state(settings["system_prompt"], audio, sample_rate, None)
            text_ids, frames, steps = self._generate(state, settings)
        self._clamped = 0
        self._stats(text_ids, frames, steps, settings)
        return self._decode_text(text_ids)

    def synthesize(self, text: str) -> tuple[Audio, int]:
        """TTS: text to a float32 mono waveform at 24 kHz (sequential mode, detokenized)."""
        if not text.strip():
            raise BackendError("liquid-audio TTS needs non-empty text")
        settings = self.settings_for("tts")
        with self._cpu_threads():
            state = self._chat_state(settings["system_prompt"], None, None, text)
            text_ids, frames, steps = self._generate(state, settings)
        self._clamped = 0
        self._stats(text_ids, frames, steps, settings)
        if not frames:
            raise BackendError(
                f"liquid-audio TTS produced no audio frames for {text[:60]!r} in {steps} steps "
                f"(the model never emitted <|audio_start|>); check the weights ({self.weights_label}) "
                f"and max_new_tokens ({settings['max_new_tokens']})"
            )
        with self._cpu_threads():
            wave = self._decode_audio(frames)
        self._stats(text_ids, frames, steps, settings)  # again: now with clamped_codes
        return wave, OUTPUT_SAMPLE_RATE

    def chat(self, audio: Audio | None = None, text: str | None = None, sample_rate: int | None = None) -> ChatReply:
        """One chat turn (interleaved mode): audio and/or text in, text plus 24 kHz audio out."""
        if audio is None and not text:
            raise BackendError("liquid-audio chat needs audio, text or both")
        settings = self.settings_for("chat")
        with self._cpu_threads():
            state = self._chat_state(settings["system_prompt"], audio, sample_rate, text)
            text_ids, frames, steps = self._generate(state, settings)
            wave = self._decode_audio(frames)
        self._stats(text_ids, frames, steps, settings)
        return ChatReply(
            text=self._decode_text(text_ids),
            audio=wave,
            sample_rate=OUTPUT_SAMPLE_RATE,
            text_tokens=len(text_ids),
            audio_frames=len(frames),
        )


class PythonTooOldError(MissingExtraError):
    """The backend's library cannot run on this Python at all: its cases skip with this reason."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.backend, self.extra, self.missing = "liquid-audio", "lfm", "liquid_audio"


class LiquidAudioBackend(BaseBackend):
    """LFM2-Audio through liquid-audio: ASR, TTS and chat on cpu, cuda and mps."""

    name: ClassVar[str] = "liquid-audio"
    extra: ClassVar[str] = "lfm"
    tasks: ClassVar[tuple[str, ...]] = ("asr", "tts", "chat")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda", "mps")
    requires: ClassVar[tuple[str, ...]] = ("liquid_audio", "torch")
    speed_reference: ClassVar[str | None] = "torch"
    runtime: ClassVar[str | None] = "torch"  # devices.probe runs a tiny op through it
    import_modules: ClassVar[tuple[str, ...]] = ("transformers", "liquid_audio")
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "dtype": Opt("str", choices=("float32", "bfloat16", "float16")),
        "seed": Opt("int", lo=0),
        "max_new_tokens": Opt("int", lo=1, hi=100_000),
        "cpu_threads": Opt("int", lo=0, hi=1024),
        "text_temperature": Opt("number", lo=0, hi=5, null=True),
        "audio_temperature": Opt("number", lo=0, hi=5, null=True),
        "text_top_k": Opt("int", lo=1, null=True),
        "audio_top_k": Opt("int", lo=1, null=True),
        "voice": Opt("str", choices=VOICES),
        "asr_system_prompt": Opt("str"),
        "tts_system_prompt": Opt("str"),
        "chat_system_prompt": Opt("str"),
    }

    def check_installed(self) -> None:
        """Also refuse Python < 3.12: liquid-audio uses PEP 695 syntax and fails to import there."""
        # The project itself needs 3.12 today, but the 'lfm' extra is marker-guarded so the plugin may
        # one day support older Pythons; then this is the clear error instead of a SyntaxError.
        if sys.version_info < (3, 12):
            raise PythonTooOldError(
                f"backend {self.name!r} needs Python >= 3.12 (liquid-audio uses PEP 695 syntax, so the 'lfm' extra "
                f"does not install it here); this is Python {sys.version_info.major}.{sys.version_info.minor}"
            )
        super().check_installed()

    def load(self, spec: ModelSpec, device: str) -> LiquidAudioModel:
        """Load the processor and model on ``device`` (explicitly), detokenizer included."""
        self.check_installed()
        if spec.task not in self.tasks:
            raise BackendError(f"model {spec.name!r}: liquid-audio has no task {spec.task!r} (it has "
                               f"{', '.join(self.tasks)})")
        import torch
        from liquid_audio import LFM2AudioModel

        model_dir, label = resolve_lfm_weights(spec)
        dtype_name = str(spec.options.get("dtype") or _default_dtype(device))
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise BackendError(f"model {spec.name!r}: unknown dtype {dtype_name!r} (use float32, bfloat16 or float16)")
        try:
            processor = load_processor(model_dir, device)
            model = LFM2AudioModel.from_pretrained(Path(model_dir), device=torch.device(device), dtype=dtype).eval()
        except (RuntimeError, AssertionError, OSError, ValueError, KeyError) as exc:
            raise BackendError(
                f"liquid-audio could not load {label} from {model_dir} on {device}: {type(exc).__name__}: {exc}"
            ) from exc
        return LiquidAudioModel(model, processor, device, spec.task, label, spec.options)
