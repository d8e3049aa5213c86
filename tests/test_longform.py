"""Long-form datasets (longform: in speechlab.yaml): recordings built from a manifest with known utterance
starts; start error and precision/recall of segment starts, gated against the golden."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _fake import FakeProject
from _support import FW_MISSING, real_model

from pytest_speechlab import longform
from pytest_speechlab.datasets import load_audio, load_dataset

SMOKE = Path(__file__).resolve().parent.parent / "fixtures" / "smoke"

# A fake backend with timestamps: a segment starts at every onset after >= 100 ms of silence, moved by
# ``shift_ms``; ``drop: N`` leaves out every Nth segment (a missed utterance start).
TS_BACKEND = """
import numpy as np

from pytest_speechlab.backends.base import BaseBackend


class TsASR:
    sample_rate = 16000

    def __init__(self, opts):
        self.opts = opts
        self.decode_settings = dict(opts)

    def transcribe_segments(self, audio):
        frames = np.abs(np.asarray(audio)[: len(audio) // 160 * 160]).reshape(-1, 160).max(axis=1) > 1e-3
        onsets = [i for i in range(len(frames)) if frames[i] and not frames[max(0, i - 10):i].any()]
        shift, drop = self.opts.get("shift_ms", 0) / 1000.0, self.opts.get("drop", 0)
        return [{"id": k, "start": max(0.0, i / 100 + shift), "end": i / 100 + 0.5, "text": " hello there"}
                for k, i in enumerate(onsets) if not (drop and k % drop == drop - 1)]

    def transcribe(self, audio):
        return "".join(s["text"] for s in self.transcribe_segments(audio)).strip()


class TsBackend(BaseBackend):
    name = "fake-ts"
    tasks = ("asr",)
    devices = ("cpu",)
    speed_reference = None
    options = ("shift_ms", "drop", "without_timestamps")

    def load(self, spec, device):
        return TsASR(spec.options)
"""


@pytest.fixture
def fake(pytester: pytest.Pytester) -> FakeProject:
    project = FakeProject(pytester)
    (project.path / "speechlab_ts.py").write_text(TS_BACKEND, encoding="utf-8")
    with (project.path / "conftest.py").open("a", encoding="utf-8") as fh:
        fh.write('register("fake-ts", "speechlab_ts:TsBackend")\n')
    return project


def _write_clips(fake: FakeProject, n: int = 4) -> str:
    """``data/clips``: ``n`` half-second tones of different pitch, each saying 'hello there'."""
    folder = fake.path / "data" / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 16000
    rows = []
    for k in range(n):
        sf.write(str(folder / f"c{k}.wav"), 0.1 * np.sin(2 * np.pi * (300 + 100 * k) * t), 16000, subtype="PCM_16")
        rows.append({"audio_filepath": f"c{k}.wav", "text": "hello there", "id": f"c{k}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return "data/clips/manifest.jsonl"


def _config(fake: FakeProject, model: dict[str, Any] | None = None, spec: dict[str, Any] | None = None) -> None:
    lf = spec or {"minutes": 0.1, "gap_s": 0.5}  # 6 s: the four half-second clips cycled, 6 starts
    fake.config(
        models={"ts": {"backend": "fake-ts", **(model or {})}},
        datasets={"lf": {"manifest": _write_clips(fake), "normalizer": "basic", "longform": lf}},
    )


def _run(fake: FakeProject, *args: str) -> pytest.RunResult:
    return fake.run("--speechlab-rtf-gate", "off", "--speechlab-json", "run.json", *args)


def test_builder_cycles_a_short_manifest_and_knows_every_start(tmp_path: Path) -> None:
    """The bundled case: the six smoke clips x3 with 0.5 s gaps; every start holds its clip, sample for sample."""
    data = load_dataset("smoke", SMOKE / "manifest.jsonl")
    built = longform.build("longform", data, {"minutes": 0.85, "gap_s": 0.5}, tmp_path)
    (rec,) = built.utterances
    info = rec.extra["longform"]
    assert info["parts"] == [u.id for u in data.utterances] * 3
    assert rec.text == " ".join(u.text for u in data.utterances * 3)
    audio, _ = load_audio(rec.audio_path, 16000)
    assert 45 < len(audio) / 16000 <= 51
    for uid, start in zip(info["parts"], info["starts"], strict=True):
        clip, _ = load_audio(SMOKE / next(u.audio_path for u in data.utterances if u.id == uid), 16000)
        at = round(start * 16000)
        assert float(np.abs(audio[at : at + len(clip)] - clip).max()) <= 1.5 / 32768  # 16-bit FLAC
        assert float(np.abs(audio[at - 100 : at]).max(initial=0.0)) == 0.0  # the gap before it is silence
    again = longform.build("longform", data, {"minutes": 0.85, "gap_s": 0.5}, tmp_path / "b")
    assert rec.audio_path.read_bytes() == again.utterances[0].audio_path.read_bytes()  # deterministic
    assert json.loads(built.source.read_text().splitlines()[0])["longform"] == info  # manifest beside it


def test_builder_splits_a_long_manifest_and_seed_shuffles(tmp_path: Path) -> None:
    data = load_dataset("smoke", SMOKE / "manifest.jsonl")
    built = longform.build("lf", data, {"minutes": 0.1, "gap_s": [0.2, 1.0], "seed": 3}, tmp_path)
    parts = [p for u in built.utterances for p in u.extra["longform"]["parts"]]
    assert sorted(parts) == sorted(u.id for u in data.utterances)  # each utterance once
    assert parts != [u.id for u in data.utterances]  # shuffled by the seed
    assert all(u.duration is not None and u.duration <= 6.0 for u in built.utterances)
    again = longform.build("lf", data, {"minutes": 0.1, "gap_s": [0.2, 1.0], "seed": 3}, tmp_path / "b")
    assert [u.extra for u in again.utterances] == [u.extra for u in built.utterances]
    other = longform.build("lf", data, {"minutes": 0.1, "gap_s": [0.2, 1.0], "seed": 4}, tmp_path / "c")
    assert [u.extra for u in other.utterances] != [u.extra for u in built.utterances]


def test_start_matching_is_one_to_one_within_the_collar() -> None:
    assert longform.match_starts([0.0, 1.0, 2.0], [0.05, 0.1, 1.3, 2.19], 0.2) == 2  # 1.0 unmatched, 0.1 spare
    assert longform.match_starts([0.0], [], 0.2) == 0


def test_timestamps_are_measured_and_gated_against_the_golden(fake: FakeProject) -> None:
    _config(fake)
    res = _run(fake, "--speechlab-update-golden")
    assert res.ret == 0, res.stdout.str()
    (case,) = fake.record()["cases"]
    m = case["metrics"]
    assert (m["ts_ref_starts"], m["ts_hyp_starts"]) == (6, 6) and m["wer"] == 0.0
    assert m["ts_start_median_ms"] <= 10 and m["ts_start_p95_ms"] <= 10  # onsets found within a 10 ms frame
    assert (m["ts_precision"], m["ts_recall"], m["ts_collar_ms"]) == (1.0, 1.0, 200.0)
    assert case["longform"]["minutes"] == 0.1
    golden = json.loads(fake.golden("ts", "lf").read_text())
    assert golden["metrics"]["ts_recall"] == 1.0 and golden["longform"] == case["longform"]
    assert _run(fake).ret == 0

    _config(fake, {"shift_ms": 300})  # every segment 300 ms late: outside the 200 ms collar
    res = _run(fake)
    assert res.ret == 1
    out = res.stdout.str()
    for label in ("TS-MED", "TS-P95", "TS-PREC", "TS-REC"):
        assert any(
            line.lstrip().startswith(label) and line.rstrip().endswith(")") and "FAIL" in line
            for line in out.splitlines()
        ), (label, out)

    _config(fake, {"drop": 3})  # a third of the starts missed: recall 0.67, precision still 1
    res = _run(fake)
    assert res.ret == 1
    (case,) = fake.record()["cases"]
    assert case["metrics"]["ts_recall"] == pytest.approx(4 / 6, abs=1e-6) and case["metrics"]["ts_precision"] == 1.0
    status = {c["metric"]: c["status"] for c in case["checks"]}
    assert status["TS-REC"] == "fail" and status["TS-PREC"] == "pass"
    # ... unless the tolerance allows it
    fake.config(
        models={"ts": {"backend": "fake-ts", "drop": 3}},
        datasets={
            "lf": {
                "manifest": "data/clips/manifest.jsonl",
                "normalizer": "basic",
                "longform": {"minutes": 0.1},
                "thresholds": {"ts_pr_abs": 0.5, "ts_start_ms_abs": 2000},
            }
        },
    )
    _run(fake)  # (fails on WER: the dropped segments' words are missing too)
    (case,) = fake.record()["cases"]
    status = {c["metric"]: c["status"] for c in case["checks"]}
    assert (status["TS-REC"], status["TS-P95"]) == ("pass", "pass")


def test_a_golden_without_timestamps_is_reported_not_silently_passed(fake: FakeProject) -> None:
    _config(fake)
    assert _run(fake, "--speechlab-update-golden").ret == 0
    path = fake.golden("ts", "lf")
    golden = json.loads(path.read_text())
    for key in [k for k in golden["metrics"] if k.startswith("ts_")]:
        del golden["metrics"][key]
    path.write_text(json.dumps(golden))
    res = _run(fake)
    assert res.ret == 0  # today's goldens keep passing on what they can compare ...
    out = res.stdout.str()
    assert "the golden has no long-form timestamp metrics" in out and "--speechlab-update-golden" in out
    (case,) = fake.record()["cases"]
    assert {c["metric"]: c["status"] for c in case["checks"]}["TS"] == "not-compared"  # ... and say what they cannot


def test_a_backend_without_timestamps_says_so(fake: FakeProject) -> None:
    _config(fake, {"without_timestamps": True})
    assert _run(fake, "--speechlab-update-golden").ret == 0
    (case,) = fake.record()["cases"]
    assert "ts_recall" not in case["metrics"]
    assert case["metrics"]["timestamps"].startswith("no timestamps: the model decodes with without_timestamps")
    res = _run(fake)
    assert res.ret == 0
    (case,) = fake.record()["cases"]
    ts = next(c for c in case["checks"] if c["metric"] == "TS")
    assert ts["status"] == "off" and "no timestamps" in ts["note"]
    # a golden that had them, against a run that has none: refused, not passed
    golden = json.loads(fake.golden("ts", "lf").read_text())
    golden["metrics"].update({"ts_start_median_ms": 5.0, "ts_start_p95_ms": 9.0, "ts_precision": 1.0, "ts_recall": 1.0})
    fake.golden("ts", "lf").write_text(json.dumps(golden))
    res = _run(fake)
    assert res.ret == 1
    assert "the golden has long-form timestamp metrics but this run measured none" in res.stdout.str()


@pytest.mark.parametrize(
    ("bad", "key", "message"),
    [
        ({"gap_s": 0.5}, "longform.minutes", "is required"),
        ({"minutes": 0}, "longform.minutes", "a number > 0"),
        ({"minutes": 1, "gap_s": [2, 1]}, "longform.gap_s", "lo <= hi"),
        ({"minutes": 1, "seed": -1}, "longform.seed", "integer >= 0"),
        ({"minutes": 1, "collar_ms": 0}, "longform.collar_ms", "> 0"),
        ({"minutes": 1, "gaps": 1}, "longform.gaps", "unknown key"),
        ("10 minutes", "longform", "must be a mapping"),
    ],
)
def test_bad_longform_names_file_and_key(fake: FakeProject, bad: Any, key: str, message: str) -> None:
    fake.config(datasets={"clips": {"manifest": fake.dataset(), "normalizer": "basic", "longform": bad}})
    res = _run(fake)
    assert res.ret != 0
    out = res.stdout.str() + res.stderr.str()
    assert f"speechlab.yaml: datasets.clips.{key}: " in out and message in out, out


@real_model(FW_MISSING)
def test_fw_tiny_en_segment_starts_on_a_built_recording(tmp_path: Path) -> None:
    """The real model on the builder's recording (the smoke clips x2 with 0.5 s gaps, ~33 s: two 30 s windows):
    its segment starts land on the known utterance starts."""
    from pytest_speechlab.backends import get_backend
    from pytest_speechlab.backends.base import ModelSpec
    from pytest_speechlab.metrics import get_normalizer, utterance_errors

    data = longform.build("lf", load_dataset("smoke", SMOKE / "manifest.jsonl"), {"minutes": 0.57}, tmp_path)
    assert len(data.utterances[0].extra["longform"]["starts"]) == 12
    spec = ModelSpec("tiny", "faster-whisper", "bundled:tiny.en", options={"compute_type": "int8", "language": "en"})
    model = get_backend("faster-whisper").load(spec, "cpu")
    (rec,) = data.utterances
    audio, seconds = load_audio(rec.audio_path, 16000)
    tap = longform.SegmentTap(model, 1)  # one decode, as a case's timed round makes it
    norm = get_normalizer("whisper-en")
    errors = utterance_errors(norm(rec.text), norm(tap.transcribe(audio)))
    assert errors["word_errors"] / errors["ref_words"] < 0.05
    m = longform.score(data, [{"duration": seconds}], model, tap)
    assert m["ts_recall"] >= 0.9 and m["ts_precision"] >= 0.9, m
    assert m["ts_start_median_ms"] < 100 and m["ts_start_p95_ms"] < 200, m


@real_model(FW_MISSING, f"Silero VAD comes with faster-whisper: {FW_MISSING}")
def test_words_over_vad_nonspeech_in_a_long_recording_are_flagged() -> None:
    """Real speech, 3 s of silence, real speech: a segment whose words lie in the silence (what Whisper writes
    into pauses: "Thank you for watching") is flagged by Silero VAD; segments over the speech are not."""
    from pytest_speechlab.hallucination import vad_regions

    a, _ = load_audio(SMOKE / "smoke-01.wav", 16000)
    b, _ = load_audio(SMOKE / "smoke-02.wav", 16000)
    audio = np.concatenate([a, np.zeros(48000, dtype=np.float32), b]).astype(np.float32)
    la = len(a) / 16000
    segs = [
        {"start": 0.0, "end": la, "text": " The quick brown fox."},
        {"start": la + 0.6, "end": la + 2.4, "text": " Thank you for watching."},
        {"start": la + 3.0, "end": len(audio) / 16000, "text": " Something else."},
        {"start": la + 1.0, "end": la + 1.5, "text": " ..."},  # no words: nothing to flag
    ]
    speech = vad_regions(audio, 16000)
    assert speech and speech[0][0] < 0.5 and speech[-1][1] > la + 3.0  # the VAD hears both clips
    flagged = longform.over_nonspeech(segs, speech)
    assert [f["text"] for f in flagged] == ["Thank you for watching."] and flagged[0]["words"] == 4


def test_words_over_vad_nonspeech_are_gated_against_the_golden() -> None:
    flagged = [{"start": 12.0, "end": 14.0, "text": "Thank you for watching.", "words": 4}]
    now = {"metrics": {"vad_nonspeech_words": 4}, "utterances": [{"segments_over_nonspeech": flagged}]}

    def vad_check(golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float]) -> Any:
        checks, problems, notes = longform.gate(golden, obtained, thresholds)
        return next((c for c in checks if c.metric == "VAD-WORDS"), None), problems, notes

    c, problems, _ = vad_check({"metrics": {"vad_nonspeech_words": 0}}, now, {})
    assert c.status == "fail" and "+4 words where Silero VAD hears no speech" in c.note
    assert "12.0-14.0 s 'Thank you for watching.'" in c.note and not problems
    c, _, _ = vad_check({"metrics": {"vad_nonspeech_words": 0}}, now, {"vad_words_abs": 4})
    assert c.status == "pass"
    c, _, _ = vad_check({"metrics": {"vad_nonspeech_words": 6}}, now, {})
    assert c.status == "improved"
    c, _, notes = vad_check({"metrics": {}}, now, {})  # a golden from before the count
    assert c.status == "not-compared" and any("re-record the golden" in n for n in notes)
    c, problems, _ = vad_check({"metrics": {"vad_nonspeech_words": 0}}, {"metrics": {"vad": "no VAD"}}, {})
    assert c is None and problems and "could not" in problems[0]  # the golden has it, this run cannot: not a pass
