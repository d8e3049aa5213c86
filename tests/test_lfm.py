"""The liquid-audio (LFM2.5-Audio) backend: ASR, TTS and chat, device handling, upstream device bugs.

CI runs the backend's real code paths (prompt building, sequential and interleaved generation,
detokenization, device placement) on a tiny LFM2-Audio model built offline from liquid-audio's own
config classes (see ``pytest_speechlab/backends/lfm_tiny.py``).  Its output is meaningless, so these
tests assert structure - types, shapes, sample rates, token counts - never WER.

Tests named ``test_upstream_*`` document behaviour of liquid-audio 1.3.0 itself (they call the raw
library, not the backend); each has a twin that shows the backend avoids it.

The real ``LiquidAI/LFM2.5-Audio-1.5B`` cases are ``real_e2e``: they run when the weights are in the
local Hugging Face cache or at ``$SPEECHLAB_LFM_WEIGHTS``, and skip saying where they looked.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _support import real_model

from pytest_speechlab.backends import get_backend
from pytest_speechlab.backends.base import ASRModel, BackendError, ModelSpec, TTSModel

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "fixtures" / "smoke"

HAVE_LFM = sys.version_info >= (3, 12) and importlib.util.find_spec("liquid_audio") is not None
needs_lfm = real_model(
    not HAVE_LFM,
    "liquid-audio needs Python >= 3.12 and the 'lfm' extra (uv sync --extra lfm); "
    f"this is Python {sys.version_info.major}.{sys.version_info.minor}"
    + ("" if importlib.util.find_spec("liquid_audio") else " without liquid_audio installed"),
)

# Each detokenized frame is 1920 samples at 24 kHz: the detokenizer upsamples the 12.5 Hz codes 6x and
# its ISTFT hops 320 samples with "same" padding, so T frames give exactly 6 * 320 * T samples.
SAMPLES_PER_FRAME = 1920
MAX_NEW_TOKENS = 24  # keeps each tiny-model call well under a second on 2 cores


def _spec(task: str = "asr", weights: str = "tiny-random", **options: Any) -> ModelSpec:
    return ModelSpec(
        name=f"lfm-tiny-{task}",
        backend="liquid-audio",
        weights=weights,
        devices=("cpu", "cuda", "mps"),
        task=task,
        # one torch thread per call: tiny ops on a shared 2-core CI box run several times faster so
        options={"max_new_tokens": MAX_NEW_TOKENS, "cpu_threads": 1, **options},
    )


def _speech(name: str = "smoke-01.wav") -> tuple[np.ndarray, int]:
    """A bundled fixture clip (mono float32) and its rate; a tone if the fixtures are absent."""
    path = SMOKE / name
    if path.exists():
        import soundfile as sf

        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(sr)
    t = np.arange(16000, dtype=np.float32) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000


@pytest.fixture(scope="session")
def tiny_lfm_dir() -> Path:
    """The tiny LFM2-Audio model folder, built once (seeded) into the speechlab cache and reused."""
    if not HAVE_LFM:
        pytest.skip("liquid-audio is not installed (Python >= 3.12 and the 'lfm' extra needed)")
    from pytest_speechlab.backends.lfm_tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_lfm(tiny_lfm_dir: Path) -> Any:
    """The tiny model loaded on cpu through the backend (task asr), shared by the cpu tests."""
    return get_backend("liquid-audio").load(_spec("asr"), "cpu")


@pytest.fixture()
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test here may reach the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


# -- import hygiene and registration ------------------------------------------------------------------


def test_importing_backend_modules_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import pytest_speechlab.backends.lfm, pytest_speechlab.backends.lfm_tiny\n"
        "from pytest_speechlab.backends import get_backend\n"
        "b = get_backend('liquid-audio')\n"
        "heavy = [m for m in ('torch', 'liquid_audio', 'transformers', 'torchaudio', 'huggingface_hub') if m in "
        "sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the lfm backend imported {out.stdout.strip()}"


def test_backend_is_registered_with_tasks_devices_and_extra() -> None:
    backend = get_backend("liquid-audio")
    assert type(backend).__name__ == "LiquidAudioBackend"
    assert backend.tasks == ("asr", "tts", "chat")
    assert backend.devices == ("cpu", "cuda", "mps")
    assert backend.extra == "lfm"
    assert set(backend.requires) == {"liquid_audio", "torch"}
    for device in ("cpu", "cuda", "mps"):
        assert backend.unsupported_reason(device) is None


@needs_lfm
def test_unknown_task_is_a_clear_error(tiny_lfm_dir: Path) -> None:
    spec = ModelSpec(name="x", backend="liquid-audio", weights="tiny-random", task="diarize")
    with pytest.raises(BackendError, match="no task 'diarize'"):
        get_backend("liquid-audio").load(spec, "cpu")


# -- the tiny model ---------------------------------------------------------------------------------


@needs_lfm
def test_tiny_model_folder_is_complete_and_was_fitted(tiny_lfm_dir: Path) -> None:
    for rel in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "audio_detokenizer/config.json",
        "audio_detokenizer/model.safetensors",
        "tiny_build.json",
    ):
        assert (tiny_lfm_dir / rel).is_file(), rel
    info = json.loads((tiny_lfm_dir / "tiny_build.json").read_text())
    assert info["name"] == "tiny-random" and info["seed"] == 0
    assert info["loss_last"] < info["loss_first"] / 10  # the control-token fit really happened
    assert info["params"] < 5_000_000
    cfg = json.loads((tiny_lfm_dir / "config.json").read_text())
    assert cfg["codebooks"] == 8 and cfg["preprocessor"]["features"] == 128
    # the generation loops hard-code these ids; the tokenizer must put the specials there
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_lfm_dir))
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|audio_start|>", "<|text_end|>"]) == [7, 128, 130]


@needs_lfm
def test_tiny_weights_resolve_from_the_cache_without_rebuilding(tiny_lfm_dir: Path) -> None:
    from pytest_speechlab.backends.lfm import resolve_lfm_weights

    stamp = (tiny_lfm_dir / "model.safetensors").stat().st_mtime_ns
    path, label = resolve_lfm_weights(_spec())
    assert path == tiny_lfm_dir and label == "tiny-random"
    assert (tiny_lfm_dir / "model.safetensors").stat().st_mtime_ns == stamp


# -- ASR, TTS, chat on cpu ----------------------------------------------------------------------------


@needs_lfm
def test_asr_returns_text(tiny_lfm: Any) -> None:
    audio, sr = _speech()
    assert isinstance(tiny_lfm, ASRModel)
    assert tiny_lfm.sample_rate == 16000
    text = tiny_lfm.transcribe(audio, sample_rate=sr)
    assert isinstance(text, str) and text
    stats = tiny_lfm.last_stats
    assert stats["text_tokens"] > 0 and stats["audio_frames"] == 0
    assert not stats["hit_max_new_tokens"]  # stopped on <|im_end|>, like the real model
    s = tiny_lfm.decode_settings
    assert s["task"] == "asr" and s["system_prompt"] == "Perform ASR." and s["mode"] == "sequential"
    assert s["weights"] == "tiny-random" and s["dtype"] == "float32" and s["max_new_tokens"] == MAX_NEW_TOKENS


@needs_lfm
def test_asr_accepts_other_sample_rates_and_is_deterministic(tiny_lfm: Any) -> None:
    import soxr

    audio, sr = _speech("smoke-02.wav")
    at_8k = soxr.resample(audio, sr, 8000).astype(np.float32)
    assert tiny_lfm.transcribe(at_8k, sample_rate=8000) == tiny_lfm.transcribe(at_8k, sample_rate=8000)


@needs_lfm
def test_cpu_threads_apply_per_call_only(tiny_lfm: Any) -> None:
    import torch

    before = torch.get_num_threads()
    assert tiny_lfm.decode_settings["cpu_threads"] == 1
    tiny_lfm.transcribe(_speech()[0], sample_rate=_speech()[1])
    assert torch.get_num_threads() == before  # other torch backends in the session keep theirs


@needs_lfm
def test_asr_rejects_too_short_and_multichannel_audio(tiny_lfm: Any) -> None:
    with pytest.raises(BackendError, match="at least 0.1 s"):
        tiny_lfm.transcribe(np.zeros(100, dtype=np.float32))
    with pytest.raises(BackendError, match="mono"):
        tiny_lfm.transcribe(np.zeros((2, 16000), dtype=np.float32))


@needs_lfm
def test_tts_returns_finite_24khz_mono_float32(tiny_lfm: Any) -> None:
    wave, sr = tiny_lfm.synthesize("The plumber fixed the leak under the sink.")
    stats = tiny_lfm.last_stats
    assert sr == 24000
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 1
    assert wave.size > 0 and np.isfinite(wave).all()
    assert stats["audio_frames"] > 0
    assert wave.size == SAMPLES_PER_FRAME * stats["audio_frames"]
    # sequential TTS: one <|audio_start|> text token, then audio frames
    assert stats["text_tokens"] == 1
    assert stats["steps"] <= MAX_NEW_TOKENS


@needs_lfm
def test_stray_end_of_audio_codes_are_clamped_and_counted(tiny_lfm: Any) -> None:
    """Upstream decode raises on any code >= 2048 (processor.py:175); 2048 outside codebook 0 is
    clamped, counted, and the frame still decodes."""
    import torch

    frame = torch.full((8,), 5, dtype=torch.long)
    frame[3] = 2048
    wave = tiny_lfm._decode_audio([frame, torch.full((8,), 7, dtype=torch.long)])
    assert wave.size == 2 * SAMPLES_PER_FRAME and np.isfinite(wave).all()
    assert tiny_lfm._clamped == 1


@needs_lfm
def test_tts_is_seeded_and_reproducible(tiny_lfm: Any) -> None:
    a, _ = tiny_lfm.synthesize("one two three")
    b, _ = tiny_lfm.synthesize("one two three")
    np.testing.assert_array_equal(a, b)


@needs_lfm
def test_tts_task_load_satisfies_the_tts_protocol(tiny_lfm_dir: Path) -> None:
    model = get_backend("liquid-audio").load(_spec("tts", voice="UK female"), "cpu")
    assert isinstance(model, TTSModel)
    assert model.sample_rate == 24000
    s = model.decode_settings
    assert s["task"] == "tts" and s["voice"] == "UK female"
    assert s["system_prompt"] == "Perform TTS. Use the UK female voice."
    assert (s["audio_temperature"], s["audio_top_k"]) == (0.8, 64)
    wave, sr = model.synthesize("hello")
    assert sr == model.sample_rate and wave.size > 0


@needs_lfm
def test_tts_rejects_unknown_voice_and_empty_text(tiny_lfm: Any) -> None:
    with pytest.raises(BackendError, match="unknown voice"):
        get_backend("liquid-audio").load(_spec("tts", voice="Martian"), "cpu")
    with pytest.raises(BackendError, match="non-empty text"):
        tiny_lfm.synthesize("   ")


@needs_lfm
@pytest.mark.parametrize("inp", ["audio", "text", "both"])
def test_chat_returns_text_and_audio(tiny_lfm: Any, inp: str) -> None:
    from pytest_speechlab.backends.lfm import ChatReply

    audio, sr = _speech("smoke-03.flac")
    reply = tiny_lfm.chat(
        audio=audio if inp in ("audio", "both") else None,
        text="What did I just say?" if inp in ("text", "both") else None,
        sample_rate=sr,
    )
    assert isinstance(reply, ChatReply)
    assert isinstance(reply.text, str) and reply.text
    assert reply.sample_rate == 24000
    assert reply.audio.dtype == np.float32 and reply.audio.ndim == 1 and reply.audio.size > 0
    assert np.isfinite(reply.audio).all()
    assert reply.text_tokens > 0 and reply.audio_frames > 0
    assert reply.audio.size == SAMPLES_PER_FRAME * reply.audio_frames
    # interleaved mode: the first block is interleaved_n_text (6) text tokens, then audio
    assert reply.text_tokens >= 6
    assert tiny_lfm.settings_for("chat")["mode"] == "interleaved"


@needs_lfm
def test_chat_needs_some_input(tiny_lfm: Any) -> None:
    with pytest.raises(BackendError, match="needs audio, text or both"):
        tiny_lfm.chat()


# -- upstream device bugs (raw liquid-audio 1.3.0) and the backend's workarounds ----------------------

CUDA_ERROR = r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|CUDA"


@needs_lfm
def test_upstream_processor_defaults_to_cuda(tiny_lfm_dir: Path) -> None:
    """Documents upstream behaviour: ``from_pretrained`` defaults to device="cuda" (processor.py:61),
    so without an explicit device the processor's ``.to(device)`` (processor.py:82) raises off CUDA.
    """
    import inspect

    from liquid_audio import LFM2AudioModel, LFM2AudioProcessor

    for cls in (LFM2AudioProcessor, LFM2AudioModel):
        assert inspect.signature(cls.from_pretrained).parameters["device"].default == "cuda"
    if not _no_cuda():
        pytest.skip("CUDA is available here, so the cuda default does not fail; nothing to reproduce")
    with pytest.raises((AssertionError, RuntimeError), match=CUDA_ERROR):
        LFM2AudioProcessor.from_pretrained(Path(tiny_lfm_dir))


@needs_lfm
def test_upstream_detokenizer_is_built_with_hardcoded_cuda(tiny_lfm_dir: Path) -> None:
    """Documents upstream behaviour: ``LFM2AudioProcessor.audio_detokenizer`` calls ``.cuda()``
    (processor.py:151) whatever device the processor is on, so ``decode`` fails off CUDA.
    """
    import torch
    from liquid_audio import LFM2AudioProcessor

    proc = LFM2AudioProcessor.from_pretrained(Path(tiny_lfm_dir), device="cpu")
    assert proc.device.type == "cpu"
    codes = torch.zeros((1, 8, 2), dtype=torch.long)
    if _no_cuda():
        with pytest.raises((AssertionError, RuntimeError), match=CUDA_ERROR):
            proc.decode(codes)
    else:  # with a GPU it "works" but lands on cuda although the processor is on cpu
        assert next(proc.audio_detokenizer.parameters()).device.type == "cuda"


@needs_lfm
def test_upstream_str_model_dir_goes_to_the_hub(tiny_lfm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents upstream behaviour: ``get_model_dir`` (utils.py:40-54) hands any ``str`` to
    ``snapshot_download``; only a ``pathlib.Path`` is used as a local folder.
    """
    import liquid_audio.utils as la_utils

    calls: list[Any] = []

    def fake_snapshot_download(repo_id: Any, **kwargs: Any) -> str:
        calls.append(repo_id)
        raise OSError("hub disabled in this test")

    monkeypatch.setattr(la_utils, "snapshot_download", fake_snapshot_download)
    la_utils.get_model_dir.cache_clear()
    try:
        with pytest.raises(OSError, match="hub disabled"):
            la_utils.get_model_dir(str(tiny_lfm_dir))
        assert calls == [str(tiny_lfm_dir)]
        assert la_utils.get_model_dir(Path(tiny_lfm_dir)) == tiny_lfm_dir
        assert calls == [str(tiny_lfm_dir)]
    finally:
        la_utils.get_model_dir.cache_clear()


@needs_lfm
def test_backend_passes_device_and_path_explicitly(tiny_lfm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workaround for the cuda defaults and the str-goes-to-hub rule: every upstream
    ``from_pretrained`` call gets the chosen device and a Path."""
    import torch
    from liquid_audio import LFM2AudioModel, LFM2AudioProcessor

    seen: list[tuple[str, Any, dict[str, Any]]] = []
    for cls in (LFM2AudioProcessor, LFM2AudioModel):
        original = cls.from_pretrained.__func__  # type: ignore[attr-defined]

        def spy(klass: Any, repo: Any, *, _orig: Any = original, **kw: Any) -> Any:
            seen.append((klass.__name__, repo, kw))
            return _orig(klass, repo, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    model = get_backend("liquid-audio").load(_spec(), "cpu")
    assert [name for name, _, _ in seen] == ["LFM2AudioProcessor", "LFM2AudioModel"]
    for _, repo, kw in seen:
        assert isinstance(repo, Path) and repo == tiny_lfm_dir
        assert kw["device"] == torch.device("cpu")
    assert model.processor.device.type == "cpu"
    assert {p.device.type for p in model.model.parameters()} == {"cpu"}


@needs_lfm
def test_backend_builds_detokenizer_on_the_chosen_device(tiny_lfm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workaround for processor.py:151: with ``.cuda()`` made to explode, TTS still decodes,
    and the detokenizer the processor uses is the backend's, on cpu."""
    import torch

    def no_cuda(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f".cuda() called on {type(self).__name__}")

    monkeypatch.setattr(torch.nn.Module, "cuda", no_cuda)
    model = get_backend("liquid-audio").load(_spec("tts"), "cpu")
    detok = model.processor._audio_detokenizer
    assert detok is not None, "the backend must install its own detokenizer on the processor"
    assert {p.device.type for p in detok.parameters()} == {"cpu"}
    assert model.processor.audio_detokenizer is detok  # decode() will use it, not build a .cuda() one
    wave, sr = model.synthesize("hello there")
    assert sr == 24000 and wave.size > 0 and np.isfinite(wave).all()


# -- weights resolution ----------------------------------------------------------------------------


@needs_lfm
def test_hub_id_missing_from_local_cache_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hf_offline: None
) -> None:
    from huggingface_hub import constants

    from pytest_speechlab.backends.lfm import HUB_ID, WEIGHTS_ENV, resolve_lfm_weights

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BackendError) as info:
        resolve_lfm_weights(_spec(weights=HUB_ID))
    msg = str(info.value)
    assert HUB_ID in msg and str(tmp_path / "hub") in msg and WEIGHTS_ENV in msg
    assert "never downloads" in msg


@needs_lfm
def test_weights_env_var_is_used_for_the_hub_id(
    tiny_lfm_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_speechlab.backends.lfm import HUB_ID, WEIGHTS_ENV, resolve_lfm_weights

    monkeypatch.setenv(WEIGHTS_ENV, str(tiny_lfm_dir))
    assert resolve_lfm_weights(_spec(weights=HUB_ID)) == (tiny_lfm_dir, HUB_ID)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope"))
    with pytest.raises(BackendError, match=f"\\${WEIGHTS_ENV} points to .*nope"):
        resolve_lfm_weights(_spec(weights=HUB_ID))


@needs_lfm
def test_local_folder_weights(tiny_lfm_dir: Path, tmp_path: Path) -> None:
    from pytest_speechlab.backends.lfm import resolve_lfm_weights

    path, label = resolve_lfm_weights(_spec(weights=str(tiny_lfm_dir)))
    assert isinstance(path, Path) and path == tiny_lfm_dir and label == str(tiny_lfm_dir)
    with pytest.raises(BackendError, match="does not exist"):
        resolve_lfm_weights(_spec(weights=str(tmp_path / "missing" / "dir")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="no config.json"):
        resolve_lfm_weights(_spec(weights=str(tmp_path / "empty")))


# -- devices: run where torch reports the device, else skip with the reason ----------------------------


def _device_available(device: str) -> str | None:
    """None when ``device`` is usable here, else why not."""
    if not HAVE_LFM:
        return "liquid-audio is not installed"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False on this machine"
    if device == "mps" and not torch.backends.mps.is_available():
        return "no MPS device: torch.backends.mps.is_available() is False (needs Apple silicon and macOS)"
    return None


@needs_lfm
@pytest.mark.parametrize(
    "device",
    [
        pytest.param("cpu", marks=pytest.mark.cpu),
        pytest.param("cuda", marks=pytest.mark.cuda),
        pytest.param("mps", marks=pytest.mark.mps),
    ],
)
def test_tiny_lfm_all_tasks_on_device(tiny_lfm_dir: Path, device: str) -> None:
    """ASR, TTS and chat of the tiny model on each device torch reports; the capability is reported
    by the run.  On mps an upstream failure skips with the error quoted (it is not a pass)."""
    reason = _device_available(device)
    if reason:
        pytest.skip(reason)
    audio, sr = _speech()
    try:
        model = get_backend("liquid-audio").load(_spec(), device)
        text = model.transcribe(audio, sample_rate=sr)
        wave, out_sr = model.synthesize("hello world")
        reply = model.chat(audio=audio, sample_rate=sr)
    except Exception as exc:
        if device == "mps":
            pytest.skip(f"liquid-audio fails on mps upstream: {type(exc).__name__}: {exc}")
        raise
    assert isinstance(text, str) and text
    assert out_sr == 24000 and wave.dtype == np.float32 and wave.size > 0 and np.isfinite(wave).all()
    assert reply.text and reply.audio.size > 0 and np.isfinite(reply.audio).all()
    assert model.processor.device.type == device
    assert {p.device.type for p in model.processor._audio_detokenizer.parameters()} == {device}


# -- the real LFM2.5-Audio-1.5B (real_e2e) ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_lfm() -> Any:
    """The real LFM2.5-Audio-1.5B on the best device here, or a skip naming where it was looked for."""
    if not HAVE_LFM:
        pytest.skip("liquid-audio is not installed (Python >= 3.12 and the 'lfm' extra needed)")
    import torch

    from pytest_speechlab.backends.lfm import (
        HUB_ID,
        resolve_lfm_weights,
        where_lfm_weights_are_looked_for,
    )

    spec = ModelSpec(
        name="lfm25-audio", backend="liquid-audio", weights=HUB_ID, task="asr", options={"max_new_tokens": 256}
    )
    try:
        resolve_lfm_weights(spec)
    except BackendError:
        pytest.skip(f"{HUB_ID} weights not found locally; looked in {where_lfm_weights_are_looked_for()}")
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        return get_backend("liquid-audio").load(spec, device)
    except BackendError as exc:
        if device == "mps":
            pytest.skip(f"LFM2.5-Audio fails on mps upstream: {exc}")
        raise


@pytest.mark.real_e2e
def test_real_lfm25_asr_on_smoke_clip(real_lfm: Any) -> None:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    row = json.loads((SMOKE / "manifest.jsonl").read_text().splitlines()[0])
    audio, sr = _speech(row["audio_filepath"])
    hyp = real_lfm.transcribe(audio, sample_rate=sr)
    norm = EnglishTextNormalizer()
    # a loose sanity bound on clean synthetic speech; the gated numbers live in goldens
    assert jiwer.wer(norm(row["text"]), norm(hyp)) < 0.5, hyp


@pytest.mark.real_e2e
def test_real_lfm25_tts_and_chat(real_lfm: Any) -> None:
    wave, sr = real_lfm.synthesize("The weather is nice today.")
    assert sr == 24000 and wave.dtype == np.float32 and np.isfinite(wave).all()
    assert 0.5 < wave.size / sr < 30
    audio, in_sr = _speech()
    reply = real_lfm.chat(audio=audio, sample_rate=in_sr)
    assert reply.text and reply.audio.size > 0 and np.isfinite(reply.audio).all()


# -- through the plugin: the tiny LFM scored like any ASR backend -------------------------------------


@needs_lfm
def test_tiny_lfm_asr_case_runs_through_speechlab_yaml(
    pytester: pytest.Pytester, tiny_lfm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    # pytester points HOME at its tmp dir; keep using the session's tiny build instead of rebuilding
    monkeypatch.setenv("SPEECHLAB_CACHE", str(tiny_lfm_dir.parent))
    shutil.copy(SMOKE / "smoke-01.wav", pytester.path / "a.wav")
    (pytester.path / "manifest.jsonl").write_text(
        json.dumps({"audio_filepath": "a.wav", "text": "The weather is nice today, so we will walk to the park."})
        + "\n"
    )
    pytester.makefile(
        ".yaml",
        speechlab="""
models:
  lfm-tiny:
    backend: liquid-audio
    weights: tiny-random
    task: asr
    max_new_tokens: 24
    cpu_threads: 1
    devices: [cpu, mps]
datasets:
  one:
    manifest: manifest.jsonl
    normalizer: whisper-en
golden_dir: golden
""",
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--speechlab-device", "all", "--speechlab-update-golden", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and not outcomes.get("failed") and not outcomes.get("errors")
    result.stdout.fnmatch_lines(["*lfm-tiny-cpu-one*accepted*", "*lfm-tiny-mps-one*skipped*mps*"])
    golden = json.loads((pytester.path / "golden" / "lfm-tiny" / "one" / "cpu.json").read_text())
    assert golden["decode"]["task"] == "asr" and golden["decode"]["weights"] == "tiny-random"
    assert golden["decode"]["system_prompt"] == "Perform ASR."
