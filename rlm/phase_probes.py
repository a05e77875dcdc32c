"""rlm's default PPO configuration in this process, with a probe around each phase of a
step: the harness of the profiling scripts (``scripts/profile_memory.py``,
``scripts/profile_update.py``).

A probe wraps each call the learner makes (sampling, the environments' step, the scoring
passes without gradients, the advantages, the update) and sees it run: it can reset and
read the memory's high-water mark, run it under ``torch.profiler``, or count what
autograd saves. The learner's module is restored when the probes are removed.

Example:
    >>> run = default_ppo_run(ProfiledWork(batch_size=8), steps=1)  # doctest: +SKIP
    >>> with probed_phases(run, lambda phase, call: call):  # doctest: +SKIP
    ...     run.learner.step(run.envs, 0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import rlm.ppo_learner
from rlm.env import TextVectorEnv, make_text_vector_env
from rlm.models import load_causal_lm, resolve_model_path
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, PlainFormat

SAMPLING, REWARD = "generation", "reward (the environments' step)"
# The learner's own calls, by the name rlm.ppo_learner looks them up under.
LEARNER_PHASES = {
    "score_episodes": "forward without gradients",
    "compute_advantages": "advantages",
    "ppo_update": "update",
}

Probe = Callable[[str, Callable[..., Any]], Callable[..., Any]]
"""Given a phase's name and its call, the call to make instead."""


@dataclass
class ProfiledWork:
    """What a profiling script runs: the model, the task and a step's size (its flags)."""

    model: str = "default"
    """The policy: 'default', a local folder or a Hub id."""
    env_id: str = "rlm/Sentiment-v0"
    """The task whose training prompts are rolled out."""
    batch_size: int = 16
    """Episodes (prompts) sampled at once."""
    max_new_tokens: int = 32
    """Tokens per completion at most."""
    threads: int = 1
    """torch threads."""


@dataclass(frozen=True)
class PPORun:
    """A PPO learner of rlm's default configuration, its training environments and model."""

    learner: PPOLearner
    envs: TextVectorEnv
    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def default_ppo_run(work: ProfiledWork, *, steps: int) -> PPORun:
    """rlm's default PPO configuration (LoRA, a value head on the policy's trunk, 2 epochs
    of 2 minibatches) for ``work``, with ``work.threads`` torch threads, to run ``steps``
    steps; every weight read once, so that memory counts them."""
    torch.set_num_threads(work.threads)
    policy, tokenizer = load_causal_lm(resolve_model_path(work.model))
    learner = PPOLearner(
        ActorCritic(add_lora(policy, LoraSettings())), tokenizer, PPOSettings(),
        optimization=Optimization(lr=1e-3, total_steps=steps),
        generation=GenerationSettings(work.max_new_tokens), prompt_format=PlainFormat(),
        seed=1,
    )  # fmt: skip
    envs = make_text_vector_env(work.env_id, work.batch_size, split="train")
    envs.reset(seed=1)
    with torch.no_grad():  # mapped weight files count once they are read
        policy(torch.tensor([[tokenizer.eos_token_id]]))
    return PPORun(learner, envs, policy, tokenizer)


@contextlib.contextmanager
def probed_phases(run: PPORun, probe: Probe) -> Iterator[None]:
    """Within the block, every phase of ``run``'s steps goes through ``probe``."""

    sampler, envs = run.learner.sampler, run.envs
    originals = {name: getattr(rlm.ppo_learner, name) for name in LEARNER_PHASES}
    sampler.sample = probe(SAMPLING, sampler.sample)  # type: ignore[method-assign]
    envs.step = probe(REWARD, envs.step)  # type: ignore[method-assign]
    for name, phase in LEARNER_PHASES.items():
        setattr(rlm.ppo_learner, name, probe(phase, originals[name]))
    try:
        yield
    finally:  # as they were, for whatever runs next in this process
        del sampler.sample, envs.step  # the instances' own attributes: the methods show again
        for name, original in originals.items():
            setattr(rlm.ppo_learner, name, original)
