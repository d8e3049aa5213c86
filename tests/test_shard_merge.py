"""Beyond one machine: ``--speechlab-shard I/N`` partitions the matrix, and ``speechlab merge`` joins the
shards' run records into one record that gates like a single run's.

Two real shard sessions (pytest subprocesses) run a 6-case matrix (2 models x 2 datasets of 2 bundled smoke
clips, 1 round; two cases on mps, which skip), each writing ``--speechlab-json``; the merge runs through the
real CLI.  The models run on the fake backend of tests/_fake.py: sharding and merging are the plugin's, and a
real model would only add its load and decode time (issue 26).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _fake import install_fake_backend
from _support import inner_env

from pytest_speechlab.commands.cli import main as speechlab_main
from pytest_speechlab.records import (
    MergeError,
    failed_cases,
    load_record,
    merge_records,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "fixtures" / "smoke"
CLIPS = ("smoke-02", "smoke-04")



CONFIG = """\
models:
  fw-a: {backend: fake, say: the birds sing at dawn, devices: [cpu, mps]}
  fw-b: {backend: fake, say: the sun is up, beam_size: 1, devices: [cpu]}
datasets:
  one: {manifest: data/one/manifest.jsonl, normalizer: whisper-en}
  two: {manifest: data/two/manifest.jsonl, normalizer: whisper-en}
golden_dir: golden
rounds: 1
"""
# fw-a also lists mps: those cases are collected and skip (the fake backend has no MPS), so a shard holds a
# skipped case too and the merge must carry it with its reason.
ALL_CASES = sorted(["fw-a-cpu-one", "fw-a-cpu-two", "fw-a-mps-one", "fw-a-mps-two", "fw-b-cpu-one", "fw-b-cpu-two"])


def make_project(root: Path) -> Path:
    """A user project with the config above and two datasets of two bundled clips each."""
    rows = {json.loads(line)["id"]: json.loads(line) for line in (SMOKE / "manifest.jsonl").read_text().splitlines()}
    for ds in ("one", "two"):
        d = root / "data" / ds
        d.mkdir(parents=True)
        with open(d / "manifest.jsonl", "w", encoding="utf-8") as fh:
            for cid in CLIPS:
                shutil.copy(SMOKE / rows[cid]["audio_filepath"], d / rows[cid]["audio_filepath"])
                fh.write(json.dumps(rows[cid]) + "\n")
    (root / "speechlab.yaml").write_text(CONFIG, encoding="utf-8")
    install_fake_backend(root)
    return root


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = inner_env()
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def collected(project: Path, *args: str) -> list[str]:
    res = run_pytest(project, "--collect-only", "-q", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return sorted(line.split("[", 1)[1].rstrip("]") for line in res.stdout.splitlines() if "::test_speech[" in line)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("shard-project"))


def test_shards_partition_the_matrix(project: Path) -> None:
    full = collected(project)
    assert full == ALL_CASES
    for n in (2, 4):  # even and uneven (6 cases in 4 shards); each collection is a fresh pytest process
        parts = [collected(project, "--speechlab-shard", f"{i}/{n}") for i in range(1, n + 1)]
        union = sorted(c for p in parts for c in p)
        assert union == full, n  # every case in exactly one shard: union is all and no duplicates
        assert all(parts), n  # no empty shard while there are at least N cases
        assert collected(project, "--speechlab-shard", f"1/{n}") == parts[0]  # deterministic


def test_bad_shard_argument_is_a_usage_error(project: Path) -> None:
    res = run_pytest(project, "--speechlab-shard", "3/2", "--collect-only", "-q")
    assert res.returncode == 4
    assert "--speechlab-shard 3/2: I must be between 1 and N" in res.stderr


@pytest.fixture(scope="module")
def shard_runs(project: Path) -> dict[str, Any]:
    """Bless the goldens with one full run, then run the two shards for real, each writing its record."""
    res = run_pytest(project, "--speechlab-update-golden", "--speechlab-json", "bless.json")
    assert res.returncode == 0, res.stdout + res.stderr
    out: dict[str, Any] = {}
    for i in (1, 2):
        res = run_pytest(
            project, "--speechlab-shard", f"{i}/2", "--speechlab-rtf-gate", "off", "--speechlab-json", f"shard{i}.json"
        )
        assert res.returncode == 0, res.stdout + res.stderr
        out[f"shard{i}"] = project / f"shard{i}.json"
    return out


def test_two_real_shards_merge_into_the_whole_matrix(
    project: Path, shard_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    r1, r2 = load_record(shard_runs["shard1"]), load_record(shard_runs["shard2"])
    ids1, ids2 = {c["case"] for c in r1["cases"]}, {c["case"] for c in r2["cases"]}
    assert ids1 and ids2 and not ids1 & ids2
    assert sorted(ids1 | ids2) == ALL_CASES
    assert r1["settings"]["shard"] == [1, 2] and r2["settings"]["shard"] == [2, 2]

    merged_path = project / "merged.json"
    status = speechlab_main(
        ["merge", str(shard_runs["shard1"]), str(shard_runs["shard2"]), "-o", str(merged_path), "--gate"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    merged = load_record(merged_path)
    assert [c["case"] for c in merged["cases"]] == ALL_CASES
    verdicts = {c["case"]: c.get("verdict") or c["status"] for c in merged["cases"]}
    assert verdicts == {c: ("skipped" if "-mps-" in c else "pass") for c in ALL_CASES}
    skipped = [c for c in merged["cases"] if c["status"] == "skipped"]
    assert all("fake has no MPS support" in c["reason"] for c in skipped)
    assert merged["provenance"]["merged"] is True
    assert [m["shard"] for m in merged["settings"]["merged_from"]] == [[1, 2], [2, 2]]
    assert merged["settings"]["model_loads"] == {"fw-a@cpu": 1, "fw-b@cpu": 1}
    assert not any("missing" in n for n in merged["settings"]["notes"])
    # the merged record carries the per-case data a gate needs, exactly as the shards wrote it
    by_id = {c["case"]: c for c in r1["cases"] + r2["cases"]}
    assert all(c == by_id[c["case"]] for c in merged["cases"])
    assert failed_cases(merged) == []
    # the CLI printed the summary table of the merged record
    assert "fw-b-cpu-two" in out and f"6 cases -> {merged_path}" in out
    _check_with_speechlab_check_if_present(merged_path)


def _check_with_speechlab_check_if_present(merged_path: Path) -> None:
    """`speechlab check RUN.json` (issue 6) gates a saved record; use it once it exists."""
    from pytest_speechlab.commands.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    if "check" not in getattr(sub, "choices", {}):
        return
    assert speechlab_main(["check", str(merged_path)]) == 0


def test_merge_refuses_conflicting_duplicates_and_gates(
    project: Path, shard_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = shard_runs["shard1"]
    rec = load_record(s1)
    ran = next(c for c in rec["cases"] if c["status"] == "ran")
    doctored = copy.deepcopy(rec)
    bad = next(c for c in doctored["cases"] if c["case"] == ran["case"])
    bad["metrics"]["wer"] += 0.25
    bad["verdict"] = "fail"
    bad_path = project / "doctored.json"
    bad_path.write_text(json.dumps(doctored), encoding="utf-8")

    status = speechlab_main(["merge", str(s1), str(bad_path), "-o", str(project / "never.json")])
    err = capsys.readouterr().err
    assert status == 2
    assert f"case {ran['case']} is in both {s1} (status ran, verdict pass, WER {ran['metrics']['wer']:.4f}" in err
    assert f"and {bad_path} (status ran, verdict fail, WER {ran['metrics']['wer'] + 0.25:.4f}" in err
    assert "merge the records of disjoint shards" in err
    assert not (project / "never.json").exists()

    # the same shard twice is the same result: accepted, once; the missing shard is said
    status = speechlab_main(["merge", str(s1), str(s1), "-o", str(project / "twice.json")])
    capsys.readouterr()
    assert status == 0
    twice = load_record(project / "twice.json")
    assert [c["case"] for c in twice["cases"]] == [c["case"] for c in rec["cases"]]
    assert any("shard(s) 2 of 2 missing" in n for n in twice["settings"]["notes"])

    # a failed case in a shard makes the merged record fail the gate
    doctored_only = copy.deepcopy(rec)
    next(c for c in doctored_only["cases"] if c["case"] == ran["case"])["verdict"] = "fail"
    failing = project / "failing.json"
    failing.write_text(json.dumps(doctored_only), encoding="utf-8")
    status = speechlab_main(
        ["merge", str(failing), str(shard_runs["shard2"]), "-o", str(project / "gated.json"), "--gate"]
    )
    err = capsys.readouterr().err
    assert status == 1 and f"gate: 1 case(s) failed: {ran['case']}" in err


def test_merge_rejects_files_that_are_not_run_records(tmp_path: Path) -> None:
    trunc = tmp_path / "trunc.json"
    trunc.write_text('{"schema": 1, "cases": [', encoding="utf-8")
    with pytest.raises(MergeError, match=r"trunc.json: not valid JSON .* re-run that shard"):
        load_record(trunc)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(MergeError, match=r"other.json: not a speechlab run record"):
        load_record(other)
    with pytest.raises(MergeError, match=r"missing.json: no such run record"):
        load_record(tmp_path / "missing.json")
    with pytest.raises(MergeError, match="nothing to merge"):
        merge_records([], [])


def test_merge_notes_mixed_commits_and_splits() -> None:
    def rec(case: str, shard: list[int], commit: str) -> dict[str, Any]:
        return {
            "schema": 1,
            "created": "x",
            "provenance": {"git_commit": commit},
            "settings": {"shard": shard, "model_loads": {"m@cpu": 1}, "notes": ["same note"]},
            "cases": [{"case": case, "status": "ran", "verdict": "pass", "metrics": {"wer": 0.1}}],
        }

    merged = merge_records([rec("a", [1, 2], "c1"), rec("b", [1, 3], "c2")], ["r1", "r2"])
    notes = merged["settings"]["notes"]
    assert notes[0] == "same note" and notes.count("same note") == 1
    assert any("2 different git commits: c1, c2" in n for n in notes)
    assert any("different splits (N = 2, 3)" in n for n in notes)
    assert merged["settings"]["model_loads"] == {"m@cpu": 2}
