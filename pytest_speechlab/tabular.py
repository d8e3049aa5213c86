"""Datasets where users keep them: Parquet / Arrow (Feather) tables and Hugging Face ``datasets`` datasets.

A table has an audio column (the Hub's ``{"bytes", "path"}`` struct, raw bytes, or a path relative to the table)
and a text column; ``id`` and ``duration`` columns are optional.  Column names are overridable with
``columns: {id: ..., audio: ..., text: ...}`` under the dataset in speechlab.yaml.

Audio held as bytes is written once into the speechlab cache (``<cache>/datasets/<table sha256>/<id>.<ext>``,
atomically) so every later step reads files as it does for a manifest: the same loader, the same checks, and
the same ``audio_sha256`` integrity hashes (the hash of the bytes the table holds).  Rows pass the manifest's
checks: text a string, ids non-empty and unique, durations finite and >= 0.

``hf-dataset: NAME`` (with ``config``, ``split``, ``slice: "[:200]"``) reads a dataset from the local Hugging
Face datasets cache only (``HF_DATASETS_CACHE``); nothing is downloaded unless downloads are allowed
(``--speechlab-allow-download``, see hub.py).  ``hf-dataset: PATH`` reads a folder written by ``save_to_disk``.
pyarrow and ``datasets`` come with the ``hf`` extra and are imported only here, when such a dataset is read.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .utterances import DatasetError, Utterance
from .utterances import inside as _inside

TABLE_SUFFIXES = (".parquet", ".arrow", ".feather", ".ipc")
COLUMN_ROLES = ("id", "audio", "text", "duration")
HF_KEYS = ("hf-dataset", "config", "split", "slice")
SLICE_RE = re.compile(r"\[-?\d*%?:-?\d*%?\]")
_SAFE = re.compile(r"[^A-Za-z0-9_.+@-]")


def is_table(path: Path) -> bool:
    """Whether ``path`` names a Parquet or Arrow/Feather file (by its suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DatasetError(f"reading Parquet/Arrow tables and Hugging Face datasets needs {module.split('.')[0]}: "
                           "install the extra: uv add 'pytest-speechlab[hf]' "
                           "(or pip install 'pytest-speechlab[hf]')") from None


def source_problem(raw: dict[str, Any]) -> tuple[str, str] | None:
    """(key, why) when a dataset entry's table/hf keys are malformed, else None (config.py reports it)."""
    columns = raw.get("columns")
    if columns is not None:
        if not isinstance(columns, dict):
            return "columns", f"must be a mapping of role -> column name ({', '.join(COLUMN_ROLES)}), got {columns!r}"
        for role, col in columns.items():
            if role not in COLUMN_ROLES:
                return f"columns.{role}", f"unknown role; known: {', '.join(COLUMN_ROLES)}"
            if not isinstance(col, str) or not col:
                return f"columns.{role}", f"must be a column name (a non-empty string), got {col!r}"
    hf = raw.get("hf-dataset")
    if hf is None:
        for key in ("config", "split", "slice"):
            if key in raw:
                return key, "is only for a Hugging Face dataset: add 'hf-dataset: NAME' or remove it"
        return None
    if "manifest" in raw:
        return "hf-dataset", "give either 'manifest:' or 'hf-dataset:', not both"
    if not isinstance(hf, str) or not hf:
        return "hf-dataset", (f"must be a dataset name (ORG/NAME in the local Hugging Face cache) or a save_to_disk "
                              f"folder, got {hf!r}")
    for key in ("config", "split"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            return key, f"must be a non-empty string, got {raw[key]!r}"
    sl = raw.get("slice")
    if sl is not None and (not isinstance(sl, str) or not SLICE_RE.fullmatch(sl)):
        return "slice", f"must be a split slice like \"[:200]\", \"[100:200]\" or \"[:10%]\", got {sl!r}"
    return None


def _columns(options: dict[str, Any]) -> dict[str, str]:
    return {role: str((options.get("columns") or {}).get(role, role)) for role in COLUMN_ROLES}


def _read_table(path: Path) -> Any:
    pa = _need("pyarrow")
    if not path.exists():
        raise DatasetError(f"{path}: table not found; fix 'manifest:' in speechlab.yaml or the "
                           "--speechlab-dataset path")
    if not path.is_file():
        raise DatasetError(f"{path}: not a regular file (a folder, FIFO or device); refused. Point at the "
                           ".parquet/.arrow file")
    try:
        if path.suffix.lower() == ".parquet":
            return _need("pyarrow.parquet").read_table(str(path))
        # Arrow IPC: the file format (Feather v2), or a stream (what the datasets cache holds)
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_stream(source).read_all()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        kind = "Parquet" if path.suffix.lower() == ".parquet" else "Arrow IPC/Feather"
        raise DatasetError(f"{path}: cannot read it as a {kind} table ({exc}); re-export it with pyarrow or "
                           "datasets") from None


def _sniff(data: bytes, name: str | None) -> str:
    """The file suffix for audio ``data`` (by its magic bytes; else the suffix of its original name)."""
    if data[:4] == b"RIFF":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".ogg"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    suffix = Path(name or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".audio"


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically unless the same bytes are there (xdist workers may race: same bytes)."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    atomic_write_bytes(path, data)


def _check_columns(where: str, cols: dict[str, str], names: list[str], options: dict[str, Any], task: str) -> None:
    """Refuse a table that lacks a needed column, or a column that ``columns:`` names."""
    need = ["text"] + (["audio"] if task == "asr" else [])
    for role in need:
        if cols[role] not in names:
            raise DatasetError(f"{where}: no column {cols[role]!r} (the {role} column; the table has: "
                               f"{', '.join(names)}); "
                               f"name it with 'columns: {{{role}: COLUMN}}' under the dataset in speechlab.yaml")
    for role in ("id", "duration"):
        if role in (options.get("columns") or {}) and cols[role] not in names:
            raise DatasetError(f"{where}: columns.{role} names {cols[role]!r}, which the table lacks (it has: "
                               f"{', '.join(names)}); fix columns.{role} in speechlab.yaml")


def _audio_cell(
    at: str, cell: Any, cols: dict[str, str], base: Path | None, allow_outside_paths: bool
) -> tuple[Path | None, bytes | None, str | None]:
    """An ASR row's audio cell as (path, bytes, original name): a path is resolved under ``base`` and checked."""
    audio_path: Path | None = None
    blob: bytes | None = None
    original: str | None = None
    if isinstance(cell, dict):
        blob, original = cell.get("bytes"), cell.get("path")
    elif isinstance(cell, (bytes, bytearray)):
        blob = bytes(cell)
    elif isinstance(cell, str):
        original = cell
    if blob is None and not original:
        raise DatasetError(f"{at}: {cols['audio']!r} holds no audio (got {type(cell).__name__}); it must be "
                           "the Hub's {\"bytes\", \"path\"} struct, the audio bytes, or a path relative to "
                           "the table")
    if blob is None:
        assert original is not None
        audio_path = Path(original)
        if not audio_path.is_absolute():
            if base is None:
                raise DatasetError(f"{at}: audio {original!r} is a path without bytes; this dataset has "
                                   "no folder to resolve it from. Store the audio bytes in the dataset "
                                   "(cast to Audio)")
            audio_path = base / audio_path
        if base is not None and not allow_outside_paths and not _inside(audio_path, base):
            raise DatasetError(f"{at}: audio {original!r} points outside the table's folder {base}; refused. "
                               "Move the audio under it, or set 'allow_outside_paths: true' on the dataset")
    return audio_path, blob, original


def rows_from_table(table: Any, where: str, base: Path | None, audio_root: Path, options: dict[str, Any], *,
                    allow_outside_paths: bool = False, task: str = "asr") -> list[Utterance]:
    """Utterances from a pyarrow table, checked as manifest rows are.  ``where`` names the source in errors;
    ``base`` is the folder relative audio paths start from (None: paths are refused); audio held as bytes is
    written under ``audio_root``."""
    cols = _columns(options)
    names = list(table.column_names)
    _check_columns(where, cols, names, options, task)
    data = {role: table.column(cols[role]).to_pylist() for role in COLUMN_ROLES if cols[role] in names}
    rows: list[Utterance] = []
    seen: dict[str, int] = {}
    used_files: set[str] = set()
    for i in range(table.num_rows):
        at = f"{where}: row {i}"
        text = data["text"][i]
        if not isinstance(text, str):
            raise DatasetError(f"{at}: {cols['text']!r} must be a string (the reference transcript), got {text!r}; "
                               "fix the row")
        raw_id = data["id"][i] if "id" in data else None
        if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == ""):
            raise DatasetError(f"{at}: {cols['id']!r} must be a non-empty string or an integer, got {raw_id!r}")
        audio_path: Path | None = None
        blob: bytes | None = None
        original: str | None = None
        if task == "asr":
            audio_path, blob, original = _audio_cell(at, data["audio"][i], cols, base, allow_outside_paths)
        uid = str(raw_id) if raw_id is not None else (Path(original).stem if original else f"{i:04d}")
        if uid in seen:
            raise DatasetError(f"{at}: duplicate id {uid!r} (first in row {seen[uid]}); ids must be unique")
        seen[uid] = i
        if blob is not None:
            if not blob:
                raise DatasetError(f"{at} (id {uid!r}): the audio bytes are empty; re-export the row's audio")
            stem = _SAFE.sub("_", uid).lstrip(".") or "_"
            if stem in used_files:  # two ids that differ only in characters a file name cannot hold
                stem = f"{stem}-{i}"
            used_files.add(stem)
            audio_path = audio_root / f"{stem}{_sniff(blob, original)}"
            _write_once(audio_path, blob)
        duration = data["duration"][i] if "duration" in data else None
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not math.isfinite(duration) or duration < 0):
            raise DatasetError(f"{at}: {cols['duration']!r} must be a number of seconds >= 0, got {duration!r}; fix it "
                               "or drop the column (the audio's length is measured)")
        rows.append(Utterance(uid, text, audio_path, float(duration) if duration is not None else None, {}))
    if not rows:
        raise DatasetError(f"{where}: the table has no rows; add at least one")
    return rows


def _audio_root(key: str) -> Path:
    from .backends.weights import cache_dir

    return cache_dir() / "datasets" / key


def load_table(path: Path, options: dict[str, Any], *, allow_outside_paths: bool = False,
               task: str = "asr") -> tuple[list[Utterance], Path]:
    """Rows of a Parquet/Arrow file and the folder its extracted audio lives in (keyed by the file's sha256)."""
    from .provenance import file_sha256

    path = Path(path)
    table = _read_table(path)
    key = file_sha256(path)[:16]
    root = _audio_root(f"table-{key}")
    rows = rows_from_table(table, str(path), path.parent, root, options, allow_outside_paths=allow_outside_paths,
                           task=task)
    has_blobs = any(u.audio_path is not None and u.audio_path.is_relative_to(root) for u in rows)
    return rows, (root if has_blobs else path.parent)


def hf_label(options: dict[str, Any]) -> str:
    """``hf-dataset:NAME[/config]:split[slice]``: how messages and records name a Hugging Face dataset."""
    name = options["hf-dataset"]
    config = f"/{options['config']}" if options.get("config") else ""
    return f"hf-dataset:{name}{config}:{options.get('split', 'test')}{options.get('slice', '')}"


def load_hf(options: dict[str, Any], *, task: str = "asr") -> tuple[list[Utterance], Path, Path]:
    """Rows of a Hugging Face dataset from the local cache (or a save_to_disk folder): (rows, source, audio root)."""
    from . import hub

    datasets = _need("datasets")
    name, config = str(options["hf-dataset"]), options.get("config")
    split = str(options.get("split", "test"))
    label = hf_label(options)
    folder = Path(name).expanduser()
    try:
        if folder.is_dir():
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DatasetError(f"{label}: the saved dataset {folder} has no split {split!r} (it has: "
                                       f"{', '.join(ds)}); set 'split:' under the dataset")
                ds = ds[split]
            if options.get("slice"):
                start, stop, _ = _slice_bounds(str(options["slice"]), len(ds))
                ds = ds.select(range(start, stop))
        else:
            with hub.offline_unless_allowed():
                ds = datasets.load_dataset(name, config, split=f"{split}{options.get('slice', '')}")
    except DatasetError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        fetch = (f"python -c \"import datasets; datasets.load_dataset({name!r}, {config!r}, split={split!r})\"")
        raise DatasetError(f"{label}: not in the local Hugging Face datasets cache ({_first_line(exc)}). Fetch it once "
                           f"with: {fetch} (or run with --speechlab-allow-download); speechlab never downloads by "
                           "default") from None
    table = ds.with_format("arrow")[0:len(ds)]
    fingerprint = hashlib.sha256(f"{label}:{getattr(ds, '_fingerprint', '')}".encode()).hexdigest()[:16]
    root = _audio_root(f"hf-{fingerprint}")
    rows = rows_from_table(table, label, None, root, options, task=task)
    return rows, Path(label), root


def _slice_bounds(sl: str, n: int) -> tuple[int, int, int]:
    lo, hi = sl[1:-1].split(":")

    def bound(part: str, default: int) -> int:
        if not part:
            return default
        return int(int(part[:-1]) * n / 100) if part.endswith("%") else int(part)

    return slice(bound(lo, 0), bound(hi, n)).indices(n)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
