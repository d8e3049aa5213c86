"""Backend registry.  Entries are ``"module:Class"`` strings, imported only when a case needs them."""

from __future__ import annotations

import importlib
from typing import Any

from .base import BackendError, BaseBackend, MissingExtraError, ModelSpec

REGISTRY: dict[str, str] = {
    "faster-whisper": "pytest_speechlab.backends.faster_whisper:FasterWhisperBackend",
    "http": "pytest_speechlab.backends.http:HTTPBackend",
    "liquid-audio": "pytest_speechlab.backends.lfm:LiquidAudioBackend",
    "piper": "pytest_speechlab.backends.piper:PiperBackend",
    "openai-whisper": "pytest_speechlab.backends.openai_whisper:OpenAIWhisperBackend",
}


def register(name: str, target: str) -> None:
    """Register a backend class (``"package.module:Class"``) under ``name`` (third-party plugins)."""
    REGISTRY[name] = target


def get_backend(name: str) -> BaseBackend:
    """Instantiate the backend registered under ``name``; unknown names raise :class:`KeyError`."""
    target = REGISTRY[name]
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: Any = getattr(module, cls_name)
    backend: BaseBackend = cls()
    return backend


__all__ = ["REGISTRY", "BackendError", "BaseBackend", "MissingExtraError", "ModelSpec", "get_backend", "register"]
