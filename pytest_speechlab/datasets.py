"""Datasets: NeMo-style JSONL manifests or folders of audio + same-named .txt; audio loading and resampling."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Audio
from .utterances import DatasetError as DatasetError
from .utterances import Utterance as Utterance
from .utterances import inside as _inside

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its name, where it came from and its utterances (no audio read yet)."""

    name: str
    source: Path
    utterances: tuple[Utterance, ...]
    perturb: dict[str, Any] | None = None  # a derived dataset's perturbation (perturb.py), applied on load
    audio_root: Path | None = None  # where a table's extracted audio lives (tabular.py); None: beside the source

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def root(self) -> Path:
        """The folder audio paths are relative to: the manifest's folder, or the dataset folder itself."""
        if self.audio_root is not None:
            return self.audio_root
        return self.source if self.source.is_dir() else self.source.parent


def _read_manifest_text(path: Path) -> str:
    """The manifest's text; DatasetError when it is missing, not a regular file or not UTF-8."""
    if not path.exists():
        raise DatasetError(
            f"{path}: manifest not found; fix 'manifest:' in speechlab.yaml or the --speechlab-dataset path"
        )
    if not path.is_file():
        raise DatasetError(f"{path}: manifest is not a regular file (a FIFO or device); refused. Point at a JSONL file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{bad_line}: manifest is not UTF-8 ({exc.reason}); re-save it as UTF-8") from None


def _manifest_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One manifest line as a JSON object with a string ``text``; DatasetError naming the line otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}:{lineno}: each line must be a JSON object, got {type(obj).__name__}")
    if "text" not in obj:
        raise DatasetError(f'{path}:{lineno}: row has no \'text\' (the reference transcript); add "text": "..."')
    if not isinstance(obj["text"], str):
        raise DatasetError(
            f"{path}:{lineno}: 'text' must be a string (the reference transcript), got {obj['text']!r}; quote it"
        )
    return obj


def _manifest_audio(path: Path, lineno: int, obj: dict[str, Any], allow_outside_paths: bool) -> Path:
    """An ASR row's ``audio_filepath``, resolved against the manifest's folder and checked."""
    af = obj.get("audio_filepath")
    if not isinstance(af, str) or not af:
        raise DatasetError(
            f"{path}:{lineno}: row has no 'audio_filepath'; add the audio path relative to the manifest"
        )
    audio = Path(af)
    if not audio.is_absolute():
        audio = path.parent / audio
    if not allow_outside_paths and not _inside(audio, path.parent):
        raise DatasetError(
            f"{path}:{lineno}: audio_filepath {af!r} points outside the manifest folder {path.parent}; "
            "refused. Move the audio under that folder, or set 'allow_outside_paths: true' on the dataset"
        )
    if audio.exists() and not audio.is_file():
        raise DatasetError(
            f"{path}:{lineno}: audio_filepath {af!r} is not a regular file (a folder, FIFO or "
            "device); refused. Point it at the audio file itself"
        )
    return audio


def load_manifest(path: Path, *, allow_outside_paths: bool = False, task: str = "asr") -> list[Utterance]:
    """Read a JSONL manifest: ``audio_filepath`` (relative to the manifest), ``text``, optional ``duration``/``id``.

    TTS manifests need only ``text`` (and optional ``id``).
    """
    path = Path(path)
    raw = _read_manifest_text(path)
    rows: list[Utterance] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        obj = _manifest_object(path, lineno, line)
        audio: Path | None = None
        if task == "asr":
            audio = _manifest_audio(path, lineno, obj, allow_outside_paths)
        raw_id = obj.get("id")
        if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == ""):
            raise DatasetError(f"{path}:{lineno}: 'id' must be a non-empty string or an integer, got {raw_id!r}")
        # An explicit id is kept as given (``id: 0`` is "0", not replaced by the file stem).
        uid = (
            str(raw_id)
            if raw_id is not None
            else (Path(str(obj.get("audio_filepath"))).stem if audio else f"{lineno:04d}")
        )
        if uid in seen:
            raise DatasetError(f"{path}:{lineno}: duplicate id {uid!r} (first on line {seen[uid]}); ids must be unique")
        seen[uid] = lineno
        duration = obj.get("duration")
        if duration is not None and (
            isinstance(duration, bool)
            or not isinstance(duration, (int, float))
            or not math.isfinite(duration)
            or duration < 0
        ):
            raise DatasetError(
                f"{path}:{lineno}: 'duration' must be a number of seconds >= 0, got {duration!r}; "
                "fix it or leave it out (the audio's length is measured)"
            )
        extra = {k: v for k, v in obj.items() if k not in ("audio_filepath", "text", "duration", "id")}
        if "entities" in extra:  # the entity protocol (entities.py): checked here so the error names the line
            from .entities import EntityError, validate_entities

            try:
                extra["entities"] = validate_entities(extra["entities"], f"{path}:{lineno}")
            except EntityError as exc:
                raise DatasetError(str(exc)) from None
        rows.append(Utterance(uid, obj["text"], audio, float(duration) if duration is not None else None, extra))
    if not rows:
        raise DatasetError(f"{path}: manifest has no rows; add at least one JSON line")
    return rows


def _regular_inside(file: Path, root: Path, allow_outside_paths: bool) -> None:
    """Refuse a dataset file that is not a regular file (a FIFO would hang the read) or that a symlink
    takes outside the dataset's folder (the same rule as a manifest's ``audio_filepath``)."""
    if file.exists() and not file.is_file():
        raise DatasetError(
            f"{file}: not a regular file (a folder, FIFO or device); refused. Put the audio file itself there"
        )
    if not allow_outside_paths and not _inside(file, root):
        raise DatasetError(
            f"{file}: points outside the dataset folder {root} (through a symlink to {file.resolve()}); "
            "refused. Copy the file into the folder, or set 'allow_outside_paths: true' on the dataset"
        )


def load_folder(path: Path, *, allow_outside_paths: bool = False) -> list[Utterance]:
    """A folder of ``*.wav``/``*.flac`` each with a same-named ``*.txt`` reference."""
    rows: list[Utterance] = []
    for audio in sorted(p for p in Path(path).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        txt = audio.with_suffix(".txt")
        if not txt.exists():
            raise DatasetError(f"{audio}: no reference transcript {txt.name} beside it; add it or remove the audio")
        _regular_inside(audio, Path(path), allow_outside_paths)
        _regular_inside(txt, Path(path), allow_outside_paths)
        rows.append(Utterance(audio.stem, txt.read_text(encoding="utf-8").strip(), audio))
    if not rows:
        raise DatasetError(f"{path}: folder holds no .wav or .flac files")
    return rows


def load_dataset(name: str, source: Path, *, allow_outside_paths: bool = False, task: str = "asr",
                 options: dict[str, Any] | None = None) -> Dataset:
    """Load a dataset from a manifest file, a folder, a Parquet/Arrow table or a Hugging Face dataset
    (``options``: the dataset's ``hf-dataset``/``columns`` keys; see tabular.py)."""
    from . import tabular

    options = options or {}
    if options.get("hf-dataset"):
        rows, src, root = tabular.load_hf(options, task=task)
        return Dataset(name, src, tuple(rows), audio_root=root)
    source = Path(source)
    if tabular.is_table(source):
        rows, root = tabular.load_table(source, options, allow_outside_paths=allow_outside_paths, task=task)
        return Dataset(name, source, tuple(rows), audio_root=root)
    if source.is_dir():
        rows = load_folder(source, allow_outside_paths=allow_outside_paths)
    else:
        rows = load_manifest(source, allow_outside_paths=allow_outside_paths, task=task)
    return Dataset(name, source, tuple(rows))


def load_audio(path: Path, sample_rate: int, *, reference: str | None = None) -> tuple[Audio, float]:
    """Read ``path`` with soundfile, downmix to mono, resample to ``sample_rate`` with soxr.

    Returns ``(samples, duration_seconds)``.  Unreadable, empty, non-finite audio, and silent audio whose
    reference has words, are errors: the audio would not match its transcript.
    """
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: audio file not found; fix the manifest row or restore the file")
    if not path.is_file():  # a FIFO would block the read forever
        raise DatasetError(
            f"{path}: not a regular file (a folder, FIFO or device); refused. Point it at the audio file itself"
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises LibsndfileError / RuntimeError / TypeError by format
        raise DatasetError(f"{path}: cannot read audio ({exc}); re-export it as WAV or FLAC") from None
    if data.shape[0] == 0:
        raise DatasetError(f"{path}: audio is empty (0 samples); re-export it or remove the row")
    if not np.isfinite(data).all():
        raise DatasetError(f"{path}: audio holds NaN or infinite samples; re-export it as PCM WAV or FLAC")
    mono: Audio = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if reference is not None and reference.strip() and float(np.max(np.abs(mono))) == 0.0:
        raise DatasetError(
            f"{path}: audio is all silence but its reference has text; the audio does not match its transcript"
        )
    duration = data.shape[0] / float(sr)
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32), duration
