"""TTS quality beyond intelligibility: DNSMOS, a non-intrusive MOS estimate, per sentence and pooled.

DNSMOS (Reddy et al., ICASSP 2022) predicts, from the audio alone, the ITU-T P.835 scores a listening panel
would give: SIG (speech signal quality), BAK (background noise) and OVRL (overall), plus the P.808 overall
score, each on 1..5.  The ONNX models come with the ``speechmos`` package (extra ``dnsmos``); onnxruntime and
librosa are imported only when a TTS case with ``dnsmos: true`` runs.

Each sentence is scored on its own (batch size 1, one ``speechmos.dnsmos.run`` call per sentence: the same
audio gives the same score), after resampling to 16 kHz with soxr HQ.  The pooled score is the mean over
sentences.  The gate is one-sided: pooled SIG/BAK/OVRL may not fall more than ``dnsmos_abs`` below the golden,
and no sentence's OVRL more than ``dnsmos_sentence_abs``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends.base import Audio, BackendError

DNSMOS_RATE = 16000
SCORES = ("sig", "bak", "ovrl", "p808")
GATED = (("dnsmos_sig", "MOS-SIG"), ("dnsmos_bak", "MOS-BAK"), ("dnsmos_ovrl", "MOS-OVRL"))
#: Default tolerances (MOS points).  Measured on piper-joe over the six tts_smoke sentences: another run moves
#: nothing (0.000); the voice 6 dB quieter raises pooled OVRL by 0.07 (every sentence up); white noise at 30 dB
#: SNR lowers pooled OVRL by 0.24 (BAK by 0.56, the worst sentence's OVRL by 0.36), at 20 dB by 0.63.
POOLED_ABS = 0.1
SENTENCE_ABS = 0.3


class QualityUnavailable(BackendError):
    """DNSMOS was asked for (``dnsmos: true``) but cannot run here; the message says what to install."""


_SCORER: Any = None


def _speechmos() -> Any:
    """speechmos' DNSMOS scorer, loaded once per process, its two ONNX sessions on one CPU thread.

    One thread: the score of the same audio is then the same on any machine whatever its core count (an
    intra-op thread pool may sum in another order), and on a 2-core runner it is no slower (measured: one
    9 s window of the primary model 0.63 s on one thread, 0.68 s on the default pool, machine shared).
    """
    global _SCORER
    if _SCORER is not None:
        return _SCORER
    try:
        import onnxruntime as ort
        from speechmos import dnsmos as mod
    except ImportError as exc:
        raise QualityUnavailable(
            f"DNSMOS needs the speechmos package and its dependencies ({exc}): pip install 'pytest-speechlab[dnsmos]', "
            "or remove 'dnsmos: true' from the dataset in speechlab.yaml"
        ) from None
    from pathlib import Path

    models = Path(mod.__file__).parent / "dnsmos_models"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    scorer = object.__new__(mod.DNSMOS)  # its __init__ would open both sessions on the default thread pool
    scorer.primary_model_path = str(models / "sig_bak_ovr.onnx")
    cpu = ["CPUExecutionProvider"]
    scorer.onnx_sess = ort.InferenceSession(scorer.primary_model_path, opts, providers=cpu)
    scorer.p808_onnx_sess = ort.InferenceSession(str(models / "model_v8.onnx"), opts, providers=cpu)
    _SCORER = scorer
    return scorer


def versions() -> str:
    """The scorer, for the record: another speechmos/onnxruntime may score the same audio differently."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("speechmos", "onnxruntime", "librosa"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} missing")
    return ", ".join(out)


def dnsmos(audio: Audio, sample_rate: int) -> dict[str, float] | None:
    """DNSMOS of one utterance: ``{"sig", "bak", "ovrl", "p808"}``, or None for empty or all-zero audio
    (nothing to score; the audio sanity bands already fail it).

    The audio is resampled to 16 kHz with soxr HQ and clipped to [-1, 1] (speechmos refuses samples outside
    it, and resampling a peak-normalised voice overshoots by a few thousandths).
    """
    import soxr

    scorer = _speechmos()
    x = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if x.size == 0 or not np.any(x):
        return None
    if sample_rate != DNSMOS_RATE:
        x = soxr.resample(x, sample_rate, DNSMOS_RATE, quality="HQ")
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    # One clip per call (batch size 1), as speechmos.dnsmos.run does for one array: the P.835 model (SIG/BAK/OVRL,
    # non-personalised) and P.808 on 9.01 s windows, hopping 1 s, the clip repeated up to 9.01 s when shorter.
    r = scorer(x, DNSMOS_RATE, False)
    return {k: round(float(r[f"{k}_mos"]), 6) for k in SCORES}


def score_rows(rows: list[dict[str, Any]], audios: Sequence[tuple[Audio, int]]) -> dict[str, Any]:
    """Score each sentence (adding ``dnsmos_sig/bak/ovrl/p808`` to its row) and return the pooled metrics:
    the mean over scored sentences, ``dnsmos_seconds`` (the time DNSMOS took) and ``dnsmos_scorer``."""
    t0 = time.perf_counter()
    scored: list[dict[str, float]] = []
    for row, (audio, sr) in zip(rows, audios, strict=True):
        s = dnsmos(audio, sr)
        for k in SCORES:
            row[f"dnsmos_{k}"] = None if s is None else s[k]
        if s is not None:
            scored.append(s)
    out: dict[str, Any] = {f"dnsmos_{k}": (round(statistics.fmean(s[k] for s in scored), 6) if scored else None)
                           for k in SCORES}
    out["dnsmos_sentences"] = len(scored)
    out["dnsmos_seconds"] = round(time.perf_counter() - t0, 3)
    out["dnsmos_scorer"] = versions()
    return out


def summary(metrics: dict[str, Any]) -> str:
    """``", DNSMOS SIG 3.454 BAK 4.158 OVRL 3.234 (6 sentences, 15.5 s)"`` for the case's note; empty without DNSMOS."""
    if _num(metrics.get("dnsmos_ovrl")) is None:
        return ""
    return (f", DNSMOS SIG {metrics['dnsmos_sig']:.3f} BAK {metrics['dnsmos_bak']:.3f} "
            f"OVRL {metrics['dnsmos_ovrl']:.3f} ({metrics.get('dnsmos_sentences')} sentences, "
            f"{metrics.get('dnsmos_seconds')} s)")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def worst_sentences(golden: dict[str, Any], obtained: dict[str, Any]) -> list[tuple[float, dict[str, Any], float]]:
    """Sentences whose OVRL fell against the golden's sentence of the same id: (drop, row, golden OVRL),
    worst first."""
    g = {r.get("id"): r for r in golden.get("utterances") or [] if isinstance(r, dict)}
    out = []
    for row in obtained.get("utterances") or []:
        old = g.get(row.get("id"))
        gv, ov = _num((old or {}).get("dnsmos_ovrl")), _num(row.get("dnsmos_ovrl"))
        if gv is not None and ov is not None and ov < gv:
            out.append((gv - ov, row, gv))
    return sorted(out, key=lambda t: -t[0])


def gate(golden: dict[str, Any], obtained: dict[str, Any],
         thresholds: dict[str, float]) -> tuple[list[Any], list[str], list[str]]:
    """The DNSMOS checks of one TTS case: ``(checks, problems, notes)``.

    * pooled SIG/BAK/OVRL: fail when more than ``dnsmos_abs`` (default 0.1) below the golden;
    * per sentence: ``MOS-SENT`` (DNSMOS) fails when a sentence's OVRL is more than ``dnsmos_sentence_abs``
      (default 0.3) below its golden value, naming the sentence and its WAV;
    * a golden without DNSMOS (recorded before it was measured): each score is ``not-compared`` with a note
      saying to re-record; a golden with DNSMOS and a run without it is a problem (nothing to compare with).
    """
    from .checks import Check

    checks: list[Check] = []
    problems: list[str] = []
    notes: list[str] = []
    gm, om = golden.get("metrics") or {}, obtained.get("metrics") or {}
    if _num(gm.get("dnsmos_ovrl")) is None and _num(om.get("dnsmos_ovrl")) is None:
        return checks, problems, notes
    tol = float(thresholds.get("dnsmos_abs", POOLED_ABS))
    if _num(gm.get("dnsmos_ovrl")) is None:
        notes.append(f"DNSMOS not compared: this run measured OVRL {om['dnsmos_ovrl']:.3f} but the golden has no "
                     "DNSMOS (recorded before it was measured); re-record the golden (--speechlab-update-golden) "
                     "to gate it")
    for key, label in GATED:
        gv, ov = _num(gm.get(key)), _num(om.get(key))
        if ov is None:
            problems.append(f"the golden has {key} {gm.get(key)!r} but this run measured {om.get(key)!r} (is "
                            "'dnsmos: true' still set on the dataset, and the dnsmos extra installed?); nothing to "
                            "compare it with")
            continue
        if gv is None:
            checks.append(Check(label, ov, None, "-", "not-compared",
                                "the golden has no DNSMOS (recorded before it was measured): not gated; re-record the "
                                "golden"))
            continue
        check = Check(label, ov, gv, f"-{tol:.4f} abs", "pass")
        if ov < gv - tol - 1e-9:
            check.status, check.note = "fail", f"{ov - gv:+.4f} under the golden: the voice sounds worse"
        elif ov > gv + 1e-6:
            check.status, check.note = "improved", f"{ov - gv:+.4f}, better than the golden"
        checks.append(check)
    if _num(gm.get("dnsmos_ovrl")) is not None and _num(om.get("dnsmos_ovrl")) is not None:
        checks.append(_sentence_check(golden, obtained, thresholds, notes))
    return checks, problems, notes


def _sentence_check(golden: dict[str, Any], obtained: dict[str, Any], thresholds: dict[str, float],
                    notes: list[str]) -> Any:
    """``MOS-SENT``: the largest per-sentence OVRL drop against the golden; failing sentences go to ``notes``."""
    from .checks import Check

    stol = float(thresholds.get("dnsmos_sentence_abs", SENTENCE_ABS))
    worst = worst_sentences(golden, obtained)
    drop = worst[0][0] if worst else 0.0
    sent = Check("MOS-SENT", -drop, 0.0, f"-{stol:.4f} abs", "pass",
                 "largest per-sentence OVRL drop against the golden")
    if drop > stol + 1e-9:
        sent.status = "fail"
        bad = [w for w in worst if w[0] > stol + 1e-9]
        sent.note = f"{len(bad)} sentence(s) lost more than {stol:g} OVRL"
        files = obtained.get("audio_files") or {}
        for d, row, gv in bad[:3]:
            notes.append(f"DNSMOS: sentence {row.get('id')!r} OVRL {gv:.3f} -> {row['dnsmos_ovrl']:.3f} "
                         f"({-d:+.3f}; SIG {row.get('dnsmos_sig')}, BAK {row.get('dnsmos_bak')}); "
                         f"listen: {files.get(row.get('id'))}")
    return sent
