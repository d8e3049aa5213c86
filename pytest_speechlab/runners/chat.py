"""The chat case runner (speech-to-speech): a smoke check, not a golden gate."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .base import CaseContext


def run(ctx: CaseContext) -> None:
    """Speech-to-speech chat: each utterance's audio in, interleaved text + audio out.

    A chat reply has no reference to score against, so this is a smoke check, not a golden gate: every
    reply must carry non-empty text and finite, non-empty audio at the model's declared output rate.
    """
    __tracebackhide__ = True
    import pytest

    from ..datasets import load_audio
    from ..devices import machine_fingerprint

    sess, case = ctx.session, ctx.case
    base = sess.base_record(case)
    model = sess.load_case_model(case)
    data = sess.dataset(case.dataset)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seconds = audio_in = 0.0
    for u in data.utterances:
        assert u.audio_path is not None, f"{case.dataset}: utterance {u.id} has no audio"  # chat datasets are audio
        audio, dur = load_audio(u.audio_path, model.sample_rate, reference=u.text)
        t0 = time.perf_counter()
        reply = model.chat(audio=audio, sample_rate=model.sample_rate)
        secs = time.perf_counter() - t0
        seconds += secs
        audio_in += dur
        out = np.asarray(reply.audio)
        ok_text = bool(reply.text.strip())
        ok_audio = out.size > 0 and bool(np.isfinite(out).all())
        if not ok_text:
            problems.append(f"[{u.id}] reply has no text")
        if not ok_audio:
            problems.append(f"[{u.id}] reply audio is empty or not finite ({out.size} samples)")
        if reply.sample_rate != getattr(model, "output_sample_rate", reply.sample_rate):
            problems.append(f"[{u.id}] reply sample rate {reply.sample_rate} != declared {model.output_sample_rate}")
        rows.append({"id": u.id, "reference": u.text, "hypothesis": reply.text, "seconds": round(secs, 6),
                     "reply_audio_seconds": round(out.size / reply.sample_rate, 6) if reply.sample_rate else 0.0})
    record = {**base, "status": "ran", "decode": model.decode_settings, "utterances": rows,
              "weights": sess.weights_identity(sess.cfg.models[case.model], model),
              "machine": machine_fingerprint(case.device),
              "metrics": {"rtf": seconds / audio_in if audio_in else None, "utterances": len(rows),
                          "replies_with_text": sum(1 for r in rows if r["hypothesis"].strip()),
                          "reply_audio_seconds": sum(r["reply_audio_seconds"] for r in rows)},
              "verdict": "fail" if problems else "pass (chat smoke: text and audio came back)"}
    sess.results.append(record)
    if problems:
        pytest.fail(f"speechlab: {case.id} chat smoke check failed:\n  " + "\n  ".join(problems), pytrace=False)
