"""The ASR case runner: transcribe a dataset (timed rounds, speed reference), score it, gate it against its
golden.  The evaluation itself (no pytest in it) is :mod:`pytest_speechlab.evaluation`."""

from __future__ import annotations

import pytest

from ..chunks import CHUNK_VERDICT
from ..datasets import DatasetError
from ..evaluation import CaseResult, evaluate_asr, loop_runner
from ..longform import spec_of as longform_spec
from ..metrics import get_normalizer
from ..session import Case, SpeechlabSession
from .base import CaseContext, Progress, RoundRunner
from .record import ran_record


def run(ctx: CaseContext) -> CaseResult:
    """Run one matrix ASR case end to end: fails the test with the block when it got worse."""
    __tracebackhide__ = True
    sess, case = ctx.session, ctx.case
    # Load (or skip/fail) before asking for the benchmark fixture: a case that skips here must not leave
    # pytest-benchmark warning that its fixture went unused.  evaluate_case reuses the cached model.
    sess.load_case_model(case)
    bench, runner = ctx.benchmark()
    result = evaluate_case(sess, case, runner=runner, progress=ctx.progress, accept=ctx.accept)
    if bench is not None:
        m = result.metrics
        bench.extra_info.update(
            {
                "wer": m["wer"],
                "cer": m["cer"],
                "rtf": m["rtf"],
                "rtf_rounds": m["rtf_rounds"],
                "speed_rel": m.get("speed_rel"),
                "speed_reference_s": (result.record.get("speed_reference") or {}).get("total_s"),
                "audio_seconds": m["audio_seconds"],
                "decode": result.record["decode"],
                "weights": result.record["weights"],
                "model": case.model,
                "device": case.device,
                "dataset": case.dataset,
            }
        )
        if m.get("entity_acc") is not None:
            bench.extra_info["entity_acc"] = m["entity_acc"]
    ctx.junit(result.record)
    if case.chunk is not None:
        # A chunk is scored, not gated: its corpus row is, once every chunk is known (chunks.settle).
        result.record["verdict"] = CHUNK_VERDICT
        result.record["thresholds"] = result.thresholds
        return result
    result.check_golden()
    return result


def evaluate_case(
    sess: SpeechlabSession,
    case: Case,
    *,
    runner: RoundRunner = loop_runner,
    progress: Progress | None = None,
    accept: str = "",
) -> CaseResult:
    """Run one ASR case and return its (not yet gated) result; skips and errors are recorded.  (The body of
    the ``asr_eval`` fixture and of :func:`run`.)"""
    spec = sess.cfg.models[case.model]
    dspec = sess.dataset_spec(case.dataset)
    base = sess.base_record(case)
    sess.skip_if_unrunnable(case)
    model = sess.load_case_model(case)
    try:
        data = sess.case_dataset(case)
    except DatasetError as exc:
        if dspec.real_e2e and not dspec.manifest.exists():
            sess.results.append({**base, "status": "skipped", "reason": str(exc)})
            pytest.skip(f"real_e2e: {exc}")
        sess.results.append({**base, "status": "error", "reason": str(exc)})
        pytest.fail(str(exc), pytrace=False)
    normalizer = get_normalizer(dspec.normalizer)
    workload, ref_error = sess.speed_workload(case)
    try:
        out = evaluate_asr(
            model,
            data,
            normalizer,
            rounds=sess.rounds,
            runner=runner,
            progress=progress,
            reference=workload,
            reference_runs=sess.cfg.speed_reference_runs,
            min_timed_audio_s=sess.cfg.min_timed_audio_s,
        )
    except DatasetError as exc:
        sess.results.append({**base, "status": "error", "reason": str(exc)})
        pytest.fail(str(exc), pytrace=False)
    record = ran_record(
        sess,
        case,
        base,
        model,
        normalizer=normalizer.ident(),
        decode=model.decode_settings,
        metrics=out["metrics"],
        deterministic=out["deterministic"],
        rounds=out["rounds"],
        speed_reference=out["speed_reference"],
        ref_error=ref_error,
        utterances=out["utterances"],
        extra={
            **({"perturb": data.perturb} if data.perturb else {}),
            **({"longform": longform_spec(dspec.options["longform"])} if dspec.options.get("longform") else {}),
        },
    )
    if spec.golden_from:
        owner, owner_device = spec.golden_from.split("/")
        record["golden_of"] = {"model": owner, "device": owner_device}
        accept = (
            f"pytest speechlab.yaml -k {owner}-{owner_device}-{case.dataset} --speechlab-update-golden "
            f"(the golden belongs to {owner} on {owner_device}: golden_from in {sess.cfg.path.name})"
        )
    sess.results.append(record)
    return CaseResult(
        record, sess.cfg.golden_dir, sess.thresholds_for(case.model, case.dataset), sess.gate_settings(), accept
    )
