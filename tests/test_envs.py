"""Every registered ``rlm/`` environment, the text space and the tweet corpus.

Each environment gets the same treatment as Gymnasium's own: the environment checker with
warnings as errors, a same-seed determinism rollout, pickling, its vector form, disjoint
splits and the errors a user meets first.

Run: ``python -m pytest tests/test_envs.py -q``
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import pickle
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

import envs  # noqa: F401  (registers the rlm/ environments)
from envs.tweets import EVAL_FRACTION, tweet_openings
from rlm.env import TextEnv, TextVectorEnv, check_env_id, register_text_env, registered_text_env_ids
from rlm.errors import ConfigError, RewardError, UnknownEnvironmentError
from rlm.reward_models.corpus import clean_text
from rlm.rewards import reward_name
from rlm.spaces import TextSpace

ENV_IDS = registered_text_env_ids()

# A fixed list of completions: numbers for the guessing game (right, wrong, none), and
# prose of every sentiment, script and shape for the others.
ACTIONS = [
    "50",
    "I guess 25.",
    "",
    "seventy-five",
    "What a wonderful, happy day!",
    "63",
    "This is terrible and awful.",
    "12",
    "Привет, мир 👋",
    "88",
    "-3",
    "101",
    "7 or maybe 8",
    "ok",
]
SEEDS = [0, 1, 2]


def rollout(env: gym.Env, seed: int, steps: int) -> tuple[list[Any], int]:
    """Reset with ``seed``, play ``ACTIONS`` cyclically for ``steps`` steps, resetting (unseeded)
    after each episode; return every transition and the number of finished episodes."""
    records: list[Any] = [env.reset(seed=seed)]
    episodes = 0
    for step in range(steps):
        transition = env.step(ACTIONS[step % len(ACTIONS)])
        records.append(transition)
        assert env.observation_space.contains(transition[0])
        if transition[2] or transition[3]:
            episodes += 1
            records.append(env.reset())
    return records, episodes


def test_the_environments_are_registered() -> None:
    # Guards against collecting zero parametrized cases if ``import envs`` registers nothing.
    assert {"rlm/Sentiment-v0", "rlm/GuessNumber-v0"} <= set(ENV_IDS)


# --- Gymnasium's contract ----------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_env_checker_passes_without_warnings(env_id: str, render_mode: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id, render_mode=render_mode)
        check_env(env.unwrapped)
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_ansi_is_the_transcript(env_id: str) -> None:
    env = gym.make(env_id, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    env.step("50")
    text = env.render()
    assert isinstance(text, str)
    assert text.startswith(f"[env] {obs}")
    assert "[policy] 50" in text
    assert gym.make(env_id).unwrapped.render() is None  # no render mode: nothing


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout(env_id: str) -> None:
    for seed in SEEDS:
        first, episodes = rollout(gym.make(env_id), seed, steps=24)
        second, _ = rollout(gym.make(env_id), seed, steps=24)
        assert episodes >= 3
        # assert_equal recurses into tuples and dicts and treats NaN (a missing
        # confidence in the tweet metadata) as equal to NaN.
        np.testing.assert_equal(first, second)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_different_seeds_draw_different_tasks(env_id: str) -> None:
    starts = {gym.make(env_id).reset(seed=s)[1]["task_index"] for s in range(10)}
    assert len(starts) > 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_env_continues_identically(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    # Step both to the end of several episodes: the RNG state travelled with the pickle, so
    # the unseeded resets draw the same tasks too.
    for step in range(12):
        action = ACTIONS[step % len(ACTIONS)]
        expected = env.step(action)
        np.testing.assert_equal(clone.step(action), expected)
        if expected[2] or expected[3]:
            np.testing.assert_equal(clone.reset(), env.reset())


# --- the vector environment --------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_matches_single_envs(env_id: str) -> None:
    num_envs, seed, steps = 3, 11, 16
    venv = gym.make_vec(env_id, num_envs=num_envs)
    assert isinstance(venv, TextVectorEnv)
    singles = [gym.make(env_id) for _ in range(num_envs)]

    observations, infos = venv.reset(seed=seed)
    for i, env in enumerate(singles):  # reset(seed=s) seeds env i with s + i
        obs, info = env.reset(seed=seed + i)
        assert observations[i] == obs
        assert infos["task_index"][i] == info["task_index"]

    needs_reset = [False] * num_envs
    for step in range(steps):
        actions = [ACTIONS[(step + i) % len(ACTIONS)] for i in range(num_envs)]
        observations, rewards, terminated, truncated, infos = venv.step(actions)
        for i, env in enumerate(singles):
            if needs_reset[i]:  # next-step autoreset: action ignored, reward 0
                expected = (env.reset()[0], 0.0, False, False)
                needs_reset[i] = False
            else:
                obs, reward, term, trunc, _ = env.step(actions[i])
                expected = (obs, reward, term, trunc)
                needs_reset[i] = term or trunc
            actual = (observations[i], rewards[i], terminated[i], truncated[i])
            assert actual == expected, f"env {i} at step {step}"
    venv.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_vector_env_calls_the_reward_once_per_step(env_id: str) -> None:
    venv = gym.make_vec(env_id, num_envs=3)
    batch_sizes: list[int] = []

    def counting(reward_fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(prompts: list[str], completions: list[str], **info: Any) -> Any:
            assert len(prompts) == len(completions)
            batch_sizes.append(len(completions))
            return reward_fn(prompts, completions, **info)

        wrapper.__name__ = reward_name(reward_fn)
        return wrapper

    # Sub-envs score through envs[0].score, but count every sub-env's reward in case not.
    for env in venv.envs:
        env.reward_fn = counting(env.reward_fn)

    venv.reset(seed=0)
    ended = np.zeros(3, dtype=bool)
    for step in range(12):
        before = len(batch_sizes)
        _, _, terminated, truncated, _ = venv.step([ACTIONS[step]] * 3)
        live = int((~ended).sum())  # envs that ended last step are reset, not scored
        assert batch_sizes[before:] == ([live] if live else []), f"step {step}"
        ended = terminated | truncated
    assert batch_sizes  # some steps were scored


def test_vector_env_none_action_leaves_that_env_untouched() -> None:
    venv = gym.make_vec("rlm/GuessNumber-v0", num_envs=3)
    batch_sizes: list[int] = []
    reward_fn = venv.envs[0].reward_fn

    def counting(prompts: list[str], completions: list[str], **info: Any) -> Any:
        batch_sizes.append(len(completions))
        return reward_fn(prompts, completions, **info)

    for env in venv.envs:
        env.reward_fn = counting
    venv.reset(seed=0, options={"index": [29, 29, 29]})  # secret 37 everywhere
    _, rewards, terminated, _, _ = venv.step(["37", None, "1"])
    assert batch_sizes == [2]  # env 1 is not scored
    # the correct guess on turn 0 is worth 1 - 0.1 * 0 = 1
    assert rewards.tolist() == [1.0, 0.0, 0.0]
    assert terminated.tolist() == [True, False, False]
    # Env 1 is still on turn 0: guessing right now earns the full 1.0. Env 0 ended and is
    # reset (its action ignored); env 2 guesses wrong on turn 1.
    _, rewards, terminated, _, infos = venv.step(["37", "37", "1"])
    assert batch_sizes == [2, 2]
    assert rewards.tolist() == [0.0, 1.0, 0.0]
    assert terminated.tolist() == [False, True, False]
    assert infos["turn"].tolist() == [0, 1, 2]


# --- splits ------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_train_and_eval_splits_are_disjoint(env_id: str) -> None:
    # task_key: the prompt, or what the prompt hides (the guessing games' secret).
    splits = [gym.make(env_id, split=split).unwrapped for split in ("train", "eval")]
    train, evaluation = ({env.task_key(task) for task in env.tasks} for env in splits)
    assert train and evaluation
    assert not train & evaluation
    # Where every task has its own prompt, the prompts alone are disjoint too.
    prompts = [{str(task["prompt"]).casefold() for task in env.tasks} for env in splits]
    if len(prompts[0]) == len(splits[0].tasks):
        assert not prompts[0] & prompts[1]


def test_task_key_is_the_secret_where_the_prompt_hides_it() -> None:
    env = gym.make("rlm/GuessNumber-v0").unwrapped
    assert {env.task_key(task) for task in env.tasks} == {t["secret"] for t in env.tasks}
    plain = gym.make("rlm/Sentiment-v0").unwrapped
    assert plain.task_key({"prompt": "  Hello   World "}) == "hello world"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_split_is_rejected(env_id: str) -> None:
    with pytest.raises((ConfigError, KeyError)):
        gym.make(env_id, split="test")


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_raises(env_id: str) -> None:
    with pytest.raises(gym.error.ResetNeeded):
        gym.make(env_id).step("50")
    with pytest.raises(gym.error.ResetNeeded):
        gym.make(env_id).unwrapped.step("50")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_the_episode_ended_raises(env_id: str) -> None:
    for env in (gym.make(env_id), gym.make(env_id).unwrapped):
        env.reset(seed=0)
        for action in ACTIONS:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        else:
            pytest.fail("the episode did not end")
        with pytest.raises(gym.error.ResetNeeded):
            env.step("50")
        env.reset()
        env.step("50")  # usable again after reset


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("action", [42, None, b"50", ["50"]])
def test_non_text_action_raises_type_error(env_id: str, action: Any) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str"):
        env.step(action)
    env.step("50")  # the failed step changed nothing


BAD_ID = "rlm_test/BadReward-v0"


@pytest.fixture
def bad_reward_registration() -> Iterator[str]:
    """A throw-away registration of a plain TextEnv, outside the rlm/ namespace."""
    register_text_env(BAD_ID, "rlm.env:TextEnv", kwargs={"tasks": [{"prompt": "Say hi"}]})
    yield BAD_ID
    del gym.registry[BAD_ID]


def nan_reward(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [math.nan for _ in completions]


def inf_reward(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [-math.inf for _ in completions]


def too_many_rewards(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [0.0 for _ in completions] + [1.0]


def no_rewards(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return []


def word_rewards(prompts: list[str], completions: list[str], **info: Any) -> list[Any]:
    return ["good" for _ in completions]


def none_rewards(prompts: list[str], completions: list[str], **info: Any) -> list[Any]:
    return [None for _ in completions]


def returns_none(prompts: list[str], completions: list[str], **info: Any) -> Any:
    return None


BAD_REWARDS = [
    nan_reward,
    inf_reward,
    too_many_rewards,
    no_rewards,
    word_rewards,
    none_rewards,
    returns_none,
]


@pytest.mark.parametrize("reward_fn", BAD_REWARDS, ids=lambda f: f.__name__)
def test_bad_reward_raises_naming_env_and_reward(
    bad_reward_registration: str, reward_fn: Callable[..., Any]
) -> None:
    env = gym.make(bad_reward_registration, reward_fn=reward_fn)
    env.reset(seed=0)
    with pytest.raises(RewardError) as excinfo:
        env.step("hi")
    assert bad_reward_registration in str(excinfo.value)
    assert reward_fn.__name__ in str(excinfo.value)


@pytest.mark.parametrize("reward_fn", [nan_reward, too_many_rewards], ids=lambda f: f.__name__)
def test_bad_reward_in_vector_env_names_env_and_reward(
    bad_reward_registration: str, reward_fn: Callable[..., Any]
) -> None:
    venv = gym.make_vec(bad_reward_registration, num_envs=2, reward_fn=reward_fn)
    venv.reset(seed=0)
    with pytest.raises(RewardError) as excinfo:
        venv.step(["hi", "hello"])
    assert bad_reward_registration in str(excinfo.value)
    assert reward_fn.__name__ in str(excinfo.value)


def test_bad_reward_of_an_unregistered_env_names_the_class_or_spec() -> None:
    env = TextEnv([{"prompt": "Say hi"}], nan_reward)
    env.reset(seed=0)
    with pytest.raises(RewardError) as excinfo:
        env.step("hi")
    assert "'nan_reward'" in str(excinfo.value)
    assert "'TextEnv'" in str(excinfo.value)  # no spec: the class name stands in
    env.spec = gym.envs.registration.EnvSpec("rlm_test/Direct-v0")
    env.reset(seed=0)
    with pytest.raises(RewardError, match="rlm_test/Direct-v0"):
        env.step("hi")


def test_unknown_env_id_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownEnvironmentError) as excinfo:
        check_env_id("rlm/Nope-v0")
    message = str(excinfo.value)
    assert "rlm/Nope-v0" in message
    for env_id in ENV_IDS:
        assert env_id in message
    assert isinstance(excinfo.value, KeyError)  # still caught by `except KeyError`
    check_env_id("rlm/Sentiment-v0")  # a known id passes


# --- the tasks themselves ----------------------------------------------------------------


def test_guess_number_plays_to_the_correct_guess() -> None:
    env = gym.make("rlm/GuessNumber-v0")
    _, info = env.reset(seed=0, options={"index": 29})
    # Train secrets skip multiples of 5: indices 4k..4k+3 hold 5k+1..5k+4, so 29 -> 37.
    assert info["secret"] == 37
    transitions = [env.step(text) for text in ("I say 20", "about 60?", "no idea", "37")]
    assert [t[0] for t in transitions] == [
        "Higher.",
        "Lower.",
        "Please answer with one number.",
        "Correct!",
    ]
    # the correct guess on turn 3 (counted from 0) is worth 1 - 0.1 * 3 = 0.7
    assert [t[1] for t in transitions] == pytest.approx([0.0, 0.0, 0.0, 0.7])
    assert [t[2] for t in transitions] == [False, False, False, True]
    assert not any(t[3] for t in transitions)


def test_guess_number_truncates_after_five_turns() -> None:
    env = gym.make("rlm/GuessNumber-v0")
    env.reset(seed=0, options={"index": 29})  # secret 37
    transitions = [env.step("1") for _ in range(5)]
    assert [(t[2], t[3]) for t in transitions] == [(False, False)] * 4 + [(False, True)]
    assert sum(t[1] for t in transitions) == 0.0


def test_sentiment_rewards_the_continuation_and_ends_after_one_turn() -> None:
    env = gym.make("rlm/Sentiment-v0")
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step("and it was a wonderful, happy day!")
    assert (obs, terminated, truncated) == ("", True, False)
    assert 0 < reward <= 1
    env.reset(seed=0)
    assert -1 <= env.step("and it was terrible and awful.")[1] < 0


# --- tweets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Loving it http://t.co/abc123 so much", "Loving it so much"),
        ("see www.example.com/page now", "see now"),
        ("@united thanks for the help", "thanks for the help"),
        ("thanks @united for the help", "thanks for the help"),
        ("RT @someone: big news today", "big news today"),
        ("write to me@example.com please", "write to me@example.com please"),  # not a handle
        ("I can\ufffd\ufffdt   wait", "I can t wait"),  # U+FFFD from undecodable bytes
        ("Can\u00e2\u20ac\u2122t wait", "Can t wait"),  # UTF-8 read as cp1252 ("â€™")
        ("  spaced\tout\nlines  ", "spaced out lines"),
    ],
)
def test_clean_tweet(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_eval_split_is_about_a_tenth_of_the_openings() -> None:
    n_train, n_eval = len(tweet_openings("train")), len(tweet_openings("eval"))
    assert n_train > 10_000
    assert n_eval / (n_train + n_eval) == pytest.approx(EVAL_FRACTION, abs=0.02)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_openings_are_unique_ascii_and_cut_to_five_words(split: str) -> None:
    prompts = [task["prompt"] for task in tweet_openings(split)]
    assert len({p.lower() for p in prompts}) == len(prompts)
    assert all(len(p.split(" ")) == 5 for p in prompts)
    assert all(p.isascii() and p == p.strip() for p in prompts)


def test_tweet_openings_reject_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="split"):
        tweet_openings("test")
    with pytest.raises(ConfigError, match="words"):
        tweet_openings("train", 0)


# --- the text space ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello, world!",
        "It's 3:15 p.m.; where are you?",
        "Party time 🎉👋",
        "Привет, как дела?",
        "日本語の文章です。",
        "مرحبا بالعالم",
        "tabs\tand\nnew lines",
        "x" * 64,
    ],
)
def test_text_space_contains_real_text(text: str) -> None:
    assert TextSpace(max_length=64).contains(text)


@pytest.mark.parametrize("value", [42, None, b"bytes", ["a"], ("a",), np.array(["a"])])
def test_text_space_rejects_non_strings(value: Any) -> None:
    assert not TextSpace(max_length=64).contains(value)


def test_text_space_length_bounds() -> None:
    space = TextSpace(max_length=5, min_length=2)
    assert space.contains("ab") and space.contains("abcde")
    assert not space.contains("a")
    assert not space.contains("abcdef")


def test_plain_gymnasium_text_space_rejects_prose() -> None:
    # The reason TextSpace exists: the default charset has no spaces or punctuation.
    assert not gym.spaces.Text(64).contains("Hello, world!")


def test_text_space_samples_are_contained_and_seeded() -> None:
    space = TextSpace(max_length=20, min_length=3, seed=0)
    samples = [space.sample() for _ in range(50)]
    assert all(isinstance(s, str) and space.contains(s) for s in samples)
    assert [TextSpace(20, min_length=3, seed=0).sample() for _ in range(1)] == samples[:1]


def test_text_space_equality() -> None:
    assert TextSpace(10) == TextSpace(10)
    assert TextSpace(10) != TextSpace(11)
    assert TextSpace(10) != TextSpace(10, min_length=1)


def test_make_text_vector_env_rejects_a_non_text_environment():
    from rlm.env import make_text_vector_env
    from rlm.errors import ConfigError

    assert isinstance(make_text_vector_env("rlm/Sentiment-v0", 2), TextVectorEnv)
    with pytest.raises(ConfigError, match="not a text environment"):
        make_text_vector_env("CartPole-v1", 2)


@pytest.mark.parametrize(
    "text", ["", "Hello, world!", "Привет 👋 日本語", "nul\x00inside", "x" * 64]
)
def test_text_shared_memory_round_trips_any_string(text: str) -> None:
    # What AsyncVectorEnv uses: Gymnasium's own Text handlers would keep only charset
    # characters, and only as a snapshot taken before the first step.
    space = TextSpace(max_length=64)
    memory = create_shared_memory(space, n=2, ctx=multiprocessing)
    view = read_from_shared_memory(space, memory, n=2)  # read once, before any write
    write_to_shared_memory(space, 1, text, memory)
    write_to_shared_memory(space, 0, "first", memory)
    assert copy.deepcopy(view) == ("first", text)  # the view is live
    assert isinstance(copy.deepcopy(view), tuple)
    with pytest.raises(ValueError, match="exceeds 64"):
        write_to_shared_memory(space, 0, "x" * 65, memory)
