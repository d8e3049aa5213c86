"""perturb: effects (gain, speed, reverb, clipping through pedalboard) and babble noise; the robustness plot."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _fake import FakeProject

from pytest_speechlab import effects, perturb
from pytest_speechlab.datasets import DatasetError

pytest.importorskip("pedalboard", reason="the perturb extra (pedalboard) is not installed")


def _tone(freq: float, n: int = 16000, level: float = 0.2) -> np.ndarray:
    t = np.arange(n) / 16000
    return (level * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _level(raw: dict[str, Any]) -> dict[str, Any]:
    ((_, spec),) = perturb.levels(raw)
    return spec


def _dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * 16000 / len(x))


def test_effects_do_what_they_say_deterministically() -> None:
    clean = _tone(220)
    out = perturb.apply(clean, _level({"gain_db": [-20]}), "u")
    assert float(np.abs(out).max() / np.abs(clean).max()) == pytest.approx(0.1, rel=1e-4)
    faster = perturb.apply(clean, _level({"speed": [1.25]}), "u")
    assert len(faster) == pytest.approx(len(clean) / 1.25, rel=0.02)
    assert _dominant_hz(faster) == pytest.approx(220, abs=5)  # tempo, not pitch
    clipped = perturb.apply(clean, _level({"clip_db": [6]}), "u")
    assert float(np.abs(clipped).max()) == pytest.approx(float(np.abs(clean).max()) / 10 ** (6 / 20), rel=1e-3)
    assert float(np.mean(np.abs(clipped) >= np.abs(clipped).max() - 1e-6)) > 0.05  # flattened tops
    wet = perturb.apply(clean, _level({"reverb": [0.8]}), "u")
    assert wet.shape == clean.shape and float(np.abs(wet - clean).mean()) > 0.01
    for raw in ({"gain_db": [6]}, {"speed": [0.8]}, {"reverb": [0.3]}, {"clip_db": [12]}):
        spec = _level(raw)
        assert spec["pedalboard"].startswith("pedalboard==")
        a, b = perturb.apply(clean, spec, "u"), perturb.apply(clean, spec, "v")
        assert a.dtype == np.float32 and np.isfinite(a).all() and np.array_equal(a, b)  # no randomness


def test_babble_is_other_utterances_at_the_snr() -> None:
    own, other = _tone(220), _tone(1000, n=12000)
    spec = _level({"snr_db": [5], "noise": "babble", "talkers": 1, "seed": 2})
    assert spec["talkers"] == 1 and spec["noise"] == "babble"
    pool = {"own": own, "other": other}
    noisy = perturb.apply(own, spec, "own", 16000, pool)
    assert perturb.measured_snr_db(own, noisy) == pytest.approx(5.0, abs=1e-3)
    assert _dominant_hz(noisy - own) == pytest.approx(1000, abs=5)  # the other talker, never its own audio
    assert np.array_equal(noisy, perturb.apply(own, spec, "own", 16000, pool))
    assert not np.array_equal(noisy, perturb.apply(own, {**spec, "seed": 3}, "own", 16000, pool))
    with pytest.raises(DatasetError, match="other utterances"):
        perturb.apply(own, spec, "own", 16000, {"own": own})


def _clips(fake: FakeProject) -> str:
    folder = fake.path / "data" / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, freq in enumerate((300, 500, 700)):
        sf.write(str(folder / f"c{k}.wav"), _tone(freq, 8000), 16000, subtype="PCM_16")
        rows.append({"audio_filepath": f"c{k}.wav", "text": "hello there", "id": f"c{k}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return "data/clips/manifest.jsonl"


def test_each_effect_level_is_its_own_case_with_its_spec(pytester: pytest.Pytester) -> None:
    fake = FakeProject(pytester)
    raw = {"snr_db": [10], "noise": "babble", "gain_db": [-20], "speed": [1.25], "reverb": [0.5], "clip_db": [6]}
    fake.config(datasets={"clips": {"manifest": _clips(fake), "normalizer": "basic", "perturb": raw}})
    res = fake.run("--speechlab-rtf-gate", "off", "--speechlab-update-golden", "--speechlab-json", "run.json")
    assert res.ret == 0, res.stdout.str()
    cases = {c["case"]: c for c in fake.record()["cases"]}
    assert set(cases) == {f"ok-cpu-clips{s}" for s in ("", "+snr10", "+gain-20", "+speed1.25", "+reverb0.5", "+clip6")}
    assert cases["ok-cpu-clips+snr10"]["perturb"]["noise"] == "babble"
    assert cases["ok-cpu-clips+speed1.25"]["perturb"]["kind"] == "speed"
    golden = json.loads(fake.golden(dataset="clips+clip6").read_text())
    assert golden["perturb"]["kind"] == "clipping" and golden["perturb"]["clip_db"] == 6.0
    assert golden["perturb"]["pedalboard"].startswith("pedalboard==")


@pytest.mark.parametrize(
    ("bad", "key", "message"),
    [
        ({"speed": [0.1]}, "speed", "out of range"),
        ({"gain_db": 6}, "gain_db", "non-empty list"),
        ({"reverb": [0.5, 0.5]}, "reverb", "distinct"),
        ({"clip_db": [0]}, "clip_db", "out of range"),
        ({"snr_db": [10], "talkers": 2}, "talkers", "noise: babble only"),
        ({"snr_db": [10], "noise": "babble", "talkers": 0}, "talkers", "1..32"),
    ],
)
def test_bad_effect_names_the_key(pytester: pytest.Pytester, bad: Any, key: str, message: str) -> None:
    fake = FakeProject(pytester)
    fake.config(datasets={"clips": {"manifest": fake.dataset(), "normalizer": "basic", "perturb": bad}})
    res = fake.run()
    assert res.ret != 0
    out = res.stdout.str() + res.stderr.str()
    assert f"datasets.clips.perturb.{key}: " in out and message in out, out


def test_babble_on_a_one_utterance_dataset_is_an_error_naming_it(pytester: pytest.Pytester) -> None:
    fake = FakeProject(pytester)
    fake.config(
        datasets={
            "clips": {"manifest": fake.dataset(), "normalizer": "basic", "perturb": {"snr_db": [5], "noise": "babble"}}
        }
    )
    res = fake.run("--speechlab-rtf-gate", "off", "--speechlab-update-golden", "-k", "snr5")
    assert res.ret == 1
    assert "babble is made from the other utterances" in res.stdout.str() and "'a'" in res.stdout.str()


def test_levels_keep_the_names_of_the_existing_ones() -> None:
    names = [n for n, _ in perturb.levels({"snr_db": [20, -5, 7.5], "codec": ["gsm"], "gain_db": [-6.5]})]
    assert names == ["gsm", "gain-6.5", "snr20", "snr-5", "snr7.5"]
    assert effects.number_name(1.25) == "1.25" and effects.number_name(12.0) == "12"


def test_scorecard_draws_wer_vs_snr_per_model(pytester: pytest.Pytester) -> None:
    """A run with +snrN cases gets wer_vs_snr.png in its scorecard (one panel per model); the series behind it
    hold each model's clean and noisy WER by SNR."""
    import math

    from pytest_speechlab.commands.robustness import snr_series

    fake = FakeProject(pytester)
    fake.config(
        models={"ok": {}, "other": {"say": "hello"}},
        datasets={
            "clips": {
                "manifest": fake.dataset(),
                "normalizer": "basic",
                "perturb": {"snr_db": [10, 0], "noise": "pink"},
            }
        },
    )
    res = fake.run("--speechlab-rtf-gate", "off", "--speechlab-update-golden", "--speechlab-json", "run.json")
    assert res.ret == 0, res.stdout.str()
    series = snr_series([fake.record()])
    assert series == {
        "ok": {("clips", "pink", "cpu"): {10.0: 0.0, 0.0: 0.0, math.inf: 0.0}},
        "other": {("clips", "pink", "cpu"): {10.0: 0.5, 0.0: 0.5, math.inf: 0.5}},
    }
    rc, out = fake.speechlab("scorecard", "run.json", "-o", "card")
    assert rc == 0, out
    png = fake.path / "card" / "wer_vs_snr.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wer_vs_snr" in out
    assert "WER vs SNR" in (fake.path / "card" / "scorecard.md").read_text("utf-8")
    # no noise levels in the records: no such plot
    fake.config(datasets={"clips": {"manifest": "data/clips/manifest.jsonl", "normalizer": "basic"}})
    assert fake.run("--speechlab-rtf-gate", "off", "--speechlab-update-golden", "--speechlab-json", "r2.json").ret == 0
    assert snr_series([fake.record("r2.json")]) == {}
