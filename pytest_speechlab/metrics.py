"""Normalisers (named and versioned), WER/CER with S/D/I pooled over a corpus (jiwer), RTF, latency, memory."""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import resource
import sys
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

_MAX_PASSES = 4  # extra passes of a normaliser while it still changes the text


@dataclass(frozen=True)
class Normalizer:
    """A text normaliser applied to references and hypotheses before scoring."""

    name: str
    version: str
    fn: Callable[[str], str]

    def __call__(self, text: str) -> str:
        # Applied until the text stops changing: Whisper's English normaliser is not idempotent on some
        # inputs ("O1" -> "0 one" -> "one"), and normalising an already normalised text (a golden's
        # ref_norm, a merged record) must be a no-op or the same pair scores differently.
        out = " ".join(self.fn(text).split())
        for _ in range(_MAX_PASSES):
            again = " ".join(self.fn(out).split())
            if again == out:
                break
            out = again
        return out

    def ident(self) -> dict[str, str]:
        """What a golden records, so a later run can refuse to compare across normalisers."""
        return {"name": self.name, "version": self.version}


def _basic(text: str) -> str:
    # Lower-case, drop punctuation and symbols (keep letters/digits/apostrophes inside words).
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c if (c.isalnum() or c == "'" or c.isspace()) else " " for c in text)
    return re.sub(r"(?<!\w)'|'(?!\w)", " ", text)


@cache
def _whisper_en() -> Callable[[str], str]:
    with warnings.catch_warnings():  # whisper-normalizer has an invalid escape in a docstring
        warnings.simplefilter("ignore", SyntaxWarning)
        from whisper_normalizer.english import EnglishTextNormalizer
    fn: Callable[[str], str] = EnglishTextNormalizer()
    return fn


def _whisper_en_call(text: str) -> str:
    return _whisper_en()(text)


def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


NORMALIZERS: dict[str, Callable[[], Normalizer]] = {
    "whisper-en": lambda: Normalizer(
        "whisper-en", f"whisper-normalizer=={_pkg_version('whisper-normalizer')}", _whisper_en_call
    ),
    "basic": lambda: Normalizer("basic", "1", _basic),
    "none": lambda: Normalizer("none", "1", lambda s: s),
}


def get_normalizer(name: str) -> Normalizer:
    """The normaliser registered under ``name`` (``whisper-en``, ``basic``, ``none``)."""
    try:
        return NORMALIZERS[name]()
    except KeyError:
        raise KeyError(f"unknown normaliser {name!r}; one of: {', '.join(NORMALIZERS)}") from None


def utterance_errors(reference: str, hypothesis: str) -> dict[str, int]:
    """Word and character edit counts of one (already normalised) pair.

    An empty reference is defined, not an error: every hypothesis word is an insertion, so the utterance
    adds errors but no reference words to the pooled corpus WER (and per-utterance WER is 0 if the
    hypothesis is empty too, else 1).
    """
    import jiwer

    if not reference:
        words = len(hypothesis.split())
        chars = len(hypothesis)
        return {
            "ref_words": 0,
            "word_errors": words,
            "sub": 0,
            "del": 0,
            "ins": words,
            "ref_chars": 0,
            "char_errors": chars,
        }
    w = jiwer.process_words(reference, hypothesis if hypothesis else "")
    c = jiwer.process_characters(reference, hypothesis if hypothesis else "")
    ref_words = w.hits + w.substitutions + w.deletions
    ref_chars = c.hits + c.substitutions + c.deletions
    return {
        "ref_words": ref_words,
        "word_errors": w.substitutions + w.deletions + w.insertions,
        "sub": w.substitutions,
        "del": w.deletions,
        "ins": w.insertions,
        "ref_chars": ref_chars,
        "char_errors": c.substitutions + c.deletions + c.insertions,
    }


def utterance_wer(errors: dict[str, int]) -> float:
    """WER of one utterance from :func:`utterance_errors` (empty reference: 0 or 1, see there)."""
    if errors["ref_words"] == 0:
        return 0.0 if errors["word_errors"] == 0 else 1.0
    return errors["word_errors"] / errors["ref_words"]


def corpus_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """WER, CER and S/D/I pooled over the corpus (errors summed over utterances / reference units summed).

    Equals ``jiwer.wer(references, hypotheses)`` when no reference is empty.
    """
    rows = [utterance_errors(r, h) for r, h in zip(references, hypotheses, strict=True)]
    return pool(rows)


def pool(rows: Sequence[dict[str, int]]) -> dict[str, Any]:
    """Pool per-utterance edit counts into corpus metrics."""
    tot = {
        k: sum(r[k] for r in rows)
        for k in ("ref_words", "word_errors", "sub", "del", "ins", "ref_chars", "char_errors")
    }
    wer = tot["word_errors"] / tot["ref_words"] if tot["ref_words"] else (0.0 if tot["word_errors"] == 0 else 1.0)
    cer = tot["char_errors"] / tot["ref_chars"] if tot["ref_chars"] else (0.0 if tot["char_errors"] == 0 else 1.0)
    return {
        "wer": wer,
        "cer": cer,
        "substitutions": tot["sub"],
        "deletions": tot["del"],
        "insertions": tot["ins"],
        "ref_words": tot["ref_words"],
        "ref_chars": tot["ref_chars"],
        "utterances": len(rows),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_case_peak() -> bool:
    """Start a case's own memory peak: reset the kernel's resident-set high-water mark (Linux
    ``/proc/self/clear_refs`` 5) and torch's CUDA peak counter when CUDA is in use.  False when the RSS
    peak cannot be reset here (not Linux): then there is no per-case peak to gate."""
    torch = sys.modules.get("torch")
    # A broken CUDA runtime must not break the report: its peak is then simply not reset.
    with contextlib.suppress(Exception):
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def rss_mb() -> float | None:
    """This process's resident memory now (VmRSS, MiB), None off Linux."""
    return _proc_status_mb("VmRSS")


def case_peak_rss_mb() -> float | None:
    """The resident-set high-water mark since :func:`reset_case_peak` (VmHWM, MiB), None off Linux."""
    return _proc_status_mb("VmHWM")


def case_memory_mb(model: object, start_rss_mb: float | None, peak_rss_mb: float | None) -> float | None:
    """A case's own memory: what its model added to the process when it loaded (``model.load_rss_mb``),
    plus the largest rise above the process's resident memory that any case of this loaded model has
    caused so far (kept on the model as ``peak_growth_mb``).  Unlike the process peak it does not depend on
    which other models the session loaded before; the running maximum keeps it from depending on whether
    this case was the model's first (first calls allocate arenas that later cases reuse)."""
    load = getattr(model, "load_rss_mb", None)
    if load is None or start_rss_mb is None or peak_rss_mb is None:
        return None
    growth = max(0.0, peak_rss_mb - start_rss_mb, float(getattr(model, "peak_growth_mb", 0.0) or 0.0))
    with contextlib.suppress(AttributeError, TypeError):  # a model object that refuses attributes
        model.peak_growth_mb = growth  # type: ignore[attr-defined]
    return max(0.0, float(load)) + growth


def cuda_peak_mb() -> float | None:
    """Peak CUDA memory allocated by torch in this process (MiB), or None when torch/cuda is not in use."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return float(torch.cuda.max_memory_allocated()) / (1024 * 1024)
    except Exception:  # noqa: BLE001 - a broken CUDA runtime must not break the report
        return None


def bootstrap_delta(
    golden_errors: Sequence[tuple[int, int]],
    new_errors: Sequence[tuple[int, int]],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap over utterances of the pooled error-rate difference (new - golden).

    Each item is ``(errors, reference_units)`` for one utterance, in the same utterance order for both runs.
    Returns ``(delta, low, high)`` where ``[low, high]`` is the ``confidence`` percentile interval.
    """
    g = np.asarray(golden_errors, dtype=np.float64)
    n = np.asarray(new_errors, dtype=np.float64)
    if g.shape != n.shape or g.ndim != 2 or len(g) == 0:
        raise ValueError("paired bootstrap needs the same utterances in both runs")
    ref = g[:, 1]

    def rate(err: np.ndarray, ref_units: np.ndarray) -> np.ndarray:
        tot = ref_units.sum(axis=-1)
        return np.where(tot > 0, err.sum(axis=-1) / np.maximum(tot, 1), 0.0)

    delta = float(rate(n[:, 0], ref) - rate(g[:, 0], ref))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(g), size=(resamples, len(g)))
    d = rate(n[idx, 0], ref[idx]) - rate(g[idx, 0], ref[idx])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    return delta, float(low), float(high)
