"""TTS quality (pytest_speechlab.tts_quality): DNSMOS per sentence and pooled, the one-sided gate, goldens
without DNSMOS, config errors; the gate's behaviour in pytester sessions with a fake voice, a fake judge and
a stand-in scorer; the real scorer on one Piper sentence."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from _fake import CONFTEST_SRC, FakeProject

from pytest_speechlab.golden import compare
from pytest_speechlab.tts_quality import POOLED_ABS, SENTENCE_ABS, dnsmos, gate

# ------------------------------------------------------------------------------------------ the gate


def _record(ovrl: list[float], sig: float = 3.5, bak: float = 4.1) -> dict[str, Any]:
    rows = [{"id": f"s{i}", "reference": "hello there", "hypothesis": "hello there", "wer": 0.0,
             "dnsmos_ovrl": v, "dnsmos_sig": sig, "dnsmos_bak": bak} for i, v in enumerate(ovrl)]
    return {"task": "tts", "normalizer": {"name": "basic"}, "decode": {},
            "metrics": {"wer": 0.0, "cer": 0.0, "dnsmos_sig": sig, "dnsmos_bak": bak,
                        "dnsmos_ovrl": round(sum(ovrl) / len(ovrl), 6)},
            "utterances": rows, "audio_files": {r["id"]: f"/tmp/{r['id']}.wav" for r in rows}}


def _statuses(checks: list[Any]) -> dict[str, str]:
    return {c.metric: c.status for c in checks}


def test_same_scores_pass_and_a_drop_beyond_the_tolerance_fails() -> None:
    golden = _record([3.3, 3.2, 3.3])
    checks, problems, _ = gate(golden, _record([3.3, 3.2, 3.3]), {})
    assert not problems
    assert _statuses(checks) == {"MOS-SIG": "pass", "MOS-BAK": "pass", "MOS-OVRL": "pass",
                                 "MOS-SENT": "pass"}
    # Within the tolerance (pooled -0.05, one sentence -0.15): pass.
    checks, _, _ = gate(golden, _record([3.3, 3.05, 3.3]), {})
    assert set(_statuses(checks).values()) == {"pass"}
    # One sentence 0.6 worse: pooled -0.2 and the sentence fail, and a note names it and its WAV.
    checks, problems, notes = gate(golden, _record([3.3, 2.6, 3.3]), {})
    st = _statuses(checks)
    assert st["MOS-OVRL"] == "fail" and st["MOS-SENT"] == "fail" and st["MOS-SIG"] == "pass"
    assert any("sentence 's1' OVRL 3.200 -> 2.600 (-0.600" in n and "/tmp/s1.wav" in n for n in notes)
    # Better is never a failure (one-sided).
    checks, _, _ = gate(golden, _record([3.8, 3.8, 3.8], sig=4.0), {})
    assert _statuses(checks)["MOS-OVRL"] == "improved" and "fail" not in _statuses(checks).values()


def test_tolerances_come_from_the_thresholds() -> None:
    golden, now = _record([3.3, 3.2, 3.3]), _record([3.3, 2.6, 3.3])
    checks, _, _ = gate(golden, now, {"dnsmos_abs": 0.25, "dnsmos_sentence_abs": 0.7})
    assert set(_statuses(checks).values()) == {"pass"}
    assert (POOLED_ABS, SENTENCE_ABS) == (0.1, 0.3)


def test_a_golden_without_dnsmos_is_said_not_silently_passed() -> None:
    golden = _record([3.3])
    for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        del golden["metrics"][k]
    checks, problems, notes = gate(golden, _record([3.3]), {})
    assert not problems
    assert notes and "DNSMOS not compared" in notes[0] and "--speechlab-update-golden" in notes[0]
    assert {c.status for c in checks} == {"not-compared"}
    assert all("golden has no DNSMOS" in c.note and "re-record" in c.note for c in checks)


def test_a_golden_with_dnsmos_and_a_run_without_it_fails() -> None:
    now = _record([3.3])
    for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        del now["metrics"][k]
    verdict = compare(_record([3.3]), now, {})
    assert verdict.status == "fail"
    assert any("the golden has dnsmos_ovrl 3.3 but this run measured None" in p for p in verdict.problems)


def test_the_golden_comparison_includes_dnsmos() -> None:
    verdict = compare(_record([3.3, 3.2]), _record([3.3, 2.5]), {})
    assert verdict.status == "fail"
    assert {"MOS-OVRL", "MOS-SENT"} <= {c.metric for c in verdict.checks if c.status == "fail"}
    assert compare(_record([3.3]), {**_record([3.3]), "metrics": {"wer": 0.0, "cer": 0.0}}, {}).status == "fail"
    asr = {"normalizer": {}, "decode": {}, "metrics": {"wer": 0.1, "cer": 0.1}}
    assert not [c for c in compare(asr, asr, {}).checks if c.metric.startswith("MOS-")]  # ASR: nothing to do


# ------------------------------------------------------------------------------------------ in a session

VOICE_SRC = '''
import numpy as np

from pytest_speechlab.backends.base import BaseBackend


class FakeVoice:
    """A 'voice' that hums 80 ms per character at amplitude ``amp``."""

    sample_rate = 16000
    decode_settings = {}

    def __init__(self, amp):
        self.amp = amp

    def synthesize(self, text):
        t = np.arange(int(0.08 * len(text) * 16000)) / 16000
        return (self.amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000


class FakeVoiceBackend(BaseBackend):
    name = "fakevoice"
    tasks = ("tts",)
    speed_reference = None
    options = ("amp",)

    def load(self, spec, device):
        return FakeVoice(float(spec.options.get("amp", 0.3)))
'''

# The real DNSMOS takes seconds a sentence: these sessions judge the gate, so a stand-in scores the peak level.
SCORER_SRC = '''
import numpy as np
import pytest_speechlab.tts_quality as _q

_real = _q.dnsmos


def _stand_in(audio, sample_rate):
    v = round(2.0 + 5.0 * float(np.max(np.abs(audio))), 6)
    return {"sig": v, "bak": 4.0, "ovrl": v, "p808": v}


def pytest_configure(config):
    _q.dnsmos = _stand_in


def pytest_unconfigure(config):
    _q.dnsmos = _real
'''


def _project(pytester: pytest.Pytester, amp: float = 0.3, dnsmos_on: Any = True, task: str = "tts") -> FakeProject:
    project = FakeProject(pytester)
    (pytester.path / "speechlab_voice.py").write_text(VOICE_SRC, encoding="utf-8")
    (pytester.path / "conftest.py").write_text(
        CONFTEST_SRC + 'register("fakevoice", "speechlab_voice:FakeVoiceBackend")\n' + SCORER_SRC, encoding="utf-8")
    texts = pytester.path / "texts"
    texts.mkdir(exist_ok=True)
    (texts / "manifest.jsonl").write_text('{"id": "s1", "text": "hello there"}\n{"id": "s2", "text": "hello there"}\n',
                                          encoding="utf-8")
    project.config(models={"voice": {"backend": "fakevoice", "task": "tts", "amp": amp}, "ear": {"say": "hello there"}},
                   datasets={"texts": {"manifest": "texts/manifest.jsonl", "task": task, "normalizer": "basic",
                                       "dnsmos": dnsmos_on}},
                   judge="ear", thresholds={"roundtrip_wer_max": 0.5})
    return project


def test_a_tts_case_records_and_gates_dnsmos(pytester: pytest.Pytester) -> None:
    project = _project(pytester)
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)
    golden_path = project.golden("voice", "texts")
    golden = json.loads(golden_path.read_text(encoding="utf-8"))
    assert golden["metrics"]["dnsmos_ovrl"] == 3.5 and golden["metrics"]["dnsmos_sentences"] == 2
    assert [u["dnsmos_ovrl"] for u in golden["utterances"]] == [3.5, 3.5]
    r = project.run()
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines([("*voice-cpu-texts: WER/CER are round-trip*, DNSMOS SIG 3.500 BAK 4.000 OVRL 3.500 "
                            "(2 sentences, * s); audio kept in*")])

    # A quieter voice scores 3.0: pooled and per sentence fail, naming the sentence and the WAV.
    _project(pytester, amp=0.2)
    r = project.run()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*MOS-OVRL*3.0000*3.5000*-0.1000 abs*FAIL*the voice sounds worse*",
                            "*DNSMOS: sentence 's1' OVRL 3.500 -> 3.000 (-0.500*listen: *.wav*"])

    # The golden predates DNSMOS: the run passes, and the summary says it was not compared and how to fix it.
    for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"):
        del golden["metrics"][k]
    golden_path.write_text(json.dumps(golden), encoding="utf-8")
    r = project.run("-rA")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*speechlab summary*", "*pass*",
                            ("*voice-cpu-texts: DNSMOS not compared: this run measured OVRL 3.000 but the golden has "
                             "no DNSMOS*re-record the golden (--speechlab-update-golden)*")])


@pytest.mark.slow
def test_dnsmos_is_recorded_and_gated_under_xdist(pytester: pytest.Pytester) -> None:
    """With two xdist workers: the worker scores, the controller writes the golden, the gate bites."""
    pytest.importorskip("xdist")
    project = _project(pytester)
    project.run_subprocess("-n", "2", "--speechlab-update-golden").assert_outcomes(passed=1)
    golden = json.loads(project.golden("voice", "texts").read_text(encoding="utf-8"))
    assert golden["metrics"]["dnsmos_ovrl"] == 3.5 and golden["utterances"][1]["dnsmos_ovrl"] == 3.5
    _project(pytester, amp=0.2)
    r = project.run_subprocess("-n", "2")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*MOS-OVRL*3.0000*3.5000*FAIL*"])


def test_dnsmos_switched_off_against_a_golden_that_has_it_fails(pytester: pytest.Pytester) -> None:
    project = _project(pytester)
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)
    _project(pytester, dnsmos_on=False)
    r = project.run()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*the golden has dnsmos_ovrl 3.5 but this run measured None*nothing to compare it with*"])


@pytest.mark.parametrize(("value", "task"), [("yes", "tts"), (True, "asr")])
def test_bad_dnsmos_setting_names_the_key(pytester: pytest.Pytester, value: Any, task: str) -> None:
    _project(pytester, dnsmos_on=value, task=task)
    r = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    r.stdout.fnmatch_lines([(f"*speechlab.yaml: datasets.texts.dnsmos: got {value!r}; true or false, and true only on "
                            "a task: tts dataset*")])


# ------------------------------------------------------------------------------------------ the real scorer


@pytest.mark.real_model
def test_real_dnsmos_is_deterministic_and_hears_noise() -> None:
    """One Piper sentence at 22.05 kHz (resampled to 16 kHz inside): the same score twice, and white noise at
    20 dB SNR costs more OVRL than the gate's tolerance.  Empty and all-zero audio have no score."""
    pytest.importorskip("speechmos", reason="speechmos is in the dnsmos extra (dev group: uv sync)")
    from test_tts import _piper_reason

    if _piper_reason():
        pytest.skip(str(_piper_reason()))
    from pytest_speechlab.backends import ModelSpec, get_backend

    voice = get_backend("piper").load(ModelSpec("piper-joe", "piper", "bundled:joe", task="tts"), "cpu")
    audio, sr = voice.synthesize("Dr. Smith paid $42.50 on March 3rd, 2024.")  # 5.4 s: two 9 s windows
    first, second = dnsmos(audio, sr), dnsmos(audio, sr)
    assert first is not None and first == second
    assert 1.0 <= first["ovrl"] <= 5.0 and set(first) == {"sig", "bak", "ovrl", "p808"}
    noise = np.random.default_rng(0).standard_normal(audio.size).astype(np.float32)
    noise *= np.sqrt(np.mean(audio**2) / np.mean(noise**2) / 100.0)
    noisy = dnsmos(np.clip(audio + noise, -1, 1), sr)
    assert noisy is not None and noisy["ovrl"] < first["ovrl"] - 0.3 and noisy["bak"] < first["bak"] - 0.3
    assert dnsmos(np.zeros(0, dtype=np.float32), sr) is None
    assert dnsmos(np.zeros(sr, dtype=np.float32), sr) is None


def test_a_missing_scorer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import pytest_speechlab.tts_quality as q
    from pytest_speechlab.tts_quality import QualityUnavailable

    monkeypatch.setattr(q, "_SCORER", None)  # a scorer loaded by an earlier test would be reused
    monkeypatch.setitem(sys.modules, "speechmos", None)
    with pytest.raises(QualityUnavailable, match=r"pip install 'pytest-speechlab\[dnsmos\]'.*remove 'dnsmos: true'"):
        dnsmos(np.ones(100, dtype=np.float32) * 0.1, 16000)


def test_scoring_is_lazy() -> None:
    """tts_quality imports no onnxruntime/speechmos/librosa until a sentence is scored."""
    import subprocess
    import sys

    code = ("import sys, pytest_speechlab.tts_quality, pytest_speechlab.properties\n"
            "print(sorted(m for m in ('speechmos', 'onnxruntime', 'librosa', 'hypothesis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"

