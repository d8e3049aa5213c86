"""Every verdict names its cause (issue 13): weights swaps, dataset drift, settings changes, effective
tolerances, hardware differences.  The point is the plugin's behaviour, so a fake ASR backend stands in for
a model: its "weights" are a folder holding ``transcripts.json`` (audio length in samples -> text), so
swapping the weights changes both the content hash and what the model says, and it runs in milliseconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from pytest_speechlab.golden import Check, Verdict
from pytest_speechlab.tolerances import effective
from pytest_speechlab.verdicts import headline, judge

FAKE_BACKEND = '''
import json
import os
import time
from pathlib import Path

from pytest_speechlab.backends.base import BaseBackend


class FakeASR:
    sample_rate = 16000

    def __init__(self, folder, threads):
        self.weights_path = folder
        self.table = json.loads((folder / "transcripts.json").read_text(encoding="utf-8"))
        self.decode_settings = {"cpu_threads": threads}

    def transcribe(self, audio):
        time.sleep(float(os.environ.get("SPEECHLAB_FAKE_SLEEP", "0")))  # a slower "release", for speed tests
        return self.table.get(str(len(audio)), "")


class FakeBackend(BaseBackend):
    name = "fake-asr"
    devices = ("cpu",)
    options = ("cpu_threads",)

    def load(self, spec, device):
        return FakeASR(spec.resolve_path(spec.weights), int(spec.options.get("cpu_threads", 0)))
'''
CONFTEST = '''
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pytest_speechlab.backends import register

register("fake-asr", "speechlab_fakeasr:FakeBackend")
'''

# Four utterances; their lengths (in samples at 16 kHz) are how the fake model tells them apart.
UTTERANCES = {
    "u1": (8000, "the cat sat on the mat"),
    "u2": (9600, "please close the window"),
    "u3": (11200, "the bus was late again"),
    "u4": (12800, "we need more coffee"),
}
CASE = "fake-cpu-data"
ACCEPT = "*pytest 'speechlab.yaml::test_speech[[]fake-cpu-data[]]' --speechlab-update-golden"


def _tone(n: int, freq: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / 16000.0
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class FakeProject:
    """A speechlab project in ``pytester.path`` whose one model is the fake backend."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        pytester.makepyfile(speechlab_fakeasr=FAKE_BACKEND, conftest=CONFTEST)
        self.data = self.path / "data"
        self.data.mkdir()
        for uid, (n, _) in UTTERANCES.items():
            sf.write(self.data / f"{uid}.wav", _tone(n, 220.0 + 40 * int(uid[1])), 16000, subtype="PCM_16")
        self.manifest({uid: text for uid, (_, text) in UTTERANCES.items()})
        # Weights "a" mishear u1 ("the cat sat on a mat"); weights "b" hear everything right.
        self.weights("a", {uid: text for uid, (_, text) in UTTERANCES.items()} | {"u1": "the cat sat on a mat"})
        self.weights("b", {uid: text for uid, (_, text) in UTTERANCES.items()})

    def weights(self, name: str, said: dict[str, str]) -> None:
        folder = self.path / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        table = {str(UTTERANCES[uid][0]): text for uid, text in said.items()}
        (folder / "transcripts.json").write_text(json.dumps(table, sort_keys=True), encoding="utf-8")

    def manifest(self, refs: dict[str, str]) -> None:
        rows = [{"id": uid, "audio_filepath": f"{uid}.wav", "text": text} for uid, text in refs.items()]
        (self.data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def config(self, weights: str = "models/a", stage: str = "production", thresholds: dict[str, float] | None = None,
               model_thresholds: dict[str, float] | None = None, filename: str = "speechlab", **model: Any) -> Path:
        entry: dict[str, Any] = {"backend": "fake-asr", "weights": weights, "devices": ["cpu"], "stage": stage, **model}
        if model_thresholds:
            entry["thresholds"] = model_thresholds
        doc = {
            "models": {"fake": entry},
            "datasets": {"data": {"manifest": "data/manifest.jsonl", "normalizer": "whisper-en"}},
            # Speed and memory are not the point here (in-process runs share one process's RSS): huge tolerances.
            "thresholds": {
                "rss_rel": 1000.0,
                "speed_rel": 1000.0,
                "speed_rel_min": 1000.0,
                **(thresholds if thresholds is not None else {"wer_abs": 0.02, "cer_abs": 0.02, "rtf_rel": 1000.0}),
            },
            "golden_dir": "golden",
        }
        return self.pytester.makefile(".yaml", **{filename: yaml.safe_dump(doc, sort_keys=False)})

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", *args)

    def golden(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "golden" / "fake" / "data" / "cpu.json").read_text("utf-8"))
        return data

    def record(self, name: str = "run.json") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name).read_text("utf-8"))
        return data


@pytest.fixture
def fake(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    _native_modules_loaded: None,
) -> FakeProject:
    monkeypatch.setenv("SPEECHLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    return FakeProject(pytester)


def _block(result: pytest.RunResult) -> str:
    """The failure block as printed (from the headline to the accept command)."""
    out = result.stdout.str()
    start = out.index("speechlab: fake-cpu-data")
    return out[start : out.index("--speechlab-update-golden", start) + len("--speechlab-update-golden")]


# ---- 1. model identity --------------------------------------------------------------------------------------


def test_weights_swap_is_a_weights_change_not_an_improvement(fake: FakeProject, plugin_args: list[str]) -> None:
    fake.config(weights="models/a")
    fake.run("--speechlab-update-golden", "--speechlab-json", "run.json", *plugin_args).assert_outcomes(passed=1)
    golden = fake.golden()
    w = golden["weights"]
    assert w["spec"] == "models/a" and w["source"] == "path models/a" and len(w["sha256"]) == 64
    assert fake.record()["cases"][0]["weights"] == w  # the run record carries the same identity

    fake.config(weights="models/b")  # better weights: WER drops from 1/19 to 0, which used to read "improved"
    result = fake.run("--speechlab-json", "run.json", *plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"speechlab: {CASE}: weights changed since its golden baseline (another model was loaded; not a metric "
            f"verdict)",
            f"*! weights changed: models/a sha {w['sha256'][:12]} (path models/a) -> models/b sha * (path models/b)",
            "*WER*DIFFERS (-0.0526, better than the golden; weights changed, so not counted as an improvement)",
            "*to accept the new values as the baseline, run:",
            ACCEPT,
        ]
    )
    assert "is worse than" not in result.stdout.str()
    case = fake.record()["cases"][0]
    assert case["verdict"] == "fail" and case["causes"] == ["weights changed"]
    result.stdout.fnmatch_lines([f"{CASE} *fail: weights changed"])


def test_same_files_under_another_name_pass_with_a_note(fake: FakeProject) -> None:
    fake.config(weights="models/a")
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    shutil.copytree(fake.path / "models" / "a", fake.path / "models" / "a-copy")
    fake.config(weights="models/a-copy")
    result = fake.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["note: fake-cpu-data: weights renamed (models/a -> models/a-copy) but the files are identical*"]
    )


def test_weights_hash_is_cached_by_path_mtime_and_size(fake: FakeProject, tmp_path: Path) -> None:
    from pytest_speechlab import provenance

    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    first = provenance.files_sha256([f], tmp_path)
    cache = json.loads((provenance._cache_file()).read_text("utf-8"))
    entry = cache[str(f.resolve())]
    assert entry["size"] == 1000
    # A cached entry is trusted while size and mtime match: poison it and the poisoned hash comes back...
    entry["sha256"] = "0" * 64
    provenance._cache_file().write_text(json.dumps(cache), "utf-8")
    assert provenance.files_sha256([f], tmp_path) != first
    # ...and a rewrite (new mtime/size) is hashed again.
    f.write_bytes(b"x" * 1001)
    assert provenance.files_sha256([f], tmp_path) not in (first, provenance.files_sha256([], tmp_path))
    assert json.loads(provenance._cache_file().read_text("utf-8"))[str(f.resolve())]["size"] == 1001


def test_golden_without_weights_passes_and_says_it_was_not_verified(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    path = fake.path / "golden" / "fake" / "data" / "cpu.json"
    data = fake.golden()
    del data["weights"]
    for row in data["utterances"]:
        del row["audio_sha256"]
    path.write_text(json.dumps(data), "utf-8")
    result = fake.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "note: fake-cpu-data: the golden has no weights identity*re-record the golden to add it",
            "note: fake-cpu-data: the golden's utterances have no audio hashes*re-record the golden to add them",
        ]
    )


# ---- 2. dataset drift ---------------------------------------------------------------------------------------


def test_golden_audio_paths_are_relative_with_hashes(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    rows = fake.golden()["utterances"]
    assert [r["audio"] for r in rows] == ["u1.wav", "u2.wav", "u3.wav", "u4.wav"]
    assert str(fake.path) not in json.dumps(fake.golden())
    assert all(len(r["audio_sha256"]) == 64 for r in rows)


def test_one_word_reference_edit_is_a_dataset_change(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    refs = {uid: text for uid, (_, text) in UTTERANCES.items()}
    fake.manifest(refs | {"u3": "the bus was early again"})
    result = fake.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"speechlab: {CASE}: dataset changed since its golden baseline (not a model regression)",
            "*! the dataset differs from the golden's: utterances 1 with another reference text (u3)*",
            "*dataset changed since the golden: 1 utterance (1 reference edited):",
            "*[[]u3[]] reference edited",
            "*GOLDEN REF: the bus was late again",
            "*NOW REF:    the bus was early again",
            "*metric*obtained*golden*tolerance*verdict",
            "*WER*NOT-COMPARABLE (dataset changed*",
            "*note: on the 3 unchanged utterances WER is 0.0714 now vs 0.0714 in the golden (+0.0000)",
            ACCEPT,
        ]
    )
    assert "is worse than" not in result.stdout.str()


def test_audio_replaced_added_and_removed_are_named(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    sf.write(fake.data / "u2.wav", _tone(9600, 1000.0), 16000, subtype="PCM_16")  # same length, other sound
    sf.write(fake.data / "u5.wav", _tone(4000, 500.0), 16000, subtype="PCM_16")
    refs = {uid: text for uid, (_, text) in UTTERANCES.items() if uid != "u4"} | {"u5": "a new line"}
    fake.manifest(refs)
    result = fake.run("--speechlab-json", "run.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"speechlab: {CASE}: dataset changed since its golden baseline (not a model regression)*",
            "*dataset changed since the golden: 3 utterances (1 audio changed, 1 added, 1 removed):",
            "*[[]u2[]] audio changed (u2.wav): golden sha *, now sha *",
            "*[[]u5[]] added (not in the golden): a new line",
            "*[[]u4[]] removed (in the golden, not in the dataset now): we need more coffee",
        ]
    )
    case = fake.record()["cases"][0]
    assert case["causes"][0] == "dataset changed"
    assert {(r["id"], r["change"]) for r in case["dataset_changes"]} == {
        ("u2", "audio changed"),
        ("u5", "added"),
        ("u4", "removed"),
    }


# ---- 3/4. headlines and tolerances --------------------------------------------------------------------------


def test_cpu_threads_change_is_headlined_as_a_settings_change(fake: FakeProject) -> None:
    fake.config(cpu_threads=1)
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    fake.config(cpu_threads=0)
    result = fake.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"speechlab: {CASE}: settings changed since its golden baseline (scores are not comparable)",
            "*! decode settings differ from the golden: cpu_threads: golden 1 vs now 0",
            "*WER*PASS",
            ACCEPT,
        ]
    )
    result.stdout.fnmatch_lines([f"{CASE} *fail: settings changed"])


def test_metric_worse_headline_names_the_metric(fake: FakeProject) -> None:
    fake.config(weights="models/b")
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    # The same weights folder now mishears u1: content changed, so it is also a weights change, named first.
    fake.weights("b", {uid: text for uid, (_, text) in UTTERANCES.items()} | {"u1": "a dog ran off"})
    result = fake.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"speechlab: {CASE}: weights changed since its golden baseline*[[]also: metric worse[]]"]
    )


def test_global_threshold_cannot_loosen_a_production_stage(fake: FakeProject) -> None:
    """Golden with weights b (WER 0); weights a add 1 error in 20 words (WER 0.05).  Accepting the weights
    change makes the remaining difference a pure metric question; then the stage ceiling decides."""
    fake.config(weights="models/a", thresholds={"wer_abs": 0.06, "cer_abs": 0.5, "rtf_rel": 1000.0})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    data = fake.golden()
    data["metrics"]["wer"] -= 0.05  # as if the golden had been 0.05 better with these same weights
    (fake.path / "golden" / "fake" / "data" / "cpu.json").write_text(json.dumps(data), "utf-8")
    # Global 0.06 would let +0.05 pass; the production ceiling 0.01 does not.
    result = fake.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"speechlab: {CASE} is worse than its golden baseline (WER)",
            "*WER*+0.0100 abs*FAIL (+0.0500 over the golden)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            (
                "tolerance: fake-cpu-data: WER +0.0100 (stage production ceiling; the global thresholds.wer_abs 0.06 "
                "cannot "
                "loosen it), CER +0.0100 (stage production ceiling; the global thresholds.cer_abs 0.5 cannot loosen "
                "it), "
                "RTF x1001.00 (global thresholds)"
            ),
        ]
    )
    # The model's own thresholds may loosen the ceiling, and the summary says they did.
    fake.config(
        weights="models/a",
        stage="production",
        thresholds={"wer_abs": 0.06, "cer_abs": 0.5, "rtf_rel": 1000.0},
        model_thresholds={"wer_abs": 0.06},
    )
    result = fake.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["tolerance: fake-cpu-data: WER +0.0600 (models.fake.thresholds (loosens the production ceiling 0.01))*"]
    )


def test_effective_tolerance_rule() -> None:
    t, s = effective("production", {"wer_abs": 0.02, "cer_abs": 0.005, "rtf_rel": 3.0}, "m", {}, "d", {})
    assert t["wer_abs"] == 0.01 and "cannot loosen" in s["wer_abs"]
    assert t["cer_abs"] == 0.005 and s["cer_abs"].startswith("global thresholds (tighter")
    assert t["rtf_rel"] == 3.0 and s["rtf_rel"] == "global thresholds"  # speed is not a stage ceiling
    t, s = effective("candidate", {"wer_abs": 0.02}, "m", {}, "d", {"cer_abs": 0.05})
    assert t["wer_abs"] == 0.02 and s["wer_abs"] == "global thresholds"
    assert t["cer_abs"] == 0.05 and "loosens the candidate ceiling 0.02" in s["cer_abs"]
    t, s = effective("experimental", {}, "m", {"entity_abs": 0.1}, None, {})
    assert t["wer_abs"] == 0.02 and s["wer_abs"] == "stage experimental (candidate defaults)"
    assert t["entity_abs"] == 0.1 and s["entity_abs"] == "models.m.thresholds"


def test_other_hardware_difference_is_not_an_improvement() -> None:
    row = {"id": "a", "reference": "x y", "word_errors": 0, "ref_words": 2}
    golden = {
        "metrics": {"wer": 0.5, "cer": 0.0},
        "machine": {"device_name": "Intel Xeon", "cpu_model": "Intel Xeon"},
        "utterances": [{**row, "word_errors": 1}],  # consistent with its pooled WER (gate/sense.py)
    }
    now = {
        "metrics": {"wer": 0.0, "cer": 0.0},
        "machine": {"device_name": "AMD EPYC", "cpu_model": "AMD EPYC"},
        "utterances": [row],
    }
    v = judge(golden, now, {"wer_abs": 0.01, "cer_abs": 0.01})
    assert v.status == "pass"
    wer = next(c for c in v.checks if c.metric == "WER")
    assert wer.status == "differs" and "recorded on Intel Xeon" in wer.note
    # On the golden's own hardware the same difference is an improvement.
    v = judge({**golden, "machine": now["machine"]}, now, {"wer_abs": 0.01, "cer_abs": 0.01})
    assert v.status == "improved"
    # Not only WER/CER: fewer words on non-speech against another CPU class's golden differ too (under
    # ONEDNN_MAX_CPU_ISA=AVX2 the bundled fw nonspeech and longform cases showed "improved" before this).
    hal_golden = {**golden, "metrics": {"wer": 0.0, "cer": 0.0, "hallucination_wpm": 3.0}, "utterances": [row]}
    hal_now = {**now, "metrics": {"wer": 0.0, "cer": 0.0, "hallucination_wpm": 0.0}}
    v = judge(hal_golden, hal_now, {"wer_abs": 0.01, "cer_abs": 0.01})
    assert v.status == "pass", [(c.metric, c.status) for c in v.checks]
    hal = next(c for c in v.checks if c.metric == "HAL-WPM")
    assert hal.status == "differs" and "recorded on Intel Xeon" in hal.note
    v = judge({**hal_golden, "machine": now["machine"]}, hal_now, {"wer_abs": 0.01, "cer_abs": 0.01})
    assert v.status == "improved"


def test_headline_falls_back_without_causes() -> None:
    v = Verdict("fail", checks=[Check("RTF", 1.0, 0.1, "x1.5", "fail")])
    assert headline("c", v) == "speechlab: c is worse than its golden baseline (RTF)"
    assert headline("c", Verdict("fail", problems=["x"])) == "speechlab: c: cannot be compared with its golden baseline"


# ---- 5. pytest-benchmark ------------------------------------------------------------------------------------


def test_benchmark_ids_survive_a_renamed_config_and_carry_quality(
    fake: FakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest-benchmark disables itself when PYTEST_XDIST_WORKER is set, which it is when this suite runs under -n.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    storage = f"file://{fake.path / 'benchmarks'}"
    fake.config()
    fake.run("--speechlab-update-golden", "--benchmark-autosave", "--benchmark-storage", storage).assert_outcomes(
        passed=1
    )
    (saved,) = (fake.path / "benchmarks").rglob("*.json")
    bench = json.loads(saved.read_text("utf-8"))["benchmarks"][0]
    assert bench["fullname"] == CASE  # the case id, not "speechlab.yaml::test_speech[...]"
    info = bench["extra_info"]
    assert info["wer"] == pytest.approx(1 / 19) and info["cer"] > 0
    assert info["weights"] == fake.golden()["weights"]
    # The same suite under another config file name still finds its saved benchmark.
    (fake.path / "speechlab.yaml").rename(fake.path / "slow.yaml")
    result = fake.run("--speechlab-config", "slow.yaml", "--benchmark-storage", storage, "--benchmark-compare")
    result.assert_outcomes(passed=1)
    table = result.stdout.str()
    assert re.search(r"test_speech\[fake-cpu-data\] \(0001_", table), table
    assert "test_speech[fake-cpu-data] (NOW)" in table


def test_benchmark_compare_fail_ends_cleanly(fake: FakeProject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # see the test above
    storage = f"file://{fake.path / 'benchmarks'}"
    fake.config()
    fake.run("--speechlab-update-golden", "--benchmark-autosave", "--benchmark-storage", storage).assert_outcomes(
        passed=1
    )
    monkeypatch.setenv(
        "SPEECHLAB_FAKE_SLEEP", "0.25"
    )  # 4 utterances x 250 ms: far slower than the saved run (reference runs included)
    result = fake.run("--benchmark-storage", storage, "--benchmark-compare", "--benchmark-compare-fail=min:50%")
    # Whatever the speech gate says about the slower case (speed gating may fail it too), the session ends
    # with rc 1, the clean line and no traceback.
    assert result.ret == 1
    out = result.stdout.str() + result.stderr.str()
    assert "speechlab: pytest-benchmark --benchmark-compare-fail: performance regressed against the saved run" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert re.search(
        r"test_speech\[fake-cpu-data\] \(0001_\w*\) - Field 'min' has failed PercentageRegressionCheck", out
    ), out


# ---- 6. an honest scorecard ---------------------------------------------------------------------------------


def _case(
    model: str,
    wer: float,
    rtf: float,
    stage: str = "production",
    weights: str = "bundled:tiny.en",
    load: float = 0.2,
    task: str = "chat",
) -> dict[str, Any]:
    return {
        "case": f"{model}-cpu-smoke",
        "model": model,
        "task": task,
        "dataset": "smoke",
        "device": "cpu",
        "stage": stage,
        "backend": "x",
        "status": "ran",
        "verdict": "pass",
        "decode": {},
        "metrics": {"wer": wer, "cer": wer, "rtf": rtf},
        "weights": {"spec": weights, "source": "package x==1", "sha256": "0" * 64},
        "machine": {"device": "cpu", "cpu_count": 2, "load_avg_1m": load},
    }


def test_scorecard_never_recommends_random_weights_or_experimental_models(tmp_path: Path) -> None:
    from pytest_speechlab.commands.cli import main
    from pytest_speechlab.commands.scorecard import collect, recommend_tasks

    record = {
        "schema": 1,
        "created": "2026-01-01T00:00:00Z",
        "_path": "run.json",
        "cases": [
            _case("lfm-tiny", 0.0, 0.01, stage="experimental", weights="tiny-random"),
            _case("lfm-test", 0.0, 0.01, stage="production", weights="tiny-random"),
        ],
    }
    entries, _ = collect([record])
    rec = recommend_tasks(entries)["chat"]
    assert rec["pick"] is None
    assert {r["model"]: r["excluded"] for r in rec["ranking"]} == {
        "lfm-tiny": "stage experimental",
        "lfm-test": "random or test weights (tiny-random)",
    }
    # With a real model beside them, the real one is picked even though its WER is worse.
    record["cases"].append(_case("real", 0.2, 0.1))
    entries, _ = collect([record])
    assert recommend_tasks(entries)["chat"]["pick"]["model"] == "real"
    path = tmp_path / "run.json"
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "_path"}), "utf-8")
    assert main(["scorecard", str(path), "-o", str(tmp_path / "card")]) == 0
    md = (tmp_path / "card" / "scorecard.md").read_text("utf-8")
    assert (
        "never recommended: stage experimental" in md
        and "never recommended: random or test weights (tiny-random)" in md
    )


def test_scorecard_does_not_grade_rtf_from_a_saturated_cpu() -> None:
    from pytest_speechlab.commands.scorecard import collect

    # RTF 2.0 (slower than real time) would be a C, but it was measured at load 9 on 2 CPUs.
    record = {"created": "x", "_path": "run.json", "cases": [_case("m", 0.05, 2.0, load=9.0, task="asr")]}
    (e,), _ = collect([record])
    assert e.grade == "A" and e.rtf_ignored == "saturated CPU: 1-minute load 9.0 on 2 CPUs"
    record = {"created": "x", "_path": "run.json", "cases": [_case("m", 0.05, 2.0, load=0.5, task="asr")]}
    (e,), _ = collect([record])
    assert e.grade == "C" and e.rtf_ignored is None


def test_speechlab_check_names_the_cause_and_the_tolerances(
    fake: FakeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_speechlab.commands.cli import main

    fake.config(weights="models/a")
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    fake.run("--speechlab-json", "same.json").assert_outcomes(passed=1)
    fake.config(weights="models/b")
    fake.run("--speechlab-json", "swapped.json").assert_outcomes(failed=1)
    capsys.readouterr()
    assert main(["check", str(fake.path / "same.json")]) == 0
    out = capsys.readouterr().out
    assert f"{CASE}: pass: WER pass" in out
    assert (
        "tolerances: WER +0.0100 (stage production ceiling; the global thresholds.wer_abs 0.02 cannot loosen it)" in out
    )
    assert main(["check", str(fake.path / "swapped.json")]) == 1
    out = capsys.readouterr().out
    assert f"speechlab: {CASE}: weights changed since its golden baseline" in out
    assert "! weights changed: models/a sha" in out
