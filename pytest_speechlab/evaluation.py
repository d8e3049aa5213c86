"""Run a loaded model over a dataset and turn it into a case record; ``check_golden`` gates the record."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.base import ASRModel
from .datasets import Dataset, load_audio
from .golden import (
    GoldenError,
    Verdict,
    golden_path,
    read_golden,
    render_failure,
)
from .metrics import (
    Normalizer,
    cuda_peak_mb,
    peak_rss_mb,
    percentile,
    pool,
    utterance_errors,
    utterance_wer,
)
from .provenance import file_sha256, utterance_audio_path
from .verdicts import judge

# runner(one_round, rounds) calls one_round() ``rounds`` times (pytest-benchmark's pedantic, or a loop).
Runner = Callable[[Callable[[], None], int], None]
Progress = Callable[[int, int], None]


def loop_runner(fn: Callable[[], None], rounds: int) -> None:
    """The plain runner: call ``fn`` ``rounds`` times."""
    for _ in range(rounds):
        fn()


def batch_size_of(model: Any) -> int | None:
    """The cross-utterance batch size when the model batches (``batch_size`` set and ``transcribe_batch``)."""
    size = getattr(model, "batch_size", None)
    if size and int(size) > 1 and callable(getattr(model, "transcribe_batch", None)):
        return int(size)
    return None


def evaluate_asr(
    model: ASRModel,
    dataset: Dataset,
    normalizer: Normalizer,
    *,
    rounds: int = 3,
    runner: Runner = loop_runner,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Transcribe every utterance ``rounds`` times after one warm-up call; score the first round.

    Returns ``{"metrics": ..., "utterances": [...], "deterministic": bool}``.  RTF = inference seconds /
    audio seconds per round; the reported RTF is the median round, and every round's RTF is kept.
    """
    audios: list[Any] = []
    durations: list[float] = []
    for u in dataset.utterances:
        assert u.audio_path is not None
        audio, dur = load_audio(u.audio_path, model.sample_rate, reference=u.text)
        if dataset.perturb:  # a derived dataset (perturb: in speechlab.yaml): noise added at the model's rate
            from .perturb import apply

            audio = apply(audio, dataset.perturb, u.id, model.sample_rate)
        audios.append(audio)
        durations.append(dur)
    model.transcribe(audios[0])  # warm-up: first-call costs (graph build, allocations) are not speed
    n = len(audios)
    rounds_out: list[tuple[list[str], list[float]]] = []
    batch = batch_size_of(model)
    details: dict[int, dict[str, Any]] = {}  # per utterance of the scored round: what the model decoded with

    def one_round() -> None:
        hyps: list[str] = []
        times: list[float] = []
        if batch:
            # Cross-utterance batching: one call per batch.  An utterance's "seconds" is its share of the
            # batch's wall time, split by audio length (the batch is timed, not each utterance in it).
            for start in range(0, n, batch):
                chunk = audios[start:start + batch]
                t0 = time.perf_counter()
                out = model.transcribe_batch(chunk)  # type: ignore[attr-defined]
                spent = time.perf_counter() - t0
                dur = durations[start:start + batch]
                hyps.extend(out)
                times.extend(spent * d / (sum(dur) or 1.0) for d in dur)
                if progress is not None:
                    progress(len(rounds_out) * n + start + len(chunk), n * rounds)
            rounds_out.append((hyps, times))
            return
        for i, audio in enumerate(audios):
            t0 = time.perf_counter()
            hyps.append(model.transcribe(audio))
            times.append(time.perf_counter() - t0)
            if not rounds_out and getattr(model, "last_details", None):
                details[i] = dict(model.last_details)  # type: ignore[attr-defined]
            if progress is not None:
                progress(len(rounds_out) * n + i + 1, n * rounds)
        rounds_out.append((hyps, times))

    runner(one_round, rounds)
    while len(rounds_out) < rounds:  # a disabled benchmark runs the function once
        one_round()
    audio_total = sum(durations)
    hyps, times = rounds_out[0]
    rows: list[dict[str, Any]] = []
    err_rows = []
    root = dataset.root
    for u, hyp, secs, dur in zip(dataset.utterances, hyps, times, durations, strict=True):
        assert u.audio_path is not None  # ASR rows always have audio (load_manifest checks)
        ref_n, hyp_n = normalizer(u.text), normalizer(hyp)
        e = utterance_errors(ref_n, hyp_n)
        err_rows.append(e)
        rows.append({
            "id": u.id,
            # Relative to the dataset root, so a golden recorded on another machine has the same line; the hash
            # tells a replaced recording from the one the golden scored.
            "audio": utterance_audio_path(u.audio_path, root),
            "audio_sha256": file_sha256(u.audio_path),
            "reference": u.text,
            "hypothesis": hyp,
            "ref_norm": ref_n,
            "hyp_norm": hyp_n,
            "seconds": round(secs, 6),
            "duration": round(dur, 6),
            "wer": round(utterance_wer(e), 6),
            "word_errors": e["word_errors"],
            "ref_words": e["ref_words"],
            "char_errors": e["char_errors"],
            "ref_chars": e["ref_chars"],
            # e.g. the temperature each segment finally decoded at (fallback), when the backend reports it
            **details.get(len(rows), {}),
        })
    metrics = pool(err_rows)
    # Catastrophic outputs per utterance, and words emitted on non-speech clips (empty references).
    from .hallucination import score_outputs

    metrics.update(score_outputs(rows, audios, model.sample_rate, str(dataset.source)))
    if any("entities" in u.extra for u in dataset.utterances):
        metrics.update(_score_entities(dataset, rows, normalizer))
    rtfs = [sum(t) / audio_total for _, t in rounds_out]
    all_times = [t for _, ts in rounds_out for t in ts]
    metrics.update({
        "rtf": statistics.median(rtfs),
        "rtf_rounds": [round(r, 6) for r in rtfs],
        "latency_p50_s": percentile(all_times, 50),
        "latency_p95_s": percentile(all_times, 95),
        "audio_seconds": audio_total,
        "warmup_calls": 1,  # provenance: one untimed call before the timed rounds (see above)
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": cuda_peak_mb(),
    })
    if batch:
        metrics["batch_size"] = batch
        metrics["timing"] = "per batch, split among its utterances by audio length"
    deterministic = all(h == hyps for h, _ in rounds_out)
    return {"metrics": metrics, "utterances": rows, "deterministic": deterministic}


def _score_entities(dataset: Dataset, rows: list[dict[str, Any]], normalizer: Normalizer) -> dict[str, Any]:
    """Add the entity protocol's per-utterance fields to ``rows``; return the pooled ``entity_acc``."""
    from .datasets import DatasetError
    from .entities import EntityError, pool_entities, score_entities

    for u, row in zip(dataset.utterances, rows, strict=True):
        if "entities" not in u.extra:
            continue
        try:
            row.update(score_entities(u.extra["entities"], u.text, row["hyp_norm"], normalizer,
                                      f"{dataset.source} (utterance {u.id})"))
        except EntityError as exc:
            raise DatasetError(str(exc)) from None
    return pool_entities(rows)


GOLDEN_FIELDS = ("case", "model", "dataset", "device", "task", "backend", "normalizer", "decode", "metrics",
                 "machine", "provenance", "utterances", "stage", "weights", "perturb")


def golden_payload(record: dict[str, Any]) -> dict[str, Any]:
    """What a golden file keeps of a case record."""
    from .golden import SCHEMA

    out = {k: record[k] for k in GOLDEN_FIELDS if k in record}
    out["schema"] = SCHEMA
    return out


def changed_utterances(golden: dict[str, Any], record: dict[str, Any]) -> list[dict[str, str]]:
    """Utterances whose (normalised) hypothesis differs from the golden's."""
    g = {r["id"]: r for r in golden.get("utterances", [])}
    out = []
    for row in record.get("utterances", []):
        old = g.get(row["id"])
        if old is None:
            out.append({"id": row["id"], "reference": row["reference"], "golden": "(not in golden)", "hypothesis": row["hypothesis"]})
        elif old.get("hyp_norm", old.get("hypothesis")) != row.get("hyp_norm", row.get("hypothesis")):
            out.append({"id": row["id"], "reference": row["reference"], "golden": old.get("hypothesis", ""), "hypothesis": row["hypothesis"]})
    return out


@dataclass
class GateSettings:
    """How a session gates: policy, RTF handling, update mode."""

    gate: str = "strict"
    rtf_gate: bool = True
    force_rtf: bool = False
    update: bool = False
    bootstrap: int = 2000


class CaseResult:
    """The result of one model x device x dataset run.  ``record`` is plain JSON-able data."""

    def __init__(self, record: dict[str, Any], golden_dir: Path, thresholds: dict[str, float], settings: GateSettings,
                 accept_command: str) -> None:
        self.record = record
        self.golden_dir = Path(golden_dir)
        self.thresholds = thresholds
        self.settings = settings
        self.accept_command = accept_command
        self.verdict: Verdict | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """The pooled metrics (wer, cer, rtf, ...)."""
        m: dict[str, Any] = self.record["metrics"]
        return m

    @property
    def golden_path(self) -> Path:
        """Where this case's golden baseline lives."""
        r = self.record
        owner = r.get("golden_of") or r  # golden_from: another case's golden (a deployed copy of a local model)
        return golden_path(self.golden_dir, owner["model"], r["dataset"], owner["device"])

    def check_golden(self) -> Verdict:
        """Compare with the golden baseline; fail the test with one readable block when worse or missing.

        Under ``--speechlab-update-golden`` the record is queued to become the new golden instead.
        """
        __tracebackhide__ = True
        import pytest

        path = self.golden_path
        self.record["golden_path"] = str(path)
        self.record["thresholds"] = self.thresholds
        if self.settings.update and self.record.get("golden_of"):
            # Never overwrite another case's baseline from here: that case re-records its own.
            self.verdict = Verdict("pass")
            self.record["verdict"] = f"golden borrowed from {self.record['golden_of']['model']}/{self.record['golden_of']['device']}, not updated"
            return self.verdict
        if self.settings.update:
            # Accepted, not passed: nothing was compared (speechlab check and merge --gate refuse these).
            self.verdict = Verdict("accepted")
            self.record["verdict"] = "accepted"
            return self.verdict
        try:
            golden = read_golden(path)
        except GoldenError as exc:
            self.record["verdict"] = "error"
            self.record["causes"] = ["golden invalid"]
            self.record["reason"] = str(exc)
            golden = None
        if self.record.get("verdict") == "error":
            # The headline names the cause; the next line is the reader's message (file, problem, fix).
            cause = (self.record.get("causes") or ["golden invalid"])[0]
            pytest.fail(f"speechlab: {self.record['case']}: {cause}\n{self.record['reason']}", pytrace=False)
        if golden is None:
            self.verdict = Verdict("missing")
            self.record["verdict"] = "missing"
            pytest.fail(render_failure(self.record["case"], self.verdict, path, [], self.accept_command), pytrace=False)
        assert golden is not None
        s = self.settings
        self.verdict = judge(golden, self.record, self.thresholds, gate=s.gate, rtf_gate=s.rtf_gate,
                             force_rtf=s.force_rtf, bootstrap=s.bootstrap)
        self.record["verdict"] = self.verdict.status
        self.record["causes"] = list(self.verdict.causes)
        if self.verdict.drift:
            self.record["dataset_changes"] = self.verdict.drift
        if self.verdict.notes:
            self.record["verdict_notes"] = list(self.verdict.notes)
        self.record["checks"] = [c.__dict__ for c in self.verdict.checks]
        self.record["golden_metrics"] = {k: golden["metrics"].get(k) for k in ("wer", "cer", "rtf", "entity_acc")}
        if self.verdict.failed:
            block = render_failure(self.record["case"], self.verdict, path, changed_utterances(golden, self.record),
                                   self.accept_command)
            pytest.fail(block, pytrace=False)
        return self.verdict
