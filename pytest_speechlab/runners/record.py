"""The one builder of a case's run-record row for every task that is gated against a golden (ASR and TTS):
the same keys, in the same order, from the same sources."""

from __future__ import annotations

from typing import Any

from ..devices import machine_fingerprint
from ..report import versions
from ..session import Case, SpeechlabSession


def ran_record(
    sess: SpeechlabSession,
    case: Case,
    base: dict[str, Any],
    model: Any,
    *,
    normalizer: Any,
    decode: dict[str, Any],
    metrics: dict[str, Any],
    deterministic: Any,
    rounds: Any,
    speed_reference: dict[str, Any] | None,
    ref_error: str | None,
    utterances: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row of a case that ran: ``base`` (ids), what was measured, and the machine, versions, weights and
    tolerance sources it was measured with; ``extra`` keys come last (ASR: ``perturb``; TTS: audio files)."""
    spec = sess.cfg.models[case.model]
    threads = int(spec.options.get("cpu_threads") or 0) or None
    return {
        **base,
        "status": "ran",
        "normalizer": normalizer,
        "decode": decode,
        "metrics": {**metrics, "load_seconds": getattr(model, "load_seconds", None)},
        "deterministic": deterministic,
        "rounds": rounds,
        "speed_reference": speed_reference or ({"error": ref_error} if ref_error else {}),
        "machine": machine_fingerprint(case.device, threads, getattr(model, "kernels", None)),
        "provenance": {"versions": versions()},
        "weights": sess.weights_identity(spec, model),
        "tolerance_sources": sess.tolerance_sources(case.model, case.dataset),
        "utterances": utterances,
        **(extra or {}),
    }
