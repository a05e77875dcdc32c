"""Evaluation on held-out prompts, through the same rollout path as training.

The first ``num_prompts`` tasks of the evaluation split are played in order, sampled with
a fixed seed (so evaluations before and after training see the same prompts and the same
random stream), and the KL to the reference policy is reported next to the reward.

Example:
    >>> evaluator = Evaluator("rlm/Sentiment-v0", reward=None, heldout=None, num_prompts=64,
    ...                       batch_size=32, generation=GenerationSettings(20),
    ...                       prompt_format=PlainFormat(), seed=10_001)  # doctest: +SKIP
    >>> metrics, rows = evaluator(actor_critic, tokenizer)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlm.diagnostics import perplexity, text_diagnostics
from rlm.env import TextVectorEnv, make_text_vector_env
from rlm.policy import ActorCritic
from rlm.rewards import RewardFunction, reward_components, reward_name, score_batch
from rlm.rollout import (
    Episodes,
    GenerationSettings,
    PromptFormat,
    collect_episodes,
    score_episodes,
)

logger = logging.getLogger(__name__)


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))


def heldout_scores(reward: RewardFunction, episodes: Episodes, *, env_id: str) -> list[float]:
    """Score each episode's final completion with a reward it was not trained on.

    The reward sees the episode's first prompt, its last completion and the columns of its
    last info, as an environment's reward would for a single-turn task. Used to watch
    over-optimisation: the trained reward rising while a held-out one stalls or falls.
    """
    keys = sorted({k for info in episodes.infos for k in info if not k.startswith("reward/")})
    columns = {k: [info.get(k) for info in episodes.infos] for k in keys}
    finals = [turns[-1] if turns else "" for turns in episodes.completions]
    return score_batch(reward, episodes.prompts, finals, columns, env_id=env_id)


class Evaluator:
    """Held-out evaluation of a policy: the same prompts, the same seed, every time.

    Plays the first ``num_prompts`` tasks of ``env_id``'s eval split (all of them, if the
    split has fewer), in batches of at most ``batch_size``, scores them with ``reward`` (the
    environment's own when None) and, when given, with ``heldout``.

    Args:
        env_id: the registered environment.
        reward: the reward replacing the environment's (``--reward``), or None.
        heldout: a reward scored on the same samples and never trained on, or None.
        num_prompts: prompts per evaluation (the split's size at most).
        batch_size: prompts generated at once, at most.
        generation: sampling settings.
        prompt_format: how observations become the policy's text.
        seed: the sampling seed (:func:`rlm.settings.eval_seed`).
    """

    def __init__(
        self,
        env_id: str,
        *,
        reward: RewardFunction | None,
        heldout: RewardFunction | None,
        num_prompts: int,
        batch_size: int,
        generation: GenerationSettings,
        prompt_format: PromptFormat,
        seed: int,
    ) -> None:
        self.env_id = env_id
        self.reward = reward
        self.heldout = heldout
        self.generation = generation
        self.prompt_format = prompt_format
        self.seed = seed
        self._envs: dict[int, TextVectorEnv] = {}
        available = len(self._vector_env(1).envs[0].tasks)
        self.num_prompts = min(num_prompts, available)
        self.batch_size = min(batch_size, self.num_prompts)
        if num_prompts > available:
            logger.warning(
                "%s: the eval split has %d prompts; evaluating all of them (not %d)",
                env_id, available, num_prompts,
            )  # fmt: skip

    def _vector_env(self, size: int) -> TextVectorEnv:
        if size not in self._envs:
            envs = make_text_vector_env(self.env_id, size, split="eval")
            if self.reward is not None:
                envs.set_reward(self.reward)
            self._envs[size] = envs
        return self._envs[size]

    @torch.no_grad()
    def __call__(
        self,
        model: ActorCritic,
        tokenizer: PreTrainedTokenizerBase,
        *,
        show_progress: bool = True,
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Mean reward, its standard error, KL, length and the diagnostics of
        :mod:`rlm.diagnostics` over the prompts, and sample rows (every prompt's).

        Reward components, where the reward reports them, appear as ``eval/reward/<name>``;
        the held-out reward as ``eval/heldout_reward_mean`` (and ``eval/heldout/<name>``).
        """
        device = next(model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        rewards: list[float] = []
        kls: list[float] = []
        lengths: list[float] = []
        completions: list[str] = []
        cut: list[bool] = []
        ref_logprob_sum = entropy_sum = 0.0
        rows: list[dict[str, Any]] = []
        component_sums: dict[str, float] = {}
        heldout: list[float] = []
        # A private RNG stream: the same samples for the same policy, training RNG untouched.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            batches = range(0, self.num_prompts, self.batch_size)
            for lo in tqdm(batches, desc="eval", leave=False, disable=not show_progress):
                indices = list(range(lo, min(lo + self.batch_size, self.num_prompts)))
                envs = self._vector_env(len(indices))
                episodes = collect_episodes(
                    model, tokenizer, envs, generation=self.generation,
                    prompt_format=self.prompt_format, seed=self.seed + lo,
                    options={"index": indices},
                )  # fmt: skip
                scored = score_episodes(
                    model, episodes, micro_batch_size=len(indices),
                    temperature=self.generation.temperature,
                )  # fmt: skip
                kls += scored.sequence_kl.tolist()
                ref_logprob_sum += float(scored.ref_logprobs.sum())
                entropy_sum += float(scored.entropy.sum())
                completions += [text for turns in episodes.completions for text in turns]
                cut += [c for turns in episodes.cut for c in turns]
                rewards += episodes.returns.tolist()
                lengths += episodes.completion_lengths.tolist()
                rows += episodes.sample_rows()
                if self.heldout is not None:
                    scores = heldout_scores(self.heldout, episodes, env_id=self.env_id)
                    heldout += scores
                    for row, score in zip(rows[-len(scores) :], scores, strict=True):
                        row[f"heldout_{reward_name(self.heldout)}"] = score
                    for name, values in reward_components(self.heldout, len(scores)).items():
                        key = f"heldout/{name}"
                        component_sums[key] = component_sums.get(key, 0.0) + sum(values)
                for parts in episodes.reward_components:
                    for key, value in parts.items():
                        component_sums[key] = component_sums.get(key, 0.0) + value
        n = len(rewards)
        mean, std = mean_and_std(rewards)
        metrics = {
            "eval/reward_mean": mean,
            "eval/reward_std": std,
            "eval/reward_sem": std / math.sqrt(n),
            "eval/kl": sum(kls) / n,
            "eval/kl_per_token": sum(kls) / max(sum(lengths), 1),
            "eval/completion_length": sum(lengths) / n,
            "eval/cut_share": sum(cut) / len(cut),
            "eval/ref_perplexity": perplexity(
                sum_logprob=ref_logprob_sum, tokens=int(sum(lengths))
            ),
            "eval/entropy": entropy_sum / max(sum(lengths), 1),
            **text_diagnostics(completions),
        }
        if heldout:
            mean, std = mean_and_std(heldout)
            metrics.update({"eval/heldout_reward_mean": mean, "eval/heldout_reward_std": std})
        metrics.update({f"eval/{key}": total / n for key, total in sorted(component_sums.items())})
        return metrics, rows
