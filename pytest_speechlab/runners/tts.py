"""The TTS case runner: synthesize each sentence, hear it back through the session's judge (an ASR model),
gate round-trip WER/CER and RTF against the golden and the audio against sanity bands.  The evaluation
itself (no pytest in it) is :mod:`pytest_speechlab.tts`."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from ..backends.base import BackendError, ModelSpec
from ..datasets import DatasetError
from ..evaluation import CaseResult
from ..metrics import get_normalizer
from ..session import SpeechlabSession
from ..tts import (
    DEFAULT_JUDGE,
    JudgeASR,
    JudgeUnavailable,
    evaluate_tts,
    load_tts_manifest,
    render_worse,
    worse_sentences,
)
from .base import CaseContext
from .record import ran_record


def judge_spec(sess: SpeechlabSession) -> ModelSpec:
    """The judge of a session: ``judge:`` in speechlab.yaml (a configured ASR model), else bundled tiny.en."""
    name = getattr(sess.cfg, "judge", None)
    return sess.cfg.models[name] if name else DEFAULT_JUDGE


def session_judge(sess: SpeechlabSession) -> JudgeASR:
    """Load the session's judge once per process (through the session's model cache), on cpu.

    The judge runs on cpu whatever device the voice runs on, so round-trip scores of one voice on
    different devices are heard by the same listener.
    """
    spec = judge_spec(sess)
    key = "_speechlab_tts_judge"
    cached: JudgeASR | None = getattr(sess, key, None)
    if cached is not None:
        return cached
    from ..backends import REGISTRY, get_backend

    where = f"TTS judge {spec.name!r} ({spec.backend} {spec.weights or ''})".replace(" )", ")")
    if spec.backend not in REGISTRY:
        raise JudgeUnavailable(f"{where}: unknown backend {spec.backend!r}; known: {', '.join(sorted(REGISTRY))}")
    backend = get_backend(spec.backend)
    if "asr" not in backend.tasks:
        raise JudgeUnavailable(f"{where}: backend {spec.backend!r} does not transcribe; set judge: to an ASR model")
    device = "cpu" if backend.unsupported_reason("cpu") is None else spec.devices[0]
    try:
        model = sess.model(spec, device)
    except BackendError as exc:
        raise JudgeUnavailable(f"{where} is not available: {exc}") from exc
    judge = JudgeASR(model, spec, device)
    setattr(sess, key, judge)
    return judge


def run(ctx: CaseContext) -> CaseResult:
    """Run one TTS matrix case (voice x device x text dataset) and gate it.

    Fails with one block when the audio breaks a sanity band, when round-trip WER/CER or RTF got worse than
    the golden (listing the sentences that got worse: input vs heard, and the WAV to listen to), or when
    the golden is missing.  Skips with the reason when the voice or the judge cannot be loaded here.
    """
    __tracebackhide__ = True
    import pytest

    from ..golden import GoldenError, read_golden

    sess, case = ctx.session, ctx.case
    dspec = sess.dataset_spec(case.dataset)
    base = sess.base_record(case)

    def skip(reason: str) -> NoReturn:
        sess.results.append({**base, "status": "skipped", "reason": reason})
        pytest.skip(reason)

    def error(reason: str) -> NoReturn:
        sess.results.append({**base, "status": "error", "reason": reason})
        pytest.fail(reason, pytrace=False)

    voice = sess.load_case_model(case)
    try:
        judge = session_judge(sess)
    except JudgeUnavailable as exc:
        skip(str(exc))
    try:
        data = load_tts_manifest(dspec.manifest, case.dataset)
    except DatasetError as exc:
        if dspec.real_e2e and not Path(dspec.manifest).exists():
            skip(f"real_e2e: {exc}")
        error(str(exc))
    thresholds = sess.thresholds_for(case.model, case.dataset)
    bench, runner = ctx.benchmark()
    audio_dir = ctx.tmp_dir(f"tts-{case.id}")
    workload, ref_error = sess.speed_workload(case)
    try:
        result = evaluate_tts(
            voice,
            data,
            judge,
            normalizer=get_normalizer(dspec.normalizer),
            rounds=sess.rounds,
            runner=runner,
            audio_dir=audio_dir,
            progress=ctx.progress,
            thresholds=thresholds,
            reference=workload,
            reference_runs=sess.cfg.speed_reference_runs,
            min_timed_audio_s=sess.cfg.min_timed_audio_s,
            dnsmos=bool(dspec.options.get("dnsmos")),
        )
    except (DatasetError, BackendError) as exc:
        error(str(exc))
    m = result.metrics
    record = ran_record(
        sess,
        case,
        base,
        voice,
        normalizer=result.normalizer,
        # The judge is part of the decode settings: another judge hears differently, so scores would not compare.
        decode={**result.decode, "judge": result.judge},
        metrics=m,
        deterministic=result.deterministic,
        rounds=result.rounds,
        speed_reference=result.speed_reference,
        ref_error=ref_error,
        utterances=result.rows,
        extra={"audio_dir": str(result.audio_dir), "audio_files": result.audio_files},
    )
    sess.results.append(record)
    if bench is not None:
        bench.extra_info.update(
            {
                "wer": m["wer"],
                "cer": m["cer"],
                "rtf": m["rtf"],
                "ttfa_s": m["ttfa_s"],
                "audio_seconds": m["audio_seconds"],
                "decode": record["decode"],
                "weights": record["weights"],
                "model": case.model,
                "device": case.device,
                "dataset": case.dataset,
            }
        )
    ctx.junit(record)
    ttfa = f", time to first audio {m['ttfa_s']:.3f} s" if m.get("ttfa_s") is not None else ""
    from ..tts_quality import summary as quality_summary

    sess.notes.append(
        f"{case.id}: WER/CER are round-trip (the judge {judge.spec.backend} {judge.spec.weights} heard the voice), "
        f"synthesis RTF {m['rtf']:.4f}{ttfa}{quality_summary(m)}; audio kept in {result.audio_dir}"
    )
    problems = result.check_sanity(thresholds)
    accept = ctx.accept
    gate = CaseResult(record, sess.cfg.golden_dir, thresholds, sess.gate_settings(), accept)
    if problems and sess.opts.update:
        # Never bless broken audio as the baseline.
        record["verdict"] = "fail"
        pytest.fail(
            f"speechlab: {case.id}: audio sanity failed, golden NOT updated:\n  " + "\n  ".join(problems), pytrace=False
        )
    failure = ""
    try:
        gate.check_golden()
    except pytest.fail.Exception as exc:
        failure = str(exc.msg)
        try:
            golden = read_golden(gate.golden_path)
        except GoldenError:
            golden = None  # check_golden already said what is wrong with the file
        worse = worse_sentences(golden, record) if golden else []
        if worse:
            # Before the accept command, which stays the block's last line.
            head, sep, tail = failure.rpartition("\n  to accept the new values")
            failure = f"{head}\n{render_worse(worse)}{sep}{tail}" if sep else f"{failure}\n{render_worse(worse)}"
    if problems:
        record["verdict"] = "fail"
        block = f"speechlab: {case.id}: audio sanity failed ({len(problems)}):\n  " + "\n  ".join(problems)
        failure = f"{failure}\n{block}" if failure else block
    if failure:
        pytest.fail(failure, pytrace=False)
    return gate
