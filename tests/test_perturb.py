"""Perturbed copies of a dataset (perturb: in speechlab.yaml): one case and golden per level, deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from _fake import FakeProject

from pytest_speechlab import perturb
from pytest_speechlab.datasets import Dataset, Utterance
from pytest_speechlab.evaluation import evaluate_asr
from pytest_speechlab.metrics import get_normalizer


def _run(fake: FakeProject, *args: str) -> pytest.RunResult:
    """A fake-backend session with the RTF gate off: a fake's microsecond timings are noise, and speed is
    not what these tests are about."""
    return fake.run("--speechlab-rtf-gate", "off", *args)


SMOKE = Path(__file__).resolve().parent.parent / "fixtures" / "smoke"


def _speechlike(n: int = 16000) -> np.ndarray:
    t = np.arange(n) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("noise", perturb.NOISES)
@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0, -5.0])
def test_noise_is_at_the_requested_snr_and_deterministic(noise: str, snr: float) -> None:
    clean = _speechlike()
    spec = dict(perturb.levels({"snr_db": [snr], "noise": noise, "seed": 3})[0][1])
    noisy = perturb.apply(clean, spec, "utt-1")
    assert perturb.measured_snr_db(clean, noisy) == pytest.approx(snr, abs=1e-3)
    assert np.array_equal(noisy, perturb.apply(clean, spec, "utt-1"))  # same seed and id: same noise
    assert not np.array_equal(noisy, perturb.apply(clean, spec, "utt-2"))  # another utterance: other noise
    assert not np.array_equal(noisy, perturb.apply(clean, {**spec, "seed": 4}, "utt-1"))


def test_the_model_hears_the_perturbed_audio() -> None:
    """evaluate_asr hands the model the noisy copy of a derived dataset, and the clean audio otherwise."""
    heard: list[np.ndarray] = []

    class Recorder:
        sample_rate = 16000
        decode_settings: ClassVar[dict[str, Any]] = {}

        def transcribe(self, audio: np.ndarray) -> str:
            heard.append(np.asarray(audio))
            return "the plumber fixed the leak under the sink"

    rows = [json.loads(x) for x in (SMOKE / "manifest.jsonl").read_text().splitlines() if x.strip()]
    row = next(r for r in rows if r["id"] == "smoke-02")
    utt = (Utterance("smoke-02", row["text"], SMOKE / row["audio_filepath"]),)
    spec = perturb.levels({"snr_db": [5]})[0][1]
    norm = get_normalizer("basic")
    evaluate_asr(Recorder(), Dataset("smoke", SMOKE, utt), norm, rounds=1)  # type: ignore[arg-type]
    clean = heard[-1]
    evaluate_asr(Recorder(), Dataset("smoke+snr5", SMOKE, utt, perturb=spec), norm, rounds=1)  # type: ignore[arg-type]
    assert perturb.measured_snr_db(clean, heard[-1]) == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("codec", perturb.CODECS)
def test_codec_through_pedalboard_is_deterministic_and_band_limited(codec: str) -> None:
    pytest.importorskip("pedalboard", reason="the perturb extra (pedalboard) is not installed")
    rng = np.random.default_rng(0)
    clean = (0.1 * rng.standard_normal(32000)).astype(np.float32)  # white: energy up to 8 kHz
    ((name, spec),) = perturb.levels({"codec": [codec]})
    assert name == codec and spec["pedalboard"].startswith("pedalboard==")
    out = perturb.apply(clean, spec, "u", 16000)
    assert out.shape == clean.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out, perturb.apply(clean, spec, "u", 16000))
    assert 0.02 < float(np.sqrt(np.mean(out ** 2))) < 0.2  # not silenced (clean RMS 0.1; the telephone band keeps ~40%)
    assert float(np.abs(out - clean).mean()) > 0.01  # lossy: the model hears other audio
    if codec == "gsm":  # 8 kHz codec behind a 300-3400 Hz band: nothing left above 4 kHz
        freqs = np.fft.rfftfreq(len(out), 1 / 16000)
        high, high_clean = np.abs(np.fft.rfft(out))[freqs > 4500], np.abs(np.fft.rfft(clean))[freqs > 4500]
        assert high.mean() < 0.1 * high_clean.mean()


def test_each_level_is_its_own_case_and_golden(fake: FakeProject) -> None:
    manifest = fake.dataset()
    datasets = {"clips": {"manifest": manifest, "normalizer": "basic", "perturb": {"snr_db": [20, 0], "seed": 1}}}
    fake.config(datasets=datasets)
    res = _run(fake, "--speechlab-update-golden", "--speechlab-json", "run.json")
    res.assert_outcomes(passed=3)
    cases = {c["case"]: c for c in fake.record()["cases"]}
    assert set(cases) == {"ok-cpu-clips", "ok-cpu-clips+snr20", "ok-cpu-clips+snr0"}
    assert "perturb" not in cases["ok-cpu-clips"]
    golden = json.loads(fake.golden(dataset="clips+snr0").read_text())
    assert (
        golden["perturb"]["snr_db"] == 0.0 and golden["perturb"]["seed"] == 1 and golden["perturb"]["noise"] == "white"
    )
    _run(fake, "-k", "snr20").assert_outcomes(passed=1)
    # the same golden with another seed is other audio: refused, not compared
    datasets["clips"]["perturb"]["seed"] = 2
    fake.config(datasets=datasets)
    res = _run(fake, "-k", "snr0")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        ["*! the perturbation differs from the golden's:*'seed': 1*'seed': 2*re-record the golden"]
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"snr_db": []}, "datasets.clips.perturb.snr_db: must be a non-empty list of SNR levels in dB*"),
        ({"snr_db": [10, 10]}, "datasets.clips.perturb.snr_db: lists a level twice*"),
        (
            {"snr_db": [10], "noise": "brown"},
            "datasets.clips.perturb.noise: unknown noise 'brown'; one of: white, pink, babble",
        ),
        (
            {"snr_db": [10], "gain": 3},
            "datasets.clips.perturb.gain: unknown key; known: snr_db, noise, seed, codec, gain_db, speed, reverb, "
            "clip_db, talkers",
        ),
        ({"snr_db": [10], "seed": -1}, "datasets.clips.perturb.seed: must be an integer >= 0, got -1"),
        ([10], "datasets.clips.perturb: must be a mapping such as*"),
        (
            {"codec": ["opus"]},
            "datasets.clips.perturb.codec: must be a list of distinct codecs from: gsm, mp3; got [[]'opus'[]]",
        ),
    ],
)
def test_bad_perturb_names_the_key(fake: FakeProject, bad: Any, message: str) -> None:
    manifest = fake.dataset()
    fake.config(datasets={"clips": {"manifest": manifest, "normalizer": "basic", "perturb": bad}})
    res = _run(
        fake,
    )
    assert res.ret != 0
    res.stdout.fnmatch_lines([f"*{message}"])
