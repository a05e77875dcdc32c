"""Check a registered text environment: what ``rlm check-env ID`` runs.

Each check plays the environment with a fixed *probe policy*: ordinary, empty, emoji,
other-script and very long completions, mixed with the environment's
:meth:`~rlm.env.TextEnv.example_action` (a completion that should score well), so the
reward is seen on both good and bad answers. The checks:

- Gymnasium's environment checker, with its warnings counted as failures;
- determinism: two rollouts with the same seed are identical;
- rewards: finite, within the declared ``reward_range``, and not all the same;
- bad input: odd text gets a reward in range; a non-string action, an over-long action and
  a step after the episode ended raise a one-line error; a reset mid-episode starts anew;
- episode length: every episode ends within the env's ``max_turns``;
- splits: ``train`` and ``eval`` exist, are non-empty and share no task;
- pickling: a pickled env continues exactly like the original;
- token view (given a tokenizer): the token-by-token view that stable-baselines3 trains
  passes SB3's and Gymnasium's checkers, and scores probe texts played token by token on
  each turn's last token only, exactly as the text view scores them.

Example:
    >>> report = check_text_env("rlm/GuessNumber-v0")  # doctest: +SKIP
    >>> print(report.format())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from rlm.env import MAX_TEXT_LENGTH, SPLITS, TextEnv
from rlm.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROBES = (
    "Yes.",
    "",
    "I think the answer is 42, and it was a wonderful, happy day!",
    "This is terrible and awful.",
    "Привет, мир! 日本語の文章です。",
    "🎉👋🙂",
    "ok ok ok ok ok ok ok ok",
    "x" * 2000,
)
"""Completions of every shape a policy may produce; the example action is mixed in."""

MAX_EPISODE_TURNS = 64
"""Longest episode the checker accepts: more is unbounded for a language-model rollout."""


@dataclass
class CheckResult:
    """One check's outcome and a line saying what was seen."""

    name: str
    passed: bool
    detail: str


@dataclass
class CheckReport:
    """All checks of one environment."""

    env_id: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def format(self) -> str:
        """A readable report: one line per check, then a verdict."""
        width = max(len(result.name) for result in self.results)
        lines = [f"check-env {self.env_id}"]
        for result in self.results:
            mark = "PASS" if result.passed else "FAIL"
            lines.append(f"  {mark}  {result.name:<{width}}  {result.detail}")
        failed = sum(not result.passed for result in self.results)
        lines.append(
            f"OK: all {len(self.results)} checks passed"
            if not failed
            else f"FAILED: {failed} of {len(self.results)} checks"
        )
        return "\n".join(lines)


def text_env(env: gym.Env | str, **kwargs: Any) -> TextEnv:
    """The :class:`TextEnv` inside ``env`` (or made from the id ``env``).

    Raises:
        ConfigError: it is not a text environment.
    """
    made = gym.make(env, **kwargs) if isinstance(env, str) else env
    inner = made.unwrapped
    if not isinstance(inner, TextEnv):
        raise ConfigError(
            f"{made.spec.id if made.spec else made!r} is not a text environment (rlm.env.TextEnv)"
        )
    return inner


def probe_action(env: TextEnv, step: int) -> str:
    """The probe policy: every third step the env's example action, else a probe text."""
    example = env.example_action() if step % 3 == 0 else None
    return example if example is not None else PROBES[step % len(PROBES)]


def play(env: gym.Env, seed: int, episodes: int) -> tuple[list[Any], list[float], list[int]]:
    """Play ``episodes`` episodes with the probe policy, seeding the first reset.

    Returns every reset and step result, the step rewards and each episode's length.
    """
    records: list[Any] = []
    rewards: list[float] = []
    lengths: list[int] = []
    step = 0
    inner = text_env(env)
    limit = min(inner.max_turns, MAX_EPISODE_TURNS) + 1
    for episode in range(episodes):
        records.append(env.reset(seed=seed if episode == 0 else None))
        for turn in range(limit):
            transition = env.step(probe_action(inner, step))
            step += 1
            records.append(transition)
            rewards.append(float(transition[1]))
            if transition[2] or transition[3]:
                lengths.append(turn + 1)
                break
        else:
            lengths.append(limit + 1)  # did not end: more than allowed
    return records, rewards, lengths


def _gymnasium_checker(env_id: str) -> CheckResult:
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    env.close()
    if caught:
        return CheckResult("gymnasium checker", False, f"warned: {caught[0].message}")
    return CheckResult("gymnasium checker", True, "no errors, no warnings")


def _determinism(
    env_id: str, seed: int, episodes: int
) -> tuple[CheckResult, list[float], list[int]]:
    """Two same-seed rollouts compared; the first one's rewards and episode lengths."""
    first, rewards, lengths = play(gym.make(env_id), seed, episodes)
    second, _, _ = play(gym.make(env_id), seed, episodes)
    try:
        np.testing.assert_equal(first, second)
    except AssertionError:
        return (
            CheckResult("determinism", False, f"two rollouts with seed {seed} differ"),
            rewards,
            lengths,
        )
    detail = f"two rollouts of {episodes} episodes with seed {seed} are identical"
    return CheckResult("determinism", True, detail), rewards, lengths


def _rewards(env_id: str, rewards: list[float]) -> CheckResult:
    low, high = text_env(env_id).reward_range
    if not (math.isfinite(low) and math.isfinite(high)):
        return CheckResult(
            "rewards", False, "no reward_range declared: set reward_range = (low, high) on the env"
        )
    outside = [r for r in rewards if not (math.isfinite(r) and low <= r <= high)]
    if outside:
        return CheckResult(
            "rewards", False, f"{len(outside)} rewards outside [{low}, {high}], e.g. {outside[0]}"
        )
    distinct = len(set(rewards))
    if distinct < 2:
        return CheckResult(
            "rewards", False, f"every one of {len(rewards)} rewards is {rewards[0]}: constant"
        )
    return CheckResult(
        "rewards",
        True,
        f"{len(rewards)} rewards in [{low}, {high}], {distinct} distinct, "
        f"mean {sum(rewards) / len(rewards):.3f}",
    )


def _raises(call: Callable[[], Any], error: type[Exception]) -> bool:
    try:
        call()
    except error as exc:
        return len(str(exc).splitlines()) == 1
    return False


def _bad_input(env_id: str, seed: int) -> CheckResult:
    env = text_env(env_id)
    low, high = env.reward_range
    problems = []
    for text in ("", "🎉" * 50, "Привет, мир", "日本語", "x" * MAX_TEXT_LENGTH):
        env.reset(seed=seed)
        reward = env.step(text)[1]
        if not (math.isfinite(reward) and low <= reward <= high):
            problems.append(f"{text[:10]!r} got reward {reward}")
    env.reset(seed=seed)
    if not _raises(lambda: env.step(42), TypeError):  # type: ignore[arg-type]
        problems.append("a non-string action did not raise a one-line TypeError")
    if not _raises(lambda: env.step("x" * (MAX_TEXT_LENGTH + 1)), ValueError):
        problems.append("an over-long action did not raise a one-line ValueError")
    first, _ = env.reset(seed=seed)
    for _ in range(min(env.max_turns, MAX_EPISODE_TURNS)):
        _, _, terminated, truncated, _ = env.step("ok")
        if terminated or truncated:
            if not _raises(lambda: env.step("ok"), gym.error.ResetNeeded):
                problems.append("a step after the episode ended did not raise ResetNeeded")
            break
    env.reset(seed=seed + 1)
    if env.max_turns > 1:
        env.step("ok")
    again, info = env.reset(seed=seed)
    if again != first or info["turn"] != 0:
        problems.append("reset(seed) in the middle of an episode did not start it afresh")
    if problems:
        return CheckResult("bad input", False, "; ".join(problems))
    return CheckResult(
        "bad input", True, "odd text scored in range; bad actions raise one-line errors"
    )


def _episode_lengths(env_id: str, lengths: list[int]) -> CheckResult:
    max_turns = text_env(env_id).max_turns
    if max_turns > MAX_EPISODE_TURNS:
        return CheckResult(
            "episode length", False, f"max_turns={max_turns} is over {MAX_EPISODE_TURNS}"
        )
    longest = max(lengths)
    if longest > max_turns:
        return CheckResult(
            "episode length", False, f"an episode ran past max_turns={max_turns} without ending"
        )
    return CheckResult(
        "episode length", True, f"{len(lengths)} episodes of 1 to {longest} turns (max {max_turns})"
    )


def _splits(env_id: str) -> CheckResult:
    envs = {split: text_env(env_id, split=split) for split in SPLITS}
    keys = {split: {env.task_key(task) for task in env.tasks} for split, env in envs.items()}
    shared = keys["train"] & keys["eval"]
    if shared:
        return CheckResult(
            "splits",
            False,
            f"{len(shared)} tasks in both train and eval, e.g. {next(iter(shared))!r}",
        )
    if not _raises(lambda: gym.make(env_id, split="no-such-split"), ValueError):
        return CheckResult("splits", False, "an unknown split did not raise a one-line ValueError")
    sizes = ", ".join(f"{split} {len(env.tasks)}" for split, env in envs.items())
    return CheckResult("splits", True, f"disjoint: {sizes} tasks")


def _pickling(env_id: str, seed: int) -> CheckResult:
    env = gym.make(env_id)
    env.reset(seed=seed)
    clone = pickle.loads(pickle.dumps(env))
    try:
        np.testing.assert_equal(play(clone, seed + 1, 3)[0], play(env, seed + 1, 3)[0])
    except AssertionError:
        return CheckResult("pickling", False, "a pickled copy plays differently")
    return CheckResult("pickling", True, "a pickled copy plays identically")


def _token_view(env_id: str, tokenizer: PreTrainedTokenizerBase, seed: int) -> CheckResult:
    """The token view (:class:`rlm.token_env.TokenEnv`): SB3's and Gymnasium's checkers,
    then probe texts played token by token against the text view, seeded alike."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from rlm.token_env import make_token_env

    name = "token view"
    view = make_token_env(env_id, tokenizer, max_new_tokens=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(view, warn=True)
        check_env(view, skip_render_check=True)  # rendering is the text view's, checked above
    if caught:
        return CheckResult(name, False, f"warned: {caught[0].message}")
    text = text_env(env_id)
    eos = min(view.eos_ids)
    steps = 0
    for episode in range(3):
        view.reset(seed=seed + episode)
        text.reset(seed=seed + episode)
        for turn in range(min(text.max_turns, MAX_EPISODE_TURNS)):
            probe = probe_action(text, turn + episode)
            ids = tokenizer(probe, add_special_tokens=False).input_ids[: view.max_new_tokens - 1]
            for position, token in enumerate([*ids, eos]):
                _, reward, terminated, truncated, info = view.step(token)
                steps += 1
                if position < len(ids) and (reward != 0 or terminated or truncated):
                    return CheckResult(name, False, "a reward or an end before the turn ended")
            _, text_reward, text_terminated, text_truncated, _ = text.step(info["completion"])
            # (The token view ends a game out of turns as terminated: see TokenEnv.)
            got = (reward, terminated or truncated)
            expected = (text_reward, text_terminated or text_truncated)
            if got != expected:
                return CheckResult(
                    name, False, f"turn {turn}: the token view gave {got}, the text view "
                    f"{expected} for the same completion",
                )  # fmt: skip
            if terminated or truncated:
                break
        else:
            return CheckResult(name, False, "an episode ran past max_turns")
    return CheckResult(
        name, True, f"SB3's and Gymnasium's checkers pass; {steps} tokens of probe texts "
        "score only on each turn's last token, as the text view scores them",
    )  # fmt: skip


def _safely(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # a crash is a failed check, reported on one line
        message = str(exc).splitlines()[0] if str(exc) else ""
        return CheckResult(name, False, f"raised {type(exc).__name__}: {message}")


def check_text_env(
    env_id: str,
    *,
    seed: int = 0,
    episodes: int = 12,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> CheckReport:
    """Run every check on ``env_id`` (a registered text environment) and report.

    Args:
        env_id: a registered id.
        seed: seed of the rollouts.
        episodes: episodes played with the probe policy for the reward and length checks.
        tokenizer: with one, the token view (stable-baselines3's) is checked too.
    """
    report = CheckReport(env_id)
    report.results.append(_safely("gymnasium checker", lambda: _gymnasium_checker(env_id)))
    try:
        determinism, rewards, lengths = _determinism(env_id, seed, episodes)
    except Exception as exc:  # the rollout itself failed: nothing to check rewards on
        message = str(exc).splitlines()[0] if str(exc) else ""
        report.results.append(
            CheckResult("rollout", False, f"raised {type(exc).__name__}: {message}")
        )
    else:
        report.results.append(determinism)
        report.results.append(_safely("rewards", lambda: _rewards(env_id, rewards)))
        report.results.append(_safely("episode length", lambda: _episode_lengths(env_id, lengths)))
    report.results.append(_safely("bad input", lambda: _bad_input(env_id, seed)))
    report.results.append(_safely("splits", lambda: _splits(env_id)))
    report.results.append(_safely("pickling", lambda: _pickling(env_id, seed)))
    if tokenizer is not None:
        report.results.append(_safely("token view", lambda: _token_view(env_id, tokenizer, seed)))
    return report
