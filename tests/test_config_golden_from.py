"""``golden_from`` in speechlab.yaml: validated with messages naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_speechlab.config import ConfigError, load_config

BASE = (
    "models:\n  local:\n    backend: faster-whisper\n  remote:\n    backend: http\n    devices: [remote]\n"
    "    golden_from: {value}\ndatasets: {{}}\n"
)


def _write(tmp_path: Path, value: str) -> Path:
    cfg = tmp_path / "speechlab.yaml"
    cfg.write_text(BASE.format(value=value), encoding="utf-8")
    return cfg


def test_golden_from_is_parsed(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "local/cpu")).models["remote"].golden_from == "local/cpu"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("local", "models.remote.golden_from: must be MODEL/DEVICE (e.g. fw-tiny-en/cpu), got 'local'"),
        ("local/tpu", "models.remote.golden_from: must be MODEL/DEVICE (e.g. fw-tiny-en/cpu), got 'local/tpu'"),
        ("nobody/cpu", "models.remote.golden_from: names no model in models: ('nobody/cpu')"),
    ],
)
def test_bad_golden_from(tmp_path: Path, value: str, message: str) -> None:
    cfg = _write(tmp_path, value)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    assert str(exc.value) == f"{cfg.resolve()}: {message}"
