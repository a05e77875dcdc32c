"""Adapters from rlm text environments to TRL's ``GRPOTrainer`` and ``RLOOTrainer``.

Only TRL's public API is used: a training dataset, ``reward_funcs`` and (for multi-turn
tasks, ``GRPOTrainer`` only) ``rollout_func``.

Single-turn environments
    :func:`task_dataset` turns the environment's tasks into a ``datasets.Dataset`` (the
    prompt plus every metadata column, which TRL passes to reward functions as keyword
    arguments) and :class:`EnvReward` scores completions with the environment itself
    (:meth:`rlm.env.TextEnv.score`: the same checks and reward components as in PPO).

Multi-turn environments
    :class:`EnvRollout` is a ``rollout_func``: it plays the episodes with
    :func:`rlm.rollout.collect_episodes`, the one rollout path of every algorithm, and
    hands TRL the prompt tokens, the episode tokens and an ``env_mask`` (1 on the policy's
    tokens, 0 on the environment's replies, which are then left out of the loss).
    :class:`EpisodeReward` reads the episode's return back. A ``rollout_func`` receives the
    prompts only, not the other dataset columns, so the multi-turn dataset's ``prompt``
    column carries a task key (``"rlm-task:17"``) that names the task to play; the
    environment, not the dataset, owns the text.

Both reward adapters count the tokens the policy generated (:class:`TokenCounter`), the
x-axis on which algorithms are compared.

Example:
    >>> env = gymnasium.make("rlm/Sentiment-v0").unwrapped  # doctest: +SKIP
    >>> dataset = task_dataset(env)  # doctest: +SKIP
    >>> reward = EnvReward(env)  # doctest: +SKIP
    >>> trainer = GRPOTrainer(model, reward_funcs=reward, train_dataset=dataset)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from rlm.env import PendingStep, TextEnv, TextVectorEnv, make_text_vector_env
from rlm.errors import ConfigError
from rlm.policy import ActorCritic
from rlm.rewards import RewardFunction
from rlm.rollout import (
    Episodes,
    GenerationSettings,
    PromptFormat,
    collect_episodes,
    rollout_seed,
)

TASK_KEY_PREFIX = "rlm-task:"
"""Prefix of the task keys in a multi-turn dataset's ``prompt`` column."""
_TASK_KEY = re.compile(rf"^{re.escape(TASK_KEY_PREFIX)}(\d+)$")
# Keyword arguments TRL adds to every reward call; they are not the task's metadata.
_TRL_REWARD_KWARGS = frozenset(
    {"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)


def task_key(index: int) -> str:
    """The ``prompt`` of task ``index`` in a multi-turn dataset: ``"rlm-task:<index>"``."""
    return f"{TASK_KEY_PREFIX}{index}"


def parse_task_key(prompt: Any) -> int:
    """The task index in a key made by :func:`task_key`.

    Raises:
        ConfigError: ``prompt`` is not a task key (a dataset not made by :func:`task_dataset`).
    """
    match = _TASK_KEY.match(prompt) if isinstance(prompt, str) else None
    if match is None:
        raise ConfigError(
            f"a multi-turn rollout got the prompt {prompt!r}, not a task key like "
            f"{task_key(0)!r}: build the dataset with rlm.trl_adapters.task_dataset"
        )
    return int(match.group(1))


def task_dataset(
    env: TextEnv, *, prompt_format: Literal["plain", "chat"] = "plain", limit: int | None = None
) -> Dataset:
    """The environment's tasks as a TRL prompt dataset, one row per task.

    Single-turn: ``prompt`` is the task's text (or, with ``prompt_format="chat"``, a
    one-message conversation that TRL renders with the chat template), next to every
    metadata column and ``task_index``/``turn``, exactly the keyword arguments the
    environment's reward receives in PPO. Multi-turn: ``prompt`` is a task key for
    :class:`EnvRollout` (see the module's docstring), next to ``task_index``.

    Args:
        env: the environment (one split of it).
        prompt_format: how single-turn prompts reach the policy, as in PPO's ``--prompt-format``.
        limit: keep only the first ``limit`` tasks.
    """
    tasks = list(env.tasks)[:limit]
    if env.multi_turn:
        return Dataset.from_list(
            [{"prompt": task_key(i), "task_index": i} for i in range(len(tasks))]
        )
    rows = []
    for i, task in enumerate(tasks):
        text = str(task["prompt"])
        prompt: Any = [{"role": "user", "content": text}] if prompt_format == "chat" else text
        rows.append({**task, "prompt": prompt, "task_index": i, "turn": 0})
    return Dataset.from_list(rows)


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it (text, or a list of chat messages) as text."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


def prompt_text(prompt: Any) -> str:
    """A prompt as TRL passes it (text, or chat messages) as the environment's observation."""
    if isinstance(prompt, str):
        return prompt
    return str(prompt[-1].get("content") or "")


@dataclass
class TokenCounter:
    """Policy tokens generated for training so far (in this process)."""

    tokens: int = 0
    completions: int = 0

    def add(self, lengths: Sequence[int]) -> None:
        self.tokens += int(sum(lengths))
        self.completions += len(lengths)


def _log_components(log_metric: Callable[[str, float], None] | None, parts: dict) -> None:
    if log_metric is None:
        return
    for name, values in sorted(parts.items()):
        if values:
            log_metric(f"reward/{name}", sum(values) / len(values))


class EnvReward:
    """A single-turn environment's reward as a TRL reward function.

    Completions are scored by :meth:`rlm.env.TextEnv.score` (one batched call, the
    environment's checks), with the task's metadata columns as keyword arguments. Reward
    components are logged through TRL's ``log_metric`` as ``reward/<name>``; generated
    tokens are counted in ``counter``.

    Args:
        env: the training environment.
        counter: where generated tokens are counted (a new one by default).
    """

    def __init__(self, env: TextEnv, counter: TokenCounter | None = None) -> None:
        if env.multi_turn:
            raise ConfigError(
                f"{env.env_id} is multi-turn: train it through EnvRollout (GRPO's rollout_func) "
                "and EpisodeReward, not EnvReward"
            )
        self.env = env
        self.counter = counter if counter is not None else TokenCounter()
        # TRL names each reward function's metrics (rewards/<name>/mean) after __name__.
        self.__name__ = "env"

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:  # TRL's RewardFunc: None would mean 'no score'
        completion_ids = kwargs.get("completion_ids")
        if completion_ids is not None:
            self.counter.add([len(ids) for ids in completion_ids])
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_REWARD_KWARGS}
        pending = [
            PendingStep(
                prompt_text(prompt),
                completion_text(completion),
                {key: values[i] for key, values in columns.items()},
            )
            for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]
        scores: list[float | None] = list(self.env.score(pending))
        parts: dict[str, list[float]] = {}
        for step in pending:
            for name, value in step.components.items():
                parts.setdefault(name, []).append(value)
        _log_components(kwargs.get("log_metric"), parts)
        return scores


class EnvRollout:
    """GRPO's ``rollout_func``: a multi-turn environment played by rlm's rollout path.

    Each call receives this process's prompts (task keys, each repeated ``num_generations``
    times by TRL's sampler) and plays one episode per prompt on that task. It returns
    ``prompt_ids`` (the first observation's tokens), ``completion_ids`` (every turn's
    completion and the environment's replies, exactly as tokenized in the rollout),
    ``env_mask`` (1 on the policy's tokens, 0 on the environment's), ``logprobs`` (None:
    TRL uses sampling log-probs only to correct vLLM's sampler, and generation here is the
    policy's own) and ``episode_return``/``episode_components`` for :class:`EpisodeReward`.

    Args:
        env_id: the registered environment.
        tokenizer: the policy's tokenizer (left padding).
        prompt_format: how observations become the policy's text (plain or chat).
        split: the split whose task indices the dataset names.
        seed: base of the environments' seeds (each call adds the trainer's step).
        policy: the policy wrapped once for the rollout path; by default, the trainer's
            model is wrapped on the first call.
        counter: where generated tokens are counted.
        reward: a reward replacing the environment's (``--reward``); default: its own.
        envs: a vector environment to play in when a call brings as many prompts as it
            has environments (the runner's training environments); others are made.
    """

    def __init__(
        self,
        env_id: str,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: PromptFormat,
        *,
        split: str = "train",
        seed: int = 0,
        policy: ActorCritic | None = None,
        counter: TokenCounter | None = None,
        reward: RewardFunction | None = None,
        envs: TextVectorEnv | None = None,
    ) -> None:
        self.env_id = env_id
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.split = split
        self.seed = seed
        self.policy = policy
        self.counter = counter if counter is not None else TokenCounter()
        self.reward = reward
        self._envs: dict[int, TextVectorEnv] = {} if envs is None else {envs.num_envs: envs}
        self.__name__ = "env_rollout"

    def _vector_env(self, size: int) -> TextVectorEnv:
        if size not in self._envs:
            self._envs[size] = make_text_vector_env(self.env_id, size, split=self.split)
            if self.reward is not None:
                self._envs[size].set_reward(self.reward)
        return self._envs[size]

    def _actor(self, trainer: Any) -> ActorCritic:
        if self.policy is None:
            self.policy = ActorCritic(trainer.accelerator.unwrap_model(trainer.model))
        return self.policy

    def generation(self, trainer: Any) -> GenerationSettings:
        """Sampling settings read from the trainer's config, as TRL's own generation uses them."""
        args = trainer.args
        return GenerationSettings(
            max_new_tokens=int(args.max_completion_length),
            temperature=float(args.temperature),
            top_k=int(args.top_k or 0),
            top_p=float(args.top_p),
        )

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        indices = [parse_task_key(p) for p in prompts]
        envs = self._vector_env(len(indices))
        accelerator = trainer.accelerator
        seed = rollout_seed(
            self.seed, int(trainer.state.global_step), int(accelerator.process_index),
            int(accelerator.num_processes), len(indices),
        )  # fmt: skip
        episodes = collect_episodes(
            self._actor(trainer),
            self.tokenizer,
            envs,
            generation=self.generation(trainer),
            prompt_format=self.prompt_format,
            seed=seed,
            options={"index": indices},
        )
        output = episodes_to_rollout(episodes)
        self.counter.add([sum(mask) for mask in output["env_mask"]])
        return output


def episodes_to_rollout(episodes: Episodes) -> dict[str, Any]:
    """Unpadded token lists of a batch of episodes, in the shape TRL's ``rollout_func`` returns.

    ``prompt_ids`` drop the left padding, ``completion_ids`` and ``env_mask`` the right
    padding; ``env_mask`` is the rollout's ``action_mask``.
    """
    start = episodes.response_start
    prompt_ids, completion_ids, env_mask = [], [], []
    for i in range(len(episodes)):
        attention = episodes.attention_mask[i].bool()
        prompt = episodes.input_ids[i, :start][attention[:start]]
        width = int(attention[start:].sum())
        prompt_ids.append(prompt.tolist())
        completion_ids.append(episodes.input_ids[i, start : start + width].tolist())
        env_mask.append([int(m) for m in episodes.action_mask[i, :width].tolist()])
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
        "logprobs": None,
        "env_mask": env_mask,
        "episode_return": [float(r) for r in episodes.returns.tolist()],
        "episode_components": [dict(c) for c in episodes.reward_components],
    }


class EpisodeReward:
    """The return of each episode played by :class:`EnvRollout`, as a TRL reward function.

    Reward components (summed over each episode's turns) are logged as ``reward/<name>``.
    """

    __name__ = "env"

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:  # TRL's RewardFunc: None would mean 'no score'
        returns = kwargs.get("episode_return")
        if returns is None:
            raise ConfigError(
                "EpisodeReward needs the episodes of EnvRollout: pass rollout_func=EnvRollout(...) "
                "to GRPOTrainer"
            )
        parts: dict[str, list[float]] = {}
        for components in kwargs.get("episode_components") or []:
            for key, value in components.items():
                parts.setdefault(key.removeprefix("reward/"), []).append(float(value))
        _log_components(kwargs.get("log_metric"), parts)
        return [float(r) for r in returns]  # never None: every episode has a return
