"""The bundled fixture audio is whole, matches its manifests and checksums, and keeps its promises.

Model-free (soundfile and hashlib only), so it runs in well under a second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import soundfile as sf
from _support import load_make_fixtures

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETS = ["smoke", "bench"]
DURATION_TOLERANCE_S = 0.05


def _read_manifest(set_dir: Path) -> list[dict]:
    """Rows of a set's manifest.jsonl, failing with the file and line when a line is not JSON."""
    manifest = set_dir / "manifest.jsonl"
    rows = []
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            pytest.fail(f"{manifest}:{lineno}: not valid JSON ({exc}); regenerate with fixtures/make_fixtures.py")
    return rows


def _read_sums(set_dir: Path) -> dict[str, str]:
    """SHA256SUMS as {relative name: hex digest}."""
    sums: dict[str, str] = {}
    for line in (set_dir / "SHA256SUMS").read_text(encoding="ascii").splitlines():
        digest, name = line.split(maxsplit=1)
        # sha256sum writes "<digest>  <name>" (text mode) or "<digest> *<name>" (binary mode).
        sums[name.lstrip("*").strip()] = digest
    return sums


def _load_script() -> ModuleType:
    """Import fixtures/make_fixtures.py (it only needs numpy at import time)."""
    module: ModuleType = load_make_fixtures()
    return module


@pytest.mark.parametrize("name", SETS)
def test_checksums_match(name: str) -> None:
    """Every file SHA256SUMS lists has that digest, and it covers the manifest and every clip."""
    set_dir = FIXTURES / name
    sums = _read_sums(set_dir)
    assert "manifest.jsonl" in sums, f"{set_dir / 'SHA256SUMS'} does not cover manifest.jsonl"
    for rel, expected in sums.items():
        path = set_dir / rel
        assert path.is_file(), f"{path} is listed in SHA256SUMS but missing"
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert actual == expected, f"{path}: sha256 {actual} != {expected} in SHA256SUMS (file changed or corrupt)"
    audio_files = {p.name for p in set_dir.iterdir() if p.suffix in {".wav", ".flac"}}
    unlisted = audio_files - set(sums)
    assert not unlisted, f"audio in {set_dir} not covered by SHA256SUMS: {sorted(unlisted)}"


@pytest.mark.parametrize("name", SETS)
def test_manifest_rows_match_audio(name: str) -> None:
    """Each row's audio exists inside the set folder, is readable, and lasts what the manifest says."""
    set_dir = FIXTURES / name
    rows = _read_manifest(set_dir)
    assert rows, f"{set_dir / 'manifest.jsonl'} is empty"
    ids = [row.get("id") for row in rows]
    assert len(set(ids)) == len(ids), f"duplicate ids in {set_dir / 'manifest.jsonl'}: {ids}"
    for row in rows:
        assert set(row) >= {"audio_filepath", "text", "duration", "id"}, f"{name}: row missing keys: {row}"
        assert isinstance(row["text"], str) and row["text"].strip(), f"{name}/{row['id']}: empty text"
        rel = Path(row["audio_filepath"])
        assert not rel.is_absolute() and ".." not in rel.parts, f"{name}/{row['id']}: path must stay in the set: {rel}"
        audio = set_dir / rel
        assert audio.is_file(), f"{audio} (manifest row {row['id']}) does not exist"
        info = sf.info(str(audio))
        measured = info.frames / info.samplerate
        assert info.frames > 0, f"{audio} holds no audio"
        assert abs(measured - float(row["duration"])) <= DURATION_TOLERANCE_S, (
            f"{audio}: {measured:.3f} s on disk vs {row['duration']} s in the manifest"
        )


def test_smoke_exercises_resampling_and_downmixing() -> None:
    """At least one smoke clip is not 16 kHz, and at least one is not mono."""
    set_dir = FIXTURES / "smoke"
    infos = [sf.info(str(set_dir / row["audio_filepath"])) for row in _read_manifest(set_dir)]
    assert any(i.samplerate != 16000 for i in infos), "no smoke clip exercises resampling"
    assert any(i.channels != 1 for i in infos), "no smoke clip exercises downmixing"


def test_smoke_is_short() -> None:
    """The whole smoke set stays within 30 s of audio, so the default suite stays quick."""
    set_dir = FIXTURES / "smoke"
    total = sum(sf.info(str(set_dir / r["audio_filepath"])).duration for r in _read_manifest(set_dir))
    assert 0 < total <= 30.0, f"smoke set holds {total:.1f} s of audio (limit 30 s)"


def test_bench_shape() -> None:
    """The bench set has >= 30 distinct 1.5-3 s utterances of 16 kHz mono FLAC, under 3 MB in all."""
    set_dir = FIXTURES / "bench"
    rows = _read_manifest(set_dir)
    assert len(rows) >= 30, f"bench set has {len(rows)} utterances; the statistical gate needs >= 30"
    assert len({r["text"] for r in rows}) == len(rows), "bench sentences must all differ"
    size = 0
    for row in rows:
        path = set_dir / row["audio_filepath"]
        info = sf.info(str(path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1), f"{path}: {info}"
        assert 1.5 <= info.duration <= 3.0, f"{path}: {info.duration:.2f} s, outside 1.5-3 s"
        size += path.stat().st_size
    assert size < 3 * 1024 * 1024, f"bench audio is {size / 1e6:.1f} MB; keep it under 3 MB"


@pytest.mark.parametrize("name", ["smoke", "bench"])
def test_manifest_matches_script(name: str) -> None:
    """The committed manifest holds exactly the sentences make_fixtures.py synthesises, in order.

    The espeak-ng clip may be absent if the set was made where espeak-ng was missing.
    """
    script = _load_script()
    expected = [(c.id, c.text) for c in script.SETS[name]]
    got = [(r["id"], r["text"]) for r in _read_manifest(FIXTURES / name)]
    espeak_ids = {c.id for c in script.SETS[name] if c.engine == "espeak-ng"}
    assert got in (expected, [e for e in expected if e[0] not in espeak_ids]), (
        f"fixtures/{name}/manifest.jsonl is out of date with fixtures/make_fixtures.py; "
        "rerun: uv run python fixtures/make_fixtures.py"
    )
