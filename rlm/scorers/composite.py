"""Combining rewards: a weighted sum with per-component reporting, and normalisation.

:class:`Composite` reports every component's raw value in ``last_components`` (so the
experiments log ``reward/<name>`` for each), and :class:`Normalized` rescales a reward by
running statistics and clips it, the usual guard against reward scales that swamp the KL
penalty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlm.errors import ConfigError
from rlm.rewards import RewardFunction, check_rewards, reward_components, reward_name


class Composite:
    """``sum(weight * reward)`` over components, each reported under its name.

    Args:
        parts: ``(weight, reward)`` pairs. Component names come from each reward's
            ``__name__``; a repeated name gets a numeric suffix.

    Example:
        >>> from rlm.scorers.rules import LengthTarget, RepetitionPenalty
        >>> reward = Composite([(1.0, LengthTarget(4)), (0.5, RepetitionPenalty(1))])
        >>> reward([""], ["so so so so"])
        [0.625]
        >>> reward.last_components
        {'length': [1.0], 'repetition': [-0.75]}
    """

    __name__ = "composite"

    def __init__(self, parts: Sequence[tuple[float, RewardFunction]]) -> None:
        if not parts:
            raise ConfigError("a composite reward needs at least one component")
        self.parts: list[tuple[str, float, RewardFunction]] = []
        seen: dict[str, int] = {}
        for weight, reward in parts:
            base = reward_name(reward)
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}_{seen[base]}"
            self.parts.append((name, float(weight), reward))
        self.last_components: dict[str, list[float]] = {}
        # The declared range, when every component declares one.
        bounds = []
        for _, weight, reward in self.parts:
            declared = getattr(reward, "reward_range", None)
            if declared is None:
                break
            bounds.append(sorted((weight * declared[0], weight * declared[1])))
        else:
            self.reward_range = (sum(b[0] for b in bounds), sum(b[1] for b in bounds))

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        total = [0.0] * len(completions)
        components: dict[str, list[float]] = {}
        for name, weight, reward in self.parts:
            values = check_rewards(
                reward(prompts, completions, **info), len(completions),
                env_id="composite", reward=reward,
            )  # fmt: skip
            components[name] = values
            # A component that is itself made of parts reports those too.
            for sub, sub_values in reward_components(reward, len(completions)).items():
                components[f"{name}/{sub}"] = sub_values
            total = [t + weight * v for t, v in zip(total, values, strict=True)]
        self.last_components = components
        return total


class Normalized:
    """A reward standardised by running mean and standard deviation, then clipped.

    Statistics are updated with every batch while ``update`` is true (set it false to score
    evaluation samples without moving them). The raw value stays visible as the component
    ``<name>_raw``.

    Args:
        reward: the reward to rescale.
        normalize: subtract the running mean and divide by the running standard deviation.
        clip: clip the result to ``[-clip, clip]`` (``None``: no clipping).

    Example:
        >>> from rlm.scorers.rules import LengthTarget
        >>> reward = Normalized(LengthTarget(4), clip=None)
        >>> [round(v, 3) for v in reward([""] * 2, ["one two three four", "one two"])]
        [1.0, -1.0]
    """

    def __init__(
        self,
        reward: RewardFunction,
        *,
        normalize: bool = True,
        clip: float | None = 5.0,
        epsilon: float = 1e-8,
    ) -> None:
        if clip is not None and clip <= 0:
            raise ConfigError(f"reward clip must be positive, got {clip}")
        self.reward = reward
        self.normalize = normalize
        self.clip = clip
        self.epsilon = epsilon
        self.update = True
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations (Chan et al.'s parallel update)
        self.__name__ = reward_name(reward)
        self.last_components: dict[str, list[float]] = {}
        if clip is not None:
            self.reward_range = (-clip, clip)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0

    def _observe(self, values: list[float]) -> None:
        n = len(values)
        batch_mean = sum(values) / n
        batch_m2 = sum((v - batch_mean) ** 2 for v in values)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        raw = check_rewards(
            self.reward(prompts, completions, **info), len(completions),
            env_id="normalized", reward=self.reward,
        )  # fmt: skip
        if self.normalize and self.update and raw:
            self._observe(raw)
        values = raw
        if self.normalize:
            values = [(v - self.mean) / (self.std + self.epsilon) for v in raw]
        if self.clip is not None:
            values = [min(max(v, -self.clip), self.clip) for v in values]
        self.last_components = {
            f"{self.__name__}_raw": raw,
            **reward_components(self.reward, len(completions)),
        }
        return values

    def state_dict(self) -> dict[str, float]:
        """Running statistics, for checkpoints."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), state["mean"], state["m2"]
