"""Big evaluations: a dataset split into chunks that run as separate items, joined into one corpus verdict.

``chunks: N`` (and/or ``chunk_minutes: M``) on a dataset in speechlab.yaml makes each model x device x
dataset case N collected items (``fw-tiny-en-cpu-big[3/8]``), so pytest-xdist and ``--speechlab-shard`` spread
them.  The split (:func:`split`) is contiguous in manifest order and balanced by audio seconds, the same in every
process.  A chunk item scores its utterances and records a row with the verdict ``chunk`` (never gated on its
own).  Where every chunk of a case is known -- at the end of a plain run, on the xdist controller after the
workers handed over, in ``speechlab merge`` for CI shards -- :func:`settle` joins the chunk rows into ONE
corpus row (WER/CER from summed edit counts, RTF = sum of compute seconds / sum of audio seconds, the
utterances in manifest order) that is gated against the case's one golden, the same file an unchunked run
writes.  A chunk that crashed, was skipped while others ran, or is missing from a merge makes the corpus
verdict ``error``; a chunk that this run did not select (another shard's, or ``-k``) makes it ``partial``,
which is never a pass.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from .datasets import Dataset, DatasetError

CHUNK_VERDICT = "chunk"  # a chunk row: scored, not gated (its corpus row is)
PARTIAL = "partial"  # a corpus row of a run that holds only some of its chunks (a shard): never a pass
CORPUS_ORIGIN = "corpus"


def durations(dataset: Dataset) -> list[float]:
    """Each utterance's audio length in seconds, from the file header (no decoding)."""
    import soundfile as sf

    out: list[float] = []
    for u in dataset.utterances:
        try:
            info = sf.info(str(u.audio_path))
        except (RuntimeError, OSError, TypeError) as exc:
            raise DatasetError(
                f"{dataset.source} (utterance {u.id}): cannot read the length of {u.audio_path} ({exc}), which "
                "splitting the dataset into chunks needs; fix or remove the file"
            ) from None
        out.append(info.frames / info.samplerate if info.samplerate else 0.0)
    return out


def count(durs: list[float], chunks: int | None, chunk_minutes: float | None) -> int:
    """The number of chunks: ``chunks``, raised until no chunk holds more than ``chunk_minutes`` of audio on
    average; never more than there are utterances."""
    n = int(chunks or 1)
    if chunk_minutes:
        n = max(n, math.ceil(sum(durs) / 60.0 / chunk_minutes - 1e-9))
    return max(1, min(n, len(durs)))


def split(durs: list[float], n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ``(start, stop)`` ranges over the utterances, of roughly equal audio duration.

    An utterance goes to the chunk its midpoint falls in (cumulative audio / total x n); each chunk keeps at
    least one utterance.  Deterministic: the same lengths give the same ranges in every process.
    """
    total = sum(durs)
    k = len(durs)
    if not 1 <= n <= k:
        raise ValueError(f"cannot split {k} utterance(s) into {n} chunk(s)")
    starts = [0] * (n + 1)
    starts[n] = k
    cum = 0.0
    owner: list[int] = []
    for d in durs:
        mid = cum + d / 2
        owner.append(min(n - 1, int(mid / total * n)) if total > 0 else 0)
        cum += d
    for c in range(1, n):
        first = next((i for i, o in enumerate(owner) if o >= c), k)
        # at least one utterance per chunk, before and after
        starts[c] = min(max(first, starts[c - 1] + 1), k - (n - c))
    return [(starts[c], starts[c + 1]) for c in range(n)]


def subset(data: Dataset, chunk: tuple[int, int], durs: list[float], where: str) -> Dataset:
    """The utterances of chunk ``chunk`` = (index from 1, count) of ``data``."""
    i, n = chunk
    if n > len(data.utterances):
        raise DatasetError(
            f"{where}.chunks: {n} chunks, but {data.source} has only {len(data.utterances)} utterance(s); "
            f"use chunks: {len(data.utterances)} or fewer"
        )
    start, stop = split(durs, n)[i - 1]
    return dataclasses.replace(data, utterances=tuple(data.utterances[start:stop]))


# ---- joining chunk rows into a corpus row ----------------------------------------------------------------

# Keys of a chunk row that describe the chunk, not the corpus.
_CHUNK_ONLY = ("case", "corpus", "chunk", "verdict", "metrics", "utterances", "deterministic", "rounds", "origin",
               "xdist_worker", "gpu", "reason", "status", "gate_settings", "thresholds", "golden_path")
# What every chunk of one corpus must share (else the chunks measured different things).
_SAME = ("normalizer", "decode", "backend", "task", "perturb")


def _label(row: dict[str, Any]) -> str:
    c = row.get("chunk") or [0, 0]
    return f"{c[0]}/{c[1]}"


def _max(values: Iterable[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(nums) if nums else None


def corpus_metrics(chunk_rows: list[dict[str, Any]], utts: list[dict[str, Any]]) -> dict[str, Any]:
    """The corpus metrics of the chunks' utterance rows, computed as an unchunked run computes them."""
    from .entities import pool_entities
    from .hallucination import pool_outputs
    from .metrics import percentile, pool, utterance_errors

    metrics = pool([utterance_errors(u["ref_norm"], u["hyp_norm"]) for u in utts])
    metrics.update(pool_outputs(utts))
    if any("entity_acc" in (r.get("metrics") or {}) for r in chunk_rows):
        metrics.update(pool_entities(utts))
    audio = sum(float(u["duration"]) for u in utts)
    secs = [float(u["seconds"]) for u in utts]
    rtf = sum(secs) / audio if audio > 0 else 0.0
    ms = [r.get("metrics") or {} for r in chunk_rows]
    metrics.update({
        "rtf": rtf,
        "rtf_rounds": [round(rtf, 6)],
        "latency_p50_s": percentile(secs, 50),
        "latency_p95_s": percentile(secs, 95),
        "audio_seconds": audio,
        "warmup_calls": max(int(m.get("warmup_calls") or 0) for m in ms),  # per chunk, before its timed pass
        "peak_rss_mb": _max(m.get("peak_rss_mb") for m in ms),
        "case_peak_rss_mb": _max(m.get("case_peak_rss_mb") for m in ms),
        "cuda_peak_mb": _max(m.get("cuda_peak_mb") for m in ms),
        "load_seconds": _max(m.get("load_seconds") for m in ms),
    })
    rels = [(float(m["speed_rel"]), float(m.get("audio_seconds") or 0)) for m in ms
            if isinstance(m.get("speed_rel"), (int, float))]
    if rels and len(rels) == len(ms) and sum(w for _, w in rels) > 0:
        # each chunk's speed relative to its own paired reference, weighted by its audio
        metrics["speed_rel"] = sum(r * w for r, w in rels) / sum(w for _, w in rels)
        band = _max(m.get("speed_rel_band") for m in ms)
        if band is not None:
            metrics["speed_rel_band"] = band
    for k in ("batch_size", "timing"):
        if k in ms[0]:
            metrics[k] = ms[0][k]
    return metrics


def assemble(chunk_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The corpus row of a case whose chunks all ran (``chunk_rows`` sorted by chunk); ``status`` ``error``
    with the reason when the chunks disagree on what they measured."""
    first = chunk_rows[0]
    row: dict[str, Any] = {k: v for k, v in first.items() if k not in _CHUNK_ONLY}
    row = {"case": first["corpus"], **row, "status": "ran", "origin": CORPUS_ORIGIN}
    for key in _SAME:
        values = {repr(r.get(key)) for r in chunk_rows}
        if len(values) > 1:
            return {**row, "status": "error", "verdict": "error",
                    "reason": f"its chunks ran with different {key} ({', '.join(sorted(values))}); re-run them "
                              "with one config and one pytest-speechlab version"}
    shas = {(r.get("weights") or {}).get("sha256") for r in chunk_rows}
    if len(shas) > 1:
        return {**row, "status": "error", "verdict": "error",
                "reason": "its chunks loaded different weights (sha256 " + ", ".join(sorted(map(str, shas)))
                          + "); run every shard on the same weights"}
    utts = [u for r in chunk_rows for u in r.get("utterances") or []]
    row["metrics"] = corpus_metrics(chunk_rows, utts)
    row["deterministic"] = all(bool(r.get("deterministic")) for r in chunk_rows)
    row["rounds"] = max(int(r.get("rounds") or 1) for r in chunk_rows)
    from .devices import machine_difference

    ms = [r.get("machine") or {} for r in chunk_rows]
    if any(machine_difference(ms[0], m) or any(m.get(k) != ms[0].get(k) for k in ("usable_cpus", "threads"))
           for m in ms[1:]):
        row["machine_mixed"] = True  # chunks timed on different machines: the corpus RTF mixes them
    loads = [float(m["load_avg_1m"]) for m in ms if isinstance(m.get("load_avg_1m"), (int, float))]
    if loads and isinstance(row.get("machine"), dict):
        row["machine"] = {**row["machine"], "load_avg_1m": max(loads)}  # the busiest moment any chunk saw
    row["chunks"] = [
        {
            "chunk": _label(r),
            "utterances": len(r.get("utterances") or []),
            "audio_seconds": (r.get("metrics") or {}).get("audio_seconds"),
            "rtf": (r.get("metrics") or {}).get("rtf"),
            "wer": (r.get("metrics") or {}).get("wer"),
            **({"xdist_worker": r["xdist_worker"]} if r.get("xdist_worker") else {}),
        }
        for r in chunk_rows
    ]
    row["utterances"] = utts
    return row


def chunk_rows_by_corpus(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The chunk rows of ``rows`` (matrix rows with ``corpus`` and ``chunk``) by corpus id, in first-seen order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("corpus") and r.get("chunk") and r.get("origin", "matrix") == "matrix":
            out.setdefault(str(r["corpus"]), []).append(r)
    return out


Gate = Callable[[dict[str, Any]], None]


def settle(rows: list[dict[str, Any]], gate: Gate, *, absent: str) -> list[dict[str, Any]]:
    """One corpus row per chunked case in ``rows``: joined and gated (``gate`` sets its verdict), or why not.

    ``absent`` is what a chunk with no row at all means: ``partial`` in a pytest session (a shard's, or
    deselected: not this run's to judge), ``error`` in ``speechlab merge`` (its shard's record is missing).
    """
    out: list[dict[str, Any]] = []
    for corpus, crows in chunk_rows_by_corpus(rows).items():
        n = int(crows[0]["chunk"][1])
        by_index: dict[int, dict[str, Any]] = {}
        for r in crows:
            by_index.setdefault(int(r["chunk"][0]), r)
        first = crows[0]
        keys = ("model", "dataset", "device", "task", "backend", "stage")
        base: dict[str, Any] = {k: first[k] for k in keys if k in first}
        head: dict[str, Any] = {"case": corpus, **base, "origin": CORPUS_ORIGIN, "chunk_count": n}
        missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in by_index]
        present = [by_index[i] for i in sorted(by_index)]
        skipped = [r for r in present if r.get("status") == "skipped"]
        broken = [r for r in present if r.get("status") == "error"
                  or (r.get("status") == "ran" and r.get("verdict") != CHUNK_VERDICT)]
        if skipped and len(skipped) == len(present) and not missing:
            out.append({**head, "status": "skipped", "reason": str(skipped[0].get("reason") or "skipped")})
            continue
        problems = [f"chunk {_label(r)} {'crashed' if r.get('status') == 'error' else 'failed'}: "
                    f"{r.get('reason') or r.get('verdict')}" for r in broken]
        problems += [f"chunk {_label(r)} was skipped ({r.get('reason')}) while others ran" for r in skipped]
        if missing and absent == "error":
            problems.append(
                f"chunk(s) {', '.join(missing)} missing from the merged records (a shard's record was not "
                "passed, or its job died before writing it); merge every shard's record"
            )
        if problems:
            out.append({**head, "status": "error", "verdict": "error",
                        "reason": "no corpus verdict, every chunk is needed: " + "; ".join(problems)})
            continue
        if missing:
            done = ", ".join(_label(r) for r in present)
            out.append({
                **head, "status": "ran", "verdict": PARTIAL, "chunks_missing": missing,
                "metrics": {"audio_seconds": sum(float((r.get("metrics") or {}).get("audio_seconds") or 0)
                                                 for r in present)},
                "reason": f"partial: this run holds chunk(s) {done} of {n}; chunk(s) {', '.join(missing)} are "
                          "not in it (other shards, or deselected), so it does not judge the corpus. Gate it with "
                          "speechlab merge RUN-*.json -o run.json --gate",
            })
            continue
        row = assemble(present)
        if row.get("status") == "ran":
            row["chunk_count"] = n
            gate(row)
        out.append(row)
    return out


def gate_with(
    golden_dir: Any, thresholds: dict[str, float], settings: Any, accept: str
) -> Callable[[dict[str, Any]], None]:
    """A gate for :func:`settle`: :class:`~.evaluation.CaseResult` ``check_golden`` on the corpus row (the
    golden of the unchunked case), with the failure block kept in the row's ``failure``."""
    from .evaluation import CaseResult

    def gate(row: dict[str, Any]) -> None:
        import pytest

        if row.get("machine_mixed") and settings.rtf_gate:
            settings.rtf_gate = False
            row.setdefault("verdict_notes", []).append(
                "its chunks ran on different machines: RTF not gated (the corpus RTF mixes their speeds)")
        try:
            CaseResult(row, golden_dir, thresholds, settings, accept).check_golden()
        except pytest.fail.Exception as exc:
            row["failure"] = str(exc.msg)
        if row.get("verdict") == "missing" and "failure" in row:
            row.setdefault("reason", row["failure"].splitlines()[0])

    return gate


# ---- progress of a long run ------------------------------------------------------------------------------


class ChunkProgress:
    """Per-chunk progress lines with an ETA from the audio seconds done (``total_audio`` of the run's chunks)."""

    def __init__(self, total_audio: float, total_chunks: int, start: float | None = None) -> None:
        self.total_audio = total_audio
        self.total_chunks = total_chunks
        self.done_audio = 0.0
        self.done_chunks = 0
        self.start = time.monotonic() if start is None else start

    def line(self, row: dict[str, Any], now: float | None = None) -> str:
        """Count a finished chunk row and say where the run stands."""
        now = time.monotonic() if now is None else now
        m = row.get("metrics") or {}
        audio = float(m.get("audio_seconds") or 0.0)
        self.done_audio += audio
        self.done_chunks += 1
        elapsed = now - self.start
        where = f" on {row['xdist_worker']}" if row.get("xdist_worker") else ""
        state = (f"WER {m['wer']:.4f}" if row.get("status") == "ran" and isinstance(m.get("wer"), (int, float))
                 else str(row.get("status")))
        eta = "?"
        if self.done_audio > 0 and self.total_audio > self.done_audio:
            eta = _clock(elapsed * (self.total_audio - self.done_audio) / self.done_audio)
        elif self.total_audio and self.done_audio >= self.total_audio:
            eta = "0s"
        return (f"speechlab: chunk {row.get('case')} done{where}: {audio:.0f} s audio, {state}; "
                f"{self.done_chunks}/{self.total_chunks} chunks, {self.done_audio:.0f}/{self.total_audio:.0f} s "
                f"audio in {_clock(elapsed)}, ETA {eta}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
