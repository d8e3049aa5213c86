"""Datasets where users keep them (issue 17 item 4): Parquet / Arrow files and Hugging Face ``datasets`` from the
local cache, checked as manifests are, with the same integrity hashes.  The tables are written by the tests;
the Hugging Face cache is built offline (a packaged builder writes it exactly as ``load_dataset`` does)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # imported before any in-process pytester run (a native module must not be re-imported)
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from pyarrow import feather

import pytest_speechlab.hub
import pytest_speechlab.tabular  # noqa: F401  (both kept in sys.modules across in-process runs)
from pytest_speechlab.config import ConfigError, load_config
from pytest_speechlab.datasets import DatasetError, load_dataset

pytest_plugins = ["pytester"]


def wav_bytes(freq: float, n: int = 8000, fmt: str = "WAV") -> bytes:
    t = np.arange(n, dtype=np.float32) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format=fmt)
    return buf.getvalue()


def hub_table(texts: dict[str, str], fmt: str = "WAV") -> pa.Table:
    """The Hub's layout: ``audio`` a {"bytes", "path"} struct, ``text`` and ``id``."""
    ids = list(texts)
    audio = [{"bytes": wav_bytes(300 + 50 * i, 8000 + 800 * i, fmt), "path": f"{uid}.{fmt.lower()}"}
             for i, uid in enumerate(ids)]
    return pa.table({"audio": audio, "sentence": [texts[u] for u in ids], "id": ids})


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHLAB_CACHE", str(tmp_path_factory.mktemp("speechlab-cache")))


def test_parquet_with_hub_audio_struct_loads_with_hashes_of_the_bytes(tmp_path: Path) -> None:
    table = hub_table({"u1": "the cat sat", "u2": "on the mat"}, fmt="FLAC")
    pq.write_table(table, tmp_path / "eval.parquet")
    data = load_dataset("eval", tmp_path / "eval.parquet", options={"columns": {"text": "sentence"}})
    assert [(u.id, u.text) for u in data.utterances] == [("u1", "the cat sat"), ("u2", "on the mat")]
    blobs = [row["bytes"] for row in table.column("audio").to_pylist()]
    for u, blob in zip(data.utterances, blobs, strict=True):
        assert u.audio_path is not None and u.audio_path.suffix == ".flac"
        # the extracted file holds exactly the table's bytes, so audio_sha256 is the hash of what the table holds
        assert hashlib.sha256(u.audio_path.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
        assert u.audio_path.parent == data.root  # goldens keep "u1.flac", no machine path
    again = load_dataset("eval", tmp_path / "eval.parquet", options={"columns": {"text": "sentence"}})
    assert again.utterances == data.utterances  # same table, same files (written once)


def test_feather_with_a_path_column_resolves_relative_to_the_table(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(wav_bytes(440))
    feather.write_feather(pa.table({"file": ["clips/a.wav"], "text": ["hello there"]}), tmp_path / "eval.arrow")
    data = load_dataset("eval", tmp_path / "eval.arrow", options={"columns": {"audio": "file"}})
    (u,) = data.utterances
    assert u.id == "a" and u.audio_path == tmp_path / "clips" / "a.wav" and data.root == tmp_path


@pytest.mark.parametrize(("table", "options", "message"), [
    (pa.table({"audio": ["a.wav"], "transcript": ["x"]}), {},
     "no column 'text' (the text column; the table has: audio, transcript); name it with 'columns: {text: COLUMN}'"),
    (pa.table({"audio": ["a.wav", "a.wav"], "text": ["x", "y"], "id": ["k", "k"]}), {},
     "row 1: duplicate id 'k' (first in row 0); ids must be unique"),
    (pa.table({"audio": ["a.wav"], "text": [None]}), {}, "row 0: 'text' must be a string"),
    (pa.table({"audio": ["../x.wav"], "text": ["x"]}), {}, "points outside the table's folder"),
    (pa.table({"audio": [None], "text": ["x"]}), {}, "row 0: 'audio' holds no audio"),
    (pa.table({"audio": ["a.wav"], "text": ["x"], "duration": [-1.0]}), {},
     "'duration' must be a number of seconds >= 0"),
    (pa.table({"audio": ["a.wav"], "text": ["x"]}), {"columns": {"id": "utt"}},
     "columns.id names 'utt', which the table lacks"),
    (pa.table({"audio": pa.array([], pa.string()), "text": pa.array([], pa.string())}), {}, "the table has no rows"),
])
def test_bad_tables_name_the_file_row_and_fix(tmp_path: Path, table: pa.Table, options: dict[str, Any],
                                              message: str) -> None:
    pq.write_table(table, tmp_path / "eval.parquet")
    with pytest.raises(DatasetError) as exc:
        load_dataset("eval", tmp_path / "eval.parquet", options=options)
    assert str(exc.value).startswith(str(tmp_path / "eval.parquet")) and message in str(exc.value)


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    (tmp_path / "eval.parquet").write_text('{"audio_filepath": "a.wav", "text": "x"}\n')
    with pytest.raises(DatasetError, match=r"eval\.parquet: cannot read it as a Parquet table .*re-export it"):
        load_dataset("eval", tmp_path / "eval.parquet")


def test_config_keys_are_checked_with_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "speechlab.yaml"
    cases = {
        "columns: {txt: x}": "datasets.d.columns.txt: unknown role; known: id, audio, text, duration",
        "split: test": "datasets.d.split: is only for a Hugging Face dataset",
        "hf-dataset: org/x\n    slice: '[:x]'": "datasets.d.slice: must be a split slice like \"[:200]\"",
    }
    for extra, message in cases.items():
        manifest = "" if "hf-dataset" in extra else "    manifest: eval.parquet\n"
        cfg.write_text(f"models: {{}}\ndatasets:\n  d:\n{manifest}    {extra}\n")
        with pytest.raises(ConfigError) as exc:
            load_config(cfg)
        assert message in str(exc.value) and str(cfg) in str(exc.value)


# ---- a real session over a Parquet dataset -------------------------------------------------------------------

BACKEND = '''
from pytest_speechlab.backends.base import BaseBackend

class ASR:
    sample_rate = 16000
    decode_settings = {}
    def transcribe(self, audio):
        return {8000: "the cat sat", 8800: "on the mat"}.get(len(audio), "")

class Backend(BaseBackend):
    name = "lengths"
    devices = ("cpu",)
    options = ()
    speed_reference = None
    def load(self, spec, device):
        return ASR()
'''
CONFTEST = '''
from pytest_speechlab.backends import register
register("lengths", "speechlab_lengths:Backend")
'''


@pytest.fixture
def parquet_project(pytester: pytest.Pytester, _native_modules_loaded: None) -> pytest.Pytester:
    pytester.makepyfile(speechlab_lengths=BACKEND, conftest=CONFTEST)
    pytester.syspathinsert()
    pq.write_table(hub_table({"u1": "the cat sat", "u2": "on the mat"}), pytester.path / "eval.parquet")
    pytester.makefile(".yaml", speechlab=(
        "models:\n  m:\n    backend: lengths\n    devices: [cpu]\n"
        "datasets:\n  eval:\n    manifest: eval.parquet\n    columns: {text: sentence}\n    normalizer: basic\n"
        "thresholds: {rss_rel: 1000, speed_rel: 1000, speed_rel_min: 1000, rtf_rel: 1000}\n"))
    return pytester


def test_parquet_dataset_records_gates_and_names_an_edited_transcript(parquet_project: pytest.Pytester) -> None:
    run = ("-p", "no:cacheprovider", "--speechlab-rounds", "1")
    parquet_project.runpytest(*run, "--speechlab-update-golden").assert_outcomes(passed=1)
    golden = json.loads((parquet_project.path / "golden" / "m" / "eval" / "cpu.json").read_text())
    text = json.dumps(golden)
    assert '"audio": "u1.wav"' in text and '"audio": "u2.wav"' in text, "goldens keep the path inside the table"
    assert hashlib.sha256(wav_bytes(300)).hexdigest() in text, "audio_sha256 is the hash of the table's bytes"
    parquet_project.runpytest(*run).assert_outcomes(passed=1)
    pq.write_table(hub_table({"u1": "the cat sat", "u2": "on a mat"}), parquet_project.path / "eval.parquet")
    result = parquet_project.runpytest(*run)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*dataset changed since its golden baseline*", "*--speechlab-update-golden*"])


def test_speechlab_dataset_option_takes_a_parquet_path(parquet_project: pytest.Pytester) -> None:
    pq.write_table(hub_table({"u1": "the cat sat"}).rename_columns(["audio", "text", "id"]),
                   parquet_project.path / "adhoc.parquet")
    result = parquet_project.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", "--speechlab-update-golden",
                                       "--speechlab-dataset", "adhoc.parquet")
    result.assert_outcomes(passed=1)
    assert (parquet_project.path / "golden" / "m" / "adhoc" / "cpu.json").is_file()


# ---- Hugging Face datasets from the local cache only ----------------------------------------------------------

def build_hf_cache(cache: Path, repo: str, texts: dict[str, str], split: str = "test") -> None:
    """Lay out ``repo`` in a datasets cache as ``load_dataset`` leaves it after a download (no network)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    src = cache.parent / f"{repo.replace('/', '_')}-{split}.parquet"
    pq.write_table(hub_table(texts), src)
    flat = repo.replace("/", "___")
    builder = Parquet(cache_dir=str(cache), dataset_name=flat, config_name="default", data_files={split: str(src)},
                      hash="0123abcd")
    builder.download_and_prepare()
    (config_dir,) = (cache / flat).iterdir()  # "default-<data files hash>": a Hub download names it "default"
    config_dir.rename(cache / flat / "default")
    snapshot = cache / flat / "default" / "0.0.0" / "0123abcd"
    (snapshot / f"{flat}-{split}.arrow").rename(snapshot / f"{repo.split('/')[1]}-{split}.arrow")


LOAD_HF = """
import sys
from pathlib import Path
from pytest_speechlab.datasets import DatasetError, load_dataset
for name, sl in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        d = load_dataset("d", Path("x"), options={"hf-dataset": name, "split": "test", "slice": sl,
                                                  "columns": {"text": "sentence"}})
    except DatasetError as exc:
        print("ERROR", exc)
    else:
        print("OK", d.source, [(u.id, u.text, u.audio_path.name) for u in d.utterances])
"""


def _no_network() -> list[str]:
    """``unshare -rn`` (a new network namespace: no network at all) where permitted, else nothing (the plugin
    still forces datasets offline; the test then proves less)."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], check=False,
                                                  capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def test_hf_dataset_is_read_from_the_local_cache_without_network(tmp_path: Path) -> None:
    cache = tmp_path / "hf-datasets"
    build_hf_cache(cache, "org/speech", {"u1": "the cat sat", "u2": "on the mat", "u3": "again"})
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_OFFLINE", None)  # the plugin itself must keep datasets offline
    env.pop("HF_DATASETS_OFFLINE", None)

    # one process (datasets imports slowly), no network: a hit, then a miss
    out = subprocess.run([*_no_network(), sys.executable, "-c", LOAD_HF, "org/speech", "[:2]", "org/absent", ""],
                         check=False, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    hit, missing = [line for line in out.stdout.splitlines() if line.startswith(("OK", "ERROR"))]
    assert hit == "OK hf-dataset:org/speech:test[:2] [('u1', 'the cat sat', 'u1.wav'), ('u2', 'on the mat', 'u2.wav')]"
    assert missing.startswith("ERROR hf-dataset:org/absent:test: not in the local Hugging Face datasets cache")
    fetch = "python -c \"import datasets; datasets.load_dataset('org/absent', None, split='test')\""
    assert f"Fetch it once with: {fetch}" in missing
    assert "(OfflineModeIsEnabled)" in missing  # the plugin's offline switch answered, not a failed connection
    assert "--speechlab-allow-download" in missing


def test_hf_dataset_from_a_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset(hub_table({"u1": "the cat sat", "u2": "on the mat"}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    data = load_dataset("d", Path("x"), options={"hf-dataset": str(tmp_path / "saved"), "split": "test",
                                                 "slice": "[1:]", "columns": {"text": "sentence"}})
    assert [(u.id, u.text) for u in data.utterances] == [("u2", "on the mat")]
    with pytest.raises(DatasetError, match="has no split 'train' \\(it has: test\\); set 'split:'"):
        load_dataset("d", Path("x"), options={"hf-dataset": str(tmp_path / "saved"), "split": "train"})


def test_speechlab_validate_reads_parquet_datasets(tmp_path: Path) -> None:
    from pytest_speechlab.validate import validate

    pq.write_table(hub_table({"u1": "the cat sat"}), tmp_path / "eval.parquet")
    cfg = tmp_path / "speechlab.yaml"
    cfg.write_text("models: {}\ndatasets:\n  eval:\n    manifest: eval.parquet\n    columns: {text: sentence}\n")
    assert validate(cfg) == []
    cfg.write_text("models: {}\ndatasets:\n  eval:\n    manifest: eval.parquet\n")
    (problem,) = validate(cfg)
    assert problem.startswith(f"{tmp_path / 'eval.parquet'}: no column 'text'")


def test_hf_dataset_session_from_a_saved_dataset(parquet_project: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """speechlab.yaml's hf-dataset keys reach the loader in a real session (a save_to_disk folder: no cache)."""
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset(hub_table({"u1": "the cat sat", "u2": "on the mat"}))}).save_to_disk(
        str(parquet_project.path / "saved"))
    parquet_project.makefile(".yaml", speechlab=(
        "models:\n  m:\n    backend: lengths\n    devices: [cpu]\n"
        "datasets:\n  hub:\n    hf-dataset: saved\n    split: test\n    slice: '[:1]'\n    columns: {text: sentence}\n"
        "thresholds: {rss_rel: 1000, speed_rel: 1000, speed_rel_min: 1000, rtf_rel: 1000}\n"))
    (parquet_project.path / "elsewhere").mkdir()
    monkeypatch.chdir(parquet_project.path / "elsewhere")  # the saved folder is found relative to speechlab.yaml
    result = parquet_project.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", "--speechlab-update-golden",
                                       f"--rootdir={parquet_project.path}",
                                       str(parquet_project.path / "speechlab.yaml"))
    result.assert_outcomes(passed=1)
    golden = json.loads((parquet_project.path / "golden" / "m" / "hub" / "cpu.json").read_text())
    assert '"audio": "u1.wav"' in json.dumps(golden) and '"u2"' not in json.dumps(golden)


def test_without_the_hf_extra_the_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pq.write_table(hub_table({"u1": "x"}), tmp_path / "eval.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    with pytest.raises(DatasetError, match=r"needs pyarrow: install the extra: uv add 'pytest-speechlab\[hf\]'"):
        load_dataset("eval", tmp_path / "eval.parquet")


def test_speechlab_init_takes_a_parquet_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_speechlab.cli import main
    from pytest_speechlab.validate import validate

    pq.write_table(hub_table({"u1": "the cat sat"}).rename_columns(["audio", "text", "id"]), tmp_path / "eval.parquet")
    assert main(["init", "--dir", str(tmp_path), "--dataset", "eval.parquet"]) == 0
    text = (tmp_path / "speechlab.yaml").read_text()
    assert "manifest: eval.parquet   # Parquet/Arrow: id, audio, text columns (rename with columns:)" in text
    assert "tts-example" not in text and validate(tmp_path / "speechlab.yaml") == []
    pq.write_table(hub_table({"u1": "x"}), tmp_path / "other.parquet")  # text in 'sentence'
    capsys.readouterr()
    assert main(["init", "--dir", str(tmp_path), "--dataset", "other.parquet", "--force"]) == 2
    assert "is not a usable manifest" in capsys.readouterr().err
