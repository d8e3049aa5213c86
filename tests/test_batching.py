"""Cross-utterance batching in the faster-whisper backend: same hypotheses as one-at-a-time decoding, and
evaluate_asr's per-batch timing split among utterances by audio length."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support import FW_MISSING

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.real_model, pytest.mark.skipif(FW_MISSING is not None, reason=str(FW_MISSING))]


def test_transcribe_batch_matches_sequential_and_timing_is_split_by_length() -> None:
    from pytest_speechlab.backends import get_backend
    from pytest_speechlab.backends.base import ModelSpec
    from pytest_speechlab.backends.faster_whisper import FasterWhisperASR
    from pytest_speechlab.datasets import load_audio, load_dataset
    from pytest_speechlab.evaluation import evaluate_asr
    from pytest_speechlab.metrics import get_normalizer

    spec = ModelSpec(name="fw", backend="faster-whisper", weights="bundled:tiny.en", devices=("cpu",),
                     options={"compute_type": "int8", "beam_size": 5, "language": "en", "batch_size": 4,
                              "temperature": 0.0, "without_timestamps": True})
    batched = get_backend("faster-whisper").load(spec, "cpu")
    sequential = FasterWhisperASR(batched.model, {**batched.decode_settings, "batch_size": None}, None)
    data = load_dataset("smoke", ROOT / "fixtures" / "smoke" / "manifest.jsonl")
    audios = [load_audio(u.audio_path, 16000)[0] for u in data.utterances]
    assert batched.transcribe_batch(audios) == [sequential.transcribe(a) for a in audios]

    out = evaluate_asr(batched, data, get_normalizer("whisper-en"), rounds=1)
    m = out["metrics"]
    assert m["batch_size"] == 4 and "split among its utterances by audio length" in m["timing"]
    rows = out["utterances"]
    for batch in (rows[:4], rows[4:]):  # within one batch, seconds are proportional to duration
        rates = [r["seconds"] / r["duration"] for r in batch]
        assert max(rates) - min(rates) < 1e-3 * max(rates) + 1e-5
    seq = evaluate_asr(sequential, data, get_normalizer("whisper-en"), rounds=1)
    assert "batch_size" not in seq["metrics"]
    assert [r["hypothesis"] for r in rows] == [r["hypothesis"] for r in seq["utterances"]]
    assert m["wer"] == seq["metrics"]["wer"]
