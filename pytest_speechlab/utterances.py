"""A dataset's rows and its error, shared by the manifest/folder reader (datasets.py) and the table reader
(tabular.py) without a circle between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DatasetError(Exception):
    """A dataset or one of its files is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class Utterance:
    """One row of a dataset: audio (ASR) or text only (TTS) and its reference text."""

    id: str
    text: str
    audio_path: Path | None = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved) lies under ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
