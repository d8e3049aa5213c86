"""Models from the Hugging Face Hub, pinned: ``weights: hf:ORG/NAME@REVISION[/PATH/IN/REPO]``.

Resolution goes through ``huggingface_hub`` and its cache (``HF_HUB_CACHE`` / ``HF_HOME``): the local snapshot
of that revision first; a download only when the user allows it (``--speechlab-allow-download``, the ini
option ``speechlab_allow_download = true`` or ``SPEECHLAB_ALLOW_DOWNLOAD=1``).  By default the plugin never
downloads.  A revision that is not in the cache is an error naming the exact command that fetches it.

The resolved commit hash is recorded with the weights' content hash (provenance.py), so a golden names the
exact files it measured.  A tag or branch (``@main``, ``@v1``) resolves through the cache's ``refs/``; a
commit hash pins for good.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.errors import BackendError, MissingExtraError

PREFIX = "hf:"
ALLOW_ENV = "SPEECHLAB_ALLOW_DOWNLOAD"
_REF = re.compile(r"hf:(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[A-Za-z0-9._-]+))?"
                  r"(?P<sub>/.+)?")
_allowed: bool | None = None  # set by the plugin from --speechlab-allow-download / the ini option


def set_allow_download(flag: bool) -> None:
    """Allow (or forbid) downloads for this process (the plugin calls this from its options)."""
    global _allowed
    _allowed = flag


def downloads_allowed() -> bool:
    """Whether a missing Hub revision or dataset may be fetched: the option, else ``SPEECHLAB_ALLOW_DOWNLOAD``."""
    if _allowed is not None:
        return _allowed
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def offline_unless_allowed() -> Iterator[None]:
    """Make huggingface_hub and datasets work offline inside the block unless downloads are allowed (both read
    their offline switch at import time, so the module constants are set and restored)."""
    if downloads_allowed():
        yield
        return
    saved: list[tuple[Any, str, Any]] = []
    for module_name, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                               ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        try:
            import importlib

            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in attrs:
            if hasattr(module, attr):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf:ORG/NAME@REVISION[/PATH]``."""

    repo: str
    revision: str | None
    subpath: str | None

    @property
    def text(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo}{rev}" + (f"/{self.subpath}" if self.subpath else "")

    def fetch_command(self) -> str:
        """The command that puts this revision into the local cache (huggingface_hub's ``hf`` CLI)."""
        rev = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo}{rev}"


def is_hub(value: str | None) -> bool:
    """Whether a ``weights:`` value names Hub weights (``hf:`` possibly behind ``ct2:``)."""
    return bool(value) and str(value).removeprefix("ct2:").startswith(PREFIX)


def parse(value: str) -> HubRef:
    """Parse ``hf:ORG/NAME@REVISION[/PATH]``; raise BackendError saying the form when it is not one."""
    m = _REF.fullmatch(value.removeprefix("ct2:"))
    if not m:
        raise BackendError(f"weights {value!r}: not a Hub reference; write hf:ORG/NAME@REVISION (a commit hash, tag or "
                           "branch), optionally followed by /PATH/IN/REPO for one file or folder")
    sub = (m.group("sub") or "").strip("/") or None
    if sub and ".." in Path(sub).parts:
        raise BackendError(f"weights {value!r}: the path inside the repository may not contain '..'")
    return HubRef(m.group("repo"), m.group("rev"), sub)


def resolve(value: str, who: str = "weights") -> tuple[Path, str]:
    """The local folder (or file, with a /PATH) of ``hf:ORG/NAME@REV`` and the commit hash it resolved to.

    The cache first; a download only when :func:`downloads_allowed`.  ``who`` names the model in errors.
    """
    ref = parse(value)
    if not ref.revision:
        raise BackendError(f"{who}: {value!r} is not pinned; add @REVISION (a commit hash for good, or a tag): "
                           f"{PREFIX}{ref.repo}@<commit>. A golden must name the exact files it measured")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise MissingExtraError(value, "hf", "huggingface_hub") from None
    allowed = downloads_allowed()
    try:
        with offline_unless_allowed():
            folder = Path(snapshot_download(ref.repo, revision=ref.revision, local_files_only=not allowed))
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        from huggingface_hub import constants

        where = Path(constants.HF_HUB_CACHE) / f"models--{ref.repo.replace('/', '--')}"
        if allowed:
            raise BackendError(f"{who}: {value}: the download failed ({_first_line(exc)}); check the repository, the "
                               f"revision and your network, or fetch it by hand: {ref.fetch_command()}") from None
        raise BackendError(f"{who}: {value}: revision {ref.revision!r} is not in the local Hugging Face cache "
                           f"({where}); the plugin does not download by default. Fetch it once with: "
                           f"{ref.fetch_command()}  (or run with --speechlab-allow-download)") from None
    except Exception as exc:  # noqa: BLE001 - RepositoryNotFoundError, RevisionNotFoundError, HTTP errors
        raise BackendError(f"{who}: {value}: cannot resolve it ({type(exc).__name__}: {_first_line(exc)}); "
                           f"check the name and revision, then: {ref.fetch_command()}") from None
    commit = folder.name
    target = folder / ref.subpath if ref.subpath else folder
    if not target.exists():
        raise BackendError(f"{who}: {value}: the snapshot {folder} (commit {commit}) has no {ref.subpath!r}; fix the "
                           "path after the revision")
    return target, commit


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
