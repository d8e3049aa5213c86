"""One verdict on every path (issue 24, item 3): what pytest decides for a case (``CaseResult.check_golden``) and
what ``speechlab check`` decides from the run record the session wrote (``check_case``) agree, over generated
rows, goldens and settings — other CPU class or not, stages, allowances from the defaults, the global block or
the dataset, absolute-RTF gating.  ``speechlab merge --gate`` runs ``check``'s judgement on the merged record
(commands/records.py), so it agrees by construction; tests/test_green_means_compared.py runs all three."""

from __future__ import annotations

import json
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (extra: properties)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_speechlab.commands.check import check_case  # noqa: E402
from pytest_speechlab.evaluation import CaseResult, GateSettings  # noqa: E402
from pytest_speechlab.tolerances import effective  # noqa: E402

HERE = {"device_name": "AMD EPYC", "cpu_model": "AMD EPYC", "cpu_flags": ["avx2", "avx512f"], "threads": 2,
        "usable_cpus": 2}
OTHER = {**HERE, "cpu_flags": ["avx2", "avx512f", "avx_vnni"]}


def _row(errors: int, words: int = 50) -> dict[str, Any]:
    return {"id": "u1", "reference": "r", "hypothesis": "h", "word_errors": errors, "ref_words": words,
            "char_errors": errors * 3, "ref_chars": words * 5}


def _case(errors: int, rtf: float, machine: dict[str, Any], stage: str) -> dict[str, Any]:
    row = _row(errors)
    return {"case": "m-cpu-d", "model": "m", "dataset": "d", "device": "cpu", "task": "asr", "stage": stage,
            "status": "ran", "origin": "matrix", "normalizer": {"name": "basic"}, "decode": {"beam_size": 5},
            "metrics": {"wer": errors / 50, "cer": errors * 3 / 250, "rtf": rtf},
            "machine": dict(machine), "utterances": [row]}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stage=st.sampled_from(["production", "candidate"]),
    golden_errors=st.integers(0, 10),
    now_errors=st.integers(0, 12),
    other_class=st.booleans(),
    allowance=st.sampled_from([None, ("global", 0.02), ("global", 1.0), ("dataset", 0.02), ("dataset", 0.0)]),
    global_wer=st.sampled_from([None, 0.005, 0.02, 0.05]),
    rtf_ratio=st.sampled_from([0.5, 1.0, 1.4, 5.26]),
    abs_rtf=st.booleans(),
)
def test_pytest_and_check_give_one_verdict(tmp_path_factory: pytest.TempPathFactory, stage: str,
                                           golden_errors: int, now_errors: int, other_class: bool,
                                           allowance: tuple[str, float] | None, global_wer: float | None,
                                           rtf_ratio: float, abs_rtf: bool) -> None:
    tmp = tmp_path_factory.mktemp("agree")
    golden = {**_case(golden_errors, 0.2, HERE, stage), "schema": 1}
    path = tmp / "m" / "d" / "cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(golden), encoding="utf-8")
    global_t: dict[str, float] = {} if global_wer is None else {"wer_abs": global_wer, "cer_abs": global_wer}
    dataset_t: dict[str, float] = {}
    if allowance is not None:
        (global_t if allowance[0] == "global" else dataset_t)["cross_machine_abs"] = allowance[1]
    thresholds, sources = effective(stage, {**global_t, "rtf_rel": 0.3}, "m", {}, "d", dataset_t)
    record = _case(now_errors, 0.2 * rtf_ratio, OTHER if other_class else HERE, stage)
    record["tolerance_sources"] = sources
    gate = GateSettings(rtf_gate=True, abs_rtf=abs_rtf)
    result = CaseResult(record, tmp, thresholds, gate, "accept")
    try:
        pytest_failed = result.check_golden().failed
    except pytest.fail.Exception:
        pytest_failed = True
    # What the session writes: the row as judged, and the session's settings (plugin: write_records).
    run = {"settings": {"gate": "strict", "rtf_gate": True, "abs_rtf": abs_rtf, "force_rtf": False}, "cases": [record]}
    verdict, block = check_case(run, json.loads(json.dumps(record)), path, "strict")
    assert verdict.failed == pytest_failed, (record.get("verdict"), block)
    # and never an allowance past the stage ceiling unless the dataset set it
    ceiling = 0.01 if stage == "production" else 0.02
    if not (allowance and allowance[0] == "dataset"):
        assert record["thresholds"]["wer_abs"] <= max(ceiling, thresholds["wer_abs"]) + 1e-12
