"""``speechlab init``: a fresh folder gets a working config, example data and a valid workflow; nothing is ever
overwritten without --force; a bad --dataset is a clear error; the result runs as a real gated session."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _support import FW_MISSING, real_model

from pytest_speechlab.commands.cli import main
from pytest_speechlab.config import load_config

FILES = ("speechlab.yaml", ".github/workflows/speechlab.yml", "speech-tests/example/manifest.jsonl",
         "speech-tests/example/example-01.flac", "speech-tests/example/example-06.flac")


def _digests(root: Path) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in FILES if (root / f).exists()}


def test_init_in_a_fresh_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for f in FILES:
        assert (tmp_path / f).is_file(), f
        assert f"  {f}" in out
    assert "uv run pytest speechlab.yaml --speechlab-update-golden" in out and "uv run pytest speechlab.yaml\n" in out
    cfg = load_config(tmp_path / "speechlab.yaml")  # the written config is valid, and names the example data
    assert cfg.datasets["example"].manifest == tmp_path / "speech-tests" / "example" / "manifest.jsonl"
    if FW_MISSING is None:
        assert "fw-tiny-en" in cfg.models and "models: fw-tiny-en" in out
    assert main(["validate", "--config", str(tmp_path / "speechlab.yaml")]) == 0  # audio and manifest agree


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "speechlab.yaml").write_text("models: {mine: {backend: http}}\n", encoding="utf-8")
    before = (tmp_path / "speechlab.yaml").read_bytes()
    assert main(["init", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechlab init: refusing to overwrite what is already there:\n  speechlab.yaml\n")
    assert "Nothing was written. Move them away, or run `speechlab init --force` to replace them." in err
    assert (tmp_path / "speechlab.yaml").read_bytes() == before
    assert not (tmp_path / ".github").exists() and not (tmp_path / "speech-tests").exists()
    assert main(["init", "--dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "speechlab.yaml").read_bytes() != before
    first = _digests(tmp_path)
    assert main(["init", "--dir", str(tmp_path)]) == 2  # a second init refuses every file it would write
    err = capsys.readouterr().err
    assert all(f"  {f}\n" in err for f in FILES)
    assert _digests(tmp_path) == first


def test_init_with_the_user_s_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "eval"
    data.mkdir()
    src = Path(__file__).resolve().parents[1] / "pytest_speechlab" / "example"
    for p in src.iterdir():
        shutil.copy(p, data / p.name)
    assert main(["init", "--dir", str(tmp_path), "--dataset", "eval"]) == 0
    assert not (tmp_path / "speech-tests").exists()  # no example data when the user has their own
    assert "manifest: eval/manifest.jsonl" in (tmp_path / "speechlab.yaml").read_text(encoding="utf-8")
    assert load_config(tmp_path / "speechlab.yaml").datasets["example"].manifest == data / "manifest.jsonl"
    capsys.readouterr()
    assert main(["init", "--dir", str(tmp_path), "--dataset", "nowhere", "--force"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"speechlab init: --dataset {tmp_path / 'nowhere'} does not exist; give a manifest.jsonl or its folder")
    (tmp_path / "empty").mkdir()
    assert main(["init", "--dir", str(tmp_path), "--dataset", "empty", "--force"]) == 2
    assert "is a folder without manifest.jsonl" in capsys.readouterr().err


def test_written_workflow_is_valid(tmp_path: Path) -> None:
    assert main(["init", "--dir", str(tmp_path)]) == 0
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(exe).exists():
        pytest.skip("check-jsonschema is not installed (it is in the dev dependency group: uv sync)")
    wf = tmp_path / ".github" / "workflows" / "speechlab.yml"
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(wf)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uv run pytest speechlab.yaml" in wf.read_text(encoding="utf-8")


@real_model(FW_MISSING)
def test_init_then_record_then_gate(pytester: pytest.Pytester, _native_modules_loaded: None) -> None:
    """The user's first five minutes, for real: init, record, run green, edit a transcript, see the failure."""
    assert main(["init", "--dir", str(pytester.path)]) == 0
    cfg = pytester.path / "speechlab.yaml"
    text = cfg.read_text(encoding="utf-8")
    # Keep this test to the faster-whisper model (the others are covered elsewhere and cost model loads).
    import re

    fw = text.index("  fw-tiny-en:")
    start = fw + 2 + re.search(r"\n  \S", text[fw + 1:]).start()  # type: ignore[union-attr]  # the next entry
    end = text.index("datasets:")
    cfg.write_text(text[:start] + text[end:].split("  tts-example:")[0] + "thresholds:\n  wer_abs: 0.02\n"
                   "  cer_abs: 0.02\n  rtf_rel: 100.0\n  speed_rel: 100.0\n  speed_rel_min: 100.0\n  rss_rel: 100.0\n"
                   "golden_dir: golden\n", encoding="utf-8")
    args = ("-p", "no:cacheprovider", "--speechlab-rounds", "1", "speechlab.yaml")
    assert pytester.runpytest(*args, "--speechlab-update-golden").ret == 0
    assert (pytester.path / "golden" / "fw-tiny-en" / "example" / "cpu.json").is_file()
    assert pytester.runpytest(*args).ret == 0
    manifest = pytester.path / "speech-tests" / "example" / "manifest.jsonl"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("walk to the park", "walk to the beach"),
                        encoding="utf-8")
    result = pytester.runpytest(*args)
    assert result.ret == 1
    out = result.stdout.str()
    assert "fw-tiny-en-cpu-example" in out and "--speechlab-update-golden" in out


def test_init_refuses_an_empty_or_unusable_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile --dataset: empty, a WAV given as the manifest, a manifest row without audio: rc 2, nothing written."""
    assert main(["init", "--dir", str(tmp_path), "--dataset", ""]) == 2
    assert "speechlab init: --dataset is empty;" in capsys.readouterr().err
    wav = tmp_path / "clip.wav"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "smoke" / "smoke-01.wav", wav)
    assert main(["init", "--dir", str(tmp_path), "--dataset", "clip.wav"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"speechlab init: --dataset {wav} is not a usable manifest: {wav}:1: manifest is not UTF-8")
    (tmp_path / "m.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
    assert main(["init", "--dir", str(tmp_path), "--dataset", "m.jsonl"]) == 2
    assert "m.jsonl:1: row has no 'audio_filepath'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "m.jsonl"]  # nothing written
