"""Green means compared (issue 24, item 4): a session that compared nothing, a skipped case whose golden is
committed, ``--benchmark-skip`` and a partial chunked corpus never exit 0; pytest, ``speechlab check`` and the
closing line say the same.  pytester sessions on the fake backend (tests/_fake.py), with and without xdist."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from _fake import FakeProject

from pytest_speechlab.gate import coverage, skipped_with_golden

XDIST = [pytest.param([], id="no-xdist"), pytest.param(["-n", "2"], id="n2", marks=pytest.mark.slow)]


def _cases(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["case"]: c for c in record["cases"]}


def _chunked_golden(fake: FakeProject, text: str) -> None:
    """A four-clip dataset in two chunks whose references read ``text`` (the fake hears "hello there"), golden
    recorded."""
    rows = [{"audio_filepath": "a.wav", "text": text, "id": f"x{i}"} for i in range(3)]
    manifest = fake.dataset(rows=rows)
    fake.config(models={"ok": {}}, datasets={"clips": {"manifest": manifest, "normalizer": "basic", "chunks": 2}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=2)


@pytest.mark.parametrize("xdist", XDIST)
def test_a_session_where_every_case_skipped_is_not_green(fake: FakeProject, xdist: list[str]) -> None:
    """``pytest -m cuda`` where the device is absent: every selected case skips, nothing was compared: exit 1
    with one line saying so (this was exit 0, the "MPS ✅ without a run" of the notebooks)."""
    fake.config(models={"gpu": {"devices": ["cuda"]}})
    res = fake.run("--speechlab-json", "run.json", *xdist)
    res.assert_outcomes(skipped=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines([
        "*this run compared nothing: 1 speech case(s) selected, none compared with a golden (1 skipped)*",
        "speechlab: 0 compared, 1 skipped, 0 accepted",
    ])
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1 and "compared nothing" in out, out


@pytest.mark.parametrize("xdist", XDIST)
def test_a_skipped_case_with_a_committed_golden_fails_unless_expected(fake: FakeProject, xdist: list[str]) -> None:
    """A production model's cuda golden is committed; on a machine without the device its case skips. That is a
    failure in pytest's own counts, in JUnit and in ``speechlab check`` — unless the job says it expects it."""
    fake.config(models={"ok": {"devices": ["cpu", "cuda"]}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1, skipped=1)
    shutil.copyfile(fake.golden(), fake.golden(device="cuda"))  # as if recorded on a GPU machine
    res = fake.run("--speechlab-json", "run.json", "--junitxml", "junit.xml", *xdist)
    res.assert_outcomes(passed=1, failed=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["*ok-cuda-clips has a committed golden*but did not run: fake has no CUDA support*",
                              "*--speechlab-expect-skip cuda*"])
    junit = (fake.path / "junit.xml").read_text(encoding="utf-8")
    assert 'failures="1"' in junit, junit
    row = _cases(fake.record())["ok-cuda-clips"]
    assert row["status"] == "error" and row["unexpected_skip"] is True
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1 and "ok-cuda-clips" in out, out

    res = fake.run("--speechlab-json", "run.json", "--speechlab-expect-skip", "cuda", *xdist)
    res.assert_outcomes(passed=1, skipped=1)
    assert res.ret == pytest.ExitCode.OK
    res.stdout.fnmatch_lines(["speechlab: 1 compared, 1 skipped (1 expected), 0 accepted"])
    row = _cases(fake.record())["ok-cuda-clips"]
    assert row["status"] == "skipped" and row["expected_skip"] == "cuda"
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 0, out


def test_expect_skip_names_models_devices_and_patterns(tmp_path: Any) -> None:
    golden = tmp_path / "cuda.json"
    golden.write_text("{}", encoding="utf-8")
    row = {"case": "fw-cuda-smoke", "model": "fw", "device": "cuda", "status": "skipped", "reason": "no GPU"}
    assert skipped_with_golden(row, golden) is not None
    for pat in ("cuda", "fw", "fw/cuda", "fw-cuda-*", "f?"):
        assert skipped_with_golden(row, golden, [pat]) is None, pat
    assert skipped_with_golden(row, golden, ["mps", "ow"]) is not None
    assert skipped_with_golden(row, tmp_path / "none.json") is None  # no golden: an honest skip
    assert skipped_with_golden({**row, "stage": "experimental"}, golden) is None


@pytest.mark.parametrize("opt", ["--benchmark-skip", "--benchmark-disable"])
def test_benchmark_skip_never_skips_a_speech_case(fake: FakeProject, opt: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--benchmark-skip`` (here from PYTEST_ADDOPTS, a common way to skip perf tests) switches
    pytest-benchmark off, not the gate: a WER 0 -> 1.0 regression still fails."""
    fake.config(models={"ok": {}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    fake.config(models={"ok": {"say": "something else entirely"}})
    monkeypatch.setenv("PYTEST_ADDOPTS", opt)
    res = fake.run()
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*WER*1.5000*0.0000*FAIL*"])


def test_update_run_that_accepted_everything_is_green_and_says_so(fake: FakeProject) -> None:
    fake.config(models={"ok": {}})
    res = fake.run("--speechlab-update-golden")
    assert res.ret == pytest.ExitCode.OK
    res.stdout.fnmatch_lines(["speechlab: 0 compared, 0 skipped, 1 accepted"])


def test_coverage_counts_and_problems() -> None:
    rows = [
        {"case": "a", "status": "ran", "verdict": "pass", "origin": "matrix"},
        {"case": "b", "status": "ran", "verdict": "fail", "origin": "matrix"},
        {"case": "c", "status": "skipped", "reason": "no GPU", "origin": "matrix"},
        {"case": "d[1/2]", "status": "ran", "verdict": "chunk", "origin": "matrix"},
        {"case": "d", "status": "ran", "verdict": "partial", "origin": "corpus", "reason": "chunk 2/2 missing"},
        {"case": "e", "status": "ran", "verdict": "pass", "origin": "test"},  # a user's own test: not the matrix
        {"case": "f", "status": "ran", "verdict": "pass", "stage": "experimental", "origin": "matrix"},
    ]
    cov = coverage(rows)
    assert (cov.selected, cov.compared, cov.failed, cov.skipped, cov.partial, cov.reported) == (5, 2, 1, 1, 1, 1)
    assert len(cov.problems) == 1 and cov.problems[0].startswith("d: only part of its chunks")
    assert cov.line() == ("speechlab: 2 compared, 1 skipped, 0 accepted, 1 failed or errored, 1 partial, "
                          "1 reported, not gated")
    nothing = coverage([rows[2], rows[4], rows[6]])
    assert nothing.problems[0].startswith("this run compared nothing: 3 speech case(s) selected")
    assert coverage([rows[2]], update=True).ok
    assert coverage([]).ok and coverage([rows[5]]).ok  # no speech case selected: nothing to say


def test_a_chat_case_that_passed_its_checks_counts_as_compared() -> None:
    row = {"case": "c", "status": "ran", "task": "chat", "verdict": "pass (chat smoke: text and audio came back)"}
    assert coverage([row]).ok and coverage([row]).compared == 1


def test_partial_corpus_under_k_is_not_green(fake: FakeProject) -> None:
    """``-k`` selecting one chunk of a chunked dataset: the corpus is partial, never a pass (was exit 0)."""
    _chunked_golden(fake, "hello there")
    res = fake.run("-k", "1/2", "--speechlab-json", "run.json")
    res.assert_outcomes(passed=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["*ok-cpu-clips: only part of its chunks*partial is never a pass*"])
    record = json.loads((fake.path / "run.json").read_text(encoding="utf-8"))
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1, out
    assert any(c.get("verdict") == "partial" for c in record["cases"])


def test_merge_gate_refuses_shards_that_do_not_cover_the_matrix(fake: FakeProject) -> None:
    """``speechlab merge --gate`` over shard 1/2 alone: the cases of shard 2/2 were never compared (was exit 0)."""
    fake.config(models={"a": {}, "b": {}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=2)
    for i in (1, 2):
        assert fake.run("--speechlab-shard", f"{i}/2", "--speechlab-json", f"s{i}.json").ret == 0
    s1, s2, out_path = (str(fake.path / n) for n in ("s1.json", "s2.json", "m.json"))
    rc, out = fake.speechlab("merge", s1, "-o", out_path, "--gate")
    assert rc == 1 and "shard(s) 2/2 missing: the merged record does not cover the matrix" in out, out
    rc, out = fake.speechlab("merge", s1, s2, "-o", out_path, "--gate")
    assert rc == 0, out
    assert "speechlab: 2 compared, 0 skipped, 0 accepted" in out


def test_check_require_device_fails_when_the_gpu_never_ran(fake: FakeProject) -> None:
    """The macOS/cuda jobs: green cpu cases must not hide a device that never ran."""
    fake.config(models={"ok": {"devices": ["cpu", "mps"]}})
    fake.run("--speechlab-update-golden")
    assert fake.run("--speechlab-json", "run.json").ret == 0  # the cpu case compared; mps has no golden
    rc, out = fake.speechlab("check", str(fake.path / "run.json"), "--require-device", "mps")
    assert rc == 1 and "no case on mps was compared (--require-device mps): ok-mps-clips:" in out, out
    rc, out = fake.speechlab("check", str(fake.path / "run.json"), "--require-device", "cpu")
    assert rc == 0, out


@pytest.mark.parametrize("key", ["real_e2e", "allow_outside_paths"])
def test_boolean_keys_accept_booleans_only(fake: FakeProject, key: str) -> None:
    """``real_e2e: "false"`` was read as true (a non-empty string)."""
    manifest = fake.dataset()
    fake.config(models={"ok": {}}, datasets={"clips": {"manifest": manifest, "normalizer": "basic", key: "false"}})
    res = fake.run()
    assert res.ret != 0
    res.stdout.fnmatch_lines([f"*datasets.clips.{key}: must be true or false (a YAML boolean, without quotes), "
                              "got 'false'*"])


@pytest.mark.parametrize("wer", [7.0, 1e308])
def test_a_golden_that_contradicts_its_own_rows_is_invalid_not_improved(fake: FakeProject, wer: float) -> None:
    """A hand-edited pooled WER (its rows pool to 0.0) made every run "improved"; now the golden is invalid, in
    pytest and in ``speechlab check`` alike."""
    fake.config(models={"ok": {}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    def edit(g: dict[str, Any]) -> None:
        g["metrics"]["wer"] = wer

    fake.edit_golden(edit)
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*ok-cpu-clips: golden invalid*",
                              "*golden invalid: its pooled WER * disagrees with its own per-utterance rows, which pool "
                              "to 0.0000*"])
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1 and "disagrees with its own per-utterance rows" in out, out


def test_a_golden_without_rows_says_drift_cannot_be_checked(fake: FakeProject) -> None:
    fake.config(models={"ok": {}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    def edit(g: dict[str, Any]) -> None:
        g["utterances"] = []
        g["metrics"]["wer"] = 0.5  # would read as "improved" against a run at 0.0

    fake.edit_golden(edit)
    res = fake.run("--speechlab-json", "run.json", "-rA")
    res.assert_outcomes(passed=1)
    case = _cases(fake.record())["ok-cpu-clips"]
    assert case["verdict"] == "pass", case["verdict"]
    assert any("no per-utterance rows: dataset drift cannot be checked" in n for n in case["verdict_notes"])
    assert {c["metric"]: c["status"] for c in case["checks"]}["WER"] == "differs"


def test_a_global_allowance_cannot_loosen_the_stage_ceiling(fake: FakeProject) -> None:
    """``cross_machine_abs: 1.0`` in the global block let a production model through any WER on a golden from
    another CPU class, while the tolerance line printed +0.0100.  Now the allowance is capped by the ceiling and
    the line says so; a dataset's own ``cross_machine_abs`` is a deliberate local choice and may loosen it."""
    manifest = fake.dataset()
    path = fake.path / manifest
    # the model says "hello there" for a clip whose reference reads "goodbye there": WER 0.5, golden and now
    path.write_text(path.read_text(encoding="utf-8").replace('"text": "hello there"', '"text": "goodbye there"'),
                    encoding="utf-8")
    fake.config(models={"ok": {"stage": "production"}}, thresholds={"cross_machine_abs": 1.0})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    def edit(g: dict[str, Any]) -> None:
        g["machine"]["cpu_model"] = "Some Other CPU"  # recorded on another machine class
        g["metrics"]["wer"] = 0.0  # as if it had been 0.5 better there (stricter than its rows: a note)

    fake.edit_golden(edit)
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*is worse than its golden baseline (WER)*",
                              "*cross-machine allowance +0.0000, capped by the stage production ceiling (asked "
                              "+1.0000)*"])
    case = _cases(fake.record())["ok-cpu-clips"]
    assert case["thresholds"]["wer_abs"] == pytest.approx(0.01)
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1, out  # speechlab check judges with the same (capped) tolerances
    # A dataset's own allowance is the project's deliberate choice: it may loosen the ceiling, and says so.
    fake.config(models={"ok": {"stage": "production"}}, datasets={"clips": {
        "manifest": manifest, "normalizer": "basic", "thresholds": {"cross_machine_abs": 1.0}}})
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(passed=1)
    case = _cases(fake.record())["ok-cpu-clips"]
    assert case["thresholds"]["wer_abs"] == pytest.approx(1.01)
    assert "set by the model or dataset: may loosen the stage ceiling" in case["tolerance_sources"]["wer_abs"]
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 0, out


def test_widen_accuracy_caps_at_the_ceiling_unless_local() -> None:
    from pytest_speechlab.evaluation import _widen_accuracy

    assert _widen_accuracy({"wer_abs": 0.01, "cer_abs": 0.01}, 1.0, "production")["wer_abs"] == 0.01
    assert _widen_accuracy({"wer_abs": 0.005, "cer_abs": 0.01}, 0.02, "production")["wer_abs"] == 0.01
    assert _widen_accuracy({"wer_abs": 0.005, "cer_abs": 0.01}, 0.02, "candidate")["wer_abs"] == pytest.approx(0.02)
    assert _widen_accuracy({"wer_abs": 0.01, "cer_abs": 0.01}, 0.02, "production", capped=False)["wer_abs"] == \
        pytest.approx(0.03)
    assert _widen_accuracy({"wer_abs": 0.05, "cer_abs": 0.05}, 0.02, "production")["wer_abs"] == 0.05  # never tighter


def test_a_failing_corpus_is_a_failure_in_pytest_counts_and_junit(fake: FakeProject) -> None:
    """Every chunk passes, the corpus fails: pytest said "2 passed" and JUnit ``failures="0"``."""
    _chunked_golden(fake, "goodbye there")
    def edit(g: dict[str, Any]) -> None:
        g["metrics"]["wer"] = 0.0  # stricter than its rows: the corpus is now worse than its golden

    fake.edit_golden(edit)
    res = fake.run("--junitxml", "junit.xml")
    res.assert_outcomes(passed=2, failed=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["FAILED speechlab.yaml::corpus[[]ok-cpu-clips[]]*"])
    junit = (fake.path / "junit.xml").read_text(encoding="utf-8")
    assert 'failures="1"' in junit and 'name="corpus[ok-cpu-clips]"' in junit, junit


def test_check_and_merge_gate_judge_abs_rtf_as_pytest_did(fake: FakeProject) -> None:
    """With ``--speechlab-abs-rtf`` pytest failed an RTF x5 that ``speechlab check`` passed (exit 0): check did
    not read the run's abs-RTF setting.  Now pytest, check and merge --gate give one verdict."""
    fake.config(models={"ok": {}}, thresholds={"rtf_rel": 0.5})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=1)
    def edit(g: dict[str, Any]) -> None:
        g["metrics"]["rtf"] = g["metrics"]["rtf"] / 50  # as if it had run 50x faster on this machine
        # Recorded while the machine was busy (load >= CPUs), the plugin marks a golden's RTF unreliable and never
        # gates against it: this test judges the abs-RTF rule, so its golden is a quiet one whatever the load was.
        g.pop("rtf_unreliable", None)

    fake.edit_golden(edit)
    res = fake.run("--speechlab-abs-rtf", "--speechlab-rtf-gate", "on", "--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*RTF*FAIL*"])
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1 and "RTF" in out, out
    rc, out = fake.speechlab("merge", str(fake.path / "run.json"), "-o", str(fake.path / "m.json"), "--gate")
    assert rc == 1, out


def test_stale_goldens_are_listed_by_a_full_run_and_check_never_by_a_subset(fake: FakeProject) -> None:
    """A model deleted from the config, or a device dropped from its list: its goldens were never mentioned."""
    fake.config(models={"ok": {}, "gone": {}})
    fake.run("--speechlab-update-golden").assert_outcomes(passed=2)
    shutil.copyfile(fake.golden(), fake.golden(device="cuda"))  # ok's cuda golden: device no longer listed
    fake.config(models={"ok": {}})  # "gone" deleted from the config
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*golden/gone/clips/cpu.json: stale golden (model 'gone' is not in the config)*",
                              "*golden/ok/clips/cuda.json: stale golden ('ok' no longer runs on device 'cuda')*"])
    for subset in (["-k", "ok"], ["-m", "cpu"], ["--speechlab-model", "ok"]):
        assert "stale golden" not in fake.run(*subset).stdout.str(), subset
    rc, out = fake.speechlab("check", str(fake.path / "run.json"), "--stale")
    assert rc == 0 and "golden/gone/clips/cpu.json: stale golden" in out, out
