"""`speechlab validate` checks a config and its datasets without loading a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pytest_speechlab.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "fixtures" / "smoke", tmp_path / "smoke")
    cfg = tmp_path / "speechlab.yaml"
    cfg.write_text(
        "models:\n  m:\n    backend: faster-whisper\n"
        "datasets:\n  s:\n    manifest: smoke/manifest.jsonl\n",
        encoding="utf-8",
    )
    return cfg


def test_validate_ok(tmp_path: Path, capsys) -> None:
    cfg = _project(tmp_path)
    assert main(["validate", "--config", str(cfg)]) == 0
    assert "config and datasets OK" in capsys.readouterr().out


def test_validate_reports_wrong_duration_and_missing_audio(tmp_path: Path, capsys) -> None:
    cfg = _project(tmp_path)
    manifest = tmp_path / "smoke" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    rows[0]["duration"] = 9.5
    (tmp_path / "smoke" / rows[1]["audio_filepath"]).unlink()
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["validate", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'smoke' / rows[0]['audio_filepath']}: manifest says duration 9.500 s" in out
    assert f"{tmp_path / 'smoke' / rows[1]['audio_filepath']}: audio file not found" in out
    assert "2 problem(s)" in out


def test_validate_reports_config_error(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "speechlab.yaml"
    cfg.write_text("models:\n  m:\n    backend: nope\n", encoding="utf-8")
    assert main(["validate", "--config", str(cfg)]) == 1
    assert f"{cfg}: models.m.backend: unknown backend 'nope'" in capsys.readouterr().out
