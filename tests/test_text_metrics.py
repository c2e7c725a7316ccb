"""Text metrics against values computed by hand (evaluation/text_metrics.py's definitions)."""

import math

import numpy as np
import pytest

from evaluation import text_metrics as tm

HYP = "the cat sat on the mat".split()
REF = "the cat is on the mat".split()
SHORT_HYP = "the cat".split()
SHORT_REF = "the cat sat on".split()


def test_bleu_of_one_pair_clips_counts_and_smooths_an_order_without_a_match():
    # p1 = 5/6 (two "the" in each), p2 = 3/5, p3 = 1/4, p4 = 0 matches of 3 -> 0.1/3; equal lengths.
    assert tm.bleu([HYP], [REF], 1) == pytest.approx(5 / 6)
    assert tm.bleu([HYP], [REF], 4) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25)
    assert tm.bleu([HYP], [REF], 4) == pytest.approx(0.254066, abs=1e-6)
    # Clipping: "the the the" against one "the" matches once.
    assert tm.bleu([["the", "the", "the"]], [["the", "cat", "x"]], 1) == pytest.approx(1 / 3)


def test_bleu_brevity_penalty_and_corpus_level_sums():
    # c = 2 < r = 4: exp(1 - 4/2); every unigram matches.
    assert tm.bleu([SHORT_HYP], [SHORT_REF], 1) == pytest.approx(math.exp(-1.0))
    # Corpus: c = 8, r = 10; p1 = 7/8, p2 = 4/6, p3 = 1/4, p4 = 0.1/3 (sums over both pairs).
    expected = math.exp(1 - 10 / 8) * (7 / 8 * 4 / 6 * 1 / 4 * 0.1 / 3) ** 0.25
    assert tm.bleu([HYP, SHORT_HYP], [REF, SHORT_REF], 4) == pytest.approx(expected)
    assert expected == pytest.approx(0.205642, abs=1e-6)
    assert tm.bleu([[]], [REF]) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        tm.bleu([HYP, HYP], [REF])


def test_bleu_from_summed_statistics_equals_bleu():
    pairs = [(HYP, REF), (SHORT_HYP, SHORT_REF), (["a", "b", "c", "d", "e"], ["a", "b", "c", "d"])]
    stats = [tm.bleu_statistics(h, r) for h, r in pairs]
    summed = [np.sum([s[k] for s in stats], axis=0) for k in range(4)]
    assert tm.bleu_from_statistics(*summed) == pytest.approx(tm.bleu([p[0] for p in pairs], [p[1] for p in pairs]))
    # Vectorized over resamples: one row per resample.
    batch = [np.stack([summed[k], stats[0][k]]) for k in range(4)]
    assert tm.bleu_from_statistics(*batch)[1] == pytest.approx(tm.bleu([HYP], [REF]))


def test_rouge_f1_of_ngrams_and_the_longest_common_subsequence():
    assert tm.rouge_n(HYP, REF, 1) == pytest.approx(5 / 6)
    assert tm.rouge_n(HYP, REF, 2) == pytest.approx(3 / 5)
    assert tm.lcs_length(HYP, REF) == 5  # the cat on the mat
    assert tm.rouge_l(HYP, REF) == pytest.approx(5 / 6)
    # Short pair: P = 1, R = 2/4 -> F = 2/3 for ROUGE-1 and ROUGE-L; ROUGE-2: P = 1, R = 1/3 -> 1/2.
    assert tm.rouge_n(SHORT_HYP, SHORT_REF, 1) == pytest.approx(2 / 3)
    assert tm.rouge_n(SHORT_HYP, SHORT_REF, 2) == pytest.approx(0.5)
    means = tm.rouge([HYP, SHORT_HYP], [REF, SHORT_REF])
    assert means == pytest.approx({"rouge_1": (5 / 6 + 2 / 3) / 2, "rouge_2": (0.6 + 0.5) / 2,
                                   "rouge_l": (5 / 6 + 2 / 3) / 2})
    assert tm.rouge_n([], REF, 1) == 0.0 and tm.rouge_l(["x"], ["y"]) == 0.0


def test_distinct_counts_unique_ngrams_over_every_hypothesis():
    assert tm.distinct([HYP, SHORT_HYP], 1) == pytest.approx(5 / 8)
    assert tm.distinct([HYP, SHORT_HYP], 2) == pytest.approx(5 / 6)
    assert tm.distinct([[], ["a"]], 2) == 0.0


def test_perplexity_is_the_exponentiated_mean_token_nll_without_padding():
    nll = np.array([[math.log(2), math.log(4), 99.0]])
    assert tm.perplexity(nll, np.array([[1, 1, 0]])) == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError, match="every target is padding"):
        tm.perplexity(nll, np.zeros((1, 3)))


def test_ids_become_vocabulary_words_and_unknowns_never_match():
    vocabulary = [b"a", b"b"]
    assert tm.tokens_of([1, 3, 2, 0, 1], vocabulary, reference=True) == ["a", tm.UNKNOWN_REFERENCE, "b"]
    hyp = tm.tokens_of([1, 3, 2], vocabulary, reference=False)
    assert hyp == ["a", tm.UNKNOWN_HYPOTHESIS, "b"]
    ref = tm.tokens_of([1, 3, 2], vocabulary, reference=True)
    assert tm.rouge_n(hyp, ref, 1) == pytest.approx(2 / 3)  # the unknown token matches nothing
    metrics = tm.text_metrics([HYP], [REF])
    assert set(metrics) == {"bleu_1", "bleu_4", "rouge_1", "rouge_2", "rouge_l", "distinct_1", "distinct_2"}
