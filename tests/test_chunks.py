"""Big evaluations (chunks.py): ``chunks: N`` splits a dataset into N collected items that xdist workers and
``--speechlab-shard`` spread, joined into ONE corpus verdict against the unchunked case's golden.

A chunk-aware fake backend (fast, deterministic) runs a 6-clip dataset split into 3 chunks.  Its hypothesis
depends on each clip's length; environment variables make it worse (``CHUNKFAKE_WORSE``), raise on one clip
(``CHUNKFAKE_CRASH``) or kill its process on one clip (``CHUNKFAKE_EXIT``), without touching the config (so
the goldens stay the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_speechlab.chunks import ChunkProgress, count, split
from pytest_speechlab.records import is_part
from pytest_speechlab.session import Case
from pytest_speechlab.xdist_support import gpu_for_worker, group_names, pin_worker

BACKEND = '''
import os

from pytest_speechlab.backends.base import BaseBackend

WORDS = "hello there general kenobi".split()


class ChunkASR:
    sample_rate = 16000
    decode_settings = {"kind": "chunkfake"}

    def transcribe(self, audio):
        n = len(audio)
        if str(n) == os.environ.get("CHUNKFAKE_CRASH"):
            raise ValueError(f"chunkfake exploded on a {n}-sample clip")
        if str(n) == os.environ.get("CHUNKFAKE_EXIT"):
            os._exit(3)
        keep = 4 - (n // 3200) % 2  # every other clip drops its last word
        if os.environ.get("CHUNKFAKE_WORSE"):
            keep = 1
        return " ".join(WORDS[:keep])


class ChunkBackend(BaseBackend):
    name = "chunkfake"
    extra = ""
    tasks = ("asr",)
    devices = ("cpu",)
    speed_reference = None
    options = ()

    def load(self, spec, device):
        return ChunkASR()
'''

SECONDS = (0.4, 0.6, 0.8, 1.0, 1.2, 1.4)  # 6 clips of distinct lengths, 5.4 s in all
CORPUS = "m-cpu-big"
CHUNK_IDS = [f"{CORPUS}[{i}/3]" for i in (1, 2, 3)]
TIMINGS = {"rtf", "rtf_rounds", "latency_p50_s", "latency_p95_s", "peak_rss_mb", "case_peak_rss_mb", "cuda_peak_mb",
           "load_seconds"}


def _project(fake: Any, chunks: int | None = 3) -> Any:
    import soundfile as sf

    (fake.path / "speechlab_chunkfake.py").write_text(BACKEND, encoding="utf-8")
    with open(fake.path / "conftest.py", "a", encoding="utf-8") as fh:
        fh.write('register("chunkfake", "speechlab_chunkfake:ChunkBackend")\n')
    folder = fake.path / "data" / "big"
    folder.mkdir(parents=True)
    rows = []
    for i, secs in enumerate(SECONDS):
        t = np.arange(int(16000 * secs), dtype=np.float32) / 16000
        sf.write(str(folder / f"c{i}.wav"), 0.1 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
        rows.append({"audio_filepath": f"c{i}.wav", "text": "hello there general kenobi", "id": f"c{i}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    write_config(fake, chunks)
    return fake


def write_config(fake: Any, chunks: int | None) -> None:
    ds: dict[str, Any] = {"manifest": "data/big/manifest.jsonl", "normalizer": "basic"}
    if chunks:
        ds["chunks"] = chunks
    fake.config(models={"m": {"backend": "chunkfake"}}, datasets={"big": ds})


@pytest.fixture
def chunked(fake: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("CHUNKFAKE_CRASH", "CHUNKFAKE_EXIT", "CHUNKFAKE_WORSE"):
        monkeypatch.delenv(var, raising=False)
    return _project(fake)


def corpus_row(record: dict[str, Any]) -> dict[str, Any]:
    rows = [c for c in record["cases"] if c.get("origin") == "corpus"]
    assert len(rows) == 1, [c["case"] for c in record["cases"]]
    return rows[0]


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A corpus row without what legitimately differs between runs (timings, workers, paths)."""
    keep = {k: v for k, v in row.items() if k not in ("provenance", "chunks", "machine", "golden_path")}
    keep["metrics"] = {k: v for k, v in row["metrics"].items() if k not in TIMINGS}
    keep["utterances"] = [{k: v for k, v in u.items() if k != "seconds"} for u in row["utterances"]]
    keep["checks"] = [{k: v for k, v in c.items() if c.get("metric") not in ("RTF", "RSS_MB", "GPU_MB")}
                      for c in row.get("checks", [])]
    keep.pop("golden_metrics", None)
    return keep


def golden_without_timings(path: Path) -> dict[str, Any]:
    g: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    g["metrics"] = {k: v for k, v in g["metrics"].items() if k not in TIMINGS}
    g["utterances"] = [{k: v for k, v in u.items() if k != "seconds"} for u in g["utterances"]]
    for k in ("machine", "provenance", "rtf_unreliable"):
        g.pop(k, None)
    return g


# ---- the split ------------------------------------------------------------------------------------------


def test_split_is_contiguous_balanced_and_deterministic() -> None:
    durs = [float(x) for x in np.random.default_rng(7).uniform(1, 20, 400)]
    for n in (1, 2, 3, 8, 50):
        ranges = split(durs, n)
        assert ranges == split(list(durs), n)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(durs)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous, no gap/overlap
        sizes = [sum(durs[s:e]) for s, e in ranges]
        assert max(sizes) - min(sizes) <= 2 * max(durs), (n, sizes)  # equal audio to within a clip or two
    assert split([5.0, 1.0, 1.0], 3) == [(0, 1), (1, 2), (2, 3)]  # never an empty chunk
    with pytest.raises(ValueError):
        split([1.0, 2.0], 3)
    assert count([60.0] * 30, None, 10) == 3  # 30 minutes at 10 minutes a chunk
    assert count([60.0] * 30, 8, 10) == 8
    assert count([60.0] * 2, 8, None) == 2  # never more chunks than utterances


def test_progress_line_has_eta_from_audio_done() -> None:
    p = ChunkProgress(total_audio=400.0, total_chunks=4, start=0.0)
    row = {"case": "m-cpu-big[1/4]", "status": "ran", "xdist_worker": "gw1", "chunk": [1, 4],
           "metrics": {"audio_seconds": 100.0, "wer": 0.125}}
    line = p.line(row, now=30.0)
    assert "m-cpu-big[1/4] done on gw1" in line and "WER 0.1250" in line
    assert "1/4 chunks, 100/400 s audio in 30s, ETA 1m30s" in line  # 3x the audio left at 100 s per 30 s


def test_gpu_workers_get_one_gpu_each_and_keep_their_chunks_together() -> None:
    cases = [Case("m", "big", "cuda", (i, 8)) for i in range(1, 9)]
    groups = group_names(cases, n_workers=2, gpu_count=2)
    assert [groups[c] for c in cases] == ["m:cuda:1of2"] * 4 + ["m:cuda:2of2"] * 4  # one model load per worker
    assert [gpu_for_worker(w, 2) for w in ("gw0", "gw1")] == ["0", "1"]
    env: dict[str, str] = {}
    assert pin_worker({"workerid": "gw1", "speechlab_gpu_count": 2, "speechlab_visible_devices": "4,5"}, env) == "5"
    assert env == {"CUDA_VISIBLE_DEVICES": "5"}
    # one GPU for two workers: a model's chunks are never split over it (two copies would share its memory)
    assert set(group_names(cases, n_workers=2, gpu_count=1).values()) == {"m:cuda"}


# ---- sessions ------------------------------------------------------------------------------------------


def test_config_errors_name_the_key(fake: Any) -> None:
    _project(fake)
    fake.config(models={"m": {"backend": "chunkfake"}},
                datasets={"big": {"manifest": "data/big/manifest.jsonl", "chunks": 0}})
    res = fake.run("--collect-only")
    res.stdout.fnmatch_lines(["*datasets.big.chunks: got 0; a whole number >= 1*"])
    fake.config(models={"m": {"backend": "chunkfake"}},
                datasets={"big": {"manifest": "data/big/manifest.jsonl", "chunk_minutes": 0.03}})
    res = fake.run("--collect-only", "-q")  # 5.4 s of audio at 1.8 s a chunk: 3 chunks, read from the headers
    res.stdout.fnmatch_lines(["*test_speech[[]m-cpu-big[[]3/3]]"])
    assert "[4/" not in res.stdout.str()
    fake.config(models={"m": {"backend": "chunkfake"}},
                datasets={"big": {"manifest": "data/big/manifest.jsonl", "chunks": 9}})
    res = fake.run()
    res.stdout.fnmatch_lines(["*datasets.big.chunks: 9 chunks, but * has only 6 utterance(s)*"])
    assert res.ret == pytest.ExitCode.TESTS_FAILED


def test_chunks_are_items_and_one_corpus_verdict_gates_the_unchunked_golden(
    chunked: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the baseline of an UNCHUNKED run: turning chunks on needs no new golden
    write_config(chunked, None)
    assert chunked.run("--speechlab-update-golden").ret == 0
    unchunked_golden = golden_without_timings(chunked.golden("m", "big"))
    write_config(chunked, 3)
    res = chunked.run("--collect-only", "-q")
    res.stdout.fnmatch_lines([f"*test_speech[[]{c.replace('[', '[[]')}]" for c in CHUNK_IDS])
    res = chunked.run("--speechlab-json", "run.json")
    assert res.ret == 0, res.stdout.str()
    res.stdout.fnmatch_lines(["*chunk m-cpu-big[[]1/3] done*1/3 chunks*ETA*", "*chunk m-cpu-big[[]3/3] done*ETA 0s"])
    rec = chunked.record()
    row = corpus_row(rec)
    assert row["verdict"] == "pass" and row["golden_path"].endswith("golden/m/big/cpu.json")
    # WER from summed edits over all 6 utterances (3 of 24 reference words dropped), in manifest order
    assert row["metrics"]["wer"] == pytest.approx(3 / 24)
    assert [u["id"] for u in row["utterances"]] == [f"c{i}" for i in range(6)]
    assert row["metrics"]["rtf"] == pytest.approx(
        sum(u["seconds"] for u in row["utterances"]) / sum(SECONDS), rel=1e-3)
    assert sorted(c["case"] for c in rec["cases"] if c.get("origin") == "matrix") == CHUNK_IDS
    assert rec["collected"] == 3
    # the chunked run writes the same golden as the unchunked one (timings aside)
    assert chunked.run("--speechlab-update-golden").ret == 0
    assert golden_without_timings(chunked.golden("m", "big")) == unchunked_golden
    # worse: the ONE corpus verdict fails, with the failure block, and the session fails
    monkeypatch.setenv("CHUNKFAKE_WORSE", "1")
    res = chunked.run("--speechlab-json", "worse.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    # every chunk ran and passed: the corpus is what failed, and pytest's own counts and JUnit say so
    res.stdout.fnmatch_lines(["*1 failed, 3 passed*"])
    assert corpus_row(chunked.record("worse.json"))["verdict"] == "fail"
    assert "speechlab: m-cpu-big" in res.stdout.str() and "WER" in res.stdout.str()


def test_a_crashed_chunk_makes_the_corpus_an_error_not_a_partial_pass(
    chunked: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert chunked.run("--speechlab-update-golden").ret == 0
    monkeypatch.setenv("CHUNKFAKE_CRASH", str(int(16000 * 1.0)))  # clip c3: in chunk 2
    res = chunked.run("--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    row = corpus_row(chunked.record())
    assert row["verdict"] == "error" and row["status"] == "error"
    assert "every chunk is needed" in row["reason"] and "chunkfake exploded" in row["reason"]


@pytest.mark.slow
def test_n0_n2_and_two_shards_merged_give_one_and_the_same_corpus_verdict(chunked: Any) -> None:
    assert chunked.run("--speechlab-update-golden").ret == 0
    golden = chunked.golden("m", "big").read_bytes()
    off = ("--speechlab-rtf-gate", "off")  # the same gate in every mode (-n 2 turns it off by itself)
    res = chunked.run("-n", "0", "--speechlab-json", "n0.json", *off)
    assert res.ret == 0, res.stdout.str()
    res = chunked.run_subprocess("-n", "2", "--speechlab-json", "n2.json", "--speechlab-update-golden", *off)
    assert res.ret == 0, res.stdout.str()
    res.stdout.fnmatch_lines(["*chunk m-cpu-big[[]?/3] done on gw?*ETA*"])
    n2_golden = golden_without_timings(chunked.golden("m", "big"))
    chunked.golden("m", "big").write_bytes(golden)
    assert n2_golden == golden_without_timings(chunked.golden("m", "big"))  # -n 2 writes the same golden
    res = chunked.run_subprocess("-n", "2", "--speechlab-json", "n2.json", *off)
    assert res.ret == 0, res.stdout.str()
    n2 = chunked.record("n2.json")
    loads = n2["settings"]["xdist"]["loads_by_worker"]
    assert len(loads) == 2 and all(v == {"m@cpu": 1} for v in loads.values()), loads  # one load per worker
    assert {c.get("xdist_worker") for c in n2["cases"] if c.get("origin") == "matrix"} == {"gw0", "gw1"}
    for i in (1, 2):
        res = chunked.run("--speechlab-shard", f"{i}/2", "--speechlab-json", f"shard{i}.json", *off)
        assert res.ret == 0, res.stdout.str()  # its chunks ran; it judges nothing (the merge gates)
        part = corpus_row(chunked.record(f"shard{i}.json"))
        assert part["verdict"] == "partial" and part["chunks_missing"]
        res.stdout.fnmatch_lines(["*partial*speechlab merge*--gate*"])
    rc, out = chunked.speechlab("merge", "shard1.json", "shard2.json", "-o", "merged.json", "--gate")
    assert rc == 0, out
    merged = chunked.record("merged.json")
    rows = [corpus_row(chunked.record("n0.json")), corpus_row(n2), corpus_row(merged)]
    assert [r["verdict"] for r in rows] == ["pass"] * 3
    assert comparable(rows[0]) == comparable(rows[1]) == comparable(rows[2])
    # readers keyed by model/dataset/device (scorecard, capability, robustness) take the corpus row, not a chunk
    assert not is_part(rows[2]) and all(is_part(c) for c in merged["cases"] if c.get("chunk"))
    # a shard's record missing from the merge: the corpus is an error, and the gate says so
    rc, out = chunked.speechlab("merge", "shard1.json", "-o", "half.json", "--gate")
    assert rc == 1, out
    half = corpus_row(chunked.record("half.json"))
    assert half["verdict"] == "error" and "missing from the merged records" in half["reason"]
    # a shard record alone never passes a gate: partial
    rc, out = chunked.speechlab("check", "shard1.json")
    assert rc != 0, out


@pytest.mark.slow
def test_a_worker_that_dies_mid_chunk_makes_the_corpus_an_error(chunked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chunked.run("--speechlab-update-golden").ret == 0
    monkeypatch.setenv("CHUNKFAKE_EXIT", str(int(16000 * 0.4)))  # clip c0: chunk 1
    res = chunked.run_subprocess("-n", "2", "--max-worker-restart", "0", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    row = corpus_row(chunked.record())
    assert row["verdict"] == "error" and "chunk 1/3 crashed" in row["reason"], row["reason"]
