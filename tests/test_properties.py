"""Metamorphic properties (pytest_speechlab.properties): the transforms, the hypothesis-driven check, the
``speech_properties`` fixture in a user's test, and the real fw-tiny-en on bundled smoke clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fake import FakeProject
from _support import fw_missing

from pytest_speechlab.properties import (
    DEFAULT_TOLERANCE,
    PropertyError,
    SpeechProperties,
    apply_gain,
    pad_silence,
    through_file,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "fixtures" / "smoke"


def _tone(seconds: float = 0.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(round(seconds * sr), dtype=np.float32) / sr
    return (0.2 * np.sin(2 * np.pi * 300 * t) * np.sin(np.pi * t / seconds)).astype(np.float32)


# ------------------------------------------------------------------------------------------ transforms


def test_gain_and_silence_are_exact() -> None:
    x = _tone()
    assert np.allclose(apply_gain(x, 12.0), x * 10 ** (12 / 20), rtol=1e-6)
    assert np.allclose(apply_gain(apply_gain(x, -6.0), 6.0), x, rtol=1e-5, atol=1e-7)
    y = pad_silence(x, 16000, 2.0, 0.25)
    assert y.size == x.size + 32000 + 4000
    assert not y[:32000].any() and not y[-4000:].any()
    assert np.array_equal(y[32000:-4000], x)


def test_stereo_duplication_and_resampling_go_through_the_loader() -> None:
    x = _tone()
    # Two identical float channels, downmixed by the datasets' loader: the very same samples.
    assert np.array_equal(through_file(x, 16000, channels=2), x)
    # 16 -> 44.1 -> 16 kHz with soxr HQ both ways: same length, error > 80 dB below the signal.
    back = through_file(x, 16000, file_rate=44100)
    assert back.shape == x.shape
    err = 10 * np.log10(np.mean((back - x) ** 2) / np.mean(x**2))
    assert err < -80, err


# ------------------------------------------------------------------------------------------ the check


class LoudnessSensitive:
    """A 'model' that loses a word when the audio peaks above 0.5 or starts with more than 1.5 s of silence."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        lead = int(np.argmax(np.abs(audio) > 1e-6)) / self.sample_rate
        if float(np.max(np.abs(audio))) > 0.5 or lead > 1.5:
            return "hello"
        return "Hello there!"


def test_properties_that_hold_pass_and_report_every_example() -> None:
    model = LoudnessSensitive()
    props = SpeechProperties(model, tolerance={"gain": 0.5, "silence": 0.5})
    report = props.check([("a", _tone()), ("b", _tone(0.7))], max_examples=3)
    assert report.failures() == []
    assert set(report.worst) == {"gain", "silence", "resample", "stereo"}
    assert report.worst["resample"] == report.worst["stereo"] == 0.0
    assert report.worst["gain"] == 0.5  # the +12 dB extreme peaks at 0.8: one word of two lost, within 0.5
    # originals once per clip; gain and silence: 2 extremes + 3 drawn each; resample and stereo once per clip
    assert model.calls == 2 + 2 * 5 + 2 * 2


def test_a_broken_property_fails_naming_the_change_and_both_transcripts() -> None:
    props = SpeechProperties(LoudnessSensitive())
    with pytest.raises(AssertionError) as info:
        props.check([("a", _tone())], properties=["gain"], max_examples=3)
    msg = str(info.value)
    assert "metamorphic property broken: gain (gain_db +12.00) on clip 'a'" in msg
    assert "unchanged: 'Hello there!'" in msg and "changed:   'hello'" in msg
    assert "tolerance 0.0000" in msg


def test_the_check_is_deterministic() -> None:
    def run() -> list[Any]:
        report = SpeechProperties(LoudnessSensitive(), tolerance={"gain": 1, "silence": 1}).check(
            [("a", _tone()), ("b", _tone(0.7))], properties=["gain", "silence"], max_examples=4, seed=3)
        return [(e.prop, e.clip, e.params, e.wer) for e in report.examples]

    first = run()
    assert first == run()
    assert len({str(e[2]) for e in first}) > 4  # hypothesis drew amounts beyond the explicit extremes


@pytest.mark.parametrize(("kwargs", "call", "match"), [
    ({"tolerance": {"volume": 0.1}}, {}, "unknown property 'volume' in tolerance="),
    ({}, {"properties": ["speed"]}, "unknown property 'speed'"),
    ({}, {"max_examples": 0}, "max_examples=0"),
    ({}, {"source": []}, "no clips to check"),
    ({}, {"source": [42]}, "cannot use 42 as a clip"),
])
def test_bad_arguments_are_clear_errors(kwargs: dict[str, Any], call: dict[str, Any], match: str) -> None:
    with pytest.raises(PropertyError, match=match):
        props = SpeechProperties(LoudnessSensitive(), **kwargs)
        props.check(call.pop("source", [("a", _tone())]), **call)


def test_a_function_without_sample_rate_is_refused() -> None:
    with pytest.raises(PropertyError, match="pass sample_rate=16000"):
        SpeechProperties(lambda audio: "x")
    assert SpeechProperties(lambda audio: "x", sample_rate=16000).sample_rate == 16000


def test_the_fixture_in_a_users_test(pytester: pytest.Pytester) -> None:
    """A user's test: speech_properties(speech_model).check(speech_dataset) on the configured (fake) model."""
    project = FakeProject(pytester)
    project.config()
    pytester.makepyfile(test_props="""
        import pytest

        @pytest.mark.speechlab(model="ok", dataset="clips")
        def test_invariant(speech_model, speech_dataset, speech_properties):
            report = speech_properties(speech_model).check(speech_dataset, max_examples=2)
            assert report.worst == {"gain": 0.0, "silence": 0.0, "resample": 0.0, "stereo": 0.0}
            assert len(report.examples) == 4 + 4 + 1 + 1
    """)
    result = project.run("test_props.py")
    result.assert_outcomes(passed=1)


# ------------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def tiny_en() -> Any:
    """The bundled fw-tiny-en (faster-whisper tiny.en int8), loaded once for this module."""
    reason = fw_missing()
    if reason:
        pytest.skip(reason)
    from pytest_speechlab.backends import ModelSpec, get_backend

    spec = ModelSpec("fw-tiny-en", "faster-whisper", "bundled:tiny.en",
                     options={"compute_type": "int8", "language": "en"})
    return get_backend("faster-whisper").load(spec, "cpu")


def test_fw_tiny_en_transcripts_are_invariant_on_smoke_clips(tiny_en: Any) -> None:
    """The real model on two bundled clips, each property at the measured tolerance (DEFAULT_TOLERANCE):
    12 transcriptions: a few seconds on a quiet machine."""
    clips = [SMOKE / "smoke-02.wav", SMOKE / "smoke-03.flac"]
    report = SpeechProperties(tiny_en).check(clips, max_examples=1)
    assert report.failures() == []
    assert {e.prop for e in report.examples} == set(DEFAULT_TOLERANCE)
    assert {e.params.get("gain_db") for e in report.examples if e.prop == "gain"} >= {-12.0, 12.0}
