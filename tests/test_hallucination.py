"""Catastrophic outputs per utterance and hallucination on non-speech (pytest_speechlab/hallucination.py).

Behaviour tests run pytester sessions on the fake backend (tests/_fake.py): its ``say`` option is the
transcript, so a repetition loop or words on silence are one setting away.  The bundled non-speech set is
checked with the real Silero VAD faster-whisper ships.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fake import FakeProject
from _support import load_make_fixtures

from pytest_speechlab.hallucination import (
    catastrophic_reason,
    compression_ratio,
    score_outputs,
)

# Imported before any in-process pytester run, so the runs keep them (re-importing a native extension aborts).
faster_whisper_vad = pytest.importorskip("faster_whisper.vad", reason="faster-whisper extra (Silero VAD) not installed")
import soxr  # noqa: F401, E402


def _run(fake: FakeProject, *args: str) -> pytest.RunResult:
    """A fake-backend session with the RTF gate off: a fake's microsecond timings are noise, and speed is
    not what these tests are about."""
    return fake.run("--speechlab-rtf-gate", "off", *args)


REPO = Path(__file__).resolve().parent.parent
NONSPEECH = REPO / "fixtures" / "nonspeech"
LOOP = " ".join(["hello there"] * 8)


def test_rules() -> None:
    """Length > 3x the reference or a repetition loop is flagged; a reference that repeats raises the bar."""
    assert catastrophic_reason("hello there", "hello there", "Hello there.") is None
    assert "4 words for 1" in (catastrophic_reason("hello", "hello big wide world", "Hello big wide world") or "")
    assert catastrophic_reason("hello", "hello big world", "Hello big world") is None  # 3x: not more than 3x
    assert compression_ratio(LOOP) > 2.4
    assert "repetition loop" in (catastrophic_reason("hello there", LOOP, LOOP) or "")
    ref = "the cat sat on the mat " * 6  # a reference that itself repeats compresses well too
    assert compression_ratio(ref) > 2.4
    assert catastrophic_reason(ref.strip(), ref.strip(), ref) is None
    assert "compression ratio" in (catastrophic_reason(ref.strip(), (ref * 3).strip(), ref * 3) or "")
    # an empty reference: no length rule (the hallucination metrics count it), the loop rule still applies
    assert catastrophic_reason("", "thank you", "Thank you.") is None
    assert "compression ratio" in (catastrophic_reason("", LOOP, LOOP) or "")


def test_score_outputs_counts_words_on_nonspeech() -> None:
    rows = [
        {
            "id": "a",
            "reference": "",
            "ref_norm": "",
            "hypothesis": "Thank you.",
            "hyp_norm": "thank you",
            "duration": 2.0,
        },
        {"id": "b", "reference": "", "ref_norm": "", "hypothesis": "", "hyp_norm": "", "duration": 4.0},
        {"id": "c", "reference": "hi", "ref_norm": "hi", "hypothesis": "hi", "hyp_norm": "hi", "duration": 1.0},
    ]
    silence = np.zeros(16000, dtype=np.float32)
    m = score_outputs(rows, [silence, silence, silence], 16000, "test")
    assert m["catastrophic"] == 0
    assert m["nonspeech_clips"] == 2 and m["nonspeech_words"] == 2
    assert m["hallucination_rate"] == 0.5
    assert m["hallucination_wpm"] == pytest.approx(2 / (6.0 / 60))  # 2 words in 6 s of non-speech
    assert rows[0]["vad_speech_s"] == 0.0 and "vad_speech_s" not in rows[2]


def test_empty_reference_on_speech_in_a_speech_dataset_is_not_nonspeech() -> None:
    """A forgotten transcript in a speech dataset stays a speech clip (WER counts its words as insertions)."""
    import soundfile as sf

    speech, rate = sf.read(REPO / "fixtures" / "smoke" / "smoke-06.wav", dtype="float32")
    rows = [
        {
            "id": "s",
            "reference": "",
            "ref_norm": "",
            "hypothesis": "Can you send me the report by Friday?",
            "hyp_norm": "can you send me the report by friday",
            "duration": len(speech) / rate,
        },
        {"id": "q", "reference": "", "ref_norm": "", "hypothesis": "", "hyp_norm": "", "duration": 2.0},
        {"id": "t", "reference": "hi", "ref_norm": "hi", "hypothesis": "hi", "hyp_norm": "hi", "duration": 1.0},
    ]
    m = score_outputs(rows, [speech, np.zeros(32000, dtype=np.float32), speech], rate, "test")
    assert m["empty_references_with_speech"] == 1 and "Silero VAD finds" in rows[0]["not_nonspeech"]
    assert (m["nonspeech_clips"], m["nonspeech_words"], m["hallucination_rate"]) == (1, 0, 0.0)


def _cases(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["case"]: c for c in record["cases"]}


@pytest.mark.parametrize(
    "xdist", [pytest.param([], id="no-xdist"), pytest.param(["-n", "2"], id="n2", marks=pytest.mark.slow)]
)
def test_production_model_fails_on_one_catastrophic_output(fake: FakeProject, xdist: list[str]) -> None:
    """0 allowed for production: the failure block names the utterance and prints its alignment."""
    fake.config(models={"ok": {"stage": "production"}})
    _run(fake, "--speechlab-update-golden").assert_outcomes(passed=1)
    assert (
        _run(
            fake,
        ).ret
        == 0
    )
    fake.config(models={"ok": {"stage": "production", "say": LOOP}})
    res = _run(fake, "--speechlab-json", "run.json", *xdist)
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [
            "*CATASTR*1.0000*0.0000*<= 0*FAIL (1 utterance(s) with a catastrophic output*0 allowed)",
            "*worst catastrophic output [[]a[]]: 16 words for 2 in the reference (> 3x); compression ratio*",
            "*REF: hello there",
            "*alignment (normalised*",
            "*REF: hello there [*][*][*][*][*] *",
            "*HYP: hello there hello there*",
        ]
    )
    row = _cases(fake.record())["ok-cpu-clips"]
    assert row["metrics"]["catastrophic"] == 1 and row["verdict"] == "fail"
    assert "16 words for 2" in row["utterances"][0]["catastrophic"]


def test_candidate_is_gated_against_the_golden_count(fake: FakeProject) -> None:
    """Without catastrophic_max a candidate may keep the golden's count, not exceed it; a golden recorded
    before the count existed holds the case to 0 and says so."""
    fake.config(models={"cand": {"say": LOOP}})
    _run(fake, "--speechlab-update-golden").assert_outcomes(passed=1)
    assert json.loads(fake.golden("cand").read_text())["metrics"]["catastrophic"] == 1
    _run(
        fake,
    ).assert_outcomes(passed=1)
    golden = json.loads(fake.golden("cand").read_text())
    golden["metrics"].pop("catastrophic")
    fake.golden("cand").write_text(json.dumps(golden))
    res = _run(
        fake,
    )
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*CATASTR*1.0000*-*<= 0*FAIL*", "*note: the golden has no catastrophic count*held to 0*"])
    # a configured allowance wins over the golden
    fake.config(models={"cand": {"say": LOOP, "thresholds": {"catastrophic_max": 1}}})
    _run(
        fake,
    ).assert_outcomes(passed=1)


def test_catastrophic_max_must_be_a_count(fake: FakeProject) -> None:
    fake.config(models={"ok": {"thresholds": {"catastrophic_max": 0.5}}})
    res = _run(
        fake,
    )
    assert res.ret != 0
    res.stdout.fnmatch_lines(
        ["*models.ok.thresholds.catastrophic_max: is a count of utterances: must be a whole number*0.5*"]
    )


def _nonspeech_dataset(fake: FakeProject, with_speech: bool = False) -> dict[str, Any]:
    folder = fake.path / "data" / "quiet"
    folder.mkdir(parents=True)
    rows = []
    for line in (NONSPEECH / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        shutil.copy(NONSPEECH / row["audio_filepath"], folder / row["audio_filepath"])
        rows.append(row)
    if with_speech:  # a clip of speech whose reference was left empty
        shutil.copy(REPO / "fixtures" / "smoke" / "smoke-02.wav", folder / "speech.wav")
        rows.append({"audio_filepath": "speech.wav", "text": "", "id": "speech"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"quiet": {"manifest": "data/quiet/manifest.jsonl", "normalizer": "basic"}}


@pytest.mark.real_model
def test_words_on_nonspeech_are_gated_not_wer(fake: FakeProject) -> None:
    """A model that starts writing 'thank you for watching' on silence fails HAL-WPM and HAL-RATE; WER is off."""
    # Subprocesses: each session loads Silero VAD itself, so the peak-memory gate compares like with like.
    datasets = _nonspeech_dataset(fake)
    fake.config(models={"ok": {"say": ""}}, datasets=datasets)
    fake.run_subprocess("--speechlab-rtf-gate", "off", "--speechlab-update-golden").assert_outcomes(passed=1)
    golden = json.loads(fake.golden("ok", "quiet").read_text())
    assert golden["metrics"]["hallucination_rate"] == 0.0 and golden["metrics"]["hallucination_wpm"] == 0.0
    assert all(r["vad_speech_s"] <= 0.25 for r in golden["utterances"])
    fake.run_subprocess(
        "--speechlab-rtf-gate",
        "off",
    ).assert_outcomes(passed=1)
    fake.config(models={"ok": {"say": "Thank you for watching!"}}, datasets=datasets)
    res = fake.run_subprocess("--speechlab-rtf-gate", "off", "--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [
            "*WER*1.0000*0.0000*OFF (non-speech dataset (every reference empty)*",
            "*HAL-WPM*120.0000*0.0000*+5.0000 abs*FAIL*more output on non-speech*",  # 4 words x 3 clips / 0.1 min
            "*HAL-RATE*1.0000*0.0000*+0.0000 abs*FAIL*",
        ]
    )
    m = _cases(fake.record())["ok-cpu-quiet"]["metrics"]
    assert (m["nonspeech_clips"], m["nonspeech_words"], m["hallucination_rate"]) == (3, 12, 1.0)
    assert m["nonspeech_vad"].startswith("silero (faster-whisper==")


def test_golden_without_hallucination_metrics_is_not_a_pass(fake: FakeProject) -> None:
    datasets = _nonspeech_dataset(fake)
    fake.config(models={"ok": {"say": ""}}, datasets=datasets)
    _run(fake, "--speechlab-update-golden").assert_outcomes(passed=1)
    golden = json.loads(fake.golden("ok", "quiet").read_text())
    for k in ("hallucination_rate", "hallucination_wpm"):
        golden["metrics"].pop(k)
    fake.golden("ok", "quiet").write_text(json.dumps(golden))
    res = _run(
        fake,
    )
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        ["*this run measured hallucination_wpm (the dataset has non-speech clips) but the golden has None; re-record*"]
    )


def test_speech_in_an_empty_reference_clip_is_an_error(fake: FakeProject) -> None:
    """Silero VAD confirms the non-speech clips: real speech with an empty reference errors, naming the clip."""
    fake.config(models={"ok": {"say": ""}}, datasets=_nonspeech_dataset(fake, with_speech=True))
    res = _run(fake, "--speechlab-update-golden")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [
            (
                "*(utterance speech): the reference is empty (a non-speech clip) but Silero VAD finds * s of "
                "speech in *speech.wav*Transcribe the clip in the manifest, or remove it*"
            )
        ]
    )
    assert not fake.golden("ok", "quiet").exists()


def test_bundled_nonspeech_set_is_what_the_script_makes_and_holds_no_speech() -> None:

    import soundfile as sf

    from pytest_speechlab.hallucination import vad_speech_seconds

    script = load_make_fixtures()
    expected = script.nonspeech_audio()
    rows = [json.loads(x) for x in (NONSPEECH / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert [r["id"] for r in rows] == list(expected) and all(r["text"] == "" for r in rows)
    for row in rows:
        audio, rate = sf.read(NONSPEECH / row["audio_filepath"], dtype="float32")
        assert rate == 16000 and audio.shape == expected[row["id"]].shape
        assert float(np.abs(audio - expected[row["id"]]).max()) <= 1.5 / 32768, (
            "rerun: make_fixtures.py --set nonspeech"
        )
        assert vad_speech_seconds(audio, rate) == 0.0, f"Silero VAD finds speech in {row['audio_filepath']}"
    sums = dict(reversed(line.split()) for line in (NONSPEECH / "SHA256SUMS").read_text().splitlines())
    import hashlib

    for name, digest in sums.items():
        assert hashlib.sha256((NONSPEECH / name).read_bytes()).hexdigest() == digest, (
            f"{name} changed; rerun make_fixtures.py"
        )
