"""The token-level view of a text environment: one token per step, for stable-baselines3.

:class:`TokenEnv` wraps a :class:`rlm.env.TextEnv` and a tokenizer. Each step appends one
token (the action, an id in ``Discrete(vocabulary size)``) to the context; a turn ends at an
end-of-sequence token or after ``max_new_tokens``, when the decoded completion goes
through the text environment's ``step`` and its reward is returned. Every other step's
reward is 0. An episode that runs out of turns ends as ``terminated``
(``info["turn_limit"]``): nothing follows it, so SB3 must not bootstrap it as a time
limit. In multi-turn tasks the environment's reply is appended to the context (in the
run's prompt format, as the sequence-level rollout does) and the next turn begins.

The observation is a ``Dict`` of two fixed-length ``Box`` arrays, the context's token ids
and its attention mask, left-padded to ``max_length`` (a longer context keeps its last
``max_length`` tokens; ``info["context_cut"]`` says so). SB3 and sb3-contrib train it
with :mod:`rlm.token_policy`; the per-token KL penalty against the reference, when
wanted, is added on the training side (:mod:`rlm.sb3_learner`), since it needs the
policy's log-probs.

For NLPO-style masked PPO, ``action_masks()`` returns the tokens an ``action_masker`` (a
callable on the observation) allows: sb3-contrib's ``MaskablePPO`` asks every
environment for it before each step.

Example:
    >>> env = make_token_env("rlm/Sentiment-v0", tokenizer, max_new_tokens=20)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs["input_ids"].shape  # doctest: +SKIP
    (256,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from rlm.env import TextEnv
from rlm.errors import ConfigError
from rlm.rollout import (
    PromptFormat,
    encode_context,
    eos_token_ids,
    make_prompt_format,
    resolve_prompt_format,
)

TokenObservation = dict[str, np.ndarray]
ActionMasker = Callable[[TokenObservation], np.ndarray]
"""Boolean mask over the vocabulary (True: allowed) for an observation."""

DEFAULT_MAX_LENGTH = 256
"""Context tokens an observation holds: the prompt, the completions and the replies."""


class TokenEnv(gym.Env[TokenObservation, np.int64]):
    """A text environment as a token-by-token MDP (observation: the context's token ids).

    Args:
        text_env: the text environment (its reward is the one training sees).
        tokenizer: the policy's tokenizer.
        max_new_tokens: tokens per turn at most (the turn ends earlier at end-of-sequence).
        max_length: context tokens in an observation (left-padded; longer: the last ones).
        prompt_format: the run's prompt format (plain text or the chat template).
        vocab_size: actions (default: the tokenizer's length; a model whose embedding is
            padded past it passes its own size).
        eos_ids: ids that end a turn (default: the tokenizer's end-of-sequence token).
        action_masker: for ``action_masks()`` (masked PPO); default: every token allowed.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        text_env: TextEnv,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 20,
        max_length: int = DEFAULT_MAX_LENGTH,
        prompt_format: PromptFormat | None = None,
        vocab_size: int | None = None,
        eos_ids: set[int] | None = None,
        action_masker: ActionMasker | None = None,
    ) -> None:
        if max_new_tokens < 1 or max_length < 2:
            raise ConfigError(
                f"max_new_tokens must be at least 1 and max_length at least 2, got "
                f"{max_new_tokens} and {max_length}"
            )
        self.text_env = text_env
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_length = max_length
        self.prompt_format = prompt_format or make_prompt_format("plain", tokenizer)
        self.vocab_size = vocab_size or len(tokenizer)
        self.eos_ids = eos_ids if eos_ids is not None else eos_token_ids(tokenizer)
        if not self.eos_ids:
            raise ConfigError("the tokenizer has no end-of-sequence token: pass eos_ids")
        self.action_masker = action_masker
        self.render_mode = text_env.render_mode
        ids = spaces.Box(0, self.vocab_size - 1, shape=(max_length,), dtype=np.int64)
        mask = spaces.Box(0, 1, shape=(max_length,), dtype=np.int64)
        self.observation_space = spaces.Dict({"input_ids": ids, "attention_mask": mask})  # type: ignore[assignment]
        self.action_space = spaces.Discrete(self.vocab_size)
        self._context: list[int] = []
        self._completion: list[int] = []
        self._started = False

    @property
    def env_id(self) -> str:
        return self.text_env.env_id

    # --- the episode -----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[TokenObservation, dict[str, Any]]:
        super().reset(seed=seed)
        text, info = self.text_env.reset(seed=seed, options=options)
        self._context = self._encode(self.prompt_format.first(text), first=True)
        self._completion = []
        self._started = True
        return self._observation(), self._info(info)

    def step(
        self, action: int | np.integer
    ) -> tuple[TokenObservation, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        token = int(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"action {token} is not a token id in [0, {self.vocab_size})")
        self._context.append(token)
        self._completion.append(token)
        ended = token in self.eos_ids
        if not ended and len(self._completion) < self.max_new_tokens:
            return self._observation(), 0.0, False, False, self._info({})
        # The turn is over: the text environment scores the completion.
        completion = str(self.tokenizer.decode(self._completion, skip_special_tokens=True))
        reply, reward, terminated, truncated, info = self.text_env.step(completion)
        info = {**info, "completion": completion, "completion_tokens": len(self._completion),
                "cut": not ended}  # fmt: skip
        self._completion = []
        # Running out of turns ends the game: nothing comes after it. Reported as a plain
        # end, since SB3 would bootstrap a truncation with the critic's value (a time
        # limit's reading), which rlm's sequence-level rollout does not do either.
        info["turn_limit"] = truncated
        terminated, truncated = terminated or truncated, False
        if terminated:
            self._started = False
        else:
            self._context += self._encode(self.prompt_format.followup(reply, ended), first=False)
        return self._observation(), float(reward), terminated, truncated, self._info(info)

    def action_masks(self) -> np.ndarray:
        """The tokens allowed next (sb3-contrib's ``MaskablePPO`` asks before each step)."""
        if self.action_masker is None:
            return np.ones(self.vocab_size, dtype=bool)
        # (A model whose embedding is padded past the vocabulary masks more ids than it has.)
        return np.asarray(self.action_masker(self._observation()), dtype=bool)[: self.vocab_size]

    def render(self) -> str | None:
        return self.text_env.render()

    def close(self) -> None:
        self.text_env.close()

    # --- helpers ---------------------------------------------------------------------

    @property
    def context_ids(self) -> list[int]:
        """Every token of the episode so far: prompt, completions, replies."""
        return list(self._context)

    def _encode(self, text: str, first: bool) -> list[int]:
        return encode_context(self.tokenizer, self.prompt_format, text, first=first)

    def _observation(self) -> TokenObservation:
        kept = self._context[-self.max_length :]
        pad = self.max_length - len(kept)
        pad_id = self.tokenizer.pad_token_id or 0
        return {
            "input_ids": np.array([pad_id] * pad + kept, dtype=np.int64),
            "attention_mask": np.array([0] * pad + [1] * len(kept), dtype=np.int64),
        }

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "context_cut": len(self._context) > self.max_length}


def make_token_env(
    env: str | TextEnv,
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_format: Literal["auto", "plain", "chat"] = "auto",
    **kwargs: Any,
) -> TokenEnv:
    """The token view of a registered text environment (an id, made with ``split`` and the
    other keyword arguments ``gymnasium.make`` takes) or of a :class:`TextEnv` instance.

    ``prompt_format`` resolves as the experiments' ``--prompt-format`` does: ``auto`` is the
    chat template for conversational tasks when the tokenizer has one.
    """
    token_keys = {"max_new_tokens", "max_length", "vocab_size", "eos_ids", "action_masker"}
    token_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in token_keys}
    if isinstance(env, str):
        made = gym.make(env, **kwargs).unwrapped
        if not isinstance(made, TextEnv):
            raise ConfigError(f"{env!r} is not a text environment (rlm.env.TextEnv)")
        env = made
    elif kwargs:
        raise TypeError(f"unexpected arguments for an environment instance: {sorted(kwargs)}")
    kind = resolve_prompt_format(prompt_format, tokenizer, conversational=env.conversational)
    return TokenEnv(
        env, tokenizer, prompt_format=make_prompt_format(kind, tokenizer), **token_kwargs
    )
