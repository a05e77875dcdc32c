"""The reward interface shared by every algorithm, and its checks.

A reward is any callable ``(prompts, completions, **info) -> list[float]``: batched, on
text, with extra per-sample columns as keyword arguments (lists the length of the batch).
That is the shape of TRL's reward functions, so the same object serves rlm's PPO and TRL's
trainers, whatever tokenizer (if any) it uses internally.

A reward made of parts (a weighted composite, say) reports them: after each call its
``last_components`` attribute maps a component name to that batch's values. Environments
put them in ``info`` as ``reward/<name>``, and the experiments log their means.

Example:
    >>> def length_reward(prompts, completions, **info):
    ...     return [min(len(c), 20) / 20 for c in completions]
    >>> check_rewards(length_reward(["a"], ["hello"]), 1, env_id="demo", reward=length_reward)
    [0.25]
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rlm.errors import RewardError

RewardFunction = Callable[..., Sequence[float]]
"""A batched reward on text: ``(prompts, completions, **info) -> list[float]``.

A plain ``Callable`` rather than a Protocol, so that a reward may name the info columns it
needs as keyword-only arguments (``def r(prompts, completions, *, secret, **info)``).
"""


def reward_name(reward: object) -> str:
    """A readable name for a reward callable, for messages and metric keys."""
    return getattr(reward, "__name__", None) or type(reward).__name__


def reward_components(reward: object, expected: int) -> dict[str, list[float]]:
    """The per-component values of the last call of ``reward`` (empty for a plain reward).

    Raises:
        RewardError: a component has the wrong number of values.
    """
    components = getattr(reward, "last_components", None) or {}
    for name, values in components.items():
        if len(values) != expected:
            raise RewardError(
                f"reward {reward_name(reward)!r} reported {len(values)} values of component "
                f"{name!r} for {expected} completions"
            )
    return {name: [float(v) for v in values] for name, values in components.items()}


def check_rewards(values: Any, expected: int, *, env_id: str, reward: object) -> list[float]:
    """Return ``values`` as floats, or raise :class:`RewardError` naming the env and reward.

    Raises:
        RewardError: wrong type or count, or a NaN or infinite value.
    """
    where = f"reward {reward_name(reward)!r} of environment {env_id!r}"
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise RewardError(
            f"{where} must return a list of numbers, got {type(values).__name__}: {exc}"
        ) from None
    if len(floats) != expected:
        raise RewardError(
            f"{where} returned {len(floats)} values for {expected} completions; "
            "return exactly one float per completion"
        )
    bad = [(i, v) for i, v in enumerate(floats) if not math.isfinite(v)]
    if bad:
        i, v = bad[0]
        raise RewardError(
            f"{where} returned {v} for completion {i} ({len(bad)} non-finite values); "
            "rewards must be finite floats"
        )
    return floats


class RewardFailed(RuntimeError):
    """A reward raised: the message names the environment and the reward, and the
    reward's own exception, with its traceback, is the cause (``__cause__``)."""


def score_batch(
    reward: RewardFunction,
    prompts: list[str],
    completions: list[str],
    columns: dict[str, list[Any]],
    *,
    env_id: str,
) -> list[float]:
    """One call of ``reward`` on a batch, checked (:func:`check_rewards`).

    Raises:
        RewardFailed: the reward raised (its exception chained, traceback kept).
        RewardError: it returned a wrong count or a non-finite value, or ran out of time
            (:class:`TimeLimitedReward`).
    """
    try:
        values = reward(prompts, completions, **columns)
    except RewardError:
        raise
    except Exception as exc:
        raise RewardFailed(
            f"reward {reward_name(reward)!r} of environment {env_id!r} raised "
            f"{type(exc).__name__}: {exc} (its traceback is above)"
        ) from exc
    return check_rewards(values, len(completions), env_id=env_id, reward=reward)


class TimeLimitedReward:
    """``reward``, stopped with a :class:`RewardError` when a call takes more than
    ``seconds`` (``--reward-timeout``): a hung reward-model server or a slow rule then ends
    the run with a message instead of stalling it for ever.

    The call runs on a daemon thread, which Python cannot stop: a hung call is abandoned,
    and the run exits with the error.

    Example:
        >>> fast = TimeLimitedReward(lambda p, c, **info: [1.0] * len(c), 5.0, env_id="demo")
        >>> fast(["a"], ["b"])
        [1.0]
    """

    def __init__(self, reward: RewardFunction, seconds: float, *, env_id: str) -> None:
        self.reward = reward
        self.seconds = seconds
        self.env_id = env_id
        self.__name__ = reward_name(reward)

    @property
    def last_components(self) -> dict[str, list[float]] | None:
        return getattr(self.reward, "last_components", None)

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> Any:
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["values"] = self.reward(prompts, completions, **info)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=call, name=f"reward {self.__name__}", daemon=True)
        worker.start()
        worker.join(self.seconds)
        if worker.is_alive():
            raise RewardError(
                f"reward {self.__name__!r} of environment {self.env_id!r} gave no answer "
                f"within {self.seconds:g} s (--reward-timeout) for {len(completions)} "
                "completions; is its server up? Raise --reward-timeout if it is only slow"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["values"]
