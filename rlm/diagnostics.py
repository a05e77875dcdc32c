"""Over-optimisation diagnostics: small functions of an evaluation's texts and log-probs.

A policy that games its reward shows it in its samples before anyone reads them: it
repeats itself (low distinct-n, many repeated n-grams), its length drifts or hits the
token limit, its text becomes unlikely under the model it started from (perplexity under
the reference, KL), and a reward it was never trained on stops following the one it was
(the standardised train/held-out gap). Every evaluation logs these next to the reward
(:data:`DIAGNOSTICS`), and :mod:`rlm.alarms` watches them.

Words are lowercased runs of letters, digits and apostrophes, and single punctuation
marks, so that "Love, love!" is ``love , love !``.

Example:
    >>> distinct_n(["love love love", "a fine day"], 1)
    0.6666666666666666
    >>> repeated_ngram_share(["love love love love"], 2)
    0.6666666666666666
    >>> round(perplexity(sum_logprob=-2.0, tokens=2), 4)
    2.7183
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

_WORD = re.compile(r"[\w']+|[^\w\s]")

REPEAT_N = 3
"""Repeated n-grams are counted over this n: two repeated words ("very very") occur in
fluent text, a repeated three-word phrase within one short completion rarely does."""

DIAGNOSTICS: dict[str, str] = {
    "eval/distinct_1": "distinct words over all completions / words",
    "eval/distinct_2": "distinct word pairs over all completions / word pairs",
    f"eval/repeated_{REPEAT_N}gram_share": (
        f"share of each completion's word {REPEAT_N}-grams that repeat an earlier one in it"
    ),
    "eval/completion_length": "policy tokens per episode",
    "eval/cut_share": "share of completions cut at --max-new-tokens (no end-of-text)",
    "eval/ref_perplexity": "perplexity of the completions under the reference model",
    "eval/kl": "KL to the reference per episode (nats, sum over its tokens)",
    "eval/kl_per_token": "KL to the reference per policy token (nats)",
    "eval/entropy": "the policy's entropy per token (nats)",
    "eval/heldout_gap": (
        "training reward minus held-out reward, each standardised against its value before "
        "training (in standard deviations)"
    ),
}
"""Every diagnostic an evaluation logs, with what it measures."""


def words(text: str) -> list[str]:
    """The words and punctuation marks of ``text``, lowercased."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of ``tokens`` in order (none when there are fewer than ``n``)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct ``n``-grams over all ``texts`` divided by all their ``n``-grams (NaN if none).

    Computed over the whole set (as RL4LMs and the dialogue literature do): a policy that
    writes the same completion for every prompt scores low even if each one is varied.
    """
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repeated_ngram_share(texts: Iterable[str], n: int = REPEAT_N) -> float:
    """The share of ``n``-grams that repeat an earlier ``n``-gram of the same text, pooled
    over ``texts`` (NaN if they hold none): "a b a b" has 2-grams ab, ba, ab, one repeat."""
    repeats = total = 0
    for text in texts:
        grams = ngrams(words(text), n)
        repeats += len(grams) - len(set(grams))
        total += len(grams)
    return repeats / total if total else math.nan


def perplexity(*, sum_logprob: float, tokens: int) -> float:
    """``exp(-sum_logprob / tokens)``: the perplexity of ``tokens`` tokens whose log-probs
    (natural log) sum to ``sum_logprob`` (NaN for no tokens)."""
    return math.exp(-sum_logprob / tokens) if tokens else math.nan


def standardised_change(value: float, before: float, std_before: float) -> float:
    """How far ``value`` moved from ``before``, in standard deviations (over prompts)
    measured before training; NaN when that deviation is zero."""
    return (value - before) / std_before if std_before > 0 else math.nan


def heldout_gap(now: Mapping[str, float], before: Mapping[str, float]) -> float | None:
    """The training reward's standardised rise minus the held-out reward's, from two
    evaluations' metrics (None when they hold no held-out reward).

    Near 0, the held-out reward follows the trained one; a large positive gap means the
    policy gains on its reward in ways the held-out reward does not credit.
    """
    keys = ("eval/heldout_reward_mean", "eval/heldout_reward_std")
    if not all(k in now and k in before for k in keys):
        return None
    train = standardised_change(
        now["eval/reward_mean"], before["eval/reward_mean"], before["eval/reward_std"]
    )
    heldout = standardised_change(now[keys[0]], before[keys[0]], before[keys[1]])
    return train - heldout


def text_diagnostics(completions: Sequence[str]) -> dict[str, float]:
    """The diagnostics that need only the completions' text (see :data:`DIAGNOSTICS`)."""
    return {
        "eval/distinct_1": distinct_n(completions, 1),
        "eval/distinct_2": distinct_n(completions, 2),
        f"eval/repeated_{REPEAT_N}gram_share": repeated_ngram_share(completions),
    }
