"""Metrics of generated text against reference texts: BLEU, ROUGE, distinct-n, perplexity.

Computed by the project in numpy, so every number is reproducible without an external
scorer. Definitions (each function says which):

- Tokens. Texts are compared as the Transform tokenizes them (transform/preprocessing.py:
  lower-cased, split on every run of characters that are not letters or digits, the first
  `max_tokens` kept), token ids mapped back to words through the column's vocabulary
  (`tokens_of`). An id outside the vocabulary becomes `UNKNOWN_HYPOTHESIS` in a generated
  text and `UNKNOWN_REFERENCE` in a reference: the two never match, so a model gains
  nothing by generating the unknown token. Neither can come out of the tokenizer (`<` and `>`
  separate tokens).
- BLEU-N (Papineni et al., 2002), corpus level, one reference per hypothesis: modified n-gram
  precisions p_n = sum of clipped n-gram matches / sum of hypothesis n-grams over the
  corpus, geometric mean with uniform weights 1/N over n = 1..N, brevity penalty
  exp(1 - r / c) when the hypotheses' total length c is below the references' total length
  r. Smoothing: "method 1" of Chen & Cherry (2014): an order with no match gets
  BLEU_EPSILON (0.1) matches instead of 0, so BLEU-4 of a corpus without any 4-gram match is
  small but not 0; orders with a match are unchanged. No hypothesis token at all: 0.
- ROUGE-1 / ROUGE-2 / ROUGE-L (Lin, 2004), F1 (beta = 1) per pair, averaged over pairs:
  ROUGE-N from the clipped n-gram overlap, ROUGE-L from the longest common subsequence.
  A pair where the hypothesis or the reference has no n-gram scores 0.
- distinct-n (Li et al., 2016): distinct n-grams / all n-grams over all hypotheses (0 when
  there is none).
- Perplexity: exp of the mean negative log-likelihood per target token (the end-of-text
  token included, padding excluded), under teacher forcing.

Values are fractions in [0, 1] (perplexity: >= 1); reports print BLEU and ROUGE in percent,
as the literature does.
"""

from __future__ import annotations

import collections
import math
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

BLEU_EPSILON = 0.1
UNKNOWN_HYPOTHESIS = "<unk>"
UNKNOWN_REFERENCE = "<oov>"

Tokens = Sequence[str]


def tokens_of(ids: Iterable[int], vocabulary: Sequence[str], reference: bool) -> List[str]:
    """Words of token ids (the Transform's ids: 0 padding, 1..V the vocabulary, anything
    larger unknown), up to the first padding id.

    Args:
      ids: one text's token ids.
      vocabulary: the column's vocabulary, id k being vocabulary[k - 1].
      reference: a reference text (unknown ids -> UNKNOWN_REFERENCE) or a generated one
        (-> UNKNOWN_HYPOTHESIS).
    """
    out = []
    unknown = UNKNOWN_REFERENCE if reference else UNKNOWN_HYPOTHESIS
    for i in ids:
        i = int(i)
        if i <= 0:
            break
        word = vocabulary[i - 1] if i <= len(vocabulary) else unknown
        out.append(word.decode() if isinstance(word, bytes) else word)
    return out


def ngrams(tokens: Tokens, n: int) -> collections.Counter:
    """Counts of the n-grams (tuples) of a token list."""
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _check(hypotheses: Sequence[Tokens], references: Sequence[Tokens]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references; expected one reference "
                         "per hypothesis")


def bleu(hypotheses: Sequence[Tokens], references: Sequence[Tokens], max_order: int = 4) -> float:
    """Corpus BLEU-`max_order` (module docstring: clipped precisions, uniform weights, brevity
    penalty, Chen & Cherry's method-1 smoothing)."""
    _check(hypotheses, references)
    matches = np.zeros(max_order)
    totals = np.zeros(max_order)
    hyp_length = ref_length = 0
    for hyp, ref in zip(hypotheses, references):
        hyp_length += len(hyp)
        ref_length += len(ref)
        for n in range(1, max_order + 1):
            h, r = ngrams(hyp, n), ngrams(ref, n)
            matches[n - 1] += sum(min(c, r[g]) for g, c in h.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_length == 0:
        return 0.0
    log_precision = 0.0
    for n in range(max_order):
        if totals[n] == 0:  # every hypothesis shorter than n tokens
            return 0.0
        log_precision += math.log(max(matches[n], BLEU_EPSILON) / totals[n]) / max_order
    penalty = 1.0 if hyp_length >= ref_length else math.exp(1.0 - ref_length / hyp_length)
    return float(penalty * math.exp(log_precision))


def _f1(overlap: float, hyp_count: int, ref_count: int) -> float:
    if hyp_count == 0 or ref_count == 0 or overlap == 0:
        return 0.0
    precision, recall = overlap / hyp_count, overlap / ref_count
    return 2.0 * precision * recall / (precision + recall)


def rouge_n(hypothesis: Tokens, reference: Tokens, n: int) -> float:
    """ROUGE-N F1 of one pair (clipped n-gram overlap)."""
    h, r = ngrams(hypothesis, n), ngrams(reference, n)
    overlap = sum(min(c, r[g]) for g, c in h.items())
    return _f1(overlap, sum(h.values()), sum(r.values()))


def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: Tokens, reference: Tokens) -> float:
    """ROUGE-L F1 of one pair (longest common subsequence)."""
    return _f1(lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def rouge(hypotheses: Sequence[Tokens], references: Sequence[Tokens]) -> Dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over pairs."""
    per = pairwise_rouge(hypotheses, references)
    return {name: float(values.mean()) if len(values) else 0.0 for name, values in per.items()}


def pairwise_rouge(hypotheses: Sequence[Tokens], references: Sequence[Tokens]) -> Dict[str, np.ndarray]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of every pair (for paired intervals)."""
    _check(hypotheses, references)
    return {
        "rouge_1": np.array([rouge_n(h, r, 1) for h, r in zip(hypotheses, references)], np.float64),
        "rouge_2": np.array([rouge_n(h, r, 2) for h, r in zip(hypotheses, references)], np.float64),
        "rouge_l": np.array([rouge_l(h, r) for h, r in zip(hypotheses, references)], np.float64),
    }


def distinct(hypotheses: Sequence[Tokens], n: int) -> float:
    """distinct-n: distinct n-grams / all n-grams over every hypothesis."""
    total = collections.Counter()
    for hyp in hypotheses:
        total.update(ngrams(hyp, n))
    count = sum(total.values())
    return len(total) / count if count else 0.0


def perplexity(token_nll: np.ndarray, mask: np.ndarray) -> float:
    """exp(mean negative log-likelihood over the tokens where mask is 1).

    Args:
      token_nll: [N, L] negative log-likelihood (natural log) of each target token.
      mask: [N, L] 1 for a target token (end-of-text included), 0 for padding.
    """
    mask = np.asarray(mask, np.float64)
    count = mask.sum()
    if count == 0:
        raise ValueError("perplexity of no token: every target is padding")
    return float(math.exp(float((np.asarray(token_nll, np.float64) * mask).sum()) / count))


def text_metrics(hypotheses: Sequence[Tokens], references: Sequence[Tokens]) -> Dict[str, float]:
    """BLEU-1, BLEU-4, ROUGE-1/2/L F1, distinct-1 and distinct-2 of a corpus (fractions)."""
    out = {"bleu_1": bleu(hypotheses, references, 1), "bleu_4": bleu(hypotheses, references, 4)}
    out.update(rouge(hypotheses, references))
    out.update(distinct_1=distinct(hypotheses, 1), distinct_2=distinct(hypotheses, 2))
    return out


def bleu_statistics(hypothesis: Tokens, reference: Tokens, max_order: int = 4) -> Tuple[np.ndarray, ...]:
    """One pair's (matches [N], hypothesis n-grams [N], hypothesis length, reference length):
    corpus BLEU is a function of their sums, so a bootstrap over pairs resamples these
    (`bleu_from_statistics`)."""
    matches = np.zeros(max_order)
    totals = np.zeros(max_order)
    for n in range(1, max_order + 1):
        h, r = ngrams(hypothesis, n), ngrams(reference, n)
        matches[n - 1] = sum(min(c, r[g]) for g, c in h.items())
        totals[n - 1] = max(len(hypothesis) - n + 1, 0)
    return matches, totals, np.float64(len(hypothesis)), np.float64(len(reference))


def bleu_from_statistics(matches: np.ndarray, totals: np.ndarray, hyp_length: np.ndarray,
                         ref_length: np.ndarray) -> np.ndarray:
    """Corpus BLEU of summed statistics, vectorized over leading axes: matches / totals
    [..., N], lengths [...] (the same definition as `bleu`)."""
    matches, totals = np.asarray(matches, np.float64), np.asarray(totals, np.float64)
    hyp_length, ref_length = np.asarray(hyp_length, np.float64), np.asarray(ref_length, np.float64)
    order = matches.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.log(np.maximum(matches, BLEU_EPSILON) / totals).sum(-1) / order
        penalty = np.where(hyp_length >= ref_length, 1.0, np.exp(1.0 - ref_length / np.maximum(hyp_length, 1e-12)))
        value = penalty * np.exp(log_p)
    return np.where((hyp_length > 0) & np.all(totals > 0, axis=-1), value, 0.0)
