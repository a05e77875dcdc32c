"""Evaluation on held-out prompts, through the same rollout path as training.

The first ``num_prompts`` tasks of the evaluation split are played in order, sampled with
a fixed seed (so evaluations before and after training see the same prompts and the same
random stream), and the KL to the reference policy is reported next to the reward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlm.env import TextVectorEnv
from rlm.errors import ConfigError
from rlm.policy import ActorCritic
from rlm.rewards import RewardFunction, check_rewards, reward_components, reward_name
from rlm.rollout import (
    Episodes,
    GenerationSettings,
    PromptFormat,
    collect_episodes,
    score_episodes,
)


def heldout_scores(reward: RewardFunction, episodes: Episodes) -> list[float]:
    """Score each episode's final completion with a reward it was not trained on.

    The reward sees the episode's first prompt, its last completion and the columns of its
    last info, as an environment's reward would for a single-turn task. Used to watch
    over-optimisation: the trained reward rising while a held-out one stalls or falls.
    """
    keys = sorted({k for info in episodes.infos for k in info if not k.startswith("reward/")})
    columns = {k: [info.get(k) for info in episodes.infos] for k in keys}
    finals = [turns[-1] if turns else "" for turns in episodes.completions]
    values = reward(episodes.prompts, finals, **columns)
    return check_rewards(values, len(episodes), env_id="held-out", reward=reward)


@torch.no_grad()
def evaluate(
    model: ActorCritic,
    tokenizer: PreTrainedTokenizerBase,
    envs: TextVectorEnv,
    *,
    num_prompts: int,
    generation: GenerationSettings,
    prompt_format: PromptFormat,
    seed: int,
    show_progress: bool = True,
    heldout_reward: RewardFunction | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean reward, its standard error, KL and length over held-out prompts, and sample rows.

    Reward components, where the reward reports them, appear as ``eval/reward/<name>``; a
    ``heldout_reward`` scores the same samples as ``eval/heldout_reward_mean`` (and
    ``eval/heldout/<name>`` for its components).

    ``num_prompts`` must be a multiple of ``envs.num_envs`` and at most the split's size.
    """
    available = len(envs.envs[0].tasks)
    if num_prompts > available:
        raise ConfigError(f"asked for {num_prompts} eval prompts, the eval split has {available}")
    if num_prompts % envs.num_envs:
        raise ConfigError(
            f"eval prompts ({num_prompts}) must be a multiple of the eval batch ({envs.num_envs})"
        )
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    rewards: list[float] = []
    kls: list[float] = []
    lengths: list[float] = []
    rows: list[dict[str, Any]] = []
    component_sums: dict[str, float] = {}
    heldout: list[float] = []
    # A private RNG stream: the same samples for the same policy, training RNG untouched.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        batches = range(0, num_prompts, envs.num_envs)
        for lo in tqdm(batches, desc="eval", leave=False, disable=not show_progress):
            indices = list(range(lo, lo + envs.num_envs))
            episodes = collect_episodes(
                model,
                tokenizer,
                envs,
                generation=generation,
                prompt_format=prompt_format,
                seed=seed + lo,
                options={"index": indices},
            )
            score_episodes(
                model, episodes, micro_batch_size=envs.num_envs, temperature=generation.temperature
            )
            assert episodes.logprobs is not None and episodes.ref_logprobs is not None
            mask = episodes.action_mask.to(episodes.logprobs.device)
            kls += ((episodes.logprobs - episodes.ref_logprobs) * mask).sum(1).tolist()
            rewards += episodes.returns.tolist()
            lengths += mask.sum(1).tolist()
            rows += episodes.sample_rows()
            if heldout_reward is not None:
                scores = heldout_scores(heldout_reward, episodes)
                heldout += scores
                for row, score in zip(rows[-len(scores) :], scores, strict=True):
                    row[f"heldout_{reward_name(heldout_reward)}"] = score
                for name, values in reward_components(heldout_reward, len(scores)).items():
                    key = f"heldout/{name}"
                    component_sums[key] = component_sums.get(key, 0.0) + sum(values)
            for parts in episodes.reward_components:
                for key, value in parts.items():
                    component_sums[key] = component_sums.get(key, 0.0) + value
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / max(n - 1, 1))
    metrics = {
        "eval/reward_mean": mean,
        "eval/reward_std": std,
        "eval/reward_sem": std / math.sqrt(n),
        "eval/kl": sum(kls) / n,
        "eval/completion_length": sum(lengths) / n,
    }
    if heldout:
        metrics["eval/heldout_reward_mean"] = sum(heldout) / n
    metrics.update({f"eval/{key}": total / n for key, total in sorted(component_sums.items())})
    return metrics, rows
