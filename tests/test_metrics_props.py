"""Property tests (hypothesis) for the metrics: WER/CER bounds, zero iff equal after normalisation,
normalisers idempotent, corpus pooling equal to jiwer, the paired bootstrap interval around its delta."""

from __future__ import annotations

import jiwer
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_speechlab.metrics import (
    NORMALIZERS,
    bootstrap_delta,
    corpus_scores,
    get_normalizer,
    pool,
    utterance_errors,
    utterance_wer,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VOCAB = ["the", "cat", "sat", "on", "mat", "twenty", "three", "Mr.", "don't", "colour", "OK", "12", "%", "dr",
         "café", "co-operate", "Hello,", "world!", "1st", "$5"]
words = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=12).map(" ".join)
nonempty = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12).map(" ".join)
# Free text: letters, digits, punctuation, symbols, whitespace — what real transcripts and model output hold.
free_text = st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"], max_codepoint=0x2FF), max_size=60)
norm_names = st.sampled_from(list(NORMALIZERS))


@FAST
@given(ref=words, hyp=words, name=norm_names)
def test_wer_and_cer_are_non_negative(ref: str, hyp: str, name: str) -> None:
    norm = get_normalizer(name)
    scores = corpus_scores([norm(ref)], [norm(hyp)])
    assert scores["wer"] >= 0 and scores["cer"] >= 0
    assert scores["substitutions"] >= 0 and scores["deletions"] >= 0 and scores["insertions"] >= 0


@FAST
@given(ref=words, hyp=words, name=norm_names)
def test_wer_zero_iff_equal_after_normalisation(ref: str, hyp: str, name: str) -> None:
    norm = get_normalizer(name)
    r, h = norm(ref), norm(hyp)
    wer = corpus_scores([r], [h])["wer"]
    assert (wer == 0) == (r.split() == h.split())


@FAST
@given(text=free_text, name=norm_names)
def test_normaliser_idempotent(text: str, name: str) -> None:
    norm = get_normalizer(name)
    once = norm(text)
    assert norm(once) == once


@FAST
@given(pairs=st.lists(st.tuples(nonempty, words), min_size=1, max_size=8))
def test_corpus_pooling_equals_jiwer(pairs: list[tuple[str, str]]) -> None:
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    scores = corpus_scores(refs, hyps)
    assert scores["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert scores["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    out = jiwer.process_words(refs, hyps)
    assert (scores["substitutions"], scores["deletions"], scores["insertions"]) == (
        out.substitutions, out.deletions, out.insertions)


@FAST
@given(ref=st.just(""), hyp=words)
def test_empty_reference_rule(ref: str, hyp: str) -> None:
    """Empty reference: hypothesis words are insertions; per-utterance WER 0 if the hypothesis is empty, else 1."""
    e = utterance_errors(ref, hyp)
    assert e["ref_words"] == 0 and e["ins"] == e["word_errors"] == len(hyp.split())
    assert utterance_wer(e) == (0.0 if not hyp.split() else 1.0)


@FAST
@given(pairs=st.lists(st.tuples(nonempty, words), min_size=1, max_size=6), extra=words)
def test_empty_reference_adds_errors_not_reference_words(pairs: list[tuple[str, str]], extra: str) -> None:
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    base = corpus_scores(refs, hyps)
    with_empty = corpus_scores([*refs, ""], [*hyps, extra])
    assert with_empty["ref_words"] == base["ref_words"]
    n_extra = len(extra.split())
    assert with_empty["wer"] == pytest.approx(base["wer"] + n_extra / base["ref_words"])


utterance_pairs = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 40)),  # golden errors, new errors, ref units
    min_size=1, max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(rows=utterance_pairs, seed=st.integers(0, 2**16))
def test_bootstrap_interval_contains_the_delta(rows: list[tuple[int, int, int]], seed: int) -> None:
    golden = [(g, n) for g, _, n in rows]
    new = [(e, n) for _, e, n in rows]
    delta, low, high = bootstrap_delta(golden, new, resamples=400, confidence=0.95, seed=seed)
    tot = sum(n for _, _, n in rows)
    assert delta == pytest.approx(sum(e for _, e, _ in rows) / tot - sum(g for g, _, _ in rows) / tot)
    assert low <= high
    assert low - 1e-9 <= delta <= high + 1e-9


def test_bootstrap_detects_a_real_regression() -> None:
    """A consistent +1 error on each of 30 utterances is real: the interval excludes 0."""
    golden = [(1, 10)] * 30
    new = [(2, 10)] * 30
    delta, low, _high = bootstrap_delta(golden, new)
    assert delta == pytest.approx(0.1) and low > 0


def test_pool_of_nothing_is_zero() -> None:
    assert pool([])["wer"] == 0.0
