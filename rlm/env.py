"""Text environments: Gymnasium envs whose observations and actions are strings.

An episode starts from a *task* (a prompt and its metadata). The policy answers with a
completion (the action); the environment scores it with a batched reward function and,
in multi-turn tasks, answers with new text (the next observation) until the task ends.

A step is split in three so that a vector of environments can score all completions of a
step in one batched reward call (see :class:`TextVectorEnv`):

1. :meth:`TextEnv.begin_step` checks the action and records what is to be scored;
2. :meth:`TextEnv.score` calls the reward function once on a batch of those;
3. :meth:`TextEnv.end_step` advances the episode: the environment's reply, termination.

A single-turn task needs only tasks and a reward; a multi-turn task also overrides
:meth:`TextEnv.respond`. :func:`select_split` picks a split's data with a clear error for
an unknown split name.

Vector forms: ``gymnasium.make_vec(id, num_envs=N)`` builds a :class:`TextVectorEnv` (one
process, one batched reward call a step); ``vectorization_mode="async"`` runs each env in
its own subprocess (Gymnasium's ``AsyncVectorEnv``), for rewards that are CPU-heavy Python.
Text observations cross processes through shared memory that holds any string (see
:class:`rlm.spaces.SharedTexts`).

Example:
    >>> def reward(prompts, completions, **info):
    ...     return [float("!" in c) for c in completions]
    >>> env = TextEnv([{"prompt": "Say hi"}], reward)
    >>> obs, info = env.reset(seed=0)
    >>> env.step("hi!")[1]
    1.0
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlm.errors import ConfigError, UnknownEnvironmentError
from rlm.rewards import RewardFunction, reward_components, score_batch
from rlm.spaces import TextSpace

MAX_TEXT_LENGTH = 100_000
"""Characters an observation or action may have; long enough never to bind in practice."""

SPLITS = ("train", "eval")
"""The split names every environment takes."""

T = TypeVar("T")


def select_split(split: str, **splits: T) -> T:
    """The data of ``split`` among ``splits``, or a :class:`ConfigError` naming the valid ones.

    Example:
        >>> select_split("eval", train=["cats", "rain"], eval=["maps"])
        ['maps']
    """
    if split not in splits:
        raise ConfigError(f"split must be one of {sorted(splits)}, got {split!r}")
    return splits[split]


@dataclass
class PendingStep:
    """A completion waiting to be scored: what the reward function receives for it."""

    prompt: str
    completion: str
    info: dict[str, Any] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)
    """Filled by :meth:`TextEnv.score` for rewards that report components."""


class TextEnv(gym.Env[str, str]):
    """A text task as a Gymnasium environment.

    Args:
        tasks: the prompts of this split, each a mapping with a ``"prompt"`` string; every
            other key is metadata, returned in ``info`` and passed to the reward function.
        reward_fn: batched reward ``(prompts, completions, **info) -> list[float]``.
        max_turns: turns after which a multi-turn episode is truncated.
        render_mode: ``"ansi"`` returns the transcript as a string.
    """

    # Text is rendered once per step; the fps is declared only because the checker asks.
    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}
    reward_range: tuple[float, float] = (-float("inf"), float("inf"))
    """Bounds of one step's reward, as documented by the task."""

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any]],
        reward_fn: RewardFunction,
        *,
        max_turns: int = 1,
        render_mode: str | None = None,
    ) -> None:
        if len(tasks) == 0:
            raise ConfigError(f"{type(self).__name__} got no tasks: give at least one prompt")
        if max_turns < 1:
            raise ConfigError(f"max_turns must be at least 1, got {max_turns}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.tasks = tasks
        self.reward_fn = reward_fn
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.observation_space = TextSpace(MAX_TEXT_LENGTH)
        self.action_space = TextSpace(MAX_TEXT_LENGTH)
        self._task_index: int | None = None
        self._observation = ""
        self._turn = 0
        self._done = True
        self._transcript: list[tuple[str, str]] = []

    # --- the episode -----------------------------------------------------------------

    @property
    def env_id(self) -> str:
        """The registered id, or the class name for an unregistered instance."""
        return self.spec.id if self.spec is not None else type(self).__name__

    @property
    def task(self) -> Mapping[str, Any]:
        if self._task_index is None:
            raise gym.error.ResetNeeded("call reset() before using the environment")
        return self.tasks[self._task_index]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode on a task drawn with the env's RNG, or ``options["index"]``."""
        super().reset(seed=seed)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(len(self.tasks)))
        elif not 0 <= int(index) < len(self.tasks):
            raise IndexError(f"task index {index} out of range for {len(self.tasks)} tasks")
        self._task_index = int(index)
        self._observation = str(self.task["prompt"])
        self._turn = 0
        self._done = False
        self._transcript = [("env", self._observation)]
        return self._observation, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        pending = self.begin_step(action)
        (reward,) = self.score([pending])
        return self.end_step(pending, reward)

    def begin_step(self, action: str) -> PendingStep:
        """Check ``action`` and return what the reward function will score.

        Raises:
            ResetNeeded: no episode is running (never reset, or it ended).
            TypeError: ``action`` is not a string.
            ValueError: ``action`` is longer than :data:`MAX_TEXT_LENGTH` characters.
        """
        if self._task_index is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._done:
            raise gym.error.ResetNeeded("the episode has ended: call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"an action is the completion text (str), got {type(action).__name__}")
        if len(action) > MAX_TEXT_LENGTH:
            raise ValueError(
                f"an action has at most {MAX_TEXT_LENGTH} characters, got {len(action)}; "
                "shorten the completion (fewer new tokens)"
            )
        return PendingStep(self._observation, action, self._info())

    def score(self, pending: Sequence[PendingStep]) -> list[float]:
        """Score a batch of completions with one call of the reward function.

        The reward's components, if it reports any, are kept on each pending step.
        """
        columns = {key: [p.info.get(key) for p in pending] for key in pending[0].info}
        scores = score_batch(
            self.reward_fn, [p.prompt for p in pending], [p.completion for p in pending],
            columns, env_id=self.env_id,
        )  # fmt: skip
        for name, parts in reward_components(self.reward_fn, len(pending)).items():
            for step, part in zip(pending, parts, strict=True):
                step.components[name] = part
        return scores

    def end_step(
        self, pending: PendingStep, reward: float
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Advance the episode after ``pending`` was scored ``reward``."""
        self._turn += 1
        self._transcript.append(("policy", pending.completion))
        reply, finished = self.respond(pending.completion)
        truncated = not finished and self._turn >= self.max_turns
        self._done = finished or truncated
        self._observation = reply
        if reply:
            self._transcript.append(("env", reply))
        info = self._info()
        info.update({f"reward/{name}": value for name, value in pending.components.items()})
        return reply, float(reward), finished, truncated, info

    def respond(self, completion: str) -> tuple[str, bool]:
        """The environment's answer to a completion, and whether the task is finished.

        Single-turn tasks end after one completion; multi-turn tasks override this.
        """
        return "", True

    instruction: bool = False
    """True when prompts are instructions to answer rather than text to continue."""

    @property
    def multi_turn(self) -> bool:
        """Whether the task can answer a completion with more text (it overrides ``respond``)."""
        return self.max_turns > 1 or type(self).respond is not TextEnv.respond

    @property
    def conversational(self) -> bool:
        """Whether the task reads as a conversation (an instruction, or several turns): the
        default prompt format (``auto``) then uses the tokenizer's chat template."""
        return self.instruction or self.multi_turn

    def example_action(self) -> str | None:
        """A completion that should earn a high reward in the current state, or ``None``.

        Used by checks (``rlm check-env``) to see that the reward is not constant; tasks
        with a known answer (a secret, a reference) return it.
        """
        return None

    def task_key(self, task: Mapping[str, Any]) -> Hashable:
        """What identifies a task, for checking that splits are disjoint: its prompt.

        Tasks whose prompt does not identify them (a hidden secret) override this.
        """
        return " ".join(str(task["prompt"]).casefold().split())

    def _info(self) -> dict[str, Any]:
        info = {k: v for k, v in self.task.items() if k != "prompt"}
        info.update(task_index=self._task_index, turn=self._turn)
        return info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{who}] {text}" for who, text in self._transcript)


class TextVectorEnv(VectorEnv):
    """Several :class:`TextEnv` in one process, scoring each step with one reward call.

    Created by ``gymnasium.make_vec(id, num_envs=N)`` for ids registered with
    :func:`register_text_env`. Episodes that ended are reset on the next step (Gymnasium's
    next-step autoreset); their action is ignored and their reward is 0.

    ``reset(options={"index": [i0, i1, ...]})`` starts each env on a given task, as
    evaluation over a fixed list of prompts does. An action of ``None`` leaves that env
    untouched for the step (reward 0): a rollout passes it for episodes that already ended,
    so that nothing is scored in their place.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, entry_point: str | Callable[..., TextEnv], num_envs: int, **kwargs: Any):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        self.envs: list[TextEnv] = []
        for _ in range(num_envs):
            env = creator(**kwargs)
            if not isinstance(env, TextEnv):
                raise TypeError(f"{entry_point} made a {type(env).__name__}, not a TextEnv")
            self.envs.append(env)
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:  # type: ignore[override]
        return self._spec

    @spec.setter
    def spec(self, value: gym.envs.registration.EnvSpec | None) -> None:
        # make_vec sets the spec after construction; sub-envs need the id for messages.
        self._spec = value
        for env in self.envs:
            env.spec = value

    _spec: gym.envs.registration.EnvSpec | None = None

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        if seed is None or isinstance(seed, int | np.integer):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} environments")
        indices = (options or {}).get("index")
        observations: list[str] = []
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            env_options = dict(options or {})
            if indices is not None:
                env_options["index"] = indices[i]
            obs, info = env.reset(seed=seeds[i], options=env_options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset[:] = False
        return tuple(observations), infos

    def step(
        self, actions: Sequence[str | None]
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} environments")
        observations = [""] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        live: list[tuple[int, str]] = [
            (i, action)
            for i, action in enumerate(actions)
            if not self._autoreset[i] and action is not None
        ]
        pending = [self.envs[i].begin_step(action) for i, action in live]
        scores = self.envs[0].score(pending) if pending else []
        for (i, _), step, score in zip(live, pending, scores, strict=True):
            obs, rewards[i], terminated[i], truncated[i], info = self.envs[i].end_step(step, score)
            observations[i] = obs
            infos = self._add_info(infos, info, i)
        for i in map(int, np.flatnonzero(self._autoreset)):
            observations[i], info = self.envs[i].reset()
            infos = self._add_info(infos, info, i)
        self._autoreset = terminated | truncated
        return tuple(observations), rewards, terminated, truncated, infos

    def set_reward(self, reward: RewardFunction) -> None:
        """Score every environment's completions with ``reward`` instead of its own."""
        for env in self.envs:
            env.reward_fn = reward

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def register_text_env(
    env_id: str, entry_point: str, *, kwargs: Mapping[str, Any] | None = None, **extra: Any
) -> None:
    """Register a :class:`TextEnv` subclass for ``gymnasium.make`` and ``gymnasium.make_vec``.

    ``make_vec`` then builds a :class:`TextVectorEnv` (one batched reward call a step).

    Example:
        >>> register_text_env("rlm/Demo-v0", "my_pkg.demo:DemoEnv")  # doctest: +SKIP
    """
    if "max_episode_steps" in extra:
        raise ValueError(
            "text environments bound episodes themselves: pass max_turns in kwargs "
            "instead of max_episode_steps"
        )
    gym.register(
        env_id,
        entry_point=entry_point,
        vector_entry_point=functools.partial(TextVectorEnv, entry_point),
        kwargs=dict(kwargs or {}),
        **extra,
    )


def registered_text_env_ids(namespace: str = "rlm") -> list[str]:
    """Ids registered under ``namespace``, sorted."""
    return sorted(i for i, spec in gym.registry.items() if spec.namespace == namespace)


def import_from_cwd(module: str) -> ModuleType:
    """Import ``module`` with the current directory searched too, as ``python -m`` would.

    A script run by its path has only its own folder on the import path; this puts the
    current directory there as well, so a user's ``my_envs.py`` or ``my_rewards.py`` next
    to where they run the command can be named.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    return importlib.import_module(module)


def check_env_id(env_id: str) -> str:
    """Return the registered id for ``env_id``, or raise :class:`UnknownEnvironmentError`.

    ``"module:rlm/Name-v0"`` imports ``module`` first (Gymnasium's convention), so an
    environment defined outside the project can be named from the command line. The current
    directory is searched too, as ``python -m`` would: a script run by its path has only its
    own folder on the import path.
    """
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        try:
            import_from_cwd(module)
        except ImportError as exc:
            raise UnknownEnvironmentError(
                f"could not import {module!r} to register {env_id!r}: {exc}"
            ) from None
    if env_id in gym.registry:
        return env_id
    known = ", ".join(registered_text_env_ids()) or "none (import envs to register them)"
    raise UnknownEnvironmentError(f"unknown environment {env_id!r}; registered: {known}")


def make_text_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> TextVectorEnv:
    """``gymnasium.make_vec`` for a text environment, checked to be a :class:`TextVectorEnv`.

    Raises:
        ConfigError: the id was registered without :func:`register_text_env`.
    """
    envs = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    if not isinstance(envs, TextVectorEnv):
        raise ConfigError(
            f"{env_id!r} is not a text environment: register it with "
            "rlm.env.register_text_env so that make_vec builds a TextVectorEnv"
        )
    return envs
