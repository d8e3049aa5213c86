"""Quiet means quiet: with -q the speechlab summary lists only the cases that need attention and one total line;
pytest-benchmark's wide table appears only with -v or when a --benchmark-* option is given."""

from __future__ import annotations

import pytest
from _support import FW_MISSING

from conftest import SpeechProject

pytestmark = [pytest.mark.real_model, pytest.mark.skipif(FW_MISSING is not None, reason=str(FW_MISSING))]

CASE = "fw-tiny-en-cpu-smoke"


def test_quiet_summary_and_benchmark_table(project: SpeechProject) -> None:
    project.config(models={"fw-tiny-en": {"backend": "faster-whisper", "weights": "bundled:tiny.en",
                                          "compute_type": "int8", "language": "en", "devices": ["cpu", "cuda"]}})
    assert project.run("--speechlab-update-golden").ret == 0
    quiet = project.run("-q")
    assert quiet.ret == 0
    out = quiet.stdout.str()
    assert "speechlab summary" in out and "Name (time in" not in out  # no benchmark table
    summary = out[out.index("speechlab summary"):]
    assert CASE not in summary  # a passing case is not listed with -q
    assert "speechlab: 2 cases: 1 pass, 1 skipped" in summary
    normal = project.run().stdout.str()
    assert f"{CASE} " in normal and "Name (time in" not in normal  # the table row is there; no benchmark table
    assert "Name (time in" in project.run("-v").stdout.str()
    assert "Name (time in" in project.run("-q", "--benchmark-columns", "min,max").stdout.str()
    # a failing case is listed with -q, with the total
    project.edit_golden(lambda g: g["metrics"].update(wer=0.0, cer=0.0) or [u.update(word_errors=0, char_errors=0)
                                                                            for u in g["utterances"]])
    failing = project.run("-q")
    assert failing.ret == 1
    summary = failing.stdout.str()[failing.stdout.str().index("speechlab summary"):]
    assert f"{CASE} " in summary and "speechlab: 2 cases: 1 fail, 1 skipped" in summary
