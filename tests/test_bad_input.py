"""Bad input: each case gets a clear error that names the file and the fix (exact messages asserted), and
odd-but-valid audio formats load (resampled/downmixed) and transcribe.

Real pytest sessions (pytester) with the real bundled tiny.en model, one or two clips per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DEFAULT_MODEL, SMOKE, TEST_THRESHOLDS, SpeechProject, smoke_rows

CASE = "fw-tiny-en-cpu-smoke"
DS = {"smoke": {"manifest": "data/smoke/manifest.jsonl"}}


def _manifest(project: SpeechProject, rows: list[dict[str, Any]], clips: tuple[str, ...] = ()) -> Path:
    """data/smoke/manifest.jsonl holding ``clips`` (copied) followed by ``rows``; config pointing at it."""
    manifest = project.dataset("smoke", clips=clips, rows=rows)
    project.config(datasets=DS)
    return manifest


def _write_audio(path: Path, data: np.ndarray, sr: int, subtype: str | None = None, fmt: str | None = None) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype, format=fmt)


# ---- audio -------------------------------------------------------------------------------------

def test_corrupt_audio(project: SpeechProject) -> None:
    bad = project.path / "data" / "smoke" / "broken.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio" * 3)
    _manifest(project, [{"audio_filepath": "broken.wav", "text": "hello there"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"{bad}: cannot read audio (*); re-export it as WAV or FLAC"])


def test_missing_audio_file(project: SpeechProject) -> None:
    _manifest(project, [{"audio_filepath": "gone.wav", "text": "hello there"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{project.path / 'data/smoke/gone.wav'}: audio file not found; fix the manifest row or restore the file"])


def test_empty_audio(project: SpeechProject) -> None:
    path = project.path / "data" / "smoke" / "empty.wav"
    _write_audio(path, np.zeros((0,), dtype=np.float32), 16000, "PCM_16")
    _manifest(project, [{"audio_filepath": "empty.wav", "text": "hello there"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"{path}: audio is empty (0 samples); re-export it or remove the row"])


def test_all_silent_audio_with_text(project: SpeechProject) -> None:
    path = project.path / "data" / "smoke" / "silent.wav"
    _write_audio(path, np.zeros((16000,), dtype=np.float32), 16000, "PCM_16")
    _manifest(project, [{"audio_filepath": "silent.wav", "text": "hello there"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{path}: audio is all silence but its reference has text; the audio does not match its transcript"])


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_float_wav(project: SpeechProject, value: float) -> None:
    path = project.path / "data" / "smoke" / "nonfinite.wav"
    data = np.full((16000,), 0.1, dtype=np.float32)
    data[8000] = value
    _write_audio(path, data, 16000, "FLOAT")
    _manifest(project, [{"audio_filepath": "nonfinite.wav", "text": "hello there"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"{path}: audio holds NaN or infinite samples; re-export it as PCM WAV or FLAC"])


# Odd but valid formats, all made from smoke-02 (16 kHz mono PCM_16): each must load and transcribe.
FORMATS: dict[str, tuple[str, int, int, str]] = {  # name: (file, rate, channels, subtype)
    "8k": ("f-8k.wav", 8000, 1, "PCM_16"),
    "44k1": ("f-44k1.wav", 44100, 1, "PCM_16"),
    "stereo": ("f-stereo.wav", 16000, 2, "PCM_16"),
    "24bit": ("f-24bit.wav", 16000, 1, "PCM_24"),
    "float": ("f-float.wav", 16000, 1, "FLOAT"),
    "flac": ("f-flac.flac", 16000, 1, "PCM_16"),
}


@pytest.fixture(scope="module")
def formats_record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One plugin session (a subprocess) over smoke-02 re-encoded in every format; rows by format."""
    import soundfile as sf
    import soxr
    import yaml

    root = tmp_path_factory.mktemp("formats")
    src = smoke_rows()["smoke-02"]
    audio, sr = sf.read(str(SMOKE / src["audio_filepath"]), dtype="float32")
    rows = []
    for name, (fname, rate, channels, subtype) in FORMATS.items():
        data = soxr.resample(audio, sr, rate) if rate != sr else audio
        if channels == 2:  # left = the speech, right = the speech at half level: a real downmix
            data = np.stack([data, 0.5 * data], axis=1)
        _write_audio(root / "data" / fname, data, rate, subtype)
        info = sf.info(str(root / "data" / fname))
        assert (info.samplerate, info.channels, info.subtype) == (rate, channels, subtype), name
        rows.append({"audio_filepath": fname, "text": src["text"], "id": name})
    (root / "data" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "speechlab.yaml").write_text(yaml.safe_dump({
        "models": {"fw-tiny-en": DEFAULT_MODEL}, "datasets": {"formats": {"manifest": "data/manifest.jsonl"}},
        "thresholds": TEST_THRESHOLDS}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--speechlab-rounds", "1",
                           "--speechlab-update-golden", "--speechlab-json", "run.json", "-q"],
                          cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (case,) = json.loads((root / "run.json").read_text(encoding="utf-8"))["cases"]
    return {r["id"]: r for r in case["utterances"]}


@pytest.mark.real_model
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_audio_format_loads_and_transcribes(formats_record: dict[str, dict[str, Any]], fmt: str) -> None:
    """8 kHz, 44.1 kHz, stereo, 24-bit, float WAV and FLAC are read, downmixed, resampled and recognised."""
    row = formats_record[fmt]
    assert row["duration"] == pytest.approx(2.02, abs=0.01)  # the length survived the conversion
    assert "plumber" in row["hyp_norm"] and "sink" in row["hyp_norm"], row
    assert row["wer"] <= 0.25, row


# ---- manifests and datasets ----------------------------------------------------------------------

def test_manifest_row_without_text(project: SpeechProject) -> None:
    manifest = _manifest(project, [{"audio_filepath": "smoke-02.wav", "id": "again"}], clips=("smoke-02",))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{manifest}:2: row has no 'text' (the reference transcript); add \"text\": \"...\""])


def test_manifest_path_does_not_exist(project: SpeechProject) -> None:
    project.config(datasets={"smoke": {"manifest": "data/nope.jsonl"}})
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        (f"{project.path / 'data/nope.jsonl'}: manifest not found; fix 'manifest:' in speechlab.yaml "
        "or the --speechlab-dataset path")])

    result = project.run("--speechlab-dataset", "data/nothing-here.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        (f"*--speechlab-dataset data/nothing-here.jsonl: no dataset of that name in {project.path / 'speechlab.yaml'} "
        "(known: smoke) and no manifest or folder at that path")])


def test_path_escaping_manifest_folder_refused(project: SpeechProject) -> None:
    manifest = _manifest(project, [{"audio_filepath": "../../etc/passwd", "text": "root"}])
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        (f"{manifest}:1: audio_filepath '../../etc/passwd' points outside the manifest folder {manifest.parent}; "
        "refused. Move the audio under that folder, or set 'allow_outside_paths: true' on the dataset")])


def test_path_outside_allowed_when_configured(project: SpeechProject) -> None:
    import shutil

    shared = project.path / "shared"
    shared.mkdir()
    shutil.copy(SMOKE / "smoke-02.wav", shared / "smoke-02.wav")
    project.dataset("smoke", clips=(), rows=[{"audio_filepath": "../../shared/smoke-02.wav",
                                               "text": smoke_rows()["smoke-02"]["text"]}])
    project.config(datasets={"smoke": {"manifest": "data/smoke/manifest.jsonl", "allow_outside_paths": True}})
    project.run("--speechlab-update-golden").assert_outcomes(passed=1)


def test_non_utf8_manifest(project: SpeechProject) -> None:
    project.config(datasets=DS)
    manifest = project.path / "data" / "smoke" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(b'{"audio_filepath": "a.wav", "text": "ok"}\n'
                         + '{"audio_filepath": "b.wav", "text": "caf\u00e9"}\n'.encode("latin-1"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"{manifest}:2: manifest is not UTF-8 (invalid continuation byte); re-save it as "
                                 f"UTF-8"])


def test_duplicate_ids(project: SpeechProject) -> None:
    row = dict(smoke_rows()["smoke-02"])
    manifest = _manifest(project, [row], clips=("smoke-02",))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"{manifest}:2: duplicate id 'smoke-02' (first on line 1); ids must be unique"])


def test_empty_reference_has_a_defined_score(project: SpeechProject) -> None:
    """An empty reference is not an error: its hypothesis words are insertions (metrics.utterance_errors)."""
    row = dict(smoke_rows()["smoke-06"], text="", id="no-reference")
    _manifest(project, [row], clips=("smoke-02", "smoke-06"))
    result = project.run("--speechlab-update-golden", "--speechlab-json", "run.json")
    result.assert_outcomes(passed=1)
    (case,) = project.record(project.path / "run.json")["cases"]
    rows = {r["id"]: r for r in case["utterances"]}
    empty = rows["no-reference"]
    assert empty["ref_words"] == 0 and empty["ref_norm"] == ""
    assert empty["word_errors"] == len(empty["hyp_norm"].split()) > 0  # every word an insertion
    assert empty["wer"] == 1.0  # per-utterance rule: 1 when the hypothesis has words, else 0
    m = case["metrics"]
    # Pooled: the empty reference adds errors but no reference words.
    assert m["ref_words"] == rows["smoke-02"]["ref_words"] + rows["smoke-06"]["ref_words"]
    expected = sum(r["word_errors"] for r in rows.values()) / m["ref_words"]
    assert m["wer"] == pytest.approx(expected)
    assert m["insertions"] >= empty["word_errors"]


# ---- config --------------------------------------------------------------------------------------


def test_malformed_yaml(project: SpeechProject) -> None:
    path = project.pytester.makefile(".yaml", speechlab="models:\n  fw: [unclosed\ndatasets: {}\n")
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"{path}: malformed YAML at line *, column *: *; fix the syntax (yaml.safe_load must parse it)"]
    )


def test_unknown_backend(project: SpeechProject) -> None:
    project.config(models={"fw": {**DEFAULT_MODEL, "backend": "nemo-magic"}})
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"{project.path / 'speechlab.yaml'}: models.fw.backend: unknown backend 'nemo-magic'; known: *faster-whisper*"]
    )


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("top", "golden_directory: unknown top-level key; known: *"),
        ("dataset", "datasets.smoke.normaliser: unknown key; known: *"),
        ("model", "models.fw-tiny-en.beam_szie: unknown key for backend 'faster-whisper'; known: *beam_size*"),
    ],
    ids=["top-level", "dataset", "model"],
)
def test_unknown_config_key(project: SpeechProject, where: str, message: str) -> None:
    """A misspelt key is an error naming it, never silently ignored (a typo'd decode setting would otherwise
    record a golden with the default)."""
    if where == "top":
        project.config(golden_directory="golden")
    elif where == "dataset":
        project.dataset()
        project.config(datasets={"smoke": {"manifest": "data/smoke/manifest.jsonl", "normaliser": "basic"}})
    else:
        project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "beam_szie": 3}})
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"{project.path / 'speechlab.yaml'}: {message}"])


def test_unknown_device_in_config_and_ini(project: SpeechProject) -> None:
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "devices": ["cpu", "tpu"]}})
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"{project.path / 'speechlab.yaml'}: models.fw-tiny-en.devices: unknown device 'tpu'; known: cpu, cuda, "
            f"mps, remote"
        ]
    )

    project.config()
    project.pytester.makeini("[pytest]\nspeechlab_devices = cpu tpu\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini speechlab_devices: unknown device 'tpu'*"])


# ---- goldens -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", ['{"metrics": {"wer": 0.1, "cer"', "not json at all\n"], ids=["truncated", "garbage"]
)
def test_golden_not_valid_json(project: SpeechProject, content: str) -> None:
    project.config()
    golden = project.golden()
    golden.parent.mkdir(parents=True)
    golden.write_text(content, encoding="utf-8")
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"{golden}: golden file is not valid JSON (* at line 1, column *); "
                "restore it with `git checkout -- <file>` or re-create it with --speechlab-update-golden"
            )
        ]
    )
    assert golden.read_text(encoding="utf-8") == content  # a plain run never touches a golden


INTERRUPT_CONFTEST = """
def pytest_runtest_setup(item):
    if "fw-tiny-en-cpu-b" in item.nodeid:
        raise KeyboardInterrupt
"""


def _golden_files_whole(golden_dir: Path) -> list[Path]:
    """Every file under the golden folder is complete JSON, and no temp file was left behind."""
    files = sorted(p for p in golden_dir.rglob("*") if p.is_file() and p.name != ".speechlab.lock")
    for p in files:
        assert not p.name.endswith(".tmp"), f"temp file left behind: {p}"
        json.loads(p.read_text(encoding="utf-8"))
    return files


def test_interrupted_golden_update_leaves_goldens_whole(project: SpeechProject) -> None:
    for name in ("a", "b", "c"):
        project.dataset(name)
    project.config(datasets={n: {"manifest": f"data/{n}/manifest.jsonl"} for n in ("a", "b", "c")})
    old_b = project.golden(dataset="b")
    old_b.parent.mkdir(parents=True)
    old_b.write_text(json.dumps({"metrics": {"wer": 0.5}, "marker": "old"}), encoding="utf-8")
    project.pytester.makeconftest(INTERRUPT_CONFTEST)
    result = project.pytester.runpytest(
        "-p", "no:cacheprovider", "--speechlab-rounds", "1", "--speechlab-update-golden", no_reraise_ctrlc=True
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    files = _golden_files_whole(project.path / "golden")
    assert project.golden(dataset="a") in files  # the case that finished is written, whole
    assert json.loads(old_b.read_text())["marker"] == "old"  # the interrupted one keeps its old golden
    assert not project.golden(dataset="c").exists()  # never ran: nothing written


def test_two_processes_updating_one_golden_dir(project: SpeechProject) -> None:
    for name in ("a", "b"):
        project.dataset(name)
    project.config(datasets={n: {"manifest": f"data/{n}/manifest.jsonl"} for n in ("a", "b")})
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--speechlab-rounds",
        "1",
        "--speechlab-update-golden",
        "-q",
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [
        subprocess.Popen(cmd, cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = _golden_files_whole(project.path / "golden")
    assert files == [project.golden(dataset="a"), project.golden(dataset="b")]
    for f in files:
        assert json.loads(f.read_text())["metrics"]["wer"] >= 0


# ---- backends and weights --------------------------------------------------------------------------

MISSING_EXTRA_CONFTEST = """
import importlib

fw = importlib.import_module("pytest_speechlab.backends.faster_whisper")
_orig = fw.FasterWhisperBackend.requires


def pytest_configure(config):
    fw.FasterWhisperBackend.requires = ("faster_whisper_not_installed",)


def pytest_unconfigure(config):
    fw.FasterWhisperBackend.requires = _orig
"""


def test_missing_backend_extra_skips_naming_the_extra(project: SpeechProject) -> None:
    project.config()
    project.pytester.makeconftest(MISSING_EXTRA_CONFTEST)
    result = project.run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            (
                "SKIPPED [[]1[]] *: backend 'faster-whisper' needs the Python package 'faster_whisper_not_installed', "
                "which is not installed; install the extra: uv add 'pytest-speechlab[[]faster-whisper[]]' "
                "(or pip install 'pytest-speechlab[[]faster-whisper[]]')"
            )
        ]
    )


def test_weights_path_missing(project: SpeechProject) -> None:
    project.config(models={"fw-tiny-en": {**DEFAULT_MODEL, "weights": "models/tiny-missing"}})
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"model 'fw-tiny-en': weights folder {project.path / 'models/tiny-missing'} does not exist; set "
                f"'weights:' in "
                f"{project.path / 'speechlab.yaml'} to a CTranslate2 model folder or to bundled:tiny.en"
            )
        ]
    )
    # The message alone, not buried under a traceback through the plugin's internals.
    assert "raise BackendError" not in result.stdout.str()
    assert "pytest_speechlab/backends/weights.py" not in result.stdout.str()
