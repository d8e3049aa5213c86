"""``speechlab ab``: the base revision's cases and this tree's, timed alternately in one job.

The "model" is a fake backend doing pure-Python work; its code lives in ``mymodel.py`` in a git repository,
so the change under test is a change of the model's own code between the base commit and the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support import tone_dataset

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

MYMODEL = '''
import time

SLOWDOWN = {slowdown}


def transcribe(audio):
    t0 = time.perf_counter()
    acc = 0
    for i in range(int(len(audio) / 16000 * 400000)):
        acc = (acc * 31 + i) % 1_000_003
    if SLOWDOWN:
        time.sleep(SLOWDOWN * (time.perf_counter() - t0))
    return "hello world"
'''

CONFTEST = '''
import mymodel

from pytest_speechlab.backends import register
from pytest_speechlab.backends.base import BaseBackend


class SpinASR:
    sample_rate = 16000
    decode_settings = {}

    def transcribe(self, audio):
        return mymodel.transcribe(audio)


class SpinBackend(BaseBackend):
    name = "spin"
    tasks = ("asr",)
    devices = ("cpu",)
    speed_reference = "none"

    def load(self, spec, device):
        return SpinASR()


register("spin", "conftest:SpinBackend")
'''

CONFIG = """
models:
  spin:
    backend: spin
    devices: [cpu]
datasets:
  clips:
    manifest: data/manifest.jsonl
    normalizer: basic
golden_dir: golden
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def _make_repo(root: Path, golden: bool) -> Path:
    """A git repository with the fake model at full speed (and its golden), committed."""
    tone_dataset(root / "data", (1.0, 1.5, 2.0), "hello world")
    (root / "mymodel.py").write_text(MYMODEL.format(slowdown=0.0), encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (root / "speechlab.yaml").write_text(CONFIG, encoding="utf-8")
    if golden:
        rc = subprocess.run([sys.executable, "-m", "pytest", "speechlab.yaml", "-p", "no:cacheprovider",
                             "--speechlab-update-golden"], cwd=root, capture_output=True, text=True, check=False)
        assert rc.returncode == 0, rc.stdout + rc.stderr
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    return root


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    return _make_repo(pytester.path, golden=True)


@pytest.fixture
def bare_repo(pytester: pytest.Pytester) -> Path:
    """The same without goldens (what the argument checks need)."""
    return _make_repo(pytester.path, golden=False)


def _ab(cwd: Path, *args: str) -> tuple[int, str, str]:
    """``speechlab ab ARGS``; the pytest sessions it starts load pytest-speechlab alone (``-p`` after ``--``
    is forwarded to both trees' runs), which keeps this repository's other dev plugins' start-up out."""
    if "--" in args:
        args = (*args, "-p", "pytest_speechlab.plugin")
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest_speechlab.commands.cli", "ab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def _worktrees(root: Path) -> list[str]:
    out = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.mark.slow
def test_a_slower_working_tree_fails_and_an_unchanged_one_passes(repo: Path) -> None:
    """The model's code doubled in the working tree (uncommitted): FAIL with the ratio, exit 1.  The same code
    on both sides: pass, exit 0.  Each run is a fresh pytest process; the base's worktree is removed."""
    rc, out, err = _ab(repo, "--base", "main", "--pairs", "2", "--tolerance", "0.5", "--json", "ab.json",
                       "--", "speechlab.yaml")
    assert rc == 0, out + err
    assert "spin-cpu-clips" in out and "pass" in out.splitlines()[-1]
    report: dict[str, Any] = json.loads((repo / "ab.json").read_text(encoding="utf-8"))
    (row,) = report["cases"]
    assert row["verdict"] == "pass" and len(row["ratios"]) == 2 and 0.5 < row["ratio"] < 1.5
    assert all(x and x > 0 for x in row["base_rtf"] + row["head_rtf"])

    (repo / "mymodel.py").write_text(MYMODEL.format(slowdown=1.0), encoding="utf-8")
    rc, out, err = _ab(repo, "--base", "main", "--pairs", "2", "--tolerance", "0.5", "--json", "ab.json",
                       "--", "speechlab.yaml")
    assert rc == 1, out + err
    assert "FAIL" in out and "spin-cpu-clips" in out
    (row,) = json.loads((repo / "ab.json").read_text(encoding="utf-8"))["cases"]
    assert row["verdict"] == "fail" and row["ratio"] > 1.5, row
    assert len(_worktrees(repo)) == 1, _worktrees(repo)  # the temporary base worktree is gone


@pytest.mark.slow
def test_a_case_that_crashes_here_fails_even_without_a_time(repo: Path) -> None:
    """An error is never a pass: the base ran the case, the working tree's model raises."""
    (repo / "mymodel.py").write_text(MYMODEL.format(slowdown=0.0) + "\ndef transcribe(audio):\n    raise "
                                     "RuntimeError('boom')\n", encoding="utf-8")
    rc, out, err = _ab(repo, "--base", "main", "--pairs", "2", "--", "speechlab.yaml")
    assert rc == 1, out + err
    assert "FAIL" in out and "ran on the base, error here" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--base", "no-such-branch", "--", "speechlab.yaml"), "--base no-such-branch: no such commit"),
        (("--base", "main", "--pairs", "1", "--", "speechlab.yaml"), "--pairs 1: at least 2 pairs"),
        (("--base", "main", "--tolerance", "-0.1", "--", "speechlab.yaml"), "--tolerance -0.1"),
        (("--base", "main", "--", "speechlab.yaml", "-k", "nothing_matches"), "the base run exited 5"),
        (("--base-dir", "no/such/dir", "--", "speechlab.yaml"), "--base-dir no/such/dir: no such directory"),
    ],
)
def test_what_cannot_be_compared_exits_2_and_says_why(bare_repo: Path, args: tuple[str, ...], message: str) -> None:
    rc, out, err = _ab(bare_repo, *args)
    assert rc == 2, out + err
    assert message in err, err
    assert len(_worktrees(bare_repo)) == 1


def test_outside_git_it_says_to_use_a_checkout(pytester: pytest.Pytester) -> None:
    rc, _, err = _ab(pytester.path, "--base", "main", "--", "speechlab.yaml")
    assert rc == 2 and "is not in a git repository" in err and "--base-dir" in err


def test_compare_takes_the_median_of_the_pairs_and_never_passes_an_error() -> None:
    from pytest_speechlab.commands.ab import compare

    def case(rtf: float | None, status: str = "ran") -> dict[str, Any]:
        return {"status": status, "metrics": {"rtf": rtf} if rtf is not None else {}}

    runs = [
        ({"a": case(0.10), "b": case(0.10), "c": case(0.10), "d": case(0.1), "e": case(0.1)},
         {"a": case(0.30), "b": case(0.10), "c": case(0.05), "d": case(None, "error"), "f": case(0.1)}),
        ({"a": case(0.10), "b": case(0.20), "c": case(0.10), "d": case(0.1), "e": case(0.1, "skipped")},
         {"a": case(0.11), "b": case(0.20), "c": case(0.06), "d": case(0.1), "f": case(0.1)}),
        ({"a": case(0.10), "b": case(0.10), "c": case(0.10), "d": case(0.1)},
         {"a": case(0.13), "b": case(0.10), "c": case(0.05), "d": case(0.1), "f": case(0.1)}),
    ]
    rows = {r["case"]: r for r in compare(runs, 0.15)}
    assert rows["a"]["ratios"] == [3.0, 1.1, 1.3] and rows["a"]["ratio"] == 1.3 and rows["a"]["verdict"] == "fail"
    assert rows["b"]["verdict"] == "pass" and rows["b"]["ratio"] == 1.0  # one slow pair on both sides is noise
    assert rows["c"]["verdict"] == "improved"
    assert rows["d"]["verdict"] == "fail" and rows["d"]["note"] == "ran on the base, error/ran here"
    assert rows["e"]["verdict"] == "not compared" and "absent" in rows["e"]["note"]  # removed here
    assert rows["f"]["verdict"] == "not compared" and rows["f"]["note"].startswith("base absent")  # new here


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_a_cancelled_run_removes_the_base_worktree(repo: Path) -> None:
    """A CI job cancelled mid-run (SIGTERM): exit 130 with a message, no worktree or run left behind."""
    import signal
    import time

    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_speechlab.commands.cli", "ab", "--base", "main", "--pairs",
                             "3", "--", "speechlab.yaml", "-p", "pytest_speechlab.plugin"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_worktrees(repo)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_worktrees(repo)) == 2, "the base worktree never appeared"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted; the base worktree" in err
    assert len(_worktrees(repo)) == 1, _worktrees(repo)
