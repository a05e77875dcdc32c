"""What samples a turn's completions for the rollout: the policy's own ``generate``, or an
inference engine (:mod:`rlm.vllm_engine`).

A sampler takes the token ids of the episodes' contexts and returns, for each, the ids it
sampled after it, cut or not at an end-of-text. Everything else, from trimming at the
first end-of-text to the log-probs the losses use (recomputed by the training model in
:func:`rlm.rollout.score_episodes`), is the rollout's, so every sampler yields the same
kind of episodes.

Example:
    >>> sampler = HFSampler(actor_critic.policy)  # doctest: +SKIP
    >>> sampler.sample([[1, 2, 3]], GenerationSettings(8), eos_ids={2}, pad_id=0)  # doctest: +SKIP
    [[17, 5, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from peft import PeftModel
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlm.errors import DivergedError

if TYPE_CHECKING:
    from rlm.rollout import GenerationSettings


class Sampler(Protocol):
    """Samples completions of token-id contexts (one completion each)."""

    def sample(
        self,
        contexts: list[list[int]],
        generation: GenerationSettings,
        *,
        eos_ids: set[int],
        pad_id: int,
    ) -> list[list[int]]:
        """The ids sampled after each context: at most ``generation.max_new_tokens``,
        possibly followed by padding after an end-of-text."""
        ...

    def policy_updated(self) -> None:
        """The policy's weights changed (an update, a checkpoint loaded)."""
        ...

    def sync(self, policy: PreTrainedModel | PeftModel) -> None:
        """Make the weights it samples with the policy's (before a rollout; every process)."""
        ...


def padded(rows: Sequence[list[int]], value: int, *, left: bool) -> torch.Tensor:
    """``rows`` as one tensor, padded with ``value`` on the left or on the right."""
    width = max(len(r) for r in rows)
    return torch.tensor(
        [([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r)))
         for r in rows],
        dtype=torch.long,
    )  # fmt: skip


def left_padded_batch(
    contexts: Sequence[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id contexts as ``generate`` takes them: the ids left-padded with ``pad_id``
    and the attention mask (0 on the padding)."""
    mask = padded([[1] * len(c) for c in contexts], 0, left=True)
    return padded(contexts, pad_id, left=True), mask


def trim_completion(ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Sampled ids cut after the first end-of-text (kept: stopping is an action too), and
    whether there was one."""
    for n, token in enumerate(ids):
        if token in eos_ids:
            return ids[: n + 1], True
    return ids, False


def draw(logits: torch.Tensor) -> torch.Tensor:
    """One token per row of ``logits`` ``[rows, vocab]``, drawn from their softmax by
    inverting its cumulative distribution (``-inf`` logits are never drawn).

    ``torch.multinomial`` (what transformers' sampling calls) draws an exponential for
    every vocabulary entry: 15-16 ms for 16 rows of SmolLM2's 49,152 entries on one CPU
    thread, 12% of a rollout's generation. This takes one uniform number per row, 1.1 ms.
    The cumulative sums run in float64, so that a token's share of [0, total) is its
    probability as exactly as float32 logits give it.

    Example:
        >>> draw(torch.tensor([[0.0, -float("inf")], [-float("inf"), 5.0]])).tolist()
        [0, 1]
    """
    weights = (logits - logits.amax(-1, keepdim=True)).exp_()
    cumulative = weights.double().cumsum_(-1)
    total = cumulative[:, -1:]
    if not bool((total.isfinite() & (total > 0)).all()):
        raise DivergedError(
            "the policy's next-token probabilities are not finite (NaN or infinite "
            "logits): its weights have diverged; start again with a lower --lr"
        )
    # The first entry whose cumulative weight exceeds u x total: u in [0, 1), so some does.
    uniform = torch.rand(total.shape, dtype=total.dtype, device=total.device) * total
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(-1)


class SampleFromLogits(LogitsProcessor):
    """Samples the next token as configured (temperature, top-k, top-p: transformers' own
    warpers, in ``generate``'s order) with :func:`draw`, and returns logits that put all
    of the probability on it.

    transformers' ``generate`` has no hook for its draw, so the sampler runs it greedily
    (its ``argmax`` then picks the drawn token) with this processor last. ``history``,
    when a list, receives the logits each token was drawn from (after the warpers).
    """

    def __init__(self, generation: GenerationSettings, history: list[torch.Tensor] | None = None):
        warpers: list[LogitsProcessor] = []
        if generation.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(generation.temperature))
        if generation.top_k:
            warpers.append(TopKLogitsWarper(generation.top_k))
        if generation.top_p < 1.0:
            warpers.append(TopPLogitsWarper(generation.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.history = history

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        warped = self.warpers(input_ids, scores.float())
        if self.history is not None:
            self.history.append(warped.clone())
        tokens = draw(warped)
        chosen = torch.full_like(warped, -float("inf"))
        return chosen.scatter_(1, tokens[:, None], 0.0)


class HFSampler:
    """transformers' ``generate`` on the policy itself, batched, with the KV cache."""

    def __init__(self, policy: PreTrainedModel | PeftModel) -> None:
        self.policy = policy

    def policy_updated(self) -> None:
        """Nothing to do: it samples with the policy itself."""

    def sync(self, policy: PreTrainedModel | PeftModel) -> None:
        """Nothing to do: it samples with the policy itself."""

    @torch.no_grad()
    def sample(
        self,
        contexts: list[list[int]],
        generation: GenerationSettings,
        *,
        eos_ids: set[int],
        pad_id: int,
    ) -> list[list[int]]:
        device = next(self.policy.parameters()).device
        input_ids, attention_mask = (t.to(device) for t in left_padded_batch(contexts, pad_id))
        # Greedy over logits SampleFromLogits has already sampled from: a sampled token.
        output = self.policy.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=generation.max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([SampleFromLogits(generation)]),
            pad_token_id=pad_id,
            eos_token_id=sorted(eos_ids),
            use_cache=True,
        )
        return output[:, input_ids.shape[1] :].tolist()
